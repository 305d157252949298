"""Compiled CPU kernel (numba) of the exact order-parameter chain of :mod:`simulate._reduced`.

The torch implementation :class:`simulate._reduced.ReducedStep` is the reference (and the CUDA
path). On the CPU its cost is torch's per-operation overhead on tensors of a few elements; this
module runs a whole chunk of steps for a block of 32 replicas in one compiled call, in float64,
the replicas of a block interleaved (structure of arrays) and the blocks spread over threads.
The kernel knows no rule: it receives the rule's compiled ``update`` (generated from the rule's
one definition, :func:`theory.compiled_rule`) as a first-class function, so it is compiled once
for every rule. The tests hold one kernel step against ``ReducedStep`` for every registered rule,
variant and activation.

Per step and replica (fields ordered (nu, phi, lambda) as in _reduced, eps ~ N(0, I_r)):

    (nu, phi) = A11 eps_1,   L21 = [R, S] Binv,   L22 L22^T = Q - L21 L21^T (PSD Cholesky),
    lambda = L21 eps_1 + L22 eps_2,
    (delta, alpha, e_out, h) = the rule's compiled update(lambda, nu, zeta; v, v*, S, b, sigma, sigma_F, g),
    xi = (lambda + alpha S, nu + alpha U, phi + alpha P),  |xp|^2 = |eps|^2 + chi2 + 2 alpha phi + alpha^2 P,
    Q' = (1-c)^2 Q - (1-c)(eta/D)(delta xi_lam^T + xi_lam delta^T) + (eta^2/D^2) |xp|^2 delta delta^T,
    R' = (1-c) R - (eta/D) delta xi_nu^T,   S' = (1-c) S - (eta/D) delta xi_phi,
    v' = v - (eta_v/D) e_out h            (unchanged when the second layer is frozen),

with c = eta kappa / D. The random numbers are drawn outside (numpy, see
:class:`ChunkSampler`) and passed in, so a run does not depend on the number of threads.
"""

from __future__ import annotations

import concurrent.futures
import math
from typing import NamedTuple

import numpy as np

try:
    import numba
    from numba import prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency, but stay importable without it
    numba = None
    prange = range
    HAVE_NUMBA = False

__all__ = ["HAVE_NUMBA", "chain_block", "ChunkSampler", "Draws", "RNG_REPLICA_BLOCK"]

#: replicas per block: one numpy Generator and one kernel work item each (fixed, so that the
#: draws do not depend on the thread count)
RNG_REPLICA_BLOCK = 32

_PIVOT_TOL = 1e-13  # as simulate._reduced._psd_cholesky


def _jit(*args, **kw):
    def deco(fn):
        return numba.njit(*args, cache=True, **kw)(fn) if HAVE_NUMBA else fn

    return deco


