"""The exact finite-D sampler in order-parameter space (the "reduced" engine).

Why it is exact
---------------
One online step touches the weights only through the projections of the input x ~ N(0, I_D) on
the r = K + M + 1 vectors (w_1..w_K, w*_1..w*_M, f) and through |x|^2. Let G (r x r) be their
Gram matrix divided by D (G = Omega of THEORY.md section 2: [[Q, R, S], [R^T, T, U], [S^T, U^T, P]])
and let A (r x r) be any square root, A A^T = G. Pick an r-dimensional subspace containing the
span of the r vectors (possible whenever D >= r) and let eps in R^r be the coordinates of x in an
orthonormal basis of it: eps ~ N(0, I_r), and the rest of x is independent of eps with squared
norm chi^2_{D-r}. Then (for a suitable choice of basis; any two square roots differ by an
orthogonal matrix, under which eps is invariant in law)

    z = (lambda, nu, phi) = A eps ~ N(0, G),      |x|^2 = |eps|^2 + chi^2_{D-r},

jointly and exactly, whatever the rank of G (e.g. w = 0 at the start). This is the brief's
"z^T G^+ z + chi^2_{D - rank G}" written with a square root that needs no pseudo-inverse.

The rule's one-sample update (THEORY.md section 3, :meth:`theory.Rule.local_update`, the single
definition of every rule) gives (delta, alpha, e_out, h) from (lambda, nu, zeta, v, S). With
xp = x + alpha f / sqrt D and c = eta kappa / D (kappa = weight_decay),

    w_k' = (1 - c) w_k - (eta / sqrt D) delta_k xp,        v_k' = v_k - (eta_v / D) e_out h_k.

Writing xi_u = xp . u / sqrt D = z_u + alpha G[u, f] for u = w_l, w*_n, f, and
|xp|^2 = |x|^2 + 2 alpha phi + alpha^2 P, and taking dot products (derivation checked by hand
and by tests/test_reduced.py against an explicit D-dimensional step with the same draws):

    Q'_kl = (1-c)^2 Q_kl - (1-c)(eta/D)(delta_k xi_l + delta_l xi_k) + (eta^2/D) delta_k delta_l |xp|^2/D
    R'_kn = (1-c) R_kn - (eta/D) delta_k xi*_n
    S'_k  = (1-c) S_k  - (eta/D) delta_k xi_f
    v'_k  = v_k - (eta_v/D) e_out h_k          (v frozen when the second layer is not trained)

T, U, P (and v_star, b) never change. So G evolves as a Markov chain with the law of the full
simulation's order parameters at any D, and a step costs O(r^3), independent of D.

The square root
---------------
The (M+1) x (M+1) teacher/f block G11 = [[T, U], [U^T, P]] is fixed: its square root
A11 = V sqrt(Lambda) (eigendecomposition, singular blocks allowed, e.g. P = 0) is computed once.
A is block lower triangular, [[A11, 0], [L21, L22]], with L21 = [R, S] V Lambda^{-1/2} (the
columns of a PSD matrix's off-diagonal block lie in the range of its diagonal block) and L22 the
Cholesky factor of the Schur complement Q - L21 L21^T, computed column by column with zero
columns where a pivot vanishes (exact for PSD matrices; handles w = 0). In the code the fields
are ordered (nu, phi, lambda); nothing else depends on that order.

Backends
--------
``backend="numba"`` (chosen automatically on the CPU in float64 when the rule has a compiled view,
:func:`theory.compiled_rule`): the compiled kernel of :mod:`simulate._reduced_kernel` runs a chunk
of steps for a block of 32 replicas in one call, the blocks spread over threads, calling the rule's
compiled update; it draws its random numbers inside, each replica and step from its own
counter-based stream keyed by (seed, replica, step) (:mod:`simulate._rng`: Philox4x64-10), so
the same seed gives the same result whatever the number of threads or the block size, and a
replica's path does not depend on how many replicas run beside it. ``backend="torch"`` (CUDA, float32, rules without a compiled view, or on
request): :class:`ReducedStep`, the reference implementation, one step at a time, on the rule's
:meth:`theory.Rule.local_update`, with r standard normals, one Gamma((D - r)/2)
(chi^2 = 2 Gamma) and one standard normal zeta per step and replica from one seeded
``torch.Generator`` on the run's device, drawn in blocks of steps (same seed, same result on the
same device and dtype). The two backends draw different streams: they agree in law, not sample
by sample. float64 by default: the increments are O(1/D).
"""

from __future__ import annotations

import os
import time
import numpy as np
import torch

import theory
from theory import _internal
from theory import DivergenceError, HyperParams, OrderParams
from theory._internal import update_view

from . import _reduced_kernel

