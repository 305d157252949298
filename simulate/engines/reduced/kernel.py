"""Compiled CPU kernel (numba) of the exact order-parameter chain (engine "reduced", :mod:`.step`).

The torch implementation :class:`simulate.engines.reduced.step.ReducedStep` is the reference (and the CUDA
path). On the CPU its cost is torch's per-operation overhead on tensors of a few elements; this
module runs a whole chunk of steps for a block of 32 replicas in one compiled call, in float64,
the replicas of a block interleaved (structure of arrays) and the blocks spread over threads.
The kernel knows no rule: it receives the rule's compiled ``update`` (generated from the rule's
one definition, :func:`theory.compiled_rule`) as a first-class function, so it is compiled once
for every rule. The tests hold one kernel step against ``ReducedStep`` for every registered rule,
variant and activation.

Per step and replica (fields ordered (nu, phi, lambda) as in :mod:`.step`, eps ~ N(0, I_r)):

    (nu, phi) = A11 eps_1,   L21 = [R, S] Binv,   L22 L22^T = Q - L21 L21^T (PSD Cholesky),
    lambda = L21 eps_1 + L22 eps_2,
    (delta, alpha, e_out, h) = the rule's compiled update(lambda, nu, zeta; v, v*, S, b, sigma, sigma_F, g),
    xi = (lambda + alpha S, nu + alpha U, phi + alpha P),  |xp|^2 = |eps|^2 + chi2 + 2 alpha phi + alpha^2 P,
    Q' = (1-c)^2 Q - (1-c)(eta/D)(delta xi_lam^T + xi_lam delta^T) + (eta^2/D^2) |xp|^2 delta delta^T,
    R' = (1-c) R - (eta/D) delta xi_nu^T,   S' = (1-c) S - (eta/D) delta xi_phi,
    v' = v - (eta_v/D) e_out h            (unchanged when the second layer is frozen),

with c = eta kappa / D. The random numbers are drawn inside the kernel, each replica and step
from its own counter-based stream (seed, replica, step) (:mod:`simulate.engines.reduced.rng`: Philox4x64-10,
a ziggurat for normals, Marsaglia-Tsang for the chi-square), so a run does not depend on the
number of threads, the block size or the chunking, and no array of draws goes through memory.
"""

from __future__ import annotations

import concurrent.futures
import math
import warnings
from typing import NamedTuple

import numpy as np

from theory._internal import compiled as _compiled

from . import rng as _rng

g_scalar = _compiled.g_scalar  # g(z) by activation code, compiled inline (the rules' own)

try:
    import numba
    from numba import prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency, but stay importable without it
    numba = None
    prange = range
    HAVE_NUMBA = False

__all__ = ["HAVE_NUMBA", "chain_block", "ChunkSampler", "Draws", "RNG_REPLICA_BLOCK"]

#: replicas per block: one kernel work item, its replicas interleaved (the draws do not depend on it)
RNG_REPLICA_BLOCK = 32

_PIVOT_TOL = 1e-13  # as simulate.engines.reduced.step._psd_cholesky


def _jit(*args, **kw):
    def deco(fn):
        return numba.njit(*args, cache=True, **kw)(fn) if HAVE_NUMBA else fn

    return deco


@_jit(inline="never")
def _draw_step(key, b0, nv, step, shapes, noisy, eps_s, gam_s, offd_s, zeta_s):
    """The draws of one step for replicas b0 .. b0 + nv - 1, replica b0 + t in column t: each from its
    own stream (seed, replica, step) of :mod:`simulate.engines.reduced.rng`, in this order: eps (Bs r standard
    normals, sample s's (nu, phi, lambda) coordinates in rows s r .. s r + r - 1), gam (Bs variables
    Gamma(shapes[s])), offd (Bs (Bs - 1) / 2 standard normals: the Bartlett factor's off-diagonal),
    and zeta (Bs standard normals) when ``noisy``."""
    for t in range(nv):
        st = _rng.stream(b0 + t, step, _rng.PURPOSE_CHAIN)
        st = _rng.normals_into(eps_s, t, 0, eps_s.shape[0], st, key)
        for bs in range(shapes.shape[0]):
            g, st = _rng.gamma(st, key, shapes[bs])
            gam_s[bs, t] = g
        st = _rng.normals_into(offd_s, t, 0, offd_s.shape[0], st, key)
        if noisy:
            st = _rng.normals_into(zeta_s, t, 0, zeta_s.shape[0], st, key)


