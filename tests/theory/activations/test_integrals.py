"""The erf integrals I2, J2, I3, I4 and the tilt identity against Monte Carlo.

Each closed form is compared with a Monte Carlo mean over N samples; the tolerance is 5 standard
errors of that mean (computed from the same samples), so a wrong formula fails and a right one
passes with probability ~1 - 6e-7 per comparison.
"""

import numpy as np
import pytest
import scipy.special

from tests.helpers import random_covariance
from theory import I2, I3, I4, J2, tilt
from theory.activations.erf import I2_matrix, I3_tensor, I4_tensor, J2_matrix, dgg_tensor

N = 400_000
Z = 5.0


def g(z):
    return scipy.special.erf(z / np.sqrt(2))


def dg(z):
    return np.sqrt(2 / np.pi) * np.exp(-z * z / 2)


def samples(rng, C):
    L = np.linalg.cholesky(C + 1e-12 * np.eye(len(C)))
    return rng.standard_normal((N, len(C))) @ L.T


def assert_mc(closed, values):
    mean, se = values.mean(), values.std() / np.sqrt(len(values))
    assert abs(closed - mean) < Z * se + 1e-12, f"closed form {closed} vs MC {mean} +- {se}"


@pytest.mark.parametrize("seed", range(3))
def test_pairwise_integrals(seed):
    rng = np.random.default_rng(seed)
    C = random_covariance(rng, 2) * rng.uniform(0.3, 3)
    z = samples(rng, C)
    assert_mc(I2(C[0, 0], C[0, 1], C[1, 1]), g(z[:, 0]) * g(z[:, 1]))
    assert_mc(J2(C[0, 0], C[0, 1], C[1, 1]), dg(z[:, 0]) * dg(z[:, 1]))


@pytest.mark.parametrize("seed", range(3))
def test_I3(seed):
    rng = np.random.default_rng(10 + seed)
    C = random_covariance(rng, 3) * rng.uniform(0.3, 3)
    z = samples(rng, C)
    closed = I3(C[0, 0], C[0, 1], C[0, 2], C[1, 2], C[2, 2])
    assert_mc(closed, dg(z[:, 0]) * z[:, 1] * g(z[:, 2]))


@pytest.mark.parametrize("seed", range(3))
def test_I4(seed):
    rng = np.random.default_rng(20 + seed)
    C = random_covariance(rng, 4) * rng.uniform(0.3, 3)
    z = samples(rng, C)
    closed = I4(C[0, 0], C[0, 1], C[0, 2], C[0, 3], C[1, 1], C[1, 2], C[1, 3], C[2, 2], C[2, 3], C[3, 3])
    assert_mc(closed, dg(z[:, 0]) * dg(z[:, 1]) * g(z[:, 2]) * g(z[:, 3]))


def test_I4_repeated_arguments(rng):
    """Index tuples with repeated fields (a = b, c = d) are what the ODE uses most."""
    C = random_covariance(rng, 2)
    z = samples(rng, C)
    c11, c12, c22 = C[0, 0], C[0, 1], C[1, 1]
    closed = I4(c11, c11, c12, c12, c11, c12, c12, c22, c22, c22)
    assert_mc(closed, dg(z[:, 0]) ** 2 * g(z[:, 1]) ** 2)


@pytest.mark.parametrize("seed", range(3))
def test_tilt_identity(seed):
    """E[g'(a) g(c) g(d)] = E[g'(a)] I2(tilted covariance), and E[g'(a) G] for a polynomial G."""
    rng = np.random.default_rng(30 + seed)
    C = random_covariance(rng, 3) * rng.uniform(0.3, 3)
    z = samples(rng, C)
    pref, Ct = tilt(C, 0)
    assert_mc(pref * I2(Ct[1, 1], Ct[1, 2], Ct[2, 2]), dg(z[:, 0]) * g(z[:, 1]) * g(z[:, 2]))
    assert_mc(pref * Ct[1, 2], dg(z[:, 0]) * z[:, 1] * z[:, 2])
    assert_mc(pref, dg(z[:, 0]))


def test_tensor_versions_match_scalar_calls(rng):
    """The all-index-tuple helpers are the scalar formulas, index by index."""
    n = 4
    C = random_covariance(rng, n)
    A = [0, 1]
    i2, j2 = I2_matrix(C), J2_matrix(C)
    i3, i4, dgg = I3_tensor(C, A), I4_tensor(C, A), dgg_tensor(C, A)
    for a in A:
        for b in range(n):
            assert i2[a, b] == pytest.approx(I2(C[a, a], C[a, b], C[b, b]), rel=1e-13)
            assert j2[a, b] == pytest.approx(J2(C[a, a], C[a, b], C[b, b]), rel=1e-13)
            for c in range(n):
                assert i3[a, b, c] == pytest.approx(
                    I3(C[a, a], C[a, b], C[a, c], C[b, c], C[c, c]), rel=1e-12, abs=1e-14
                )
                pref, Ct = tilt(C, a)
                assert dgg[a, b, c] == pytest.approx(pref * I2(Ct[b, b], Ct[b, c], Ct[c, c]), rel=1e-12, abs=1e-14)
        for b in A:
            for c in range(n):
                for d in range(n):
                    ref = I4(C[a, a], C[a, b], C[a, c], C[a, d], C[b, b], C[b, c], C[b, d], C[c, c], C[c, d], C[d, d])
                    assert i4[a, b, c, d] == pytest.approx(ref, rel=1e-12, abs=1e-14)


def test_batched_covariances(rng):
    Cs = np.stack([random_covariance(rng, 3) for _ in range(5)])
    out = I4_tensor(Cs, [0, 1])
    for i in range(5):
        np.testing.assert_allclose(out[i], I4_tensor(Cs[i], [0, 1]), rtol=1e-13)
