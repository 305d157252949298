"""The ReLU integrals of theory.activations.relu against Monte Carlo, independent high-precision references and limits.

Monte Carlo: every moment (I2, J2, I3, dgg, I4, the orthant probabilities P2, P3, P4 and one-linear
moments) is compared with a mean over 10^7 samples drawn in chunks; the tolerance is 5 standard
errors of that mean (estimated from the same samples), so a wrong formula fails while a right one
passes with probability ~1 - 6e-7 per comparison (the generators are seeded: the outcome is fixed).
P4 is also held to ~1e-13 against a 20-digit mpmath evaluation of a different representation
(Plackett's path from the identity through all six correlations, with mpmath's inverse and
tanh-sinh quadrature) and, for exactly singular (rank-3) matrices, against the closed-form solid
angle of a spherical polygon.
"""

import itertools
import math

import mpmath
import numba
import numpy as np
import pytest

from theory.activations import erf as _integrals
from theory.activations import relu as _relu
from theory.activations._base import _i2_relu
from theory.activations.relu import (
    I2,
    I3,
    I4,
    J2,
    I2_matrix,
    I3_tensor,
    I4_tensor,
    J2_matrix,
    dg_mean,
    dgg,
    dgg_tensor,
    i2,
    i3,
    j2,
    orthant_probability,
    relu_moment,
)

N_MC = 10_000_000
CHUNK = 500_000
Z = 5.0


def moment(C, H, l1=-1, l2=-1):
    return relu_moment(np.ascontiguousarray(C, dtype=np.float64), np.asarray(H, dtype=np.int64), len(H), l1, l2)


# --- covariances: factor W (C = W W^T), sampled through the factor so that singular C are exact ---------