@_jit(inline="never")
def _draw_mirror(key, b0, nv, step, shape, eps_m, gam_m):
    """The mirroring input xi of one step for replicas b0 .. b0 + nv - 1 (replica b0 + t in column t), from the
    stream (seed, replica, step, PURPOSE_MIRROR): r standard normals eps_m (its (nu, phi, lambda) coordinates),
    then gam_m ~ Gamma(shape) (2 gam_m ~ chi^2_{D-r}: the squared norm of its orthogonal part)."""
    for t in range(nv):
        st = _rng.stream(b0 + t, step, _rng.PURPOSE_MIRROR)
        st = _rng.normals_into(eps_m, t, 0, eps_m.shape[0], st, key)
        g, st = _rng.gamma(st, key, shape)
        gam_m[t] = g


@_jit()
def _full_fields(nv, q, rr, s, Tb, Ub, Pb, eps, o, Gf, Lf, col, scale, yv, lam):
    """Under mirroring (U and P change): the fields z = L eps (rows eps[o:o + r]) with L the PSD Cholesky factor of
    the whole Gram matrix G ordered (nu, phi, lambda), as simulate.engines.reduced.step.ReducedStep.fields_of
    (same construction and pivot rule, so the same square root): (nu, phi) into yv (M + 1, B), lambda into lam."""
    K, M = s.shape[0], Ub.shape[0]
    M1 = M + 1
    r = M1 + K
    for t in range(nv):
        for m in range(M):
            for m2 in range(M):
                Gf[m, m2, t] = Tb[m, m2, t]
            Gf[m, M, t] = Ub[m, t]
            Gf[M, m, t] = Ub[m, t]
        Gf[M, M, t] = Pb[t]
        for k in range(K):
            for m in range(M):
                Gf[M1 + k, m, t] = rr[k, m, t]
                Gf[m, M1 + k, t] = rr[k, m, t]
            Gf[M1 + k, M, t] = s[k, t]
            Gf[M, M1 + k, t] = s[k, t]
            for l in range(K):  # noqa: E741  (Q_kl: the notation of THEORY.md)
                Gf[M1 + k, M1 + l, t] = q[k, l, t]
    _psd_factor(Gf, r, nv, col, scale, Lf)
    _apply_factor(nv, Lf, eps, o, M1, yv, lam)


@_jit()
def _psd_factor(C, n, nv, col, scale, L):
    """L (n, n, B), lower, with L L^T = C (n, n, B; its lower triangle is read) for the replicas t < nv, column by
    column with a zero column where a pivot vanishes (d <= _PIVOT_TOL max_i |C_ii|): the rule of
    simulate.engines.reduced.step._psd_cholesky (exact for PSD matrices; handles w = 0)."""
    for t in range(nv):
        scale[t] = 1e-300
        for i in range(n):
            scale[t] = max(scale[t], abs(C[i, i, t]))
    for jj in range(n):
        for ii in range(jj, n):
            for t in range(nv):
                col[ii, t] = C[ii, jj, t]
            for p in range(jj):
                for t in range(nv):
                    col[ii, t] -= L[ii, p, t] * L[jj, p, t]
        for ii in range(jj, n):
            for t in range(nv):
                d = col[jj, t]
                ok = d > _PIVOT_TOL * scale[t]
                L[ii, jj, t] = col[ii, t] / math.sqrt(d if ok else 1.0) if ok else 0.0


