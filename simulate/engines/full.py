"""Engine "full": batched online simulation of the two-layer network in D dimensions (THEORY.md sections 1, 3, 6).

Every replica r sees its own stream of i.i.d. inputs x ~ N(0, I_D) and output noise zeta ~ N(0, 1).
One step, for all replicas at once, with the rule's one-sample update (delta, alpha, e_out, h)
taken from :meth:`theory.Rule.local_update` (the single definition of every rule):

    lambda_k = w_k . x / sqrt D,   nu_m = w*_m . x / sqrt D,   S_k = w_k . f / D
    xp  = x + alpha f / sqrt D                      (alpha = -sigma_F e when modulated, else 0)
    w_k <- w_k - (eta / sqrt D) delta_k xp  -  (eta kappa / D) w_k
    v_k <- v_k - (eta_v / D) e_out h_k               (unless the second layer is frozen)

The inputs of a chunk of steps are drawn in one call and pre-scaled by 1/sqrt D, so one step is
a handful of batched tensor operations. Order parameters are measured in float64 at the
recorded steps (round(t D)); the empirical test error uses a fixed held-out set of Gaussian inputs.
The loop over chunks, records, divergence and Ctrl-C is the engines' one driver
(:mod:`simulate.engines.driver`); this module is its :class:`FullStepper`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from theory import HyperParams, Rule, _internal

from .._spec import STREAM_DATA, STREAM_TEST, Records, RunSpec, derived_seed
from .base import Engine
from .driver import Recorder, Stepper, drive

__all__ = ["FullEngine", "FullStep", "FullStepper", "simulate_full"]

#: Memory budget (elements) of one chunk of pre-drawn inputs, on the CPU and on CUDA.
CHUNK_ELEMENTS = 1 << 23
CHUNK_ELEMENTS_CUDA = 1 << 27
MAX_CHUNK_STEPS = 2048


@dataclasses.dataclass(frozen=True)
class FullEngine(Engine):
    """Engine "full": simulates the D-dimensional weights (needs them), float32 by default, n_test = 10,000."""

    name = "full"
    needs_weights = True
    dtype = torch.float32

    def memory(self, *, K, M, D, replicas, n_test, hyper, itemsize) -> float:
        need = replicas * K * D * itemsize * 2 + min(CHUNK_ELEMENTS, replicas * D * hyper.batch) * itemsize * 2
        need += n_test * D * itemsize
        return need + (replicas * D * itemsize * 3 if hyper.mirroring else 0)  # one f per replica, and the chunk's xi

    def run(self, spec: RunSpec) -> Records:
        return simulate_full(spec)


def _measure(W, W_star, f, v, D):
    """Float64 Q, R, S, v of all replicas from the weights, and U, P when f learns (f (R, D), one per
    replica under mirroring; else f (D,) and U, P None)."""
    W64, Ws64, f64 = W.detach().to(torch.float64), W_star.to(torch.float64), f.to(torch.float64)
    Q = torch.einsum("rkd,rld->rkl", W64, W64) / D
    R = torch.einsum("rkd,md->rkm", W64, Ws64) / D
    if f.ndim == 1:
        S, U, P = W64 @ f64 / D, None, None
    else:
        S = torch.einsum("rkd,rd->rk", W64, f64) / D
        U, P = (f64 @ Ws64.T / D).cpu().numpy(), (f64.pow(2).sum(-1) / D).cpu().numpy()
    # copy v: in float64 on the CPU, .numpy() would share memory with the tensor updated in place
    return Q.cpu().numpy(), R.cpu().numpy(), S.cpu().numpy(), v.detach().to(torch.float64).cpu().numpy().copy(), U, P


class _TestSet:
    """Fixed held-out inputs X (n_test, D) and their noise-free teacher outputs."""

    def __init__(self, spec: RunSpec, g):
        w = spec.weights
        gen = _generator(spec.device, derived_seed(spec.seed, STREAM_TEST))
        self.Xs = torch.randn(spec.n_test, w.D, generator=gen, device=spec.device, dtype=spec.dtype).mul_(
            1.0 / math.sqrt(w.D)
        )
        self.g = g
        self.y = (g.g(self.Xs @ w.W_star.T) * w.v_star).sum(-1)  # (n_test,)

    def eg(self, W, v) -> np.ndarray:
        lam = torch.einsum("rkd,nd->rnk", W, self.Xs)
        yhat = (self.g.g(lam) * v[:, None, :]).sum(-1)
        return (0.5 * (yhat - self.y).to(torch.float64).pow(2).mean(-1)).cpu().numpy()


def _generator(device, seed):
    return torch.Generator(device=device).manual_seed(int(seed))


class _InputStream:
    """The data streams: pre-scaled inputs xs = x / sqrt D (R, n, D) and noise zeta (R, n) per chunk.

    On CPU every replica r has its own generator (seed derived from (seed, r)), and the chunk is
    filled by a pool of threads over replica ranges while the previous chunk is being simulated:
    Gaussian sampling, not arithmetic, is the bottleneck of the full simulation on CPU. The result
    does not depend on the number of threads. On CUDA one generator fills the whole chunk.
    """

    def __init__(self, spec: RunSpec, workers: int):
        self.R, self.D = spec.replicas, spec.D
        self.device, self.dtype = spec.device, spec.dtype
        self.noise = spec.hyper.sigma > 0
        self.batch = spec.hyper.batch
        self.mirror = spec.hyper.mirroring  # one more input xi per step (drawn after the step's x and zeta)
        base = derived_seed(spec.seed, STREAM_DATA)
        if self.device.type == "cpu":
            self.gens = [_generator(self.device, derived_seed(base, r)) for r in range(self.R)]
            self.workers = max(1, min(int(workers), self.R))
        else:
            self.gens = [_generator(self.device, base)]
            self.workers = 1
        self.pool = None
        if self.workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(self.workers)

    def _fill(self, xs, zeta, xis, lo, hi):
        scale = 1.0 / math.sqrt(self.D)
        for r in range(lo, hi):
            xs[r].normal_(generator=self.gens[r]).mul_(scale)
            if zeta is not None:
                zeta[r].normal_(generator=self.gens[r])
            if xis is not None:
                xis[r].normal_(generator=self.gens[r]).mul_(scale)

    def submit(self, n: int):
        """Start drawing a chunk of n steps; returns a callable that waits and gives (xs, zeta, xis):
        the inputs (R, n B, D) and noise (R, n B) of n steps of B samples, and with mirroring the
        mirroring inputs xis = xi / sqrt D (R, n, D), one per step (else None)."""
        xs = torch.empty(self.R, n * self.batch, self.D, device=self.device, dtype=self.dtype)
        zeta = torch.empty(self.R, n * self.batch, device=self.device, dtype=self.dtype) if self.noise else None
        xis = torch.empty(self.R, n, self.D, device=self.device, dtype=self.dtype) if self.mirror else None
        if self.device.type != "cpu":
            xs.normal_(generator=self.gens[0]).mul_(1.0 / math.sqrt(self.D))
            if zeta is not None:
                zeta.normal_(generator=self.gens[0])
            if xis is not None:
                xis.normal_(generator=self.gens[0]).mul_(1.0 / math.sqrt(self.D))
            return lambda: (xs, zeta, xis)
        if self.pool is None:
            self._fill(xs, zeta, xis, 0, self.R)
            return lambda: (xs, zeta, xis)
        bounds = np.linspace(0, self.R, self.workers + 1).astype(int)
        futs = [
            self.pool.submit(self._fill, xs, zeta, xis, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo
        ]

        def wait():
            for fu in futs:
                fu.result()
            return xs, zeta, xis

        return wait

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _diagnose(W, v, D) -> str | None:
    """Why the replicas count as diverged (_internal.divergence: the policy of the ODEs), else None.

    Checks Q_kk = |w_k|^2 / D and v_k; S_k = w_k . f / D is bounded by sqrt(Q_kk P) (Cauchy-Schwarz),
    so it runs away only with Q.
    """
    qd = (W.pow(2).sum(-1) / D).to(torch.float64).cpu().numpy()  # (R, K)
    vv = v.detach().to(torch.float64).cpu().numpy()
    return _internal.divergence.why_replicas(qd, np.zeros_like(qd), vv)


class FullStep:
    """One online step of every replica, in place, from the rule's one-sample update (module docstring).

    ``step(W, Wt, v, xs, nu, zeta, t)``: W (R, K, D) and its transposed view Wt (R, D, K), v (R, K)
    are updated in place; xs = x / sqrt D (R, D), or (R, B, D) for a mini-batch of B samples, are the
    inputs, nu (R, [B,] M) the teacher's fields and zeta (R, [B]) the output noise of this step, at
    time t = step / D (learning-rate schedules). A batch averages the B samples' updates.

    Feedback mirroring (HyperParams.eta_F): f is then (R, D), one per replica, and
    ``mirror(W, Wt, v, xis, t)`` runs the mirroring step with xis = xi / sqrt D (R, D) after the
    learning step (docs/extensions.md section 4): f <- (1 - eta_F kappa_F / D) f + eta_F yhat_xi xis,
    then rescaled to |f|^2 / D = P(0) with mirror_norm.
    """

    def __init__(self, rule: Rule, hyper: HyperParams, *, v_star, b, f, K: int, M: int):
        D = f.shape[-1]
        self.rule, self.hyper, self.v_star, self.b, self.D = rule, hyper, v_star, b, D
        self.f = f
        self.fD = f / D  # xp / sqrt D = xs + alpha f / D
        self.needs_S = "S" in rule.reads
        self.modulates = rule.modulates_input(K, M, hyper.g)  # derived from the traced update (theory.rules._facts)
        self.rates = None if hyper.time_dependent else self._rates(0.0)
        if f.ndim == 2:  # mirroring: f learns, per replica
            self.P0 = f.to(torch.float64).pow(2).sum(-1) / D  # (R,)

    def _rates(self, t):
        eta, eta_v = (float(r) for r in self.hyper.rates(t))
        return eta, eta_v, 1.0 - eta * self.hyper.weight_decay / self.D

    def _S(self, Wt):
        if self.fD.ndim == 1:
            return self.fD @ Wt
        return torch.bmm(self.fD.unsqueeze(1), Wt).squeeze(1)

    def __call__(self, W, Wt, v, xs, nu, zeta, t=0.0):
        hp = self.hyper
        eta, eta_v, decay = self.rates or self._rates(t)
        if xs.ndim == 3:
            return self._batch(W, Wt, v, xs, nu, zeta, eta, eta_v, decay)
        # (R, 1, D) @ (R, D, K): much faster than (R, K, D) @ (R, D, 1) for small K
        lam = torch.bmm(xs.unsqueeze(1), Wt).squeeze(1)
        S = self._S(Wt) if self.needs_S else None
        up = self.rule.local_update(lam, nu, zeta, v=v, v_star=self.v_star, S=S, b=self.b, sigma=hp.sigma,
                                    sigma_F=hp.sigma_F, g=hp.g)
        xp = torch.addcmul(xs, up.alpha.unsqueeze(1), self.fD) if self.modulates else xs
        if decay != 1.0:
            W.mul_(decay)
        W.addcmul_(up.delta.unsqueeze(2), xp.unsqueeze(1), value=-eta)
        if hp.train_second_layer:
            v.addcmul_(up.e_out.unsqueeze(1), up.h, value=-eta_v / self.D)

    def _batch(self, W, Wt, v, xs, nu, zeta, eta, eta_v, decay):
        hp = self.hyper
        B = xs.shape[1]
        lam = torch.bmm(xs, Wt)  # (R, B, K)
        S = self._S(Wt).unsqueeze(1) if self.needs_S else None
        up = self.rule.local_update(lam, nu, zeta, v=v.unsqueeze(1), v_star=self.v_star, S=S, b=self.b, sigma=hp.sigma,
                                    sigma_F=hp.sigma_F, g=hp.g)
        fD = self.fD if self.fD.ndim == 1 else self.fD.unsqueeze(1)
        xp = xs + up.alpha.unsqueeze(2) * fD if self.modulates else xs
        if decay != 1.0:
            W.mul_(decay)
        W.baddbmm_(up.delta.transpose(1, 2), xp, alpha=-eta / B)  # - (eta / B) sum_s delta_s xp_s^T
        if hp.train_second_layer:
            v.sub_((up.e_out.unsqueeze(2) * up.h).sum(1), alpha=eta_v / (self.D * B))

    def mirror(self, W, Wt, v, xis, t=0.0):
        """The mirroring step (class docstring), in place on f."""
        hp = self.hyper
        eta_F = float(hp.mirror_rate(t))
        if eta_F == 0.0:
            return
        lam = torch.bmm(xis.unsqueeze(1), Wt).squeeze(1)  # (R, K): lambda^xi
        yhat = (hp.g.g(lam) * v).sum(-1)
        f = self.f
        if hp.kappa_F:
            f.mul_(1.0 - eta_F * hp.kappa_F / self.D)
        f.addcmul_(xis, (eta_F * yhat).unsqueeze(1))
        if hp.mirror_norm:
            f.mul_((self.P0 * self.D / f.to(torch.float64).pow(2).sum(-1)).sqrt().to(f.dtype).unsqueeze(1))
        torch.div(f, self.D, out=self.fD)


class FullStepper(Stepper):
    """The driver's stepper of the full simulation: the weights of all replicas (copies of spec.weights, which
    stay untouched), their step, the input streams (the next chunk drawn while this one runs) and the records."""

    def __init__(self, spec: RunSpec):
        w = spec.weights
        self.D, self.batch, self.mirror = spec.D, spec.hyper.batch, spec.hyper.mirroring
        self.W = w.W.clone()
        self.Wt = self.W.transpose(1, 2)  # a view: (R, D, K)
        self.v = w.v.clone()
        self.W_star = w.W_star
        self.f = w.f.expand(spec.replicas, spec.D).clone() if self.mirror else w.f  # f learns: one per replica
        self.step = FullStep(spec.rule, spec.hyper, v_star=w.v_star, b=w.b, f=self.f, K=spec.K, M=spec.M)
        self.test = _TestSet(spec, spec.hyper.g) if spec.n_test > 0 else None
        budget = CHUNK_ELEMENTS_CUDA if spec.device.type == "cuda" else CHUNK_ELEMENTS
        self.chunk = int(max(1, min(MAX_CHUNK_STEPS, budget // (spec.replicas * spec.D * self.batch))))
        self.zeros = torch.zeros(spec.replicas, self.chunk * self.batch, device=spec.device, dtype=spec.dtype)
        self.spec, self.s = spec, 0
        self.stream, self.pending = None, None
        R, K, M = spec.replicas, spec.K, spec.M
        shapes = dict(Q=(R, K, K), R=(R, K, M), S=(R, K), v=(R, K), eg_test=(R,))
        self.recorder = Recorder(shapes | (dict(U=(R, M), P=(R,)) if self.mirror else {}))
        self.old_threads = torch.get_num_threads()
        if spec.device.type == "cpu":
            # per-step tensors are small: intra-op threads only add synchronisation (the pool draws inputs)
            torch.set_num_threads(1)

    def advance(self, n, next_n):
        if self.stream is None:
            workers = self.spec.threads if self.spec.threads is not None else self.old_threads
            self.stream = _InputStream(self.spec, workers)
            self.pending = self.stream.submit(n)
        xs, zeta, xis = self.pending()
        self.pending = self.stream.submit(next_n) if next_n else None
        nu = xs @ self.W_star.T  # (R, n, M): the teacher is fixed, so its fields come in one call
        if zeta is None:
            zeta = self.zeros[:, : n * self.batch]
        self._steps(n, xs, nu, zeta, xis)
        self.s += n

    def _steps(self, n, xs, nu, zeta, xis):
        """n steps on the chunk's inputs xs (R, n B, D), fields nu, noise zeta, mirroring inputs xis."""
        W, Wt, v, B, step = self.W, self.Wt, self.v, self.batch, self.step
        for j in range(n):
            t = (self.s + j) / self.D
            if B == 1:
                step(W, Wt, v, xs[:, j], nu[:, j], zeta[:, j], t)
            else:
                sl = slice(j * B, (j + 1) * B)
                step(W, Wt, v, xs[:, sl], nu[:, sl], zeta[:, sl], t)
            if self.mirror:
                step.mirror(W, Wt, v, xis[:, j], t)

    def why_diverged(self):
        return _diagnose(self.W, self.v, self.D)

    def record(self, step):
        Q, R, S, v, U, P = _measure(self.W, self.W_star, self.f, self.v, self.D)
        eg = self.test.eg(self.W, self.v) if self.test is not None else np.full(self.W.shape[0], np.nan)
        self.recorder.add(step, Q=Q, R=R, S=S, v=v, eg_test=eg, **(dict(U=U, P=P) if self.mirror else {}))

    def close(self):
        torch.set_num_threads(self.old_threads)
        if self.stream is not None:
            self.stream.close()


def simulate_full(spec: RunSpec) -> Records:
    """The D-dimensional simulation (see the module docstring) of a spec that carries the weights."""
    stepper = FullStepper(spec)
    try:
        label = f"sim {spec.rule.label} D={spec.D}" if spec.progress else None
        outcome = drive(stepper, spec.steps, spec.D, progress=label)
    finally:
        stepper.close()
    return stepper.recorder.records(outcome)
