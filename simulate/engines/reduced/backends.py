"""The two backends of the exact order-parameter chain (engine "reduced"), and which one a run takes.

``backend="numba"`` (chosen automatically on the CPU in float64 when the rule has a compiled view,
:func:`theory.compiled_rule`): the compiled kernel of :mod:`simulate.engines.reduced.kernel` runs a
chunk of steps for a block of 32 replicas in one call, the blocks spread over threads, calling the rule's
compiled update; it draws its random numbers inside, each replica and step from its own
counter-based stream keyed by (seed, replica, step) (:mod:`simulate.engines.reduced.rng`:
Philox4x64-10), so the same seed gives the same result whatever the number of threads or the block size, and a
replica's path does not depend on how many replicas run beside it. ``backend="torch"`` (CUDA,
float32, rules without a compiled view, or on request): :class:`ReducedStep`, the reference
implementation, one step at a time, on the rule's
:meth:`theory.Rule.local_update`, with r standard normals, one Gamma((D - r)/2)
(chi^2 = 2 Gamma) and one standard normal zeta per step and replica from one seeded
``torch.Generator`` on the run's device, drawn in blocks of steps (same seed, same result on the
same device and dtype). The two backends draw different streams: they agree in law, not sample
by sample. float64 by default: the increments are O(1/D).

:func:`resolve_backend` chooses ("auto") or checks the backend; :func:`open_chain` builds it for a
:class:`simulate.RunSpec`. A backend holds the state of all replicas: ``advance(n)`` (n <= ``chunk``
steps), ``state()`` (float64 numpy copies of Q, R, S, v, and U, P under mirroring), ``close()``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from theory import HyperParams, _internal
from theory._internal import update_view

from . import BACKENDS, kernel
from .step import ReducedStep, _fixed_square_root

__all__ = ["BACKENDS", "resolve_backend", "open_chain"]

#: numba backend: steps per kernel call, about _NUMBA_BLOCK_ELEMENTS / (block x batch x (r + 3)),
#: at most _NUMBA_MAX_CHUNK_STEPS (the draws are made inside the kernel and no longer go through
#: memory; the chunk only sets how often control returns to Python: progress, Ctrl-C, records)
_NUMBA_BLOCK_ELEMENTS = 1 << 15
_NUMBA_MAX_CHUNK_STEPS = 4096


def _broadcast_state(state, replicas, device, dtype, mirror=False):
    """Q (R_, K, K), R (R_, K, M), S (R_, K), v (R_, K) tensors from a state (shared or per replica);
    with ``mirror`` also U (R_, M) and P (R_,)."""
    out = []
    fields = (("Q", 2), ("R", 2), ("S", 1), ("v", 1)) + ((("U", 1), ("P", 0)) if mirror else ())
    for name, nd in fields:
        a = np.asarray(getattr(state, name), dtype=np.float64)
        if a.ndim == nd + 1 and a.shape[0] != replicas:
            raise ValueError(f"reduced: initial {name} has {a.shape[0]} replicas, expected replicas={replicas}")
        a = np.broadcast_to(a, (replicas,) + a.shape[-nd:]).copy()
        out.append(torch.as_tensor(a).to(device=device, dtype=dtype))
    return out



class _TorchChain:
    """The reference backend: :class:`ReducedStep` one step at a time, draws from a torch.Generator.

    Under mirroring the state also holds U (R_, M) and P (R_,), and every step draws, after the
    learning step's numbers, r more standard normals and one more chi^2_{D-r} for xi."""

    def __init__(self, step: ReducedStep, state, *, replicas, r, seed, device, dtype, block, step0=0):
        self.step, self.r, self.D = step, r, step.D
        self.batch = step.hyper.batch
        self.mirror = step.mirror
        self.Q, self.R, self.S, self.v = state[:4]
        if self.mirror:
            self.U, self.P = state[4:]
            self.P0 = self.P.clone()
        self.gen = torch.Generator(device=device).manual_seed(int(seed))
        self.conc = torch.full((block, replicas), 0.5 * (self.D - r), device=device, dtype=dtype)
        if self.batch > 1:
            self.conc_w = (0.5 * (self.D - r - torch.arange(self.batch, device=device, dtype=dtype))).expand(
                block, replicas, -1
            )
        self.step_index = int(step0)
        self.replicas, self.device, self.dtype = replicas, device, dtype
        self.chunk = int(block)
        self.threads = torch.get_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(1)  # the per-step tensors are small: threading costs more than it gains

    def _chi2(self, n):
        if self.D > self.r:
            return 2.0 * torch._standard_gamma(self.conc[:n], generator=self.gen)
        return torch.zeros((n, self.replicas), device=self.device, dtype=self.dtype)

    def _mirror_draws(self, n):
        if not self.mirror:
            return None, None
        eps = torch.randn((n, self.replicas, self.r), generator=self.gen, device=self.device, dtype=self.dtype)
        return eps, self._chi2(n)

    def advance(self, n):
        """n <= self.chunk steps."""
        if self.batch > 1:
            return self._advance_batch(n)
        shape = (n, self.replicas)
        eps = torch.randn(shape + (self.r,), generator=self.gen, device=self.device, dtype=self.dtype)
        zeta = torch.randn(shape, generator=self.gen, device=self.device, dtype=self.dtype)
        chi2 = self._chi2(n)
        m_eps, m_chi2 = self._mirror_draws(n)
        self._run(n, lambda j, Q, R, S, v, t, U, P: self.step(Q, R, S, v, eps[j], chi2[j], zeta[j], t=t, U=U, P=P),
                  m_eps, m_chi2)

    def _run(self, n, learn, m_eps, m_chi2):
        Q, R, S, v = self.Q, self.R, self.S, self.v
        U, P = (self.U, self.P) if self.mirror else (None, None)
        for j in range(n):
            t = (self.step_index + j) / self.D
            Q, R, S, v = learn(j, Q, R, S, v, t, U, P)
            if self.mirror:
                S, U, P = self.step.mirror_step(Q, R, S, U, P, v, m_eps[j], m_chi2[j], t=t, P0=self.P0)
        self.Q, self.R, self.S, self.v = Q, R, S, v
        if self.mirror:
            self.U, self.P = U, P
        self.step_index += n

    def _advance_batch(self, n):
        """n steps of B samples: the Wishart Gram matrix by Bartlett's decomposition, W = L L^T with
        L_ii = sqrt(chi^2_{D-r-i}) and standard normals below the diagonal."""
        Bs, R_ = self.batch, self.replicas
        eps = torch.randn((n, R_, Bs, self.r), generator=self.gen, device=self.device, dtype=self.dtype)
        chi2 = 2.0 * torch._standard_gamma(self.conc_w[:n].contiguous(), generator=self.gen)  # (n, R_, Bs)
        low = torch.randn((n, R_, Bs * (Bs - 1) // 2), generator=self.gen, device=self.device, dtype=self.dtype)
        zeta = torch.randn((n, R_, Bs), generator=self.gen, device=self.device, dtype=self.dtype)
        L = torch.diag_embed(chi2.sqrt())
        rows, cols = torch.tril_indices(Bs, Bs, -1, device=self.device)
        L[..., rows, cols] = low
        W = L @ L.transpose(-1, -2)
        m_eps, m_chi2 = self._mirror_draws(n)
        self._run(
            n,
            lambda j, Q, R, S, v, t, U, P: self.step.batch_step(Q, R, S, v, eps[j], W[j], zeta[j], t=t, U=U, P=P),
            m_eps,
            m_chi2,
        )

    def state(self):
        parts = (self.Q, self.R, self.S, self.v) + ((self.U, self.P) if self.mirror else ())
        return tuple(a.detach().to("cpu", torch.float64).numpy().copy() for a in parts)

    def close(self):
        torch.set_num_threads(self.threads)


class _NumbaChain:
    """The compiled CPU backend: :func:`simulate.engines.reduced.kernel.chain_block` on chunks of steps, with the
    rule's compiled update, its blocks and threads from :class:`simulate.engines.reduced.kernel.ChunkSampler`
    (float64)."""

    def __init__(self, rule, hyper: HyperParams, state, *, D, T, U, P, v_star, b, replicas, r, seed, threads, step0=0):
        K = state[0].shape[-1]
        M = np.shape(T)[-1]
        update, why = update_view(rule, hyper.g, K, M)
        if update is None:
            raise ValueError(
                f"backend: 'numba' needs a compiled view of rule {rule.label} with activation {hyper.g.name!r}: {why}"
            )
        gk = _internal.compiled.activation_code(hyper.g)
        self.update = update
        self.mirror = hyper.mirroring  # f learns: U (replicas, M) and P (replicas,) are state
        self.Q, self.R, self.S, self.v = (np.ascontiguousarray(a, dtype=np.float64) for a in state[:4])
        A11T, Binv = _fixed_square_root(T, U, P)
        T, U, P, v_star = (np.asarray(a, dtype=np.float64) for a in (T, U, P, v_star))
        b = np.zeros(K) if b is None else np.asarray(b, dtype=np.float64)
        # constants shared by all replicas (leading axis 1) or per replica (leading axis replicas)
        per = any(a.ndim > nd for a, nd in ((A11T, 2), (U, 1), (P, 0), (v_star, 1), (b, 1), (T, 2)))
        C = replicas if per else 1
        fix = lambda a, tail: np.array(np.broadcast_to(a, (C,) + tail), dtype=np.float64, order="C")  # noqa: E731
        if self.mirror:  # the kernel updates these in place
            self.U, self.P = (np.array(a, dtype=np.float64, order="C") for a in state[4:6])
            self.P0 = self.P.copy()
        else:
            self.U, self.P = fix(U, (M,)), fix(P, ())
            self.P0 = np.zeros(0)
        self.consts = (fix(A11T, (M + 1, M + 1)), fix(Binv, (M + 1, M + 1)), self.U, self.P, fix(v_star, (M,)),
                       fix(b, (K,)))
        self.T = fix(T, (M, M))
        self.hyper, self.D, self.step_index = hyper, int(D), int(step0)
        self.params = (hyper.sigma, hyper.sigma_F, hyper.weight_decay, gk, hyper.train_second_layer)
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.sampler = kernel.ChunkSampler(seed, replicas, r, D, noise=hyper.sigma != 0, threads=threads,
                                           batch=hyper.batch)
        per_step = hyper.batch * (r + 3) + (2 * r if self.mirror else 0)
        self.chunk = int(np.clip(_NUMBA_BLOCK_ELEMENTS // (self.sampler.B * per_step), 1, _NUMBA_MAX_CHUNK_STEPS))

    def advance(self, n):
        """n <= self.chunk steps: the threads advance the blocks of replicas, drawing inside the kernel."""
        t = (self.step_index + np.arange(n)) / self.D
        vec = lambda r: np.ascontiguousarray(np.broadcast_to(np.asarray(r, dtype=np.float64), (n,))).copy()  # noqa: E731
        etas, etas_v = (vec(r) for r in self.hyper.rates(t))
        hp = self.hyper
        etas_F = vec(hp.mirror_rate(t)) if self.mirror else np.zeros(n)
        mirror = (self.mirror, self.T, self.P0, etas_F, float(hp.kappa_F), bool(hp.mirror_norm))
        sp = self.sampler

        def block(j):
            kernel.chain_block(self.update, j, sp.B, sp.key, self.step_index, n, sp.shapes, sp.noise, self.Q, self.R,
                               self.S, self.v, *self.consts, float(self.D), etas, etas_v, *self.params, *mirror)

        sp.map_blocks(block)
        self.step_index += n

    def state(self):
        parts = (self.Q, self.R, self.S, self.v) + ((self.U, self.P) if self.mirror else ())
        return tuple(a.copy() for a in parts)

    def close(self):
        self.sampler.close()


def _numba_ok(rule, g, K, M) -> bool:
    return kernel.HAVE_NUMBA and update_view(rule, g, K, M)[0] is not None


def resolve_backend(backend, device, dtype, rule, g, K, M) -> str:
    """The backend a run takes: "auto" -> "numba" on the CPU in float64 for a rule with a compiled view (feedback
    mirroring included), else "torch"; "numba" or "torch" as asked, refused (ValueError) where it cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        ok = device.type == "cpu" and dtype == torch.float64 and _numba_ok(rule, g, K, M)
        return "numba" if ok else "torch"
    if backend == "numba":
        if not kernel.HAVE_NUMBA:
            raise ValueError("backend: 'numba' requested but numba is not importable")
        if device.type != "cpu":
            raise ValueError(f"backend: 'numba' runs on the CPU, got device {str(device)!r} (use backend='torch')")
        if dtype != torch.float64:
            raise ValueError(f"backend: 'numba' computes in float64, got dtype {dtype} (use backend='torch')")
        if _internal.compiled.activation_code(g) is None:
            raise ValueError(
                f"backend: 'numba' supports the activations {sorted(_internal.compiled.ACTIVATION_CODES)}, "
                f"got {g.name!r} (use backend='torch')"
            )
        update, why = update_view(rule, g, K, M)
        if update is None:
            raise ValueError(
                f"backend: 'numba' needs a compiled view of rule {rule.label}: {why} (use backend='torch')"
            )
    return backend


def open_chain(spec, *, seed: int, backend: str, block: int = 256):
    """The backend ``backend`` ("numba" or "torch", as resolved) of the chain of ``spec`` from its initial state at
    step 0, its draws seeded by ``seed``; ``block``: the torch backend's steps of draws at a time."""
    state0, replicas, D = spec.state, spec.replicas, spec.D
    r = spec.K + spec.M + 1
    consts = dict(D=D, T=state0.T, U=state0.U, P=state0.P, v_star=state0.v_star, b=getattr(state0, "b", None))
    if backend == "numba":
        state = [a.numpy() for a in _broadcast_state(state0, replicas, torch.device("cpu"), torch.float64,
                                                     spec.hyper.mirroring)]
        return _NumbaChain(spec.rule, spec.hyper, state, replicas=replicas, r=r, seed=seed, threads=spec.threads,
                           **consts)
    step = ReducedStep(spec.rule, spec.hyper, device=spec.device, dtype=spec.dtype, **consts)
    return _TorchChain(step, _broadcast_state(state0, replicas, spec.device, spec.dtype, spec.hyper.mirroring),
                       replicas=replicas, r=r, seed=seed, device=spec.device, dtype=spec.dtype, block=block)