__all__ = ["run_reduced", "reduced_chain", "ReducedStep", "empirical_eg", "simulate_reduced", "BACKENDS"]

_PIVOT_TOL = 1e-13
BACKENDS = ("auto", "numba", "torch")
#: numba backend: steps per kernel call, about _NUMBA_BLOCK_ELEMENTS / (block x batch x (r + 3)),
#: at most _NUMBA_MAX_CHUNK_STEPS (the draws are made inside the kernel and no longer go through
#: memory; the chunk only sets how often control returns to Python: progress, Ctrl-C, records)
_NUMBA_BLOCK_ELEMENTS = 1 << 15
_NUMBA_MAX_CHUNK_STEPS = 4096


def _psd_cholesky(C: torch.Tensor) -> torch.Tensor:
    """Lower factor L with L L^T = C for batched PSD C (..., K, K); zero columns at vanishing pivots."""
    K = C.shape[-1]
    L = torch.zeros_like(C)
    scale = C.diagonal(dim1=-2, dim2=-1).abs().amax(-1, keepdim=True).clamp_min(1e-300)
    for j in range(K):
        col = C[..., j:, j]
        if j:
            col = col - (L[..., j:, :j] * L[..., j : j + 1, :j]).sum(-1)
        d = col[..., :1]
        ok = d > _PIVOT_TOL * scale
        ljj = torch.sqrt(torch.where(ok, d, torch.ones_like(d)))
        L[..., j:, j] = torch.where(ok, col / ljj, torch.zeros_like(col))
    return L


def _fixed_square_root(T, U, P):
    """(A11^T, Binv) of the fixed block G11 = [[T, U], [U^T, P]] (possibly batched), float64 numpy.

    A11 = V sqrt(Lambda) (so A11 A11^T = G11) and Binv = V Lambda^{-1/2} on the range of G11
    (zero on its null space), from the eigendecomposition G11 = V Lambda V^T.
    """
    T, U, P = (np.asarray(a, dtype=np.float64) for a in (T, U, P))
    M = T.shape[-1]
    lead = np.broadcast_shapes(T.shape[:-2], U.shape[:-1], P.shape)
    G11 = np.empty(lead + (M + 1, M + 1))
    G11[..., :M, :M] = T
    G11[..., :M, M] = U
    G11[..., M, :M] = U
    G11[..., M, M] = P
    lam, V = np.linalg.eigh(G11)
    tol = 1e-12 * np.maximum(1.0, np.abs(lam).max(-1, keepdims=True))
    pos = lam > tol
    A11 = V * np.sqrt(np.where(pos, lam, 0.0))[..., None, :]
    Binv = V * np.where(pos, 1.0 / np.sqrt(np.where(pos, lam, 1.0)), 0.0)[..., None, :]
    return np.swapaxes(A11, -1, -2), Binv