@_jit()
def _apply_factor(nv, Lf, eps, o, M1, yv, lam):
    """z = Lf eps[o:o + r] of :func:`_full_fields` with the factor already computed (another sample)."""
    r = Lf.shape[0]
    for i in range(r):
        for t in range(nv):
            z = 0.0
            for p in range(i + 1):
                z += Lf[i, p, t] * eps[o + p, t]
            if i < M1:
                yv[i, t] = z
            else:
                lam[i - M1, t] = z


@_jit()
def _mirror_block(key, b0, nv, step, shape_m, eta_F, kappa_F, mirror_norm, D, gk, q, rr, s, vv, Tb, Ub, Pb, P0b,
                  eps_m, gam_m, Gf, Lf, colf, scale, ym, lam_m):
    """The mirroring step after the learning step (simulate.engines.reduced.step.ReducedStep.mirror_step): f <-
    (1 - c_F) f + (eta_F / sqrt D) yhat_xi xi with c_F = eta_F kappa_F / D, for the fields (lambda, nu, phi) of xi
    (its own draws) and |xi|^2 = |eps|^2 + chi^2_{D-r}; with mirror_norm, f rescaled to |f|^2 / D = P0. Updates S
    (in s), U and P (in Ub, Pb)."""
    K, M = s.shape[0], Ub.shape[0]
    M1 = M + 1
    _draw_mirror(key, b0, nv, step, shape_m, eps_m, gam_m)
    _full_fields(nv, q, rr, s, Tb, Ub, Pb, eps_m, 0, Gf, Lf, colf, scale, ym, lam_m)
    kF = 1.0 - eta_F * kappa_F / D
    for t in range(nv):
        a = 0.0
        for k in range(K):
            a += vv[k, t] * g_scalar(lam_m[k, t], gk)
        a *= eta_F  # eta_F yhat_xi
        e2 = 2.0 * gam_m[t]
        for i in range(M1 + K):
            e2 += eps_m[i, t] * eps_m[i, t]
        for k in range(K):
            s[k, t] = kF * s[k, t] + (a / D) * lam_m[k, t]
        for m in range(M):
            Ub[m, t] = kF * Ub[m, t] + (a / D) * ym[m, t]
        Pb[t] = (kF * kF) * Pb[t] + (2.0 * kF / D) * a * ym[M, t] + (a * a / (D * D)) * e2
        if mirror_norm:
            sc = math.sqrt(P0b[t] / Pb[t])
            for k in range(K):
                s[k, t] *= sc
            for m in range(M):
                Ub[m, t] *= sc
            Pb[t] = P0b[t]


