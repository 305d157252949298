"""Batched online simulation of the two-layer network in D dimensions (THEORY.md sections 1, 3, 6).

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

Engines: ``run(..., engine="full")`` is this simulation. Other engines (for example the reduced
sampler on the Gram matrix) register themselves in :data:`ENGINES` with :func:`register_engine`
and receive the same :class:`RunSpec`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch

import theory
from theory import _internal
from theory import DivergenceError, HyperParams, Rule

from ._init import Initialisation, Weights, _check_dtype, resolve_device
from ._result import SimulationResult

__all__ = ["run", "RunSpec", "Records", "ENGINES", "register_engine", "derived_seed", "simulate_full", "FullStep"]

#: Memory budget (elements) of one chunk of pre-drawn inputs, on the CPU and on CUDA.
CHUNK_ELEMENTS = 1 << 23
CHUNK_ELEMENTS_CUDA = 1 << 27
MAX_CHUNK_STEPS = 2048


def derived_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for an independent stream ``stream`` of the run seed ``seed`` (numpy SeedSequence)."""
    a, b = np.random.SeedSequence(int(seed), spawn_key=(int(stream),)).generate_state(2, np.uint32)
    return (int(a) << 31) ^ int(b)


#: streams derived from the run seed (the initial weights use Initialisation.seed directly)
STREAM_DATA, STREAM_TEST = 1, 2


@dataclasses.dataclass(frozen=True, eq=False)
class RunSpec:
    """Everything an engine needs: validated parameters of one simulation run.

    weights: initial :class:`Weights` (on ``device`` in ``dtype``); rule: :class:`theory.Rule`;
    hyper: :class:`theory.HyperParams`; steps: (n,) strictly increasing recording steps (>= 0);
    seed: run seed (data streams come from :func:`derived_seed`); the rest as in :func:`run`.
    """

    weights: Weights
    rule: Rule
    hyper: HyperParams
    steps: np.ndarray
    seed: int
    n_test: int
    device: torch.device
    dtype: torch.dtype
    progress: bool
    threads: int | None = None

    @property
    def D(self) -> int:
        return self.weights.D


@dataclasses.dataclass
class Records:
    """What an engine returns: order parameters (float64 numpy) at steps[:n] and the run status.

    Q (R_, n, K, K), R (R_, n, K, M), S (R_, n, K), v (R_, n, K), eg_test (R_, n) or None;
    under feedback mirroring U (R_, n, M) and P (R_, n), else None.
    """

    steps: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    S: np.ndarray
    v: np.ndarray
    eg_test: np.ndarray | None
    status: int = 0
    message: str = "finished"
    U: np.ndarray | None = None
    P: np.ndarray | None = None


#: The simulation engines by name ("full", "reduced", and any added with register_engine): each runs a RunSpec.
ENGINES: dict[str, Callable[[RunSpec], Records]] = {}