class ReducedStep:
    """One step of the order-parameter Markov chain for a fixed rule and fixed constants.

    Holds the fixed square root of the teacher/f block and the run's parameters; ``__call__``
    maps (Q, R, S, v) with a leading replica axis and one step's draws to the next (Q, R, S, v);
    ``batch_step`` does the same for a mini-batch of B samples per step (module docstring).
    """

    def __init__(self, rule, hyper: HyperParams, *, D, T, U, P, v_star, b, device, dtype):
        self.rule, self.g = rule, hyper.g
        self.D = int(D)
        self.M = T.shape[-1]
        tt = lambda a: None if a is None else torch.as_tensor(np.array(a, dtype=np.float64)).to(device=device, dtype=dtype)  # noqa: E731
        A11T, Binv = _fixed_square_root(T, U, P)
        self.A11T = tt(A11T)  # y = eps1 @ A11^T
        self.Binv = tt(Binv)  # L21 = [R, S] @ Binv
        self.U, self.P = tt(U), tt(P)
        self.T = tt(T)
        self.v_star, self.b = tt(v_star), tt(b)
        self.hyper = hyper
        self.mirror = hyper.mirroring  # f learns: U and P are state, the square root is taken at every step
        self.sigma, self.sigma_F = hyper.sigma, hyper.sigma_F
        self.train_second_layer = hyper.train_second_layer

    def fields(self, Q, R, S, eps, *, sample_axis=False):
        """(lam, nu, phi) = A eps and |eps|^2 for eps (..., r) ordered (nu, phi, lambda); with
        ``sample_axis``, eps (R_, B, r) against Q, R, S with a length-1 axis for the samples."""
        M = self.M
        A11T, Binv = self.A11T, self.Binv
        if sample_axis and A11T.ndim > 2:  # per-replica constants: room for the sample axis
            A11T, Binv = A11T[:, None], Binv[:, None]
        e1, e2 = eps[..., : M + 1], eps[..., M + 1 :]
        y = (e1[..., None, :] * A11T.transpose(-1, -2)).sum(-1) if A11T.ndim > 2 else e1 @ A11T
        L21 = torch.cat([R, S[..., None]], -1) @ Binv
        L22 = _psd_cholesky(Q - L21 @ L21.transpose(-1, -2))
        lam = (L21 @ e1[..., None]).squeeze(-1) + (L22 @ e2[..., None]).squeeze(-1)
        return lam, y[..., :M], y[..., M]

    def fields_of(self, Q, R, S, U, P, eps, *, sample_axis=False):
        """(lam, nu, phi) = L eps with L the PSD Cholesky factor of the whole Gram matrix G ordered
        (nu, phi, lambda): for U and P that change (mirroring), where the fixed block's square root
        of :meth:`fields` no longer applies. Any square root gives the same law (module docstring)."""
        M, K = self.M, Q.shape[-1]
        T = self.T
        lead = Q.shape[:-2]
        G = torch.empty(lead + (M + 1 + K, M + 1 + K), dtype=Q.dtype, device=Q.device)
        G[..., :M, :M] = T[:, None] if sample_axis and T.ndim > 2 else T
        G[..., :M, M] = U
        G[..., M, :M] = U
        G[..., M, M] = P
        G[..., M + 1 :, :M] = R
        G[..., :M, M + 1 :] = R.transpose(-1, -2)
        G[..., M + 1 :, M] = S
        G[..., M, M + 1 :] = S
        G[..., M + 1 :, M + 1 :] = Q
        z = (_psd_cholesky(G) @ eps[..., None]).squeeze(-1)
        return z[..., M + 1 :], z[..., :M], z[..., M]

    def mirror_step(self, Q, R, S, U, P, v, eps, chi2, t=0.0, P0=None):
        """The mirroring step after a learning step (docs/extensions.md section 4): f <- (1 - c_F) f +
        (eta_F / sqrt D) yhat_xi xi with c_F = eta_F kappa_F / D, for the fields (lambda, nu, phi) of xi
        (eps (R_, r), ordered as in :meth:`fields`) and |xi|^2 = |eps|^2 + chi2; with mirror_norm, f
        then rescaled to |f|^2 / D = P0. Returns (S, U, P)."""
        hp = self.hyper
        eta_F = float(hp.mirror_rate(t))
        if eta_F == 0.0:
            return S, U, P
        D = self.D
        lam, nu, phi = self.fields_of(Q, R, S, U, P, eps)
        a = eta_F * (v * self.g.g(lam)).sum(-1)  # eta_F yhat_xi
        k = 1.0 - eta_F * hp.kappa_F / D
        S = k * S + (a / D)[..., None] * lam
        U = k * U + (a / D)[..., None] * nu
        P = (k * k) * P + (2.0 * k / D) * a * phi + (a * a / D**2) * ((eps * eps).sum(-1) + chi2)
        if hp.mirror_norm:
            scale = torch.sqrt(P0 / P)
            S, U, P = S * scale[..., None], U * scale[..., None], P0.expand_as(P).clone()
        return S, U, P

    def _rates(self, t):
        """(eta, eta_v, c = eta kappa / D) at time t = step / D."""
        eta, eta_v = (float(r) for r in self.hyper.rates(t))
        return eta, eta_v, eta * self.hyper.weight_decay / self.D

    def __call__(self, Q, R, S, v, eps, chi2, zeta, t=0.0, U=None, P=None):
        """One step with one sample: eps (R_, r), chi2 (R_,) ~ chi^2_{D-r}, zeta (R_,); t = step / D.
        U (R_, M) and P (R_,): their current values when they are state (mirroring)."""
        eta, eta_v, c = self._rates(t)
        D = self.D
        if U is None:
            lam, nu, phi = self.fields(Q, R, S, eps)
            U, P = self.U, self.P
        else:
            lam, nu, phi = self.fields_of(Q, R, S, U, P, eps)
        up = self.rule.local_update(lam, nu, zeta, v=v, v_star=self.v_star, S=S, b=self.b,
                                    sigma=self.sigma, sigma_F=self.sigma_F, g=self.g)
        alpha, delta = up.alpha, up.delta
        if not torch.is_tensor(alpha):
            alpha = torch.zeros_like(phi)
        a = alpha[..., None]
        xi_lam = lam + a * S
        xi_nu = nu + a * U
        xi_phi = phi + alpha * P
        xp2 = (eps * eps).sum(-1) + chi2 + 2.0 * alpha * phi + alpha * alpha * P  # |xp|^2
        k = 1.0 - c
        dxi = delta[..., :, None] * xi_lam[..., None, :]
        Q = (k * k) * Q - (k * eta / D) * (dxi + dxi.transpose(-1, -2)) \
            + (eta * eta / D**2) * xp2[..., None, None] * delta[..., :, None] * delta[..., None, :]
        R = k * R - (eta / D) * delta[..., :, None] * xi_nu[..., None, :]
        S = k * S - (eta / D) * delta * xi_phi[..., None]
        if self.train_second_layer:
            v = v - (eta_v / D) * up.e_out[..., None] * up.h
        return Q, R, S, v

    def batch_step(self, Q, R, S, v, eps, W, zeta, t=0.0, U=None, P=None):
        """One step with B samples: eps (R_, B, r), W (R_, B, B) the Gram matrix of the inputs' parts
        orthogonal to the r vectors (Wishart(D - r, I_B)), zeta (R_, B); t = step / D. U (R_, M) and
        P (R_,): their current values when they are state (mirroring)."""
        eta, eta_v, c = self._rates(t)
        D, B = self.D, eps.shape[-2]
        per = lambda a, nd: a if a is None or a.ndim <= nd else a[:, None]  # noqa: E731  (per-replica constants)
        if U is None:
            lam, nu, phi = self.fields(Q[:, None], R[:, None], S[:, None], eps, sample_axis=True)  # (R_, B, ...)
            U, P = per(self.U, 1), per(self.P, 0)
        else:
            lam, nu, phi = self.fields_of(Q[:, None], R[:, None], S[:, None], U[:, None], P[:, None], eps,
                                          sample_axis=True)
            U, P = U[:, None], P[:, None]
        v_star, b = per(self.v_star, 1), per(self.b, 1)
        up = self.rule.local_update(lam, nu, zeta, v=v[:, None], v_star=v_star, S=S[:, None], b=b,
                                    sigma=self.sigma, sigma_F=self.sigma_F, g=self.g)
        alpha, delta = up.alpha, up.delta
        if not torch.is_tensor(alpha):
            alpha = torch.zeros_like(phi)
        a = alpha[..., None]
        xi_lam = lam + a * S[:, None]
        xi_nu = nu + a * U
        xi_phi = phi + alpha * P
        P2 = P if P.ndim == 0 else P[..., None]
        G = eps @ eps.transpose(-1, -2) + W + alpha[..., None, :] * phi[..., :, None] + alpha[..., :, None] * phi[..., None, :] \
            + P2 * alpha[..., :, None] * alpha[..., None, :]  # xp_s . xp_s'
        k = 1.0 - c
        dxi = delta.transpose(-1, -2) @ xi_lam  # sum_s delta_s xi_s^T
        Q = (k * k) * Q - (k * eta / (D * B)) * (dxi + dxi.transpose(-1, -2)) \
            + (eta * eta / (D * D * B * B)) * delta.transpose(-1, -2) @ G @ delta
        R = k * R - (eta / (D * B)) * delta.transpose(-1, -2) @ xi_nu
        S = k * S - (eta / (D * B)) * (delta * xi_phi[..., None]).sum(-2)
        if self.train_second_layer:
            v = v - (eta_v / (D * B)) * (up.e_out[..., None] * up.h).sum(-2)
        return Q, R, S, v


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