@_jit(inline="never")
def _advance_block(update, bi, eb, Q, R, S, v, eps, gam, offd, zeta, A11T, Binv, U, P, v_star, b, D, etas, etas_v, sigma,
                   sigma_F, kappa, gk, train_v):
    """Replicas bi*B .. bi*B + B - 1 of :func:`chain_block`, with the draws eps[eb], gam[eb], offd[eb], zeta[eb].
    State and constants are held along the last axis of scratch arrays (one column per replica) and
    every loop runs over the replicas innermost, so that their independent arithmetic vectorises and
    interleaves. With one sample per step (Bs = 1) the arithmetic is, operation for operation, the
    single-sample step of the module docstring."""
    nR, K = S.shape
    M = R.shape[2]
    n = eps.shape[1]
    B = eps.shape[3]
    Bs = gam.shape[2]  # samples per step (mini-batch)
    M1 = M + 1
    r = M1 + K
    b0 = bi * B
    nv = min(B, nR - b0)
    per = 1 if A11T.shape[0] > 1 else 0
    noisy = zeta.shape[3] > 0
    q = np.empty((K, K, B))
    rr = np.empty((K, M, B))
    s = np.empty((K, B))
    vv = np.empty((K, B))
    Ab = np.empty((M1, M1, B))
    Bb = np.empty((M1, M1, B))
    Ub = np.empty((M, B))
    Pb = np.empty(B)
    vsb = np.empty((M, B))
    bb_ = np.empty((K, B))
    for t in range(nv):
        ct = (b0 + t) * per
        for k in range(K):
            for l in range(K):
                q[k, l, t] = Q[b0 + t, k, l]
            for m in range(M):
                rr[k, m, t] = R[b0 + t, k, m]
            s[k, t] = S[b0 + t, k]
            vv[k, t] = v[b0 + t, k]
            bb_[k, t] = b[ct, k]
        for a in range(M1):
            for a2 in range(M1):
                Ab[a, a2, t] = A11T[ct, a, a2]
                Bb[a, a2, t] = Binv[ct, a, a2]
        for m in range(M):
            Ub[m, t] = U[ct, m]
            vsb[m, t] = v_star[ct, m]
        Pb[t] = P[ct]
    yv = np.empty((Bs, M1, B))  # (nu, phi) of each sample; phi becomes xi_phi after the update
    L21 = np.empty((K, M1, B))
    L22 = np.zeros((K, K, B))
    Lw = np.empty((Bs, Bs, B))  # Bartlett factor of the Wishart Gram matrix of the inputs' orthogonal parts
    col = np.empty((K, B))
    lam = np.empty((Bs, K, B))
    xl = np.empty((Bs, K, B))
    delta = np.empty((Bs, K, B))
    h = np.empty((Bs, K, B))
    res = np.empty((Bs, 3, B))  # alpha, e_out, e of each sample and replica
    no_noise = np.zeros(B)
    scale = np.empty(B)
    tmp = np.empty(B)
    G = np.empty((Bs, Bs, B))  # xp_s . xp_s'
    acc = np.empty(B)
    for j in range(n):
        eta = etas[j]
        eta_v = etas_v[j]
        c = eta * kappa / D
        k1 = 1.0 - c
        a_cross = k1 * eta / (D * Bs)
        a_lin = eta / (D * Bs)
        a_sq = eta * eta / (D * D * Bs * Bs)
        a_v = eta_v / (D * Bs)
        # L21 = [R, S] Binv
        for k in range(K):
            for a in range(M1):
                for t in range(nv):
                    L21[k, a, t] = s[k, t] * Bb[M, a, t]
                for m in range(M):
                    for t in range(nv):
                        L21[k, a, t] += rr[k, m, t] * Bb[m, a, t]
        # L22 = PSD Cholesky of Q - L21 L21^T (a zero column where a pivot vanishes)
        for t in range(nv):
            scale[t] = 1e-300
        for k in range(K):
            for t in range(nv):
                tmp[t] = q[k, k, t]
            for a in range(M1):
                for t in range(nv):
                    tmp[t] -= L21[k, a, t] * L21[k, a, t]
            for t in range(nv):
                scale[t] = max(scale[t], abs(tmp[t]))
        for jj in range(K):
            for ii in range(jj, K):
                for t in range(nv):
                    col[ii, t] = q[ii, jj, t]
                for a in range(M1):
                    for t in range(nv):
                        col[ii, t] -= L21[ii, a, t] * L21[jj, a, t]
                for p in range(jj):
                    for t in range(nv):
                        col[ii, t] -= L22[ii, p, t] * L22[jj, p, t]
            for ii in range(jj, K):
                for t in range(nv):
                    d = col[jj, t]
                    ok = d > _PIVOT_TOL * scale[t]
                    L22[ii, jj, t] = col[ii, t] / math.sqrt(d if ok else 1.0) if ok else 0.0
        for bs in range(Bs):
            o = bs * r
            # (nu, phi) = A11 eps_1
            for a in range(M1):
                for t in range(nv):
                    yv[bs, a, t] = 0.0
                for a2 in range(M1):
                    for t in range(nv):
                        yv[bs, a, t] += eps[eb, j, o + a2, t] * Ab[a2, a, t]
            # lambda = L21 eps_1 + L22 eps_2
            for k in range(K):
                for t in range(nv):
                    lam[bs, k, t] = 0.0
                for a in range(M1):
                    for t in range(nv):
                        lam[bs, k, t] += L21[k, a, t] * eps[eb, j, o + a, t]
                for p in range(k + 1):
                    for t in range(nv):
                        lam[bs, k, t] += L22[k, p, t] * eps[eb, j, o + M1 + p, t]
            update(lam[bs], yv[bs], zeta[eb, j, bs] if noisy else no_noise, vv, vsb, s, bb_, nv, 1, sigma, sigma_F, gk,
                   delta[bs], h[bs], res[bs])
        # the Gram matrix of the presynaptic inputs: xp_s . xp_s' = x_s . x_s' + alpha_s' phi_s + alpha_s phi_s'
        # + alpha_s alpha_s' P, with x_s . x_s' = eps_s . eps_s' + W_ss' and W ~ Wishart(D - r, I) = Lw Lw^T
        for bs in range(Bs):
            for t in range(nv):
                Lw[bs, bs, t] = math.sqrt(2.0 * gam[eb, j, bs, t])
            for b2 in range(bs):
                for t in range(nv):
                    Lw[bs, b2, t] = offd[eb, j, bs * (bs - 1) // 2 + b2, t]
        for bs in range(Bs):
            for b2 in range(bs + 1):
                for t in range(nv):
                    al, al2 = res[bs, 0, t], res[b2, 0, t]
                    if b2 == bs:  # chi^2 of the diagonal, as drawn: 2 gamma (+ the Bartlett off-diagonal squares)
                        w = 2.0 * gam[eb, j, bs, t]
                        for k3 in range(bs):
                            w += Lw[bs, k3, t] * Lw[bs, k3, t]
                        G[bs, bs, t] = w + 2.0 * al * yv[bs, M, t] + al * al * Pb[t]
                    else:
                        w = 0.0
                        for k3 in range(b2 + 1):
                            w += Lw[bs, k3, t] * Lw[b2, k3, t]
                        G[bs, b2, t] = w + al2 * yv[bs, M, t] + al * yv[b2, M, t] + al * al2 * Pb[t]
                for a in range(r):
                    for t in range(nv):
                        G[bs, b2, t] += eps[eb, j, bs * r + a, t] * eps[eb, j, b2 * r + a, t]
                if b2 != bs:
                    for t in range(nv):
                        G[b2, bs, t] = G[bs, b2, t]
        # the presynaptic overlaps xi of each sample
        for bs in range(Bs):
            for t in range(nv):
                yv[bs, M, t] += res[bs, 0, t] * Pb[t]  # xi_phi
            for k in range(K):
                for t in range(nv):
                    xl[bs, k, t] = lam[bs, k, t] + res[bs, 0, t] * s[k, t]
        for k in range(K):
            for l in range(k, K):
                for t in range(nv):
                    acc[t] = 0.0
                for bs in range(Bs):
                    for t in range(nv):
                        acc[t] += delta[bs, k, t] * xl[bs, l, t] + delta[bs, l, t] * xl[bs, k, t]
                for t in range(nv):
                    tmp[t] = 0.0
                for bs in range(Bs):
                    for b2 in range(Bs):
                        for t in range(nv):
                            tmp[t] += a_sq * G[bs, b2, t] * delta[bs, k, t] * delta[b2, l, t]
                for t in range(nv):
                    qn = (k1 * k1) * q[k, l, t] - a_cross * acc[t] + tmp[t]
                    q[k, l, t] = qn
                    q[l, k, t] = qn
            for m in range(M):
                for t in range(nv):
                    acc[t] = 0.0
                for bs in range(Bs):
                    for t in range(nv):
                        acc[t] += a_lin * delta[bs, k, t] * (yv[bs, m, t] + res[bs, 0, t] * Ub[m, t])
                for t in range(nv):
                    rr[k, m, t] = k1 * rr[k, m, t] - acc[t]
            for t in range(nv):
                acc[t] = 0.0
            for bs in range(Bs):
                for t in range(nv):
                    acc[t] += a_lin * delta[bs, k, t] * yv[bs, M, t]
            for t in range(nv):
                s[k, t] = k1 * s[k, t] - acc[t]
        if train_v:
            for k in range(K):
                for t in range(nv):
                    acc[t] = 0.0
                for bs in range(Bs):
                    for t in range(nv):
                        acc[t] += a_v * res[bs, 1, t] * h[bs, k, t]
                for t in range(nv):
                    vv[k, t] = vv[k, t] - acc[t]
    for t in range(nv):
        for k in range(K):
            for l in range(K):
                Q[b0 + t, k, l] = q[k, l, t]
            for m in range(M):
                R[b0 + t, k, m] = rr[k, m, t]
            S[b0 + t, k] = s[k, t]
            v[b0 + t, k] = vv[k, t]


def _chain_block(update, bi, Q, R, S, v, eps, gam, offd, zeta, A11T, Binv, U, P, v_star, b, D, etas, etas_v, sigma,
                 sigma_F, kappa, gk, train_v):
    """Advance the replicas of block bi (bi*B .. bi*B + B - 1, the last block possibly partial) by
    n = eps.shape[1] steps of the chain, in place; releases the GIL, so Python threads run blocks
    in parallel, each drawing its numbers and using them while they are hot in cache.

    Q (nR, K, K), R (nR, K, M), S (nR, K), v (nR, K): the state of all replicas (float64, C-contiguous).
    The block's draws, for n steps of Bs samples each: eps (1, n, Bs r, B) standard normals, sample s's
    ordered (nu, phi, lambda) in rows s r .. s r + r - 1, replica bi*B + t reading [..., t];
    gam (1, n, Bs, B) Gamma((D - r - s)/2) variables and offd (1, n, Bs (Bs - 1) / 2, B) standard
    normals: the Bartlett factor of the Wishart(D - r, I_Bs) Gram matrix of the inputs' components
    orthogonal to the r vectors (Bs = 1: chi^2_{D-r} = 2 gam); zeta (1, n, Bs, B) output noise (last
    but one axis 0 when sigma = 0). etas, etas_v (n,): the learning rates of the n steps (schedules).
    Constants with a leading axis of 1 (shared) or nR (per replica): A11T (., M+1, M+1) with
    (nu, phi) = eps_1 @ A11T, Binv (., M+1, M+1) with L21 = [R, S] @ Binv, U (., M), P (.,),
    v_star (., M), b (., K). ``update`` is the rule's compiled update (theory._compiled), gk the
    activation's code, kappa the weight decay. Each replica's arithmetic is the same whichever
    thread runs it.
    """
    _advance_block(update, bi, 0, Q, R, S, v, eps, gam, offd, zeta, A11T, Binv, U, P, v_star, b, D, etas, etas_v, sigma,
                   sigma_F, kappa, gk, train_v)


if HAVE_NUMBA:
    import theory

    UPDATE_TYPE = theory.compiled.UPDATE_TYPE
    _f8, _i8 = numba.float64, numba.int64
    _A = lambda nd: numba.types.Array(_f8, nd, "C")  # noqa: E731
    chain_block = numba.njit(
        numba.types.void(UPDATE_TYPE, _i8, _A(3), _A(3), _A(2), _A(2), _A(4), _A(4), _A(4), _A(4), _A(3), _A(3), _A(2),
                         _A(1), _A(2), _A(2), _f8, _A(1), _A(1), _f8, _f8, _f8, _i8, numba.types.boolean),
        cache=True, nogil=True)(_chain_block)
else:  # pragma: no cover
    chain_block = _chain_block


class Draws(NamedTuple):
    """One chunk's random numbers (see :class:`ChunkSampler`)."""

    eps: np.ndarray
    gam: np.ndarray
    zeta: np.ndarray
    offd: np.ndarray


class ChunkSampler:
    """The random numbers of the numba chain, drawn with numpy in chunks of steps.

    Replicas are split into fixed blocks of B = :data:`RNG_REPLICA_BLOCK`; block j draws from
    its own ``np.random.Generator(SFC64(SeedSequence(seed).spawn(nb)[j]))`` (SFC64: numpy's fastest
    bit generator, ~15% faster normals than PCG64 here, passes PractRand), per chunk of n steps
    and in this order: eps (n, r, Bj) standard normals, gam (n, Bj) ~ Gamma((D - r)/2) (so that
    2 gam ~ chi^2_{D-r}; zero when D = r), and zeta (n, Bj) standard normals when ``noise``
    (Bj = B except for a last partial block). With ``batch`` = Bs > 1 samples per step: eps
    (n, Bs r, Bj), gam (n, Bs, Bj) with Gamma((D - r - s)/2) in column s, then offd
    (n, Bs (Bs - 1)/2, Bj) standard normals (the Bartlett factor of a Wishart(D - r, I_Bs) matrix)
    and zeta (n, Bs, Bj). Blocks are filled by ``threads`` worker threads (numpy releases the GIL
    while filling), and the values do not depend on the number of threads: same seed, same draws.
    """

    def __init__(self, seed: int, replicas: int, r: int, D: int, *, noise: bool, threads: int = 1, batch: int = 1):
        self.R, self.r, self.D, self.noise, self.batch = int(replicas), int(r), int(D), bool(noise), int(batch)
        self.B = B = RNG_REPLICA_BLOCK
        self.nb = nb = -(-self.R // B)
        self.gens = [np.random.Generator(np.random.SFC64(s)) for s in np.random.SeedSequence(int(seed)).spawn(nb)]
        self.shape = 0.5 * (self.D - self.r)
        self.shapes = 0.5 * (self.D - self.r - np.arange(self.batch, dtype=float))
        if self.batch > 1 and self.shapes[-1] <= 0:
            raise ValueError(f"batch: {self.batch} samples per step need D >= K + M + 1 + batch = {self.r + self.batch}, "
                             f"got D = {self.D}")
        self.threads = max(1, int(threads))
        self.pool = concurrent.futures.ThreadPoolExecutor(self.threads) if self.threads > 1 and nb > 1 else None

    def _fill(self, j, eps, gam, zeta, offd):
        """Block j's draws for n steps into the arrays of :meth:`_empty` (without their block axis)."""
        g = self.gens[j]
        nv = min(self.B, self.R - j * self.B)
        n = eps.shape[0]
        if self.batch > 1:
            for a in (eps, gam, zeta, offd):
                a[...] = 0.0
            eps[..., :nv] = g.standard_normal((n, eps.shape[1], nv))
            gam[..., :nv] = g.standard_gamma(self.shapes[:, None], (n, self.batch, nv))
            offd[..., :nv] = g.standard_normal((n, offd.shape[1], nv))
            if self.noise:
                zeta[..., :nv] = g.standard_normal((n, self.batch, nv))
            return
        if nv == self.B:
            g.standard_normal(out=eps)
            if self.shape > 0:
                g.standard_gamma(self.shape, out=gam)
            else:
                gam[...] = 0.0
            if self.noise:
                g.standard_normal(out=zeta)
            return
        eps[...] = 0.0
        gam[...] = 0.0
        eps[:, :, :nv] = g.standard_normal((n, self.r, nv))
        if self.shape > 0:
            gam[:, :nv] = g.standard_gamma(self.shape, (n, nv))
        if self.noise:
            zeta[...] = 0.0
            zeta[:, :nv] = g.standard_normal((n, nv))

    def _empty(self, nb, n):
        Bs, B = self.batch, self.B
        if Bs == 1:
            return Draws(np.empty((nb, n, self.r, B)), np.empty((nb, n, B)), np.empty((nb, n, B if self.noise else 0)),
                         np.empty((nb, n, 0, B)))
        return Draws(np.empty((nb, n, Bs * self.r, B)), np.empty((nb, n, Bs, B)),
                     np.empty((nb, n, Bs, B if self.noise else 0)), np.empty((nb, n, Bs * (Bs - 1) // 2, B)))

    def draw_block(self, j: int, n: int) -> Draws:
        """Block j's next n steps: eps (1, n, r, B), gam (1, n, B), zeta (1, n, B) or (1, n, 0), offd (1, n, 0, B)
        for one sample per step; the shapes of the class docstring (with a leading 1) for a batch."""
        d = self._empty(1, n)
        self._fill(j, d.eps[0], d.gam[0], d.zeta[0], d.offd[0])
        return d

    def kernel_arrays(self, d: Draws):
        """The draws shaped as chain_block takes them: eps (1, n, Bs r, B), gam (1, n, Bs, B), offd, zeta (1, n, Bs, B|0)."""
        if self.batch > 1:
            return d.eps, d.gam, d.offd, d.zeta
        nb, n = d.gam.shape[:2]
        return d.eps, d.gam.reshape(nb, n, 1, -1), d.offd, d.zeta.reshape(nb, n, 1, d.zeta.shape[-1])

    def draw(self, n: int) -> Draws:
        """All blocks' next n steps (the shapes of :meth:`draw_block` with nb blocks along the first axis).
        The same numbers as :meth:`draw_block` for each block in turn."""
        d = self._empty(self.nb, n)

        def fill(blocks):
            for j in blocks:
                self._fill(j, d.eps[j], d.gam[j], d.zeta[j], d.offd[j])

        if self.pool is None:
            fill(range(self.nb))
        else:  # one task per thread, contiguous runs of blocks (few tasks: the pool's overhead is per task)
            list(self.pool.map(fill, np.array_split(np.arange(self.nb), self.threads)))
        return d

    def map_blocks(self, fn):
        """Call fn(j) for every block j, spread over the threads (contiguous runs of blocks).

        A Ctrl-C waits for every block to finish before it is raised: all replicas then stand at
        the same step (no replica is left behind half a chunk).
        """
        def run(blocks):
            for j in blocks:
                fn(j)

        if self.pool is None:
            run(range(self.nb))
            return
        futures = [self.pool.submit(run, part) for part in np.array_split(np.arange(self.nb), self.threads)]
        try:
            for fu in futures:
                fu.result()
        except KeyboardInterrupt:
            concurrent.futures.wait(futures)
            raise

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
