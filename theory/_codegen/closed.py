"""The closed-form ODE right-hand side of the feedback family, compiled (numba), for one state.

For rules with ``closed_form = "feedback"`` (delta_k = c_k g'(lambda_k) e, e_out = e, h = g(lambda);
bp, fa, afa and any user rule of that form) the right-hand side depends on the rule only through
the coefficient c (K,), which the rule's generated ``closed_rhs`` (:mod:`theory._codegen.rule`)
evaluates from the state and passes here. The formulas are those of :mod:`theory.expectations.closed` (the
numpy reference, batched), written with explicit loops, which removes numpy's per-call overhead
for the small arrays of a single learning curve (~60x faster at K = M = 2); the tests hold the two
against each other. Compiled once for every rule and (K, M).
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency, but stay importable without it
    numba = None
    HAVE_NUMBA = False

from ..activations.relu import i2 as relu_i2
from ..activations.relu import i3 as relu_i3
from ..activations.relu import j2 as relu_j2
from ..activations.relu import relu_moment
from ..ode.layout import HEADER, PARAM

__all__ = ["HAVE_NUMBA", "closed_form_rhs_c"]

_2_PI = 2.0 / math.pi
_4_PI2 = 4.0 / math.pi**2
_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def _rate(kind, a, b, c, t):
    """A schedule piece at t (theory._schedules.Piece): 0 constant a, 1 linear a + b t, 2 a / (1 + t/b)^c."""
    if kind == 0.0:
        return a
    if kind == 1.0:
        return a + b * t
    return a / (1.0 + t / b) ** c


def _rate_at(p, o, t):
    """The rate whose piece starts at p[o] (theory.ode.layout), at t."""
    return _rate(p[o], p[o + 1], p[o + 2], p[o + 3], t)


def _rhs_c(t, y, p, c, out):
    """dy/dt (written to ``out``) at time t and flat state y = (Q, R, S, v) (theory._state.pack), with
    the feedback coefficient c (K,) and the parameters p of theory._codegen.rule.ode_params."""
    K, M = int(p[PARAM.K]), int(p[PARAM.M])
    sigma, sigma_F = p[PARAM.sigma], p[PARAM.sigma_F]
    modulated, train_v = p[PARAM.modulated] != 0.0, p[PARAM.train_v] != 0.0
    gk = int(p[PARAM.gk])
    o = HEADER
    v_star = p[o + M * M + M : o + M * M + 2 * M]
    n = K + M
    N1 = n + 1
    v = y[K * K + K * M + K : K * K + K * M + 2 * K]
    # one workspace for Omega and the small arrays (one allocation per call instead of three)
    work = np.empty(N1 * N1 + n * n + n + N1 + K * N1 + K * K + n + K)
    om = work[: N1 * N1].reshape((N1, N1))
    W = work[N1 * N1 : N1 * N1 + n * n].reshape((n, n))
    _omega_into(y, p, K, M, om)
    o1 = N1 * N1 + n * n
    a = work[o1 : o1 + n]
    d1 = work[o1 + n : o1 + n + N1]
    X = work[o1 + n + N1 : o1 + n + N1 + K * N1].reshape((K, N1))
    DD = work[o1 + n + N1 + K * N1 : o1 + n + N1 + K * N1 + K * K].reshape((K, K))
    L1 = work[o1 + n + N1 + K * N1 + K * K : o1 + n + N1 + K * N1 + K * K + n]
    EH = work[o1 + n + N1 + K * N1 + K * K + n :]
    for k in range(K):
        a[k] = v[k]
    for m in range(M):
        a[K + m] = -v_star[m]
    for q in range(N1):
        d1[q] = 1.0 + om[q, q]

    if gk == 0:
        _terms_erf(om, a, d1, L1, W, c, K, n, modulated, sigma, sigma_F, train_v, X, DD, EH)
    else:
        _terms_pl(om, a, c, K, n, modulated, sigma, sigma_F, train_v, gk, X, DD, EH)

    _assemble(t, y, p, om, X, DD, EH, K, M, out)


def _omega(y, p, K, M):
    """The field covariance Omega (K+M+1, K+M+1) of the flat state y and the constants in p."""
    om = np.empty((K + M + 1, K + M + 1))
    _omega_into(y, p, K, M, om)
    return om


def _omega_into(y, p, K, M, om):
    """Omega of :func:`_omega`, written to ``om``."""
    n = K + M
    o = HEADER
    T = p[o : o + M * M]
    U = p[o + M * M : o + M * M + M]
    P = p[PARAM.P]
    n_core = K * K + K * M + 2 * K
    if p[PARAM.mirror] != 0.0:
        U = y[n_core : n_core + M]
        P = y[n_core + M]
    i = 0
    for k in range(K):
        for l in range(K):
            om[k, l] = y[i]
            i += 1
    for k in range(K):
        for m in range(M):
            om[k, K + m] = y[i]
            om[K + m, k] = y[i]
            i += 1
    for k in range(K):
        om[k, n] = y[i]
        om[n, k] = y[i]
        i += 1
    for m in range(M):
        for m2 in range(M):
            om[K + m, K + m2] = T[m * M + m2]
        om[K + m, n] = U[m]
        om[n, K + m] = U[m]
    om[n, n] = P


def _assemble(t, y, p, om, X, DD, EH, K, M, out):
    """dy/dt from the expectations (theory.expectations.closed.assemble), and the mirroring terms (erf only)."""
    eta = _rate_at(p, PARAM.eta, t)
    eta_v = _rate_at(p, PARAM.eta_v, t)
    kappa = p[PARAM.kappa]
    train_v = p[PARAM.train_v] != 0.0
    inv_batch = 1.0 / p[PARAM.batch]
    n = K + M
    i = 0
    for k in range(K):
        for l in range(K):
            out[i] = -eta * (X[k, l] + X[l, k]) + eta * eta * inv_batch * DD[k, l] - 2.0 * eta * kappa * om[k, l]
            i += 1
    for k in range(K):
        for m in range(M):
            out[i] = -eta * X[k, K + m] - eta * kappa * om[k, K + m]
            i += 1
    for k in range(K):
        out[i] = -eta * X[k, n] - eta * kappa * om[k, n]
        i += 1
    for k in range(K):
        out[i] = -eta_v * EH[k] if train_v else 0.0
        i += 1
    if p[PARAM.mirror] != 0.0:
        v = y[K * K + K * M + K : K * K + K * M + 2 * K]
        _mirror(t, p, om, v, K, M, out, K * K + K * M + 2 * K)


def _terms_erf(om, a, d1, L1, W, c, K, n, modulated, sigma, sigma_F, train_v, X, DD, EH):
    """X, DD, EH for erf (Saad & Solla's closed forms, theory.activations.erf)."""
    N1 = n + 1
    # X[k, u] = sum_j a_j I3(k, u, j)
    for k in range(K):
        for u in range(N1):
            X[k, u] = 0.0
        for j in range(n):
            c13 = om[k, j]
            L3 = d1[k] * d1[j] - c13 * c13
            pref = _2_PI * a[j] / (d1[k] * math.sqrt(L3))
            for u in range(N1):
                X[k, u] += pref * (om[u, j] * d1[k] - om[k, u] * c13)
    if modulated:
        for k in range(K):
            caa = om[k, k]
            dgm = _SQRT_2_PI / math.sqrt(1.0 + caa)
            # sum_{i1, i2} a_i1 a_i2 I2 of the tilted covariance: symmetric in (i1, i2)
            for i1 in range(n):
                ci = om[i1, k]
                L1[i1] = 1.0 + om[i1, i1] - ci * ci / (1.0 + caa)
            s = 0.0
            for i1 in range(n):
                ci = om[i1, k]
                s += a[i1] * a[i1] * math.asin((L1[i1] - 1.0) / L1[i1])
                for i2 in range(i1 + 1, n):
                    tij = om[i1, i2] - ci * om[i2, k] / (1.0 + caa)
                    s += 2.0 * a[i1] * a[i2] * math.asin(tij / math.sqrt(L1[i1] * L1[i2]))
            ege2 = dgm * _2_PI * s + sigma * sigma * dgm
            for u in range(N1):
                X[k, u] -= sigma_F * om[u, n] * ege2
    for k in range(K):
        for u in range(N1):
            X[k, u] *= c[k]

    # DD[k, l] = c_k c_l (sum_ij a_i a_j I4(k, l, i, j) + sigma^2 J2(k, l))
    for k in range(K):
        for l in range(k, K):
            a1, a2 = d1[k], d1[l]
            c12 = om[k, l]
            L4 = a1 * a2 - c12 * c12
            for i1 in range(n):
                c13, c23 = om[k, i1], om[l, i1]
                L1[i1] = L4 * (1.0 + om[i1, i1]) - c23 * c23 * a1 - c13 * c13 * a2 + 2.0 * c12 * c13 * c23
            # L0(i1, i2) is symmetric in (i1, i2): asin once per pair (i2 >= i1, kept in W), then summed over every
            # (i1, i2) in order, as the full double sum, so that equal fields (a student unit on its teacher unit)
            # give bitwise equal terms that cancel as they did
            for i1 in range(n):
                L1[i1] = 1.0 / math.sqrt(L1[i1])  # now 1 / sqrt(L1)
            for i1 in range(n):
                c13, c23 = om[k, i1], om[l, i1]
                for i2 in range(i1, n):
                    c14, c24, c34 = om[k, i2], om[l, i2], om[i1, i2]
                    L0 = L4 * c34 - c23 * c24 * a1 - c13 * c14 * a2 + c12 * c13 * c24 + c12 * c14 * c23
                    W[i1, i2] = math.asin(L0 * (L1[i1] * L1[i2]))
                    W[i2, i1] = W[i1, i2]
            s = 0.0
            for i1 in range(n):
                for i2 in range(n):
                    s += a[i1] * a[i2] * W[i1, i2]
            val = _4_PI2 / math.sqrt(L4) * s + sigma * sigma * _2_PI / math.sqrt(L4)
            DD[k, l] = c[k] * c[l] * val
            DD[l, k] = DD[k, l]

    for k in range(K):
        eh = 0.0
        if train_v:
            for j in range(n):
                eh += a[j] * _2_PI * math.asin(om[k, j] / math.sqrt(d1[k] * d1[j]))
        EH[k] = eh


def _terms_pl(om, a, c, K, n, modulated, sigma, sigma_F, train_v, gk, X, DD, EH):
    """X, DD, EH for relu (gk = 2; theory.activations.relu: arc-cosine kernels, Stein's lemma down to orthant
    probabilities) and linear g (gk = 3: every integral is a covariance)."""
    N1 = n + 1
    relu = gk == 2
    idx = np.empty(4, dtype=np.int64)
    for k in range(K):
        for u in range(N1):
            s = 0.0
            for j in range(n):
                if not relu:
                    s += a[j] * om[u, j]
                elif j == k:  # E[theta(z_k) z_u z_k] = C_uk / 2
                    s += a[j] * 0.5 * om[u, k]
                else:
                    s += a[j] * relu_i3(om[k, k], om[k, u], om[k, j], om[u, j], om[j, j])
            X[k, u] = s
    if modulated:
        for k in range(K):
            s = 0.0
            for i1 in range(n):
                for i2 in range(i1, n):
                    if relu:
                        idx[0], idx[1], idx[2] = k, i1, i2
                        val = relu_moment(om, idx, 3, i1, i2)
                    else:
                        val = om[i1, i2]
                    s += (1.0 if i1 == i2 else 2.0) * a[i1] * a[i2] * val
            ege2 = s + sigma * sigma * (0.5 if relu else 1.0)
            for u in range(N1):
                X[k, u] -= sigma_F * om[u, n] * ege2
    for k in range(K):
        for u in range(N1):
            X[k, u] *= c[k]
    for k in range(K):
        for l in range(k, K):
            s = 0.0
            for i1 in range(n):
                for i2 in range(i1, n):
                    if relu:
                        idx[0], idx[1], idx[2], idx[3] = k, l, i1, i2
                        val = relu_moment(om, idx, 4, i1, i2)
                    else:
                        val = om[i1, i2]
                    s += (1.0 if i1 == i2 else 2.0) * a[i1] * a[i2] * val
            if relu:
                j2 = relu_j2(om[k, k], om[k, l], om[l, l])
            else:
                j2 = 1.0
            DD[k, l] = c[k] * c[l] * (s + sigma * sigma * j2)
            DD[l, k] = DD[k, l]
    for k in range(K):
        eh = 0.0
        if train_v:
            for j in range(n):
                if relu:
                    eh += a[j] * relu_i2(om[k, k], om[k, j], om[j, j])
                else:
                    eh += a[j] * om[k, j]
        EH[k] = eh


def _dg_mean(c11, gk):
    """E[g'(a)] for a ~ N(0, c11): erf sqrt(2/pi)/sqrt(1 + c11), relu 1/2, linear 1."""
    if gk == 0:
        return _SQRT_2_PI / math.sqrt(1.0 + c11)
    return 0.5 if gk == 2 else 1.0


def _i2(c11, c12, c22, gk):
    """I2 = E[g(a) g(b)] for erf, relu (arc-cosine kernel) and linear g."""
    if gk == 0:
        return _2_PI * math.asin(c12 / math.sqrt((1.0 + c11) * (1.0 + c22)))
    if gk == 2:
        return relu_i2(c11, c12, c22)
    return c12


def _mirror(t, p, om, v, K, M, out, n_core):
    """Feedback mirroring's terms (theory.expectations.mirror): added to dS, and dU, dP written after dv.

    m_u = E[yhat_xi z_u] = sum_j c_j Omega_ju with c_j = v_j E[g'(lambda_j)], for u over the student
    fields, the teacher fields and phi (u = n); E[yhat_xi^2] = v^T I2(Q) v; for erf, relu and linear g (p[PARAM.gk])."""
    eta_F = _rate_at(p, PARAM.eta_F, t)
    kappa_F, norm = p[PARAM.kappa_F], p[PARAM.mirror_norm] != 0.0
    n = K + M
    P = om[n, n]
    c = np.empty(K)
    m_yy = 0.0
    gk = int(p[PARAM.gk])
    for j in range(K):
        c[j] = v[j] * _dg_mean(om[j, j], gk)
        for l in range(K):
            m_yy += v[j] * v[l] * _i2(om[j, j], om[j, l], om[l, l], gk)
    m = np.zeros(n + 1)
    for u in range(n + 1):
        for j in range(K):
            m[u] += c[j] * om[j, u]
    dP = 2.0 * eta_F * (m[n] - kappa_F * P) + eta_F * eta_F * m_yy
    rel = dP / (2.0 * P) if (norm and P > 0.0) else 0.0
    off_S = K * K + K * M
    for u in range(n):  # u < K: S_u; u >= K: U_(u - K)
        d = eta_F * (m[u] - kappa_F * om[u, n]) - rel * om[u, n]
        if u < K:
            out[off_S + u] += d
        else:
            out[n_core + u - K] = d
    out[n_core + M] = 0.0 if norm else dP

if HAVE_NUMBA:
    _rate = numba.njit(cache=True, inline="always")(_rate)
    _rate_at = numba.njit(cache=True, inline="always")(_rate_at)
    _terms_erf = numba.njit(cache=True, error_model="numpy", inline="always")(_terms_erf)
    _omega_into = numba.njit(cache=True, error_model="numpy", inline="always")(_omega_into)
    _omega = numba.njit(cache=True, error_model="numpy")(_omega)
    _assemble = numba.njit(cache=True, error_model="numpy")(_assemble)
    _dg_mean = numba.njit(cache=True, inline="always")(_dg_mean)
    _i2 = numba.njit(cache=True)(_i2)
    _terms_pl = numba.njit(cache=True, error_model="numpy")(_terms_pl)
    _mirror = numba.njit(cache=True)(_mirror)
    closed_form_rhs_c = numba.njit(
        numba.types.void(numba.float64, numba.float64[::1], numba.float64[::1], numba.float64[::1], numba.float64[::1]),
        cache=True, error_model="numpy")(_rhs_c)
else:  # pragma: no cover
    closed_form_rhs_c = _rhs_c