def _check_times(t, D):
    t = np.asarray(t, dtype=float).ravel()
    if t.size < 1 or not np.all(np.isfinite(t)) or t[0] < 0 or np.any(np.diff(t) <= 0):
        raise ValueError("t: must be a non-empty, finite, strictly increasing array of times >= 0 (steps / D)")
    steps = np.round(t * D).astype(np.int64)
    if np.any(np.diff(steps) <= 0):
        raise ValueError(f"t: two requested times round to the same step at D={D} (steps = round(t D)); space them by more than 1/D")
    return t, steps


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
            self.conc_w = (0.5 * (self.D - r - torch.arange(self.batch, device=device, dtype=dtype))).expand(block, replicas, -1)
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
        self._run(n, lambda j, Q, R, S, v, t, U, P: self.step.batch_step(Q, R, S, v, eps[j], W[j], zeta[j], t=t, U=U, P=P),
                  m_eps, m_chi2)

    def state(self):
        parts = (self.Q, self.R, self.S, self.v) + ((self.U, self.P) if self.mirror else ())
        return tuple(a.detach().to("cpu", torch.float64).numpy().copy() for a in parts)

    def close(self):
        torch.set_num_threads(self.threads)


class _NumbaChain:
    """The compiled CPU backend: :func:`simulate._reduced_kernel.chain_block` on chunks of steps, with the
    rule's compiled update, its blocks and threads from :class:`simulate._reduced_kernel.ChunkSampler` (float64)."""

    def __init__(self, rule, hyper: HyperParams, state, *, D, T, U, P, v_star, b, replicas, r, seed, threads, step0=0):
        K = state[0].shape[-1]
        M = np.shape(T)[-1]
        update, why = update_view(rule, hyper.g, K, M)
        if update is None:
            raise ValueError(f"backend: 'numba' needs a compiled view of rule {rule.label} with activation {hyper.g.name!r}: "
                             f"{why}")
        gk = _internal.compiled.activation_code(hyper.g)
        self.update = update
        self.Q, self.R, self.S, self.v = (np.ascontiguousarray(a, dtype=np.float64) for a in state)
        A11T, Binv = _fixed_square_root(T, U, P)
        U, P, v_star = (np.asarray(a, dtype=np.float64) for a in (U, P, v_star))
        b = np.zeros(K) if b is None else np.asarray(b, dtype=np.float64)
        # constants shared by all replicas (leading axis 1) or per replica (leading axis replicas)
        per = any(a.ndim > nd for a, nd in ((A11T, 2), (U, 1), (P, 0), (v_star, 1), (b, 1)))
        C = replicas if per else 1
        fix = lambda a, tail: np.array(np.broadcast_to(a, (C,) + tail), dtype=np.float64, order="C")  # noqa: E731
        self.consts = (fix(A11T, (M + 1, M + 1)), fix(Binv, (M + 1, M + 1)), fix(U, (M,)), fix(P, ()),
                       fix(v_star, (M,)), fix(b, (K,)))
        self.hyper, self.D, self.step_index = hyper, int(D), int(step0)
        self.params = (hyper.sigma, hyper.sigma_F, hyper.weight_decay, gk, hyper.train_second_layer)
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.sampler = _reduced_kernel.ChunkSampler(seed, replicas, r, D, noise=hyper.sigma != 0, threads=threads,
                                                    batch=hyper.batch)
        per_step = hyper.batch * (r + 3)
        self.chunk = int(np.clip(_NUMBA_BLOCK_ELEMENTS // (self.sampler.B * per_step), 1, _NUMBA_MAX_CHUNK_STEPS))

    def advance(self, n):
        """n <= self.chunk steps: the threads advance the blocks of replicas, drawing inside the kernel."""
        t = (self.step_index + np.arange(n)) / self.D
        etas, etas_v = (np.ascontiguousarray(np.broadcast_to(np.asarray(r, dtype=np.float64), (n,))).copy()
                        for r in self.hyper.rates(t))
        sp = self.sampler

        def block(j):
            _reduced_kernel.chain_block(self.update, j, sp.B, sp.key, self.step_index, n, sp.shapes, sp.noise, self.Q,
                                        self.R, self.S, self.v, *self.consts, float(self.D), etas, etas_v, *self.params)

        sp.map_blocks(block)
        self.step_index += n

    def state(self):
        return self.Q.copy(), self.R.copy(), self.S.copy(), self.v.copy()

    def close(self):
        self.sampler.close()


def _numba_ok(rule, g, K, M) -> bool:
    return _reduced_kernel.HAVE_NUMBA and update_view(rule, g, K, M)[0] is not None


def _resolve_backend(backend, device, dtype, rule, g, K, M, mirror=False) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend: must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        ok = device.type == "cpu" and dtype == torch.float64 and not mirror and _numba_ok(rule, g, K, M)
        return "numba" if ok else "torch"
    if backend == "numba":
        if mirror:
            raise ValueError("backend: 'numba' does not run feedback mirroring (eta_F > 0) yet; use backend='torch'")
        if not _reduced_kernel.HAVE_NUMBA:
            raise ValueError("backend: 'numba' requested but numba is not importable")
        if device.type != "cpu":
            raise ValueError(f"backend: 'numba' runs on the CPU, got device {str(device)!r} (use backend='torch')")
        if dtype != torch.float64:
            raise ValueError(f"backend: 'numba' computes in float64, got dtype {dtype} (use backend='torch')")
        if _internal.compiled.activation_code(g) is None:
            raise ValueError(f"backend: 'numba' supports the activations {sorted(_internal.compiled.ACTIVATION_CODES)}, "
                             f"got {g.name!r} (use backend='torch')")
        update, why = update_view(rule, g, K, M)
        if update is None:
            raise ValueError(f"backend: 'numba' needs a compiled view of rule {rule.label}: {why} (use backend='torch')")
    return backend


def reduced_chain(state0, rule, t, params: HyperParams | None = None, *, D: int, replicas: int = 1, device=None,
                  dtype=torch.float64, seed: int = 0, block: int = 256, progress: bool = False, backend: str = "auto",
                  threads: int | None = None, **options):
    """Run the exact order-parameter chain; return raw records (numpy, float64).

    ``state0`` is a :class:`theory.OrderParams` or any object with Q, R, S, v, T, U, P, v_star, b
    (Q, R, S, v may carry a leading replica axis: per-replica initial conditions). ``t`` are the
    recording times in steps / D (steps = round(t D)); the chain starts at step round(t[0] D)
    from state0. ``params`` / ``**options``: a :class:`theory.HyperParams` and its fields and the
    rule's options as keyword arguments, as :func:`theory.integrate`. ``backend``: "auto" (default:
    "numba" on the CPU in float64 for rules with a compiled view and the activations erf, tanh,
    relu, linear; "torch" otherwise), "numba" (compiled kernel, CPU, float64) or "torch" (reference,
    any rule, device and dtype; ``block`` steps of draws at a time). ``threads``: threads of the
    numba backend (default: the CPUs this process may use); results do not depend on it. Returns a
    dict with t, steps, Q (R_, n, K, K), R, S, v, U (R_, n, M) and P (R_, n) under mirroring (else None),
    status, message, wall_s, replica_steps, backend. Feedback mirroring (eta_F > 0) runs on the
    torch backend ("auto" picks it).
    """
    where = "reduced"
    rule, hyper = _internal.resolve(rule, params, options, where=where,
                                 extra=_internal.checks.parameters(reduced_chain) + _internal.checks.parameters(run_reduced))
    D = _internal.checks.integer("D", D, where=where)
    K, M = np.shape(state0.R)[-2:]
    r = K + M + 1
    if D < r:
        raise ValueError(f"D: must be >= K + M + 1 = {r} (the number of vectors whose Gram matrix is tracked), got {D}")
    if hyper.batch > 1 and D < r + hyper.batch:
        raise ValueError(f"D: {hyper.batch} samples per step need D >= K + M + 1 + batch = {r + hyper.batch}, got {D}")
    replicas = _internal.checks.integer("replicas", replicas, where=where, min=1)
    if "b" in rule.reads and getattr(state0, "b", None) is None:
        raise ValueError(f"rule {rule.name!r} needs the feedback vector b in the initial state")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: must be torch.float32 or torch.float64, got {dtype!r}")
    if threads is not None:
        threads = _internal.checks.integer("threads", threads, where=where, min=1)
    from ._init import resolve_device

    device = resolve_device(device)
    mirror = hyper.mirroring
    backend = _resolve_backend(backend, device, dtype, rule, hyper.g, K, M, mirror)
    t, steps = _check_times(t, D)

    consts = dict(D=D, T=state0.T, U=state0.U, P=state0.P, v_star=state0.v_star, b=getattr(state0, "b", None))
    if backend == "numba":
        state = [a.numpy() for a in _broadcast_state(state0, replicas, torch.device("cpu"), torch.float64)]
        chain = _NumbaChain(rule, hyper, state, replicas=replicas, r=r, seed=seed, threads=threads, step0=steps[0], **consts)
    else:
        step = ReducedStep(rule, hyper, device=device, dtype=dtype, **consts)
        chain = _TorchChain(step, _broadcast_state(state0, replicas, device, dtype, mirror), replicas=replicas, r=r, seed=seed,
                            device=device, dtype=dtype, block=block, step0=steps[0])

    names = "QRSvUP" if mirror else "QRSv"
    rec = {k: [] for k in names}
    rec_steps = []

    def record(state, step):
        for k, a in zip(names, state):
            rec[k].append(a)
        rec_steps.append(int(step))

    status, message = 0, "finished"
    bar = None
    total = int(steps[-1] - steps[0])
    if progress and total > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"reduced {rule.label} D={D}", unit="step", unit_scale=True, leave=False)
    t0 = time.perf_counter()
    done = 0
    try:
        record(chain.state(), steps[0])
        for i in range(1, len(steps)):
            todo = int(steps[i] - steps[i - 1])
            while todo > 0:
                n = min(chain.chunk, todo)
                chain.advance(n)
                todo -= n
                done += n
                if bar is not None:
                    bar.update(n)
            state = chain.state()
            why = _internal.divergence.why_replicas(np.diagonal(state[0], axis1=-2, axis2=-1), state[2], state[3])
            if why is not None:
                status, message = -1, f"diverged between t = {t[i - 1]:.6g} and t = {t[i]:.6g} (steps/D): {why}"
                break
            record(state, steps[i])
    except KeyboardInterrupt:
        # keep the state where it stopped (a chunk boundary: every replica at the same step)
        now = int(steps[0]) + done
        if rec_steps and now > rec_steps[-1]:
            record(chain.state(), now)
        status, message = 1, f"interrupted at t = {now / D:.6g} (steps/D); its state is the last record"
    finally:
        chain.close()
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    n = len(rec["Q"])
    out = {k: np.stack(rec[k], axis=1) for k in names}
    if not mirror:
        out.update(U=None, P=None)
    out["Q"] = 0.5 * (out["Q"] + np.swapaxes(out["Q"], -1, -2))
    rs = np.asarray(rec_steps, dtype=np.int64)
    t_rec = t[:n].copy()
    if n and rs[-1] != steps[n - 1]:  # the state where an interrupt stopped the chain
        t_rec[-1] = rs[-1] / D
    return dict(t=t_rec, steps=rs, status=status, message=message, wall_s=wall,
                replica_steps=done * replicas, rule=rule, hyper=hyper, D=D, backend=backend, **out)


def empirical_eg(Q, R, S, v, T, U, P, v_star, *, n_test: int, g="erf", rng: np.random.Generator):
    """1/2 mean over n_test fresh fields z ~ N(0, Omega) of (yhat - sum_m v*_m g(nu_m))^2.

    Q (..., K, K), R (..., K, M), v (..., K) with T, v_star broadcasting. This is the reduced
    engine's eg_test: an independent Monte Carlo estimate from the recorded order parameters
    (fresh fields for every record, not a fixed held-out input set, which does not exist in
    order-parameter space). It checks the closed-form eg, with statistical error of order
    eg / sqrt(n_test).
    """
    g = theory.activation(g)
    Q, R, T, v, v_star = (np.asarray(a, dtype=np.float64) for a in (Q, R, T, v, v_star))
    K, M = R.shape[-2:]
    lead = np.broadcast_shapes(Q.shape[:-2], R.shape[:-2], v.shape[:-1])
    per = max(1, 2_000_000 // (n_test * (K + M)))  # states per chunk (memory)
    if int(np.prod(lead)) > per:
        Qf, Rf = np.broadcast_to(Q, lead + (K, K)).reshape(-1, K, K), np.broadcast_to(R, lead + (K, M)).reshape(-1, K, M)
        vf = np.broadcast_to(v, lead + (K,)).reshape(-1, K)
        Tf, vsf = np.broadcast_to(T, lead + (M, M)).reshape(-1, M, M), np.broadcast_to(v_star, lead + (M,)).reshape(-1, M)
        parts = [empirical_eg(Qf[i:i + per], Rf[i:i + per], None, vf[i:i + per], Tf[i:i + per], None, None, vsf[i:i + per],
                              n_test=n_test, g=g, rng=rng) for i in range(0, len(Qf), per)]
        return np.concatenate(parts).reshape(lead)
    C = np.empty(lead + (K + M, K + M))
    C[..., :K, :K] = Q
    C[..., :K, K:] = R
    C[..., K:, :K] = np.swapaxes(R, -1, -2)
    C[..., K:, K:] = T
    w, V = np.linalg.eigh(C)
    A = V * np.sqrt(np.clip(w, 0.0, None))[..., None, :]
    z = np.einsum("...ij,...sj->...si", A, rng.standard_normal(lead + (n_test, K + M)))
    yhat = (np.broadcast_to(v, lead + (K,))[..., None, :] * g.g(z[..., :K])).sum(-1)
    y = (np.broadcast_to(v_star, lead + (M,))[..., None, :] * g.g(z[..., K:])).sum(-1)
    return 0.5 * ((yhat - y) ** 2).mean(-1)


def run_reduced(init, rule, t, params: HyperParams | None = None, *, replicas: int = 1, independent_init: bool = False,
                device=None, dtype=torch.float64, seed: int = 0, n_test: int | None = None, D: int | None = None,
                progress: bool = False, throw: bool = False, backend: str = "auto", threads: int | None = None, **options):
    """Simulate with the exact order-parameter sampler; returns a :class:`simulate.SimulationResult`.

    ``init`` is a :class:`simulate.Initialisation` (its measured initial order parameters are
    used, as the full simulation's; with ``independent_init`` each replica gets its own student)
    or a :class:`theory.OrderParams` together with ``D``. ``params`` / ``**options`` as
    :func:`theory.integrate` (an unknown keyword is an error). Same fields as the full simulation:
    eg from the closed form of the recorded order parameters, angles, and ``eg_test`` the
    Monte Carlo estimate of :func:`empirical_eg` over ``n_test`` fresh fields per record
    (n_test=0 gives nan; the default is 0 when the activation's eps_g has a closed form, where the
    estimate adds nothing to eg, else 1000). Default dtype float64 (increments are O(1/D)). ``backend`` and
    ``threads`` as :func:`reduced_chain` (default: the compiled numba kernel on the CPU).
    """
    from ._result import SimulationResult

    if n_test is not None:
        n_test = _internal.checks.integer("n_test", n_test, where="run_reduced", min=0)
    if isinstance(init, OrderParams):
        if D is None:
            raise ValueError("D: the dimension is needed when init is an OrderParams")
        state0 = init
    else:
        D = init.D if D is None else D
        if D != init.D:
            raise ValueError(f"D: {D} differs from init.D = {init.D}")
        state0 = _stacked_state(init.order_params(replicas, independent=independent_init)) if independent_init \
            else init.order_params(replicas)
    out = reduced_chain(state0, rule, t, params, D=D, replicas=replicas, device=device, dtype=dtype, seed=seed,
                        progress=progress, backend=backend, threads=threads, **options)
    hyper = out["hyper"]
    if n_test is None:
        n_test = 0 if hyper.g.i2 is not None else 1000
    constants = dict(T=np.asarray(state0.T), U=np.asarray(state0.U), P=state0.P, v_star=np.asarray(state0.v_star),
                     b=None if state0.b is None else np.asarray(state0.b))
    if n_test > 0:
        rng = np.random.default_rng([int(seed), 0x7E57])
        eg_test = np.stack([empirical_eg(out["Q"][:, i], out["R"][:, i], out["S"][:, i], out["v"][:, i], constants["T"],
                                         constants["U"], constants["P"], constants["v_star"], n_test=n_test, g=hyper.g, rng=rng)
                            for i in range(len(out["t"]))], axis=1)
    else:
        eg_test = np.full(out["Q"].shape[:2], np.nan)
    params = dict(engine="reduced", **_internal.run_params(out["rule"], hyper),
                  K=int(np.shape(state0.R)[-2]), M=int(np.shape(state0.R)[-1]), D=int(D),
                  replicas=int(replicas), independent_init=bool(independent_init), seed=int(seed),
                  dtype=str(dtype).replace("torch.", ""), device=str(device), n_test=n_test, backend=out["backend"],
                  eg_test="Monte Carlo over n_test fresh fields z ~ N(0, Omega) per record",
                  wall_s=out["wall_s"], replica_steps=out["replica_steps"], steps=[int(s) for s in out["steps"]],
                  samples=[int(s) * hyper.batch for s in out["steps"]], units={"t": "steps / D", "angles": "degrees"},
                  provenance=theory.provenance(str(device)))
    res = SimulationResult.from_records(out["t"], out["Q"], out["R"], out["S"], out["v"], constants, eg_test, params,
                                        status=out["status"], message=out["message"], U=out["U"], P=out["P"])
    if throw and out["status"] < 0:
        raise DivergenceError(f"run (reduced): {out['message']}", res)
    return res


def _stacked_state(states):
    """Per-replica initial conditions from a list of OrderParams (shared constants)."""
    import types

    s0 = states[0]
    return types.SimpleNamespace(Q=np.stack([s.Q for s in states]), R=np.stack([s.R for s in states]),
                                 S=np.stack([s.S for s in states]), v=np.stack([s.v for s in states]),
                                 T=s0.T, U=s0.U, P=s0.P, v_star=s0.v_star, b=s0.b)


def simulate_reduced(spec):
    """Engine "reduced" for :func:`simulate.run`: the exact chain from the weights' measured overlaps.

    Uses spec.dtype (run's default for this engine is float64), spec.device, spec.threads (numba
    threads; the backend is chosen as backend="auto" of :func:`reduced_chain`), and the data stream
    seed ``derived_seed(spec.seed, STREAM_DATA)``; eg_test is :func:`empirical_eg` over
    spec.n_test fresh fields per record (seed stream STREAM_TEST), or None when n_test = 0.
    """
    from ._engine import STREAM_DATA, STREAM_TEST, Records, derived_seed

    w = spec.weights
    if w.shared:
        state0 = w.order_params(0)
    else:
        state0 = _stacked_state(w.order_params())
    D = w.D
    out = reduced_chain(state0, spec.rule, spec.steps / D, spec.hyper, D=D, replicas=w.replicas, device=spec.device,
                        dtype=spec.dtype, seed=derived_seed(spec.seed, STREAM_DATA), progress=spec.progress,
                        threads=spec.threads)
    eg_test = None
    if spec.n_test > 0:
        rng = np.random.default_rng(derived_seed(spec.seed, STREAM_TEST))
        eg_test = np.stack([empirical_eg(out["Q"][:, i], out["R"][:, i], out["S"][:, i], out["v"][:, i], state0.T, state0.U,
                                         state0.P, state0.v_star, n_test=spec.n_test, g=spec.hyper.g, rng=rng)
                            for i in range(len(out["t"]))], axis=1)
    return Records(steps=out["steps"], Q=out["Q"], R=out["R"], S=out["S"], v=out["v"], eg_test=eg_test,
                   status=out["status"], message=out["message"], U=out["U"], P=out["P"])


def _register():
    from ._engine import register_engine

    register_engine("reduced", simulate_reduced)


_register()