def register_engine(name: str, fn: Callable[[RunSpec], Records]) -> None:
    """Make ``run(..., engine=name)`` call ``fn(spec) -> Records``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"register_engine: name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"register_engine: fn must be callable as fn(spec) -> Records, got {type(fn).__name__}")
    ENGINES[name] = fn


# --------------------------------------------------------------------------- the full simulation
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
        self.Xs = torch.randn(spec.n_test, w.D, generator=gen, device=spec.device, dtype=spec.dtype).mul_(1.0 / math.sqrt(w.D))
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
        self.R, self.D = spec.weights.replicas, spec.D
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
        futs = [self.pool.submit(self._fill, xs, zeta, xis, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

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


def simulate_full(spec: RunSpec) -> Records:
    """The D-dimensional simulation (see the module docstring)."""
    w = spec.weights
    Rn, K, D = w.W.shape
    M = w.M
    rule, hyper = spec.rule, spec.hyper
    g = hyper.g
    dev, dt = spec.device, spec.dtype
    W = w.W.clone()
    Wt = W.transpose(1, 2)  # a view: (R, D, K)
    v = w.v.clone()
    W_star, v_star, f, b = w.W_star, w.v_star, w.f, w.b
    mirror = hyper.mirroring
    if mirror:  # f learns: one per replica
        f = f.expand(Rn, D).clone()
    step = FullStep(rule, hyper, v_star=v_star, b=b, f=f, K=K, M=M)
    test = _TestSet(spec, g) if spec.n_test > 0 else None

    steps = spec.steps
    recs = {k: [] for k in ("Q", "R", "S", "v", "eg_test", "U", "P")}

    def record():
        for k, val in zip(("Q", "R", "S", "v", "U", "P"), _measure(W, W_star, f, v, D)):
            if val is not None:
                recs[k].append(val)
        recs["eg_test"].append(test.eg(W, v) if test is not None else np.full(Rn, np.nan))

    # chunk sizes: as large as the memory budget allows, cut at every recording step
    budget = CHUNK_ELEMENTS_CUDA if dev.type == "cuda" else CHUNK_ELEMENTS
    Bs = hyper.batch
    chunk_max = int(max(1, min(MAX_CHUNK_STEPS, budget // (Rn * D * Bs))))
    plan = []  # (steps in the chunk, number of records due after it)
    s_, i_ = 0, 0
    while i_ < len(steps):
        if steps[i_] == s_:
            i_ += 1
            if plan:
                plan[-1][1] += 1
            continue
        n = int(min(chunk_max, steps[i_] - s_))
        plan.append([n, 0])
        s_ += n
    n_first = int(np.searchsorted(steps, 0, side="right"))  # records due at step 0

    zeros = torch.zeros(Rn, chunk_max * Bs, device=dev, dtype=dt)
    status, message = 0, "finished"
    bar = None
    if spec.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(steps[-1]), desc=f"sim {rule.label} D={D}", unit="step", unit_scale=True, leave=False)
    workers = spec.threads if spec.threads is not None else torch.get_num_threads()
    stream = _InputStream(spec, workers) if plan else None
    old_threads = torch.get_num_threads()
    if dev.type == "cpu":
        # per-step tensors are small: intra-op threads only add synchronisation (the pool draws inputs)
        torch.set_num_threads(1)
    s = 0
    try:
        for _ in range(n_first):
            record()
        pending = stream.submit(plan[0][0]) if plan else None
        for c, (n, n_rec) in enumerate(plan):
            xs, zeta, xis = pending()
            pending = stream.submit(plan[c + 1][0]) if c + 1 < len(plan) else None
            nu = xs @ W_star.T  # (R, n, M): the teacher is fixed, so its fields come in one call
            if zeta is None:
                zeta = zeros[:, : n * Bs]
            if Bs == 1:
                for j in range(n):
                    step(W, Wt, v, xs[:, j], nu[:, j], zeta[:, j], (s + j) / D)
                    if mirror:
                        step.mirror(W, Wt, v, xis[:, j], (s + j) / D)
            else:
                for j in range(n):
                    sl = slice(j * Bs, (j + 1) * Bs)
                    step(W, Wt, v, xs[:, sl], nu[:, sl], zeta[:, sl], (s + j) / D)
                    if mirror:
                        step.mirror(W, Wt, v, xis[:, j], (s + j) / D)
            t0, s = s / D, s + n
            why = _diagnose(W, v, D)
            if why is not None:
                status, message = -1, f"diverged between t = {t0:.6g} and t = {s / D:.6g} (steps/D): {why}"
                break
            for _ in range(n_rec):
                record()
            if bar is not None:
                bar.update(n)
    except KeyboardInterrupt:
        status, message = 1, f"interrupted at t = {s / D:.6g} (steps/D)"
    finally:
        torch.set_num_threads(old_threads)
        if stream is not None:
            stream.close()
        if bar is not None:
            bar.close()
    n_rec = len(recs["Q"])
    out = {k: (np.stack(val, axis=1) if val else None) for k, val in recs.items()}
    if n_rec == 0:
        out = dict(Q=np.empty((Rn, 0, K, K)), R=np.empty((Rn, 0, K, M)), S=np.empty((Rn, 0, K)), v=np.empty((Rn, 0, K)),
                   eg_test=np.empty((Rn, 0)), U=np.empty((Rn, 0, M)) if mirror else None,
                   P=np.empty((Rn, 0)) if mirror else None)
    return Records(steps=steps[:n_rec], status=status, message=message, **out)


register_engine("full", simulate_full)


# --------------------------------------------------------------------------- public entry point
def _check_size(init, replicas, n_records, n_test, batch, dtype, engine, independent, mirror=False):
    """Refuse (theory.TooLarge) a run whose memory would exceed what is available, before allocating."""
    K, M, D = init.K, init.M, init.D
    item = 4 if dtype == torch.float32 else 8
    records = replicas * n_records * (K * K + K * M + 2 * K + 1) * 8 * 2
    if engine == "full":
        need = replicas * K * D * item * 2 + min(CHUNK_ELEMENTS, replicas * D * batch) * item * 2 + n_test * D * item
        need += replicas * D * item * 3 if mirror else 0  # one f per replica, and the chunk's xi
    else:
        need = (replicas if independent else 1) * K * D * 8
    _internal.checks.memory(f"{replicas} replicas at D = {D} ({engine} engine, {n_records} records)", need + records,
                         where="run")


def _check_times(t, D) -> np.ndarray:
    t = _internal.checks.times(t, where="run")
    # Times closer than one step apart round to the same step; that step is recorded once.
    return np.unique(np.round(t * D).astype(np.int64))


def run(
    init: Initialisation,
    rule: str | Rule,
    t,
    params: HyperParams | None = None,
    *,
    replicas: int = 8,
    independent_init: bool = False,
    device=None,
    dtype=None,
    seed: int = 0,
    n_test: int | None = None,
    engine: str = "full",
    progress: bool = True,
    throw: bool = True,
    threads: int | None = None,
    **options,
) -> SimulationResult:
    """Simulate ``replicas`` copies of the network learning online with ``rule``.

    Parameters
    ----------
    init : :class:`Initialisation` (K, M, D and the seed of the initial weights).
    rule : a registered rule's name or a :class:`theory.Rule` (as :func:`theory.integrate`).
    t : recording times in steps / D; recorded at steps round(t D) (coinciding steps once).
    params, **options : a :class:`theory.HyperParams`, its fields (eta, eta_v, sigma, sigma_F,
        weight_decay, train_second_layer, g, batch; feedback mirroring: eta_F, kappa_F, mirror_norm,
        t_pre) and the rule's options (presynaptic, error, ...) as keyword arguments, as
        :func:`theory.integrate`. An unknown keyword is an error. With mirroring each replica has
        its own f, and the result carries U_t, P_t.
    replicas : number of independent data streams, batched in one tensor (replicas, K, D).
    independent_init : False, every replica starts from the same weights; True, each replica
        draws its own student (W, v); the teacher, f and b are shared.
    device : None -> "cuda" when available else "cpu". dtype : torch.float32 or float64 (default:
        float32 for engine "full", float64 for engine "reduced").
    seed : seed of the data streams (inputs, noise, test set), distinct from ``init.seed``.
        Same seed, same result (on a given device).
    n_test : size of the held-out set for the empirical test error (0 disables it). Default:
        10,000, except with the reduced engine when the activation's eps_g has a closed form
        (there eg_test would only re-estimate eg by Monte Carlo): 0.
    engine : "full" (this D-dimensional simulation) or another registered engine ("reduced").
    threads : CPU threads drawing the Gaussian inputs (default torch.get_num_threads()); the
        arithmetic runs with one intra-op thread (restored afterwards). Results do not depend on it.
    throw : on divergence raise :class:`theory.DivergenceError` carrying the partial result;
        with False return it with status -1. Ctrl-C returns what was recorded, status 1.
    """
    where = "run"
    if not isinstance(init, Initialisation):
        raise TypeError(f"run: init must be a simulate.Initialisation, got {type(init).__name__}")
    if engine not in ENGINES:
        raise ValueError(f"run: unknown engine {engine!r}; expected one of {sorted(ENGINES)}")
    replicas = _internal.checks.integer("replicas", replicas, where=where, min=1)
    if n_test is not None:
        n_test = _internal.checks.integer("n_test", n_test, where=where, min=0)
    seed = _internal.checks.integer("seed", seed, where=where, min=0)
    if threads is not None:
        threads = _internal.checks.integer("threads", threads, where=where, min=1)
    independent_init = _internal.checks.boolean("independent_init", independent_init, where=where)
    dev = resolve_device(device)
    # float32 by default for the full simulation; the reduced engine's increments are O(1/D): float64
    dtype = _check_dtype(dtype if dtype is not None else (torch.float64 if engine == "reduced" else torch.float32))
    # The same validation (and messages) as theory.integrate, on the measured initial state.
    state0 = init.order_params(1)
    dyn = theory.make_dynamics(state0, rule, params, where=where, extra=_internal.checks.parameters(run), **options)
    if n_test is None:
        n_test = 0 if engine == "reduced" and dyn.hyper.g.i2 is not None else 10_000
    steps = _check_times(t, init.D)
    if dtype == torch.float32 and dyn.hyper.max_rate() > 1e30:
        raise ValueError(f"run: a learning rate of {dyn.hyper.max_rate():.3g} overflows float32; use dtype=torch.float64")
    _check_size(init, replicas, len(steps), n_test, dyn.hyper.batch, dtype, engine, independent_init, dyn.hyper.mirroring)
    weights = init.weights(replicas, independent=independent_init, device=dev, dtype=dtype)
    spec = RunSpec(weights=weights, rule=dyn.rule, hyper=dyn.hyper, steps=steps, seed=seed, n_test=n_test, device=dev,
                   dtype=dtype, progress=bool(progress), threads=threads)
    rec = ENGINES[engine](spec)

    params = dict(
        **_internal.run_params(dyn.rule, dyn.hyper),
        K=init.K, M=init.M, D=init.D,
        init_seed=init.seed, w_std=init.w_std, v_std=init.v_std, v_star=init.v_star, replicas=replicas,
        independent_init=independent_init, device=str(dev), dtype=str(dtype).replace("torch.", ""), seed=seed,
        n_test=n_test, engine=engine, steps=[int(s) for s in rec.steps],
        samples=[int(s) * dyn.hyper.batch for s in rec.steps], units={"t": "steps / D", "angles": "degrees"},
        provenance=theory.provenance(str(dev)),
    )
    if independent_init:
        states = init.order_params(replicas, independent=True)
        constants = {k: (None if getattr(states[0], k) is None else np.stack([np.asarray(getattr(s, k)) for s in states]))
                     for k in ("T", "U", "P", "v_star", "b")}
    else:
        constants = {k: getattr(state0, k) for k in ("T", "U", "P", "v_star", "b")}
    eg_test = rec.eg_test if rec.eg_test is not None else np.full(rec.Q.shape[:2], np.nan)
    res = SimulationResult.from_records(rec.steps / init.D, rec.Q, rec.R, rec.S, rec.v, constants, eg_test, params,
                                        status=rec.status, message=rec.message, U=rec.U, P=rec.P)
    if rec.status < 0 and throw:
        raise DivergenceError(f"simulate.run: {rec.message}; last recorded time {res.t[-1] if len(res) else float('nan'):.6g}", res)
    return res


from . import _reduced  # noqa: E402,F401  (registers the engine "reduced": run() knows it however simulate was imported)