@_jit(inline="never")
def _advance_block(
    update,
    bi,
    B,
    key,
    step0,
    n,
    shapes,
    noisy,
    Q,
    R,
    S,
    v,
    A11T,
    Binv,
    U,
    P,
    v_star,
    b,
    D,
    etas,
    etas_v,
    sigma,
    sigma_F,
    kappa,
    gk,
    train_v,
    mirror,
    T,
    P0,
    etas_F,
    kappa_F,
    mirror_norm,
):
    """Replicas bi*B .. bi*B + B - 1 of :func:`chain_block` for steps step0 .. step0 + n - 1.
    State and constants are held along the last axis of scratch arrays (one column per replica) and
    every loop runs over the replicas innermost, so that their independent arithmetic vectorises and
    interleaves. With one sample per step (Bs = 1) the arithmetic is, operation for operation, the
    single-sample step of the module docstring."""
    nR, K = S.shape
    M = R.shape[2]
    Bs = shapes.shape[0]  # samples per step (mini-batch)
    M1 = M + 1
    r = M1 + K
    b0 = bi * B
    nv = min(B, nR - b0)
    eps_s = np.zeros((Bs * r, B))  # one step's draws (_draw_step)
    gam_s = np.zeros((Bs, B))
    offd_s = np.zeros((Bs * (Bs - 1) // 2, B))
    zeta_s = np.zeros((Bs, B))
    per = 1 if A11T.shape[0] > 1 else 0
    per_u = 1 if U.shape[0] > 1 else 0  # U, P: per replica under mirroring (they are state)
    per_t = 1 if T.shape[0] > 1 else 0
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
    Tb = np.empty((M, M, B))
    P0b = np.empty(B)
    for t in range(nv):
        ct = (b0 + t) * per
        for k in range(K):
            for l in range(K):  # noqa: E741  (Q_kl: the notation of THEORY.md)
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
        cu = (b0 + t) * per_u
        for m in range(M):
            Ub[m, t] = U[cu, m]
            vsb[m, t] = v_star[ct, m]
            for m2 in range(M):
                Tb[m, m2, t] = T[(b0 + t) * per_t, m, m2]
        Pb[t] = P[cu]
        P0b[t] = P0[cu] if mirror else 0.0
    yv = np.empty((Bs, M1, B))  # (nu, phi) of each sample; phi becomes xi_phi after the update
    L21 = np.empty((K, M1, B))
    L22 = np.zeros((K, K, B))
    schur = np.empty((K, K, B))
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
    # mirroring: the whole Gram matrix's factor, the input xi's draws and fields
    rm = r if mirror else 0
    Gf = np.empty((rm, rm, B))
    Lf = np.zeros((rm, rm, B))
    colf = np.empty((rm, B))
    eps_m = np.zeros((rm, B))
    gam_m = np.zeros(B)
    ym = np.empty((M1, B))
    lam_m = np.empty((K, B))
    shape_m = max(0.5 * (D - r), 0.0)
    for j in range(n):
        _draw_step(key, b0, nv, step0 + j, shapes, noisy, eps_s, gam_s, offd_s, zeta_s)
        eta = etas[j]
        eta_v = etas_v[j]
        c = eta * kappa / D
        k1 = 1.0 - c
        a_cross = k1 * eta / (D * Bs)
        a_lin = eta / (D * Bs)
        a_sq = eta * eta / (D * D * Bs * Bs)
        a_v = eta_v / (D * Bs)
        if not mirror:
            # L21 = [R, S] Binv
            for k in range(K):
                for a in range(M1):
                    for t in range(nv):
                        L21[k, a, t] = s[k, t] * Bb[M, a, t]
                    for m in range(M):
                        for t in range(nv):
                            L21[k, a, t] += rr[k, m, t] * Bb[m, a, t]
            # L22 = PSD Cholesky of the Schur complement Q - L21 L21^T (a zero column where a pivot vanishes)
            for k in range(K):
                for l in range(k + 1):  # noqa: E741  (Q_kl: the notation of THEORY.md)
                    for t in range(nv):
                        schur[k, l, t] = q[k, l, t]
                    for a in range(M1):
                        for t in range(nv):
                            schur[k, l, t] -= L21[k, a, t] * L21[l, a, t]
            _psd_factor(schur, K, nv, col, scale, L22)
        for bs in range(Bs):
            o = bs * r
            if mirror:  # U, P moved: the whole Gram matrix's factor (the same for every sample of the step)
                if bs == 0:
                    _full_fields(nv, q, rr, s, Tb, Ub, Pb, eps_s, o, Gf, Lf, colf, scale, yv[bs], lam[bs])
                else:
                    _apply_factor(nv, Lf, eps_s, o, M1, yv[bs], lam[bs])
            else:
                # (nu, phi) = A11 eps_1
                for a in range(M1):
                    for t in range(nv):
                        yv[bs, a, t] = 0.0
                    for a2 in range(M1):
                        for t in range(nv):
                            yv[bs, a, t] += eps_s[o + a2, t] * Ab[a2, a, t]
                # lambda = L21 eps_1 + L22 eps_2
                for k in range(K):
                    for t in range(nv):
                        lam[bs, k, t] = 0.0
                    for a in range(M1):
                        for t in range(nv):
                            lam[bs, k, t] += L21[k, a, t] * eps_s[o + a, t]
                    for p in range(k + 1):
                        for t in range(nv):
                            lam[bs, k, t] += L22[k, p, t] * eps_s[o + M1 + p, t]
            update(lam[bs], yv[bs], zeta_s[bs] if noisy else no_noise, vv, vsb, s, bb_, nv, 1, sigma, sigma_F, gk,
                   delta[bs], h[bs], res[bs])
        # the Gram matrix of the presynaptic inputs: xp_s . xp_s' = x_s . x_s' + alpha_s' phi_s + alpha_s phi_s'
        # + alpha_s alpha_s' P, with x_s . x_s' = eps_s . eps_s' + W_ss' and W ~ Wishart(D - r, I) = Lw Lw^T
        for bs in range(Bs):
            for t in range(nv):
                Lw[bs, bs, t] = math.sqrt(2.0 * gam_s[bs, t])
            for b2 in range(bs):
                for t in range(nv):
                    Lw[bs, b2, t] = offd_s[bs * (bs - 1) // 2 + b2, t]
        for bs in range(Bs):
            for b2 in range(bs + 1):
                for t in range(nv):
                    al, al2 = res[bs, 0, t], res[b2, 0, t]
                    if b2 == bs:  # chi^2 of the diagonal, as drawn: 2 gamma (+ the Bartlett off-diagonal squares)
                        w = 2.0 * gam_s[bs, t]
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
                        G[bs, b2, t] += eps_s[bs * r + a, t] * eps_s[b2 * r + a, t]
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
            for l in range(k, K):  # noqa: E741  (Q_kl: the notation of THEORY.md)
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
        if mirror and etas_F[j] != 0.0:
            _mirror_block(key, b0, nv, step0 + j, shape_m, etas_F[j], kappa_F, mirror_norm, D, gk, q, rr, s, vv, Tb,
                          Ub, Pb, P0b, eps_m, gam_m, Gf, Lf, colf, scale, ym, lam_m)
    for t in range(nv):
        if mirror:
            for m in range(M):
                U[b0 + t, m] = Ub[m, t]
            P[b0 + t] = Pb[t]
        for k in range(K):
            for l in range(K):  # noqa: E741  (Q_kl: the notation of THEORY.md)
                Q[b0 + t, k, l] = q[k, l, t]
            for m in range(M):
                R[b0 + t, k, m] = rr[k, m, t]
            S[b0 + t, k] = s[k, t]
            v[b0 + t, k] = vv[k, t]


def _chain_block(update, bi, B, key, step0, n, shapes, noisy, Q, R, S, v, A11T, Binv, U, P, v_star, b, D, etas, etas_v,
                 sigma, sigma_F, kappa, gk, train_v, mirror, T, P0, etas_F, kappa_F, mirror_norm):
    """Advance the replicas of block bi (bi*B .. bi*B + B - 1, the last block possibly partial) by the
    n steps step0 .. step0 + n - 1 of the chain, in place; releases the GIL, so Python threads run
    blocks in parallel.

    Q (nR, K, K), R (nR, K, M), S (nR, K), v (nR, K): the state of all replicas (float64, C-contiguous).
    The random numbers are drawn inside, from the counter-based streams (seed, replica, step) of
    :mod:`simulate.engines.reduced.rng` under ``key`` (:func:`simulate.engines.reduced.rng.key_of` of the seed): per
    step and
    replica, Bs r standard normals eps, Bs Gamma(shapes[s]) variables gam (shapes[s] = (D - r - s)/2,
    so that 2 gam ~ chi^2_{D-r-s}: the Bartlett factor of the Wishart(D - r, I_Bs) Gram matrix of
    the inputs' components orthogonal to the r vectors; Bs = 1: chi^2_{D-r}), Bs (Bs - 1)/2 normals
    offd below its diagonal, and Bs normals zeta (output noise) when ``noisy``
    (:func:`_draw_step`). So a replica's draws depend on (seed, replica, step) only: not on B, the
    chunking or the threads. etas, etas_v (n,): the learning rates of the n steps (schedules).
    Constants with a leading axis of 1 (shared) or nR (per replica): A11T (., M+1, M+1) with
    (nu, phi) = eps_1 @ A11T, Binv (., M+1, M+1) with L21 = [R, S] @ Binv, U (., M), P (.,),
    v_star (., M), b (., K), T (., M, M). ``update`` is the rule's compiled update (theory._codegen.rule), gk the
    activation's code, kappa the weight decay.

    Feedback mirroring (``mirror``): U (nR, M) and P (nR,) are state, updated in place; every step's fields come
    from the PSD Cholesky factor of the whole Gram matrix (as ReducedStep.fields_of), and after the learning step
    a mirroring step with its own input xi, drawn from the stream (seed, replica, step, PURPOSE_MIRROR), at the
    rates etas_F (n,), with decay kappa_F and, with ``mirror_norm``, |f|^2 / D held at P0 (nR,).
    """
    _advance_block(
        update,
        bi,
        B,
        key,
        step0,
        n,
        shapes,
        noisy,
        Q,
        R,
        S,
        v,
        A11T,
        Binv,
        U,
        P,
        v_star,
        b,
        D,
        etas,
        etas_v,
        sigma,
        sigma_F,
        kappa,
        gk,
        train_v,
        mirror,
        T,
        P0,
        etas_F,
        kappa_F,
        mirror_norm,
    )


@_jit()
def _fill_draws(key, B, nR, step0, shapes, noisy, eps, gam, offd, zeta):
    """The chain's draws for steps step0 .. step0 + n - 1, as :func:`chain_block` makes them, into
    eps (nb, n, Bs r, B), gam (nb, n, Bs, B), offd (nb, n, Bs (Bs-1)/2, B), zeta (nb, n, Bs, B)."""
    for bi in range(eps.shape[0]):
        b0 = bi * B
        nv = min(B, nR - b0)
        for j in range(eps.shape[1]):
            _draw_step(key, b0, nv, step0 + j, shapes, noisy, eps[bi, j], gam[bi, j], offd[bi, j], zeta[bi, j])


@_jit()
def _fill_mirror_draws(key, B, nR, step0, shape, eps, gam):
    """The mirroring inputs' draws for steps step0 .. step0 + n - 1, as the kernel makes them (:func:`_draw_mirror`),
    into eps (nb, n, r, B) and gam (nb, n, B)."""
    for bi in range(eps.shape[0]):
        b0 = bi * B
        nv = min(B, nR - b0)
        for j in range(eps.shape[1]):
            _draw_mirror(key, b0, nv, step0 + j, shape, eps[bi, j], gam[bi, j])


@_jit(nogil=True)
def draws_only(key, B, nR, r, step0, n, shapes, noisy):
    """The kernel's draws for n steps of nR replicas in blocks of B (r fields per sample), thrown away (the benchmarks'
    floor of the chain: the cost of its random numbers alone). Returns a checksum."""
    Bs = shapes.shape[0]
    r_tot = 0.0
    for bi in range(-(-nR // B)):
        b0 = bi * B
        nv = min(B, nR - b0)
        eps_s, gam_s = np.zeros((Bs * r, B)), np.zeros((Bs, B))
        offd_s, zeta_s = np.zeros((Bs * (Bs - 1) // 2, B)), np.zeros((Bs, B))
        for j in range(n):
            _draw_step(key, b0, nv, step0 + j, shapes, noisy, eps_s, gam_s, offd_s, zeta_s)
            r_tot += eps_s[0, 0] + gam_s[0, 0]
    return r_tot


if HAVE_NUMBA:
    import theory

    UPDATE_TYPE = theory._internal.compiled.UPDATE_TYPE
    _f8, _i8, _b1 = numba.float64, numba.int64, numba.types.boolean
    _A = lambda nd: numba.types.Array(_f8, nd, "C")  # noqa: E731
    # the rule's update comes in as a first-class function (deliberately: one kernel for every rule); numba warns
    # that the feature is experimental when its type inference meets one in a branch (the mirroring branches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", numba.core.errors.NumbaExperimentalFeatureWarning)
        chain_block = numba.njit(
            numba.types.void(UPDATE_TYPE, _i8, _i8, numba.types.Array(numba.uint64, 1, "C"), _i8, _i8, _A(1), _b1,
                             _A(3), _A(3), _A(2), _A(2), _A(3), _A(3), _A(2), _A(1), _A(2), _A(2), _f8, _A(1), _A(1),
                             _f8, _f8, _f8, _i8, _b1, _b1, _A(3), _A(1), _A(1), _f8, _b1),
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
    """The numba chain's blocks of replicas, its threads, its key, and its draws on request.

    Replicas are split into blocks of B = ``block`` (default :data:`RNG_REPLICA_BLOCK`), one kernel
    work item each (its replicas interleaved in the kernel's loops), run by ``threads`` worker threads
    (:meth:`map_blocks`). The random numbers are
    not drawn here: the kernel draws them inside, each replica and step from its own counter-based
    stream (seed, replica, step) (:mod:`simulate.engines.reduced.rng`, Philox4x64-10 under ``key``), so a run does
    not depend on B, the threads or the chunking. :meth:`draw` computes the same numbers for the
    tests and benchmarks, in the layout of :class:`Draws`.
    """

    def __init__(self, seed: int, replicas: int, r: int, D: int, *, noise: bool, threads: int = 1, batch: int = 1,
                 block: int | None = None):
        self.R, self.r, self.D, self.noise, self.batch = int(replicas), int(r), int(D), bool(noise), int(batch)
        self.B = B = int(RNG_REPLICA_BLOCK if block is None else block)
        self.nb = nb = -(-self.R // B)
        self.key = _rng.key_of(seed)
        self.step = 0  # the next step :meth:`draw` returns
        self.shapes = np.maximum(0.5 * (self.D - self.r - np.arange(self.batch, dtype=float)), 0.0)
        if self.batch > 1 and self.shapes[-1] <= 0:
            raise ValueError(
                f"batch: {self.batch} samples per step need D >= K + M + 1 + batch = {self.r + self.batch}, "
                f"got D = {self.D}"
            )
        self.threads = max(1, int(threads))
        self.pool = concurrent.futures.ThreadPoolExecutor(self.threads) if self.threads > 1 and nb > 1 else None

    def draw(self, n: int) -> Draws:
        """The chain's draws for the next n steps (from :attr:`step` on, which then advances by n), all
        blocks: replica j B + t reads [j, ..., t]. One sample per step: eps (nb, n, r, B), gam (nb, n, B),
        zeta (nb, n, B) or (nb, n, 0) without noise, offd (nb, n, 0, B); with a batch of Bs: eps
        (nb, n, Bs r, B), gam (nb, n, Bs, B), zeta (nb, n, Bs, B|0), offd (nb, n, Bs (Bs - 1)/2, B).
        Columns past the last replica are 0."""
        nb, B, Bs = self.nb, self.B, self.batch
        eps, gam = np.zeros((nb, n, Bs * self.r, B)), np.zeros((nb, n, Bs, B))
        offd, zeta = np.zeros((nb, n, Bs * (Bs - 1) // 2, B)), np.zeros((nb, n, Bs, B))
        _fill_draws(self.key, B, self.R, self.step, self.shapes, self.noise, eps, gam, offd, zeta)
        self.step += n
        if not self.noise:
            zeta = zeta[..., :0]
        if Bs == 1:
            gam, zeta = gam[:, :, 0], zeta[:, :, 0]
        return Draws(eps, gam, zeta, offd)

    def draw_mirror(self, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The mirroring inputs' draws of steps step .. step + n - 1 (feedback mirroring), as the kernel makes
        them: eps (nb, n, r, B) standard normals and gam (nb, n, B), 2 gam ~ chi^2_{D-r}; replica j B + t reads
        [j, ..., t]."""
        eps, gam = np.zeros((self.nb, n, self.r, self.B)), np.zeros((self.nb, n, self.B))
        _fill_mirror_draws(self.key, self.B, self.R, int(step), max(0.5 * (self.D - self.r), 0.0), eps, gam)
        return eps, gam

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
