"""The numerical-expectation ODE right-hand side, compiled (numba), for one state and any traceable rule.

The same quadrature as :mod:`theory.expectations.numerical` (the numpy reference, batched over states), written
as loops over the nodes: the whitened fields of every node, the rule's compiled one-sample update
(:mod:`theory._codegen.rule`, generated from ``Rule.update``; called on chunks of nodes), and the reductions

    X_ku = sum_p w_p delta_k(p) xi_u(p),   DD_kl = sum_p w_p delta_k(p) delta_l(p),   EH_k = sum_p w_p e_out(p) h_k(p),

with xi_u = z_u + alpha Ov_u, z = (lambda, nu, E[phi | lambda, nu]), Ov = (S, U, P). The nodes and
weights are those of :func:`theory.expectations.numerical._prepared` (folded onto a half-space for odd rules,
pruned), appended to the parameter vector p (:func:`theory._codegen.rule.numerical_params`). The tests
hold this against the numpy engine to rounding (same nodes, same weights).

For piecewise-linear activations (relu) the kink-aware variant (:mod:`theory._kinks`) replaces the
tensor rule along one direction by exact integration between the kinks.

The kernels ``numerical_terms``, ``numerical_terms_kinks``, ``numerical_rhs`` and ``numerical_rhs_kinks``
are templates (:mod:`theory._codegen.template`): they call the rule's ``update`` and ``kinks`` and read
its ``KINK_DEPTH``, here the template's placeholders, and every rule's generated module holds a copy of
them bound to its own (numba compiles a direct, inlined call, cached beside that module). The helpers
they call are compiled once, here, whatever the rule.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    numba = None
    HAVE_NUMBA = False

from ..ode.layout import HEADER, PARAM
from .closed import _assemble, _omega
from .template import KINK_DEPTH, jit, kinks, update

__all__ = ["CHUNK", "line_basis", "numerical_rhs", "numerical_rhs_kinks", "numerical_terms", "numerical_terms_kinks"]

#: nodes per call of the rule's update
CHUNK = 128
_EIG_RTOL = 1e-12  # theory.expectations.numerical._EIG_RTOL


def _whiten(om, n):
    """(A, gamma, G): the symmetric square root A = C^{1/2} of the (lambda, nu) block C, its pseudo-inverse
    G = C^{+1/2}, and gamma = G c, c = Omega[:n, phi] (theory.expectations.numerical._whiten)."""
    for i in range(n):
        for j in range(n + 1):
            if not np.isfinite(om[i, j]):  # a non-finite (diverging) state: NaN fields, not a LinAlgError
                return np.full((n, n), np.nan), np.full(n, np.nan), np.full((n, n), np.nan)
    C = np.ascontiguousarray(om[:n, :n])
    w, V = np.linalg.eigh(C)
    tol = _EIG_RTOL * max(w[n - 1], 1.0)
    A = np.zeros((n, n))
    G = np.zeros((n, n))
    for q in range(n):
        if w[q] > tol:
            s = math.sqrt(w[q])
            for i in range(n):
                for j in range(n):
                    A[i, j] += V[i, q] * s * V[j, q]
                    G[i, j] += V[i, q] / s * V[j, q]
    gamma = np.zeros(n)
    for i in range(n):
        for j in range(n):
            gamma[i] += G[i, j] * om[j, n]
    return A, gamma, G


def _fields(A, gamma, u, off, n, out):
    """The fields of the node-space vector u[off:]: out[:n] = A u (lambda, nu), out[n] = gamma . u (E[phi | lambda, "
    "nu])."""
    for a in range(n):
        s = 0.0
        for j in range(n):
            s += A[a, j] * u[off + j]
        out[a] = s
    s = 0.0
    for j in range(n):
        s += gamma[j] * u[off + j]
    out[n] = s


def _buffers(K, M, cap):
    """Work arrays for ``cap`` points: lam (K, cap), nu (M, cap), zeta, phi (cap), and the update's
    delta (K, cap), h (K, cap), res (3, cap) = (alpha, e_out, e)."""
    return (np.empty((K, cap)), np.empty((M, cap)), np.zeros(cap), np.empty(cap), np.empty((K, cap)),
            np.empty((K, cap)), np.empty((3, cap)))


def _line_points(z0, dz, zeta0, dzeta, tt, npts, K, M, noise, lam, nu, phi, zeta):
    """The fields at the points z0 + tt[i] dz of a line (i < npts): lam, nu, phi and, with noise, zeta."""
    n = K + M
    for i in range(npts):
        for a in range(K):
            lam[a, i] = z0[a] + tt[i] * dz[a]
        for a in range(M):
            nu[a, i] = z0[K + a] + tt[i] * dz[K + a]
        phi[i] = z0[n] + tt[i] * dz[n]
        if noise:
            zeta[i] = zeta0 + tt[i] * dzeta


def _accumulate(lam, nu, phi, delta, h, res, wts, off, scale, m, om, K, M, X, DD, EH):
    """Add the m points' contributions, weights scale * wts[off + i], to X, DD, EH (xi_u = z_u + alpha Ov_u)."""
    n = K + M
    N1 = n + 1
    z = np.empty(N1)
    for i in range(m):
        w = scale * wts[off + i]
        alpha = res[0, i]
        for k in range(K):
            z[k] = lam[k, i]
        for mm in range(M):
            z[K + mm] = nu[mm, i]
        z[n] = phi[i]
        for u in range(N1):
            z[u] += alpha * om[u, n]
        for k in range(K):
            dk = w * delta[k, i]
            for u in range(N1):
                X[k, u] += dk * z[u]
            for q in range(K):
                DD[k, q] += dk * delta[q, i]
            EH[k] += w * res[1, i] * h[k, i]


def _constants(y, p, K, M):
    """(v, v_star, S, b) as (K, 1) / (M, 1) arrays for the rule's update (one state for all nodes)."""
    o = HEADER
    off_S = K * K + K * M
    v = np.empty((K, 1))
    S = np.empty((K, 1))
    b = np.empty((K, 1))
    vs = np.empty((M, 1))
    for k in range(K):
        S[k, 0] = y[off_S + k]
        v[k, 0] = y[off_S + K + k]
        b[k, 0] = p[o + M * M + 2 * M + k]
    for m in range(M):
        vs[m, 0] = p[o + M * M + M + m]
    return v, vs, S, b


def _node_block(p, K, M):
    """(N, d, nodes (N * d, flat), weights (N)) of the node block [N, d, nodes, weights] at the end of p."""
    q = HEADER + M * M + 2 * M + K
    N, d = int(p[q]), int(p[q + 1])
    return N, d, p[q + 2 : q + 2 + N * d], p[q + 2 + N * d : q + 2 + N * d + N]


@jit(error_model="numpy")
def numerical_terms(y, p, X, DD, EH):
    """The expectations X (K, K+M+1), DD (K, K), EH (K) (added to the arrays given, zeros) by the node rule
    in p, with the rule's compiled ``update``.

    A template (module docstring): compiled in every rule's generated module, where ``update`` is that
    rule's compiled update."""
    K, M = int(p[PARAM.K]), int(p[PARAM.M])
    n = K + M
    sigma, sigma_F, gk = p[PARAM.sigma], p[PARAM.sigma_F], int(p[PARAM.gk])
    om = _omega(y, p, K, M)
    A, gamma, _ = _whiten(om, n)
    v, vs, S, b = _constants(y, p, K, M)
    N, d, nodes, weights = _node_block(p, K, M)
    noise = d > n
    lam, nu, zeta, phi, delta, h, res = _buffers(K, M, CHUNK)
    z = np.empty(n + 1)
    for start in range(0, N, CHUNK):
        m = min(CHUNK, N - start)
        for i in range(m):
            base = (start + i) * d
            _fields(A, gamma, nodes, base, n, z)
            for a in range(K):
                lam[a, i] = z[a]
            for a in range(M):
                nu[a, i] = z[K + a]
            phi[i] = z[n]
            if noise:
                zeta[i] = nodes[base + n]
        update(lam, nu, zeta, v, vs, S, b, m, 0, sigma, sigma_F, gk, delta, h, res)
        _accumulate(lam, nu, phi, delta, h, res, weights, start, 1.0, m, om, K, M, X, DD, EH)


# ====================================================================== kink-aware quadrature (relu)
#: the line's half-length in units of the standard normal: beyond it the pieces extend analytically to infinity
T_MAX = 12.0
#: the most breakpoints along one line
MAX_BREAKS = 96
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def line_basis(G, d):
    """An orthonormal basis H (d, d) of the node space: column 0 the direction of the lines along which
    the kink-aware rule integrates exactly, columns 1.. its complement (a Householder reflection).

    The direction is C^{+1/2} (1, ..., 1) (G = C^{+1/2}, normalised; no noise component): along it every
    field lambda_k, nu_m moves at the same speed, so the lines cross all the first-pass kinks z_j = 0
    at the same angle, as far from parallel as they can be (a kink nearly parallel to the lines would
    leave a nearly sharp kink in the function integrated across them). Continuous in the state."""
    n = G.shape[0]
    a = np.zeros(d)
    for i in range(n):
        for j in range(n):
            a[i] += G[i, j]
    na = np.linalg.norm(a)
    if na < 1e-300:
        for i in range(d):
            a[i] = 1.0 + 0.6180339887498949 * i
        na = np.linalg.norm(a)
    a = a / na
    e = np.zeros(d)
    e[0] = 1.0
    w = a - e
    nw = np.linalg.norm(w)
    if nw < 1e-14:
        return np.eye(d)
    w = w / nw
    H = np.eye(d) - 2.0 * np.outer(w, w)  # H e0 = a, H symmetric orthogonal
    return np.ascontiguousarray(H)


def _phi(x):
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


def _Phi(x):
    return 0.5 * math.erfc(-x * _INV_SQRT2)


def _piece_weights(a, b, first, last, t1, t2, t3, W):
    """W[0..2] = int_a^b L_i(t) phi(t) dt for the Lagrange basis L_i of the points t1, t2, t3 (exact for
    a quadratic between a and b); ``first`` / ``last``: a = -infinity / b = +infinity."""
    pa = 0.0 if first else _phi(a)
    pb = 0.0 if last else _phi(b)
    Fa = 0.0 if first else _Phi(a)
    Fb = 1.0 if last else _Phi(b)
    if not first and not last and a > 0.0:  # upper tail: differences of the complementary function
        m0 = 0.5 * (math.erfc(a * _INV_SQRT2) - math.erfc(b * _INV_SQRT2))
    else:
        m0 = Fb - Fa
    m1 = pa - pb
    m2 = m0 + (0.0 if first else a * pa) - (0.0 if last else b * pb)
    W[0] = (m2 - (t2 + t3) * m1 + t2 * t3 * m0) / ((t1 - t2) * (t1 - t3))
    W[1] = (m2 - (t1 + t3) * m1 + t1 * t3 * m0) / ((t2 - t1) * (t2 - t3))
    W[2] = (m2 - (t1 + t2) * m1 + t1 * t2 * m0) / ((t3 - t1) * (t3 - t2))


@jit(error_model="numpy")
def numerical_terms_kinks(y, p, X, DD, EH):
    """The expectations X, DD, EH (as :func:`numerical_terms`) by the kink-aware rule: exact along lines,
    the node rule in p across them.

    For a rule built from a piecewise-linear activation (relu, linear), each integrand (delta_k xi_u,
    delta_k delta_l, e_out h_k) is a piecewise quadratic along any line of the node space, with kinks
    (or jumps, for g') where an argument of g or g' changes sign. Along the line through each node of
    the outer rule (the nodes in p, one dimension fewer) in the direction ``line_basis(G, d)[:, 0]``, the
    arguments of depth 0 (no g inside) are linear, those of depth L linear between the zeros of depth
    < L: their zeros are found exactly, level by level, and each piece is integrated exactly against
    the Gaussian weight from three points (Lagrange weights of the moments of phi on the piece).

    A template (module docstring): compiled in every rule's generated module, where ``update``, ``kinks``
    (the arguments of g and g' at given fields) and ``KINK_DEPTH`` are the rule's own (theory._codegen.rule).
    """
    K, M = int(p[PARAM.K]), int(p[PARAM.M])
    n = K + M
    N1 = n + 1
    sigma, sigma_F, gk = p[PARAM.sigma], p[PARAM.sigma_F], int(p[PARAM.gk])
    om = _omega(y, p, K, M)
    A, gamma, G = _whiten(om, n)
    v, vs, S, b = _constants(y, p, K, M)
    N, dout, nodes, weights = _node_block(p, K, M)
    d = dout + 1
    noise = d > n
    H = line_basis(G, d)
    nk = len(KINK_DEPTH)
    maxdepth = 0
    for j in range(nk):
        maxdepth = max(maxdepth, KINK_DEPTH[j])
    cap = 3 * MAX_BREAKS
    lam, nu, zeta, phi, delta, h, res = _buffers(K, M, cap)
    karg = np.empty((max(nk, 1), cap))
    tt = np.empty(cap)
    ww = np.empty(cap)
    br = np.empty(MAX_BREAKS + 2)
    nb_new = np.empty(MAX_BREAKS + 2)
    W = np.empty(3)
    u0 = np.empty(d)
    dirv = np.empty(d)
    z0 = np.empty(N1)
    dz = np.empty(N1)
    for j in range(d):
        dirv[j] = H[j, 0]
    _fields(A, gamma, dirv, 0, n, dz)
    for o in range(N):
        for j in range(d):
            s = 0.0
            for c in range(dout):
                s += H[j, c + 1] * nodes[o * dout + c]
            u0[j] = s
        _fields(A, gamma, u0, 0, n, z0)
        # breakpoints, level by level
        br[0] = -T_MAX
        br[1] = T_MAX
        nbr = 2
        for level in range(maxdepth + 1):
            npts = 2 * (nbr - 1)
            for iv in range(nbr - 1):
                lo, hi = br[iv], br[iv + 1]
                tt[2 * iv] = lo + (hi - lo) / 3.0
                tt[2 * iv + 1] = lo + 2.0 * (hi - lo) / 3.0
            _line_points(z0, dz, u0[n] if noise else 0.0, dirv[n] if noise else 0.0, tt, npts, K, M, noise, lam, nu,
                         phi, zeta)
            kinks(lam, nu, zeta, v, vs, S, b, npts, 0, sigma, sigma_F, gk, karg)
            m = 0
            for iv in range(nbr - 1):
                lo, hi = br[iv], br[iv + 1]
                nb_new[m] = lo
                m += 1
                for j in range(nk):
                    if KINK_DEPTH[j] != level:
                        continue
                    ka, kb = karg[j, 2 * iv], karg[j, 2 * iv + 1]
                    if ka == kb:
                        continue
                    ta, tb = tt[2 * iv], tt[2 * iv + 1]
                    r = ta - ka * (tb - ta) / (kb - ka)
                    if lo < r < hi and m < MAX_BREAKS:
                        nb_new[m] = r
                        m += 1
            nb_new[m] = br[nbr - 1]
            m += 1
            # sort (insertion: few points, nearly sorted)
            for i in range(1, m):
                x = nb_new[i]
                j = i - 1
                while j >= 0 and nb_new[j] > x:
                    nb_new[j + 1] = nb_new[j]
                    j -= 1
                nb_new[j + 1] = x
            nbr = 0
            for i in range(m):
                if nbr == 0 or nb_new[i] > br[nbr - 1] + 1e-13 * (1.0 + abs(br[nbr - 1])):
                    br[nbr] = nb_new[i]
                    nbr += 1
        # three points per piece, with their exact Gaussian weights
        npts = 3 * (nbr - 1)
        for iv in range(nbr - 1):
            lo, hi = br[iv], br[iv + 1]
            c, r = 0.5 * (lo + hi), 0.5 * (hi - lo)
            t1, t2, t3 = c - 0.7745966692414834 * r, c, c + 0.7745966692414834 * r
            _piece_weights(lo, hi, iv == 0, iv == nbr - 2, t1, t2, t3, W)
            tt[3 * iv], tt[3 * iv + 1], tt[3 * iv + 2] = t1, t2, t3
            ww[3 * iv], ww[3 * iv + 1], ww[3 * iv + 2] = W[0], W[1], W[2]
        _line_points(z0, dz, u0[n] if noise else 0.0, dirv[n] if noise else 0.0, tt, npts, K, M, noise, lam, nu, phi,
                     zeta)
        update(lam, nu, zeta, v, vs, S, b, npts, 0, sigma, sigma_F, gk, delta, h, res)
        _accumulate(lam, nu, phi, delta, h, res, ww, 0, weights[o], npts, om, K, M, X, DD, EH)


@jit(error_model="numpy")
def numerical_rhs(t, y, p, out):
    """dy/dt (written to ``out``) from the expectations of :func:`numerical_terms` "
    "(theory.expectations.closed.assemble)."""
    K, M = int(p[PARAM.K]), int(p[PARAM.M])
    X = np.zeros((K, K + M + 1))
    DD = np.zeros((K, K))
    EH = np.zeros(K)
    numerical_terms(y, p, X, DD, EH)
    _assemble(t, y, p, _omega(y, p, K, M), X, DD, EH, K, M, out)


@jit(error_model="numpy")
def numerical_rhs_kinks(t, y, p, out):
    """dy/dt (written to ``out``) from the expectations of :func:`numerical_terms_kinks`."""
    K, M = int(p[PARAM.K]), int(p[PARAM.M])
    X = np.zeros((K, K + M + 1))
    DD = np.zeros((K, K))
    EH = np.zeros(K)
    numerical_terms_kinks(y, p, X, DD, EH)
    _assemble(t, y, p, _omega(y, p, K, M), X, DD, EH, K, M, out)


if HAVE_NUMBA:
    _j = lambda fn: numba.njit(cache=True, error_model="numpy")(fn)  # noqa: E731
    _whiten = _j(_whiten)
    _accumulate = _j(_accumulate)
    _fields = numba.njit(cache=True, inline="always")(_fields)
    _buffers = _j(_buffers)
    _line_points = _j(_line_points)
    _constants = _j(_constants)
    _node_block = numba.njit(cache=True, inline="always")(_node_block)
    line_basis = _j(line_basis)
    _phi = numba.njit(cache=True, inline="always")(_phi)
    _Phi = numba.njit(cache=True, inline="always")(_Phi)
    _piece_weights = _j(_piece_weights)