def factor(kind, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((6, 6)) / np.sqrt(6)  # a K = M = 2 like Gram matrix of 6 fields
    if kind == "near":  # field 5 has correlation 0.999 with field 0, field 3 -0.999 with field 1
        for i, j, r in ((5, 0, 0.999), (3, 1, -0.999)):
            u = W[j] / np.linalg.norm(W[j])
            v = W[i] - (W[i] @ u) * u
            v /= np.linalg.norm(v)
            W[i] = 1.3 * (r * u + np.sqrt(1 - r * r) * v)
    elif kind == "singular":  # field 4 identical to field 0, field 5 = -0.5 field 1 (exactly)
        W[4] = W[0]
        W[5] = -0.5 * W[1]
    return W


def covariance(W):
    C = W @ W.T
    return (C + C.T) / 2


# (name, Heaviside fields, linear factors): the integrals of the ODE with index coincidences
SPECS = [
    ("I2(0,1)", (0, 1), 0, 1),
    ("I2(0,0)", (0,), 0, 0),
    ("I2(2,5)", (2, 5), 2, 5),
    ("J2(0,1)", (0, 1), -1, -1),
    ("J2(3,5)", (3, 5), -1, -1),
    ("J2(1,1)", (1,), -1, -1),
    ("I3(0,2,1)", (0, 1), 2, 1),
    ("I3(1,1,3)", (1, 3), 1, 3),
    ("I3(0,4,0) c=a", (0,), 4, 0),
    ("I3(5,0,3)", (5, 3), 0, 3),
    ("dgg(0;1,2)", (0, 1, 2), 1, 2),
    ("dgg(2;2,3) c=a", (2, 3), 2, 3),
    ("dgg(0;1,1) c=d", (0, 1), 1, 1),
    ("dgg(3;0,5)", (3, 0, 5), 0, 5),
    ("I4(0,1,2,3)", (0, 1, 2, 3), 2, 3),
    ("I4(0,1,0,2) c=a", (0, 1, 2), 0, 2),
    ("I4(0,1,2,2) c=d", (0, 1, 2), 2, 2),
    ("I4(0,0,1,2) a=b", (0, 1, 2), 1, 2),
    ("I4(1,2,3,5)", (1, 2, 3, 5), 3, 5),
    ("I4(0,5,1,4)", (0, 5, 1, 4), 1, 4),
    ("I4(2,3,1,0)", (2, 3, 1, 0), 1, 0),
    ("I4(0,4,1,2)", (0, 4, 1, 2), 1, 2),
    ("I4(0,1,4,5)", (0, 1, 4, 5), 4, 5),
    ("P2(0,1)", (0, 1), -1, -1),
    ("P3(0,1,2)", (0, 1, 2), -1, -1),
    ("P3(0,4,2)", (0, 4, 2), -1, -1),
    ("P4(0,1,2,3)", (0, 1, 2, 3), -1, -1),
    ("P4(1,3,4,5)", (1, 3, 4, 5), -1, -1),
    ("P4(0,2,4,5)", (0, 2, 4, 5), -1, -1),
    ("E[z4 P4(0,1,2,3)]", (0, 1, 2, 3), 4, -1),
    ("E[z5 P3(0,1,2)]", (0, 1, 2), 5, -1),
]


@numba.njit(cache=False)
def _accumulate(x, W, H, nH, L, s1, s2):
    """For z = W x_t over the rows x_t of x: s1[k] += prod_{h in H[k, :nH[k]]} theta(z_h) * z_L[k,0] * z_L[k,1]
    (a linear factor absent where L < 0), s2[k] += its square."""
    n = W.shape[0]
    z = np.empty(n)
    for t in range(x.shape[0]):
        for i in range(n):
            acc = 0.0
            for j in range(W.shape[1]):
                acc += W[i, j] * x[t, j]
            z[i] = acc
        for k in range(H.shape[0]):
            v = 1.0
            for q in range(nH[k]):
                if not z[H[k, q]] > 0.0:
                    v = 0.0
            if v != 0.0:
                if L[k, 0] >= 0:
                    v *= z[L[k, 0]]
                if L[k, 1] >= 0:
                    v *= z[L[k, 1]]
            s1[k] += v
            s2[k] += v * v


def monte_carlo(W, specs, seed):
    """Means and standard errors of prod theta(z_H) z_l1 z_l2 over N_MC samples z = W x, x ~ N(0, I),
    drawn in chunks of CHUNK (memory ~50 MB)."""
    rng = np.random.default_rng(seed)
    H = np.full((len(specs), 4), -1, dtype=np.int64)
    nH = np.array([len(sp[1]) for sp in specs], dtype=np.int64)
    L = np.array([(sp[2], sp[3]) for sp in specs], dtype=np.int64)
    for k, sp in enumerate(specs):
        H[k, : len(sp[1])] = sp[1]
    s1 = np.zeros(len(specs))
    s2 = np.zeros(len(specs))
    for _ in range(N_MC // CHUNK):
        _accumulate(rng.standard_normal((CHUNK, W.shape[1])), W, H, nH, L, s1, s2)
    mean = s1 / N_MC
    se = np.sqrt(np.maximum(s2 / N_MC - mean * mean, 0.0) / N_MC)
    return mean, se


@pytest.mark.parametrize("kind, seed", [("generic", 1), ("generic", 2), ("near", 3), ("singular", 4)])
def test_moments_against_monte_carlo(kind, seed):
    W = factor(kind, seed)
    C = covariance(W)
    mean, se = monte_carlo(W, SPECS, seed=100 + seed)
    bad = []
    for (name, H, l1, l2), m, s in zip(SPECS, mean, se):
        closed = moment(C, H, l1, l2)
        if not abs(closed - m) < Z * s + 1e-12:
            bad.append(f"{name}: closed {closed:.6g} vs MC {m:.6g} +- {s:.2g}")
    assert not bad, "\n".join(bad)


def test_singular_covariance_exact_values():
    """With z4 = z0 and z5 = -z1 / 2 exactly the merges reproduce the reduced integrals."""
    W = factor("singular", 4)
    C = covariance(W)
    assert moment(C, (1, 5)) == 0.0  # theta(z) theta(-z) = 0
    assert moment(C, (0, 1, 4, 5), 2, 3) == 0.0
    assert moment(C, (0, 4, 1, 2), 1, 2) == pytest.approx(moment(C, (0, 1, 2), 1, 2), abs=1e-15)
    assert moment(C, (0, 4), 0, 4) == pytest.approx(C[0, 0] / 2, rel=1e-14)  # E[g(z)^2] = C/2
    assert moment(C, (0, 4)) == pytest.approx(0.5, abs=1e-15)


# --- P4 against independent high-precision references -----------------------------------------------


def p4_mpmath(R, splits=()):
    """P4 by Plackett's path from the identity, R(t) = (1 - t) I + t R, all six correlations moving;
    partial correlations from mpmath's matrix inverse; mpmath tanh-sinh quadrature at 20 digits."""
    with mpmath.workdps(20):
        R = [[mpmath.mpf(float(x)) for x in row] for row in R]
        pairs = list(itertools.combinations(range(4), 2))

        def integrand(t):
            Rt = mpmath.matrix(4, 4)
            for i in range(4):
                for j in range(4):
                    Rt[i, j] = 1 if i == j else t * R[i][j]
            Om = Rt ** -1
            out = mpmath.mpf(0)
            for i, j in pairs:
                k, l = (x for x in range(4) if x not in (i, j))
                rho = -Om[k, l] / mpmath.sqrt(Om[k, k] * Om[l, l])
                rho = min(max(rho, -1), 1)
                out += R[i][j] / mpmath.sqrt(1 - t * t * R[i][j] ** 2) * mpmath.asin(rho)
            return out

        base = mpmath.mpf(1) / 16 + sum(mpmath.asin(R[i][j]) for i, j in pairs) / (8 * mpmath.pi)
        return float(mpmath.re(base + mpmath.quad(integrand, [0, *splits, 1]) / (4 * mpmath.pi**2)))


def correlation(W):
    C = W @ W.T
    d = np.sqrt(np.diag(C))
    R = C / np.outer(d, d)
    R = (R + R.T) / 2
    np.fill_diagonal(R, 1.0)
    return R


@pytest.mark.parametrize("seed", range(4))
def test_p4_against_mpmath(seed):
    rng = np.random.default_rng(200 + seed)
    R = correlation(rng.standard_normal((4, 4 + seed % 3)))
    assert orthant_probability(R) == pytest.approx(p4_mpmath(R), abs=1e-14)


@pytest.mark.parametrize("case", ["near-singular", "near-degenerate pairs", "near-coincident triple"])
def test_p4_against_mpmath_nearly_singular(case):
    rng = np.random.default_rng(300)
    if case == "near-singular":  # 4 vectors nearly in a 3-dimensional space: smallest eigenvalue ~1e-12
        W = np.hstack([rng.standard_normal((4, 3)), 1e-6 * rng.standard_normal((4, 1))])
    else:
        W = rng.standard_normal((4, 6))
        W[1] = W[0] + 1e-5 * rng.standard_normal(6)
        if case == "near-degenerate pairs":
            W[3] = -W[2] + 1e-5 * rng.standard_normal(6)
        else:
            W[2] = W[0] + 1e-5 * rng.standard_normal(6)
    R = correlation(W)
    assert np.linalg.eigvalsh(R)[0] < 1e-9
    ref = p4_mpmath(R)  # (agrees to 1e-20 with splits of [0, 1] at 1 - 10^-k, k = 1..15)
    assert orthant_probability(R) == pytest.approx(ref, abs=1e-12)


def solid_angle_orthant(V):
    """P(v_i . x > 0 for all i), x ~ N(0, I_3), for 4 unit vectors v_i in R^3: the solid angle of the
    spherical polygon {v_i . x >= 0} over 4 pi (vertices +-v_i x v_j, fan of Van Oosterom-Strackee triangles)."""
    verts = []
    for i, j in itertools.combinations(range(4), 2):
        w = np.cross(V[i], V[j])
        w /= np.linalg.norm(w)
        for x in (w, -w):
            if np.all(V @ x >= -1e-12):
                verts.append(x)
    if len(verts) < 3:
        return 0.0
    X = np.array(verts)
    p = X.mean(axis=0)
    p /= np.linalg.norm(p)
    e1 = X[0] - (X[0] @ p) * p
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(p, e1)
    X = X[np.argsort(np.arctan2(X @ e2, X @ e1))]
    omega = 0.0
    for a, b in zip(X, np.roll(X, -1, axis=0)):
        omega += 2 * math.atan2(abs(p @ np.cross(a, b)), 1 + p @ a + a @ b + b @ p)
    return omega / (4 * np.pi)


@pytest.mark.parametrize("seed", range(6))
def test_p4_rank3_against_solid_angle(seed):
    rng = np.random.default_rng(400 + seed)
    V = rng.standard_normal((4, 3))  # 4 vectors in 3 dimensions: R = V V^T has rank 3
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    R = V @ V.T
    np.fill_diagonal(R, 1.0)
    assert orthant_probability(R) == pytest.approx(solid_angle_orthant(V), abs=1e-13)


def test_quadrature_constants():
    """The 21-point Kronrod rule is exact to degree 31, its embedded 10-point Gauss rule to degree 19."""
    x = np.concatenate([-_relu._XK[:-1], _relu._XK[::-1]])
    wk = np.concatenate([_relu._WK[:-1], _relu._WK[::-1]])
    xg = np.concatenate([-_relu._XK[1:10:2], _relu._XK[1:10:2][::-1]])
    wg = np.concatenate([_relu._WG, _relu._WG[::-1]])
    for k in range(32):
        exact = (1 - (-1) ** (k + 1)) / (k + 1)
        assert np.sum(wk * x**k) == pytest.approx(exact, abs=1e-14)
        if k < 20:
            assert np.sum(wg * xg**k) == pytest.approx(exact, abs=1e-14)
    assert np.sum(_relu._TS8_W) == pytest.approx(1.0, abs=1e-14)
    assert 0.5 * np.sum(_relu._TS8_W) + np.sum(_relu._TS16_W) == pytest.approx(1.0, abs=1e-14)


def test_orthant_closed_forms_and_scaling():
    rng = np.random.default_rng(5)
    C = covariance(factor("generic", 5))[:4, :4]
    d = np.sqrt(np.diag(C))
    R = C / np.outer(d, d)
    assert orthant_probability(C) == pytest.approx(orthant_probability(R), abs=1e-15)  # scale-free
    assert orthant_probability(R[:2, :2]) == pytest.approx(0.25 + np.arcsin(R[0, 1]) / (2 * np.pi), abs=1e-15)
    p3 = 0.125 + (np.arcsin(R[0, 1]) + np.arcsin(R[0, 2]) + np.arcsin(R[1, 2])) / (4 * np.pi)
    assert orthant_probability(R[:3, :3]) == pytest.approx(p3, abs=1e-15)
    blocks = np.eye(4)
    blocks[0, 1] = blocks[1, 0] = 0.3
    blocks[2, 3] = blocks[3, 2] = -0.6

    def p2(r):
        return 0.25 + np.arcsin(r) / (2 * np.pi)

    assert orthant_probability(blocks) == pytest.approx(p2(0.3) * p2(-0.6), abs=1e-15)
    assert orthant_probability(np.eye(4)) == pytest.approx(1 / 16, abs=1e-15)
    assert orthant_probability(np.ones((4, 4))) == 0.5
    assert orthant_probability(np.zeros((0, 0))) == 1.0
    # permutation invariance (the kept pairing and the order of the path differ)
    for perm in itertools.permutations(range(4)):
        assert orthant_probability(R[np.ix_(perm, perm)]) == pytest.approx(orthant_probability(R), abs=1e-15)
    # batched
    Rs = np.stack([R, np.eye(4), blocks])
    np.testing.assert_allclose(orthant_probability(Rs), [orthant_probability(x) for x in Rs], atol=1e-16)
    assert rng is not None


# --- explicit closed forms ----------------------------------------------------------------------------


def test_explicit_closed_forms():
    for seed in range(5):
        C = covariance(factor("generic", 10 + seed))
        for i, j in itertools.product(range(6), repeat=2):
            c11, c12, c22 = C[i, i], C[i, j], C[j, j]
            t = np.arccos(np.clip(c12 / np.sqrt(c11 * c22), -1, 1))
            acos_kernel = np.sqrt(c11 * c22) / (2 * np.pi) * (np.sin(t) + (np.pi - t) * np.cos(t))
            assert i2(c11, c12, c22) == pytest.approx(acos_kernel, rel=1e-13, abs=1e-15)
            assert i2(c11, c12, c22) == pytest.approx(float(_i2_relu(c11, c12, c22)), rel=1e-13, abs=1e-15)
            assert i2(c11, c12, c22) == pytest.approx(moment(C, (i, j), i, j), rel=1e-13, abs=1e-15)
            assert j2(c11, c12, c22) == pytest.approx(moment(C, (i, j)), rel=1e-14)
            for u in range(6):
                ref = moment(C, (i, j), u, j)
                assert i3(c11, C[i, u], c12, C[u, j], c22) == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert i2(0.0, 0.0, 1.0) == 0.0 and j2(1.0, 0.0, 0.0) == 0.0 and i3(0.0, 0.0, 0.0, 1.0, 1.0) == 0.0


def test_python_fallback_matches_compiled():
    """The same source runs without numba (HAVE_NUMBA False): compare its plain-Python execution."""
    if not _relu.HAVE_NUMBA:
        pytest.skip("numba missing: the module already runs as plain Python")
    C = covariance(factor("near", 7))
    for _, H, l1, l2 in SPECS:
        H = np.asarray(H, dtype=np.int64)
        assert relu_moment.py_func(C, H, len(H), l1, l2) == pytest.approx(relu_moment(C, H, len(H), l1, l2), abs=1e-15)


# --- tensor wrappers ----------------------------------------------------------------------------------


def _sub(C, idx):
    return C[np.ix_(idx, idx)]


def test_tensor_wrappers_match_core_and_definition():
    rng = np.random.default_rng(6)
    n = 5
    Ws = rng.standard_normal((2, 3, n, n)) / np.sqrt(n)
    Ws[0, 1, 3] = Ws[0, 1, 0]  # an exact duplicate field inside the batch
    Cs = np.einsum("...ij,...kj->...ik", Ws, Ws)
    Cs = (Cs + np.swapaxes(Cs, -1, -2)) / 2
    A, B = np.array([0, 1]), np.array([0, 1, 2, 4])
    out = {"I2": I2_matrix(Cs), "J2": J2_matrix(Cs), "I3": I3_tensor(Cs, A, B), "I4": I4_tensor(Cs, A, B),
           "dgg": dgg_tensor(Cs, A, B)}
    assert (
        out["I3"].shape == (2, 3, 2, n, 4)
        and out["I4"].shape == (2, 3, 2, 2, 4, 4)
        and out["dgg"].shape == (2, 3, 2, 4, 4)
    )
    for key in out:  # the shapes of the erf helpers (theory.expectations.closed switches module by activation)
        ref = {"I2": _integrals.I2_matrix(Cs), "J2": _integrals.J2_matrix(Cs), "I3": _integrals.I3_tensor(Cs, A, B),
               "I4": _integrals.I4_tensor(Cs, A, B), "dgg": _integrals.dgg_tensor(Cs, A, B)}[key]
        assert out[key].shape == ref.shape
    for b in itertools.product(range(2), range(3)):
        C = Cs[b]
        for i, j in itertools.product(range(n), repeat=2):
            assert out["I2"][b][i, j] == pytest.approx(moment(C, (i, j), i, j), rel=1e-13, abs=1e-15)
            assert out["J2"][b][i, j] == pytest.approx(moment(C, (i, j)), rel=1e-13, abs=1e-15)
            assert out["I2"][b][i, j] == pytest.approx(I2(C[i, i], C[i, j], C[j, j]), rel=1e-13, abs=1e-15)
        for ia, a in enumerate(A):
            for u in range(n):
                for ic, c in enumerate(B):
                    assert out["I3"][b][ia, u, ic] == pytest.approx(moment(C, (a, c), u, c), rel=1e-12, abs=1e-15)
                    assert out["I3"][b][ia, u, ic] == pytest.approx(
                        I3(C[a, a], C[a, u], C[a, c], C[u, c], C[c, c]), rel=1e-12, abs=1e-15)
            for (ic, c), (id_, d) in itertools.product(enumerate(B), repeat=2):
                assert out["dgg"][b][ia, ic, id_] == pytest.approx(moment(C, (a, c, d), c, d), rel=1e-14, abs=1e-16)
                s = _sub(C, [a, c, d])  # positions, not indices: coincidences become |r| = 1 merges
                ref = dgg(s[0, 0], s[0, 1], s[0, 2], s[1, 1], s[1, 2], s[2, 2])
                assert out["dgg"][b][ia, ic, id_] == pytest.approx(ref, rel=1e-12, abs=1e-15)
                for ib, bb in enumerate(A):
                    v = out["I4"][b][ia, ib, ic, id_]
                    assert v == pytest.approx(moment(C, (a, bb, c, d), c, d), rel=1e-14, abs=1e-16)
                    s = _sub(C, [a, bb, c, d])
                    ref = I4(s[0, 0], s[0, 1], s[0, 2], s[0, 3], s[1, 1], s[1, 2], s[1, 3], s[2, 2], s[2, 3], s[3, 3])
                    assert v == pytest.approx(ref, rel=1e-11, abs=1e-14)
    np.testing.assert_array_equal(dg_mean(np.array([0.0, 2.0])), [0.0, 0.5])
    # a single covariance (no batch) and B defaulting to all fields
    assert I4_tensor(Cs[0, 0], A).shape == (2, 2, n, n)
    np.testing.assert_allclose(I3_tensor(Cs[0, 0], A), I3_tensor(Cs[0, 0], A, np.arange(n)), rtol=0, atol=0)


def test_tensor_index_coincidences_are_the_reduced_integrals():
    C = covariance(factor("generic", 8))
    A = np.arange(3)
    i4, dg, i3_ = I4_tensor(C, A), dgg_tensor(C, A), I3_tensor(C, A)
    for a, c in itertools.product(range(3), range(6)):
        # I4[a, a, c, c] = E[theta_a g_c^2];  I4[a, b, a, d] = E[theta_a theta_b z_a g_d];  dgg[a, a, d] = I3-like
        assert i4[a, a, c, c] == pytest.approx(moment(C, (a, c), c, c), abs=1e-15)
        assert i4[a, a, c, c] == pytest.approx(dg[a, c, c], abs=1e-15)
        assert dg[a, a, c] == pytest.approx(i3_[a, a, c], abs=1e-15)
    assert i4[0, 0, 0, 0] == pytest.approx(C[0, 0] / 2, rel=1e-14)


# --- limits -------------------------------------------------------------------------------------------


def _pair_covariance(r, scale=1.7):
    """6 fields, field 1 = (r field 0 + sqrt(1 - r^2) e) * scale with e a unit direction orthogonal to field 0."""
    rng = np.random.default_rng(9)
    W = rng.standard_normal((6, 6)) / np.sqrt(6)
    u = W[0] / np.linalg.norm(W[0])
    e = W[1] - (W[1] @ u) * u
    e /= np.linalg.norm(e)
    W[1] = scale * np.linalg.norm(W[0]) * (r * u + math.sqrt(max(1 - r * r, 0.0)) * e)
    return covariance(W)


LIMIT_SPECS = [(H, l1, l2) for _, H, l1, l2 in SPECS] + [((0, 1, 2, 3), 1, 0), ((0, 1), 0, 1), ((0, 1, 5), 0, 1)]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_perfect_correlation_limit_is_continuous(sign):
    exact = _pair_covariance(sign * 1.0)
    assert abs(exact[0, 1]) / math.sqrt(exact[0, 0] * exact[1, 1]) == pytest.approx(1.0, abs=1e-15)
    for delta, tol in ((1e-10, 1e-4), (1e-13, 3e-6), (1e-15, 1e-7)):
        near = _pair_covariance(sign * (1.0 - delta))
        for H, l1, l2 in LIMIT_SPECS:
            a, b = moment(exact, H, l1, l2), moment(near, H, l1, l2)
            assert np.isfinite(a) and np.isfinite(b)
            assert abs(a - b) < tol, (H, l1, l2, delta, a, b)


def test_zero_variance_fields():
    C = covariance(factor("generic", 11))
    C[2, :] = 0.0
    C[:, 2] = 0.0
    for _, H, l1, l2 in SPECS:
        v = moment(C, H, l1, l2)
        assert np.isfinite(v)
        if 2 in H or 2 in (l1, l2):
            assert v == 0.0  # theta(0) = 0, and a zero linear factor
    assert np.all(np.isfinite(I4_tensor(C, [0, 2]))) and I4_tensor(C, [0, 2])[1, 1, 0, 0] == 0.0
    assert J2_matrix(C)[2, 2] == 0.0 and I2_matrix(C)[2, 0] == 0.0 and np.all(np.isfinite(I3_tensor(C, [0, 2])))


def test_nearly_singular_pairs_stay_accurate():
    """Two nearly degenerate pairs (student ~ teacher, twice): I4 and P4 continuous down to the merge."""
    vals = []
    for k in (6, 8, 10, 12, 13):
        W = factor("generic", 12)
        W[2] = W[0] + 10.0 ** (-k / 2) * W[4]
        W[3] = W[1] + 10.0 ** (-k / 2) * W[5]
        C = covariance(W)
        vals.append((moment(C, (0, 1, 2, 3), 2, 3), moment(C, (0, 1, 2, 3))))
    W = factor("generic", 12)
    W[2], W[3] = W[0], W[1]
    C = covariance(W)
    limit = (moment(C, (0, 1), 0, 1), moment(C, (0, 1)))
    assert limit[0] == pytest.approx(i2(C[0, 0], C[0, 1], C[1, 1]), abs=1e-15)
    for k, (a, b) in zip((6, 8, 10, 12, 13), vals):
        gap = 10.0 ** (-k / 2)  # the square-root cusp: the distance to the limit is O(sqrt(1 - r))
        assert abs(a - limit[0]) < 3 * gap and abs(b - limit[1]) < 3 * gap


# --- input validation ---------------------------------------------------------------------------------


def test_bad_input_raises():
    with pytest.raises(ValueError, match="C12"):
        I2(1.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="variance C11"):
        J2(-1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="C33"):
        I3(1.0, 0.2, 0.1, 0.1, -2.0)
    with pytest.raises(ValueError, match="C13"):
        I3(1.0, 0.2, 3.0, 0.1, 1.0)
    with pytest.raises(ValueError, match="finite"):
        I2(np.nan, 0.0, 1.0)
    with pytest.raises(ValueError, match="real"):
        J2(1.0, 0.5j, 1.0)
    # pairwise fine, jointly not positive semi-definite
    with pytest.raises(ValueError, match="I4: .*C11.*not positive semi-definite"):
        I4(1.0, 0.9, 0.9, 0.0, 1.0, -0.9, 0.0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="dgg: .*not positive semi-definite"):
        dgg(1.0, 0.9, 0.9, 1.0, -0.9, 1.0)
    with pytest.raises(ValueError, match="variance C44"):
        I4(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, -1.0)
    with pytest.raises(ValueError, match="R must be a square"):
        orthant_probability(np.ones((2, 3)))
    with pytest.raises(ValueError, match="at most 4"):
        orthant_probability(np.eye(5))
    with pytest.raises(ValueError, match="R must be symmetric"):
        orthant_probability(np.array([[1.0, 0.5], [0.2, 1.0]]))
    with pytest.raises(ValueError, match="R has a negative variance"):
        orthant_probability(np.diag([1.0, -1.0]))
    with pytest.raises(ValueError, match="R is not a covariance"):
        orthant_probability(np.array([[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]]))
    with pytest.raises(ValueError, match="C must have shape"):
        I4_tensor(np.ones(3), [0])


def test_scalar_functions_broadcast():
    c12 = np.linspace(-0.9, 0.9, 7)
    np.testing.assert_allclose(J2(1.0, c12, 1.0), 0.25 + np.arcsin(c12) / (2 * np.pi), atol=1e-15)
    out = I4(1.0, 0.2, 0.1, c12[:, None] * 0.3, 1.0, 0.3, 0.1, 1.0, np.array([0.1, 0.2]), 1.0)
    assert out.shape == (7, 2)
    assert isinstance(I2(1.0, 0.5, 2.0), float)
