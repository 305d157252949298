"""Symbolic checks (sympy) that the erf integrals obey the Gaussian identities they must.

- Price's theorem: d/dC12 E[g(a) g(b)] = E[g'(a) g'(b)], i.e. dI2/dC12 = J2, and
  d/dC11 E[g(a) g(b)] = 1/2 E[g''(a) g(b)] = -1/2 E[a g'(a) g(b)] = -1/2 I3(a, a, b) (g'' = -z g' for erf).
- Stein's lemma: E[g'(a) b g(c)] = C_ab E[g''(a) g(c)] + C_bc E[g'(a) g'(c)], i.e.
  I3(a, b, c) = -C_ab I3(a, a, c) + C_bc J2(a, c).
- Price's theorem for I4: d I4(a,b,c,d)/d C_cd = E[g'(a) g'(b) g'(c) g'(d)] = d I4(c,d,a,b)/d C_cd
  (finite differences of the closed form, and Monte Carlo).
The closed forms are taken from theory.activations.erf with sympy symbols substituted for numpy.
"""

import numpy as np
import pytest
import sympy as sp

C11, C22, C33 = sp.symbols("C11 C22 C33", positive=True)
C12, C13, C23 = sp.symbols("C12 C13 C23", real=True)


def I2(c11, c12, c22):
    return 2 / sp.pi * sp.asin(c12 / sp.sqrt((1 + c11) * (1 + c22)))


def J2(c11, c12, c22):
    return 2 / sp.pi / sp.sqrt((1 + c11) * (1 + c22) - c12**2)


def I3(c11, c12, c13, c23, c33):
    L3 = (1 + c11) * (1 + c33) - c13**2
    return 2 / sp.pi * (c23 * (1 + c11) - c12 * c13) / ((1 + c11) * sp.sqrt(L3))


def test_symbolic_forms_are_the_package_forms():
    """The sympy transcriptions above evaluate to the package's numpy functions."""
    from theory.activations import erf as num

    vals = {C11: 0.7, C22: 1.3, C33: 0.9, C12: 0.2, C13: -0.3, C23: 0.4}
    f = lambda e: float(e.subs(vals).evalf())  # noqa: E731
    assert f(I2(C11, C12, C22)) == pytest.approx(num.I2(0.7, 0.2, 1.3), rel=1e-14)
    assert f(J2(C11, C12, C22)) == pytest.approx(num.J2(0.7, 0.2, 1.3), rel=1e-14)
    assert f(I3(C11, C12, C13, C23, C33)) == pytest.approx(num.I3(0.7, 0.2, -0.3, 0.4, 0.9), rel=1e-14)


def test_price_theorem_off_diagonal():
    assert sp.simplify(sp.diff(I2(C11, C12, C22), C12) - J2(C11, C12, C22)) == 0


def test_price_theorem_diagonal():
    lhs = sp.diff(I2(C11, C12, C22), C11)
    rhs = -sp.Rational(1, 2) * I3(C11, C11, C12, C12, C22)  # I3(a, a, b): C_aa, C_aa, C_ab, C_ab, C_bb
    assert sp.simplify(lhs - rhs) == 0


def test_stein_lemma_for_I3():
    lhs = I3(C11, C12, C13, C23, C33)
    rhs = -C12 * I3(C11, C11, C13, C13, C33) + C23 * J2(C11, C13, C33)
    assert sp.simplify(lhs - rhs) == 0


def test_linear_limit_of_small_fields():
    """For small covariances erf(z/sqrt2) ~ sqrt(2/pi) z: I2 -> (2/pi) C12 at first order."""
    eps = sp.symbols("epsilon", positive=True)
    series = sp.series(I2(eps * C11, eps * C12, eps * C22), eps, 0, 2).removeO()
    assert sp.simplify(series - 2 / sp.pi * eps * C12) == 0


def test_price_theorem_for_I4_numerically():
    """Price: d I4(a,b,c,d)/d C_cd = E[g'(a) g'(b) g'(c) g'(d)] = d I4(c,d,a,b)/d C_ab.

    Both derivatives (central differences of the closed form) must agree, and agree with Monte Carlo.
    """
    from theory.activations.erf import I4

    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 7))
    C = A @ A.T / 7
    h = 1e-5

    def i4(C):
        return I4(C[0, 0], C[0, 1], C[0, 2], C[0, 3], C[1, 1], C[1, 2], C[1, 3], C[2, 2], C[2, 3], C[3, 3])

    def d_dC(C, i, j):
        E = np.zeros_like(C)
        E[i, j] = E[j, i] = h
        return (i4(C + E) - i4(C - E)) / (2 * h)

    perm = [2, 3, 0, 1]
    lhs = d_dC(C, 2, 3)
    rhs = d_dC(C[np.ix_(perm, perm)], 2, 3)  # C_ab in the order (c, d, a, b)
    assert lhs == pytest.approx(rhs, rel=1e-6)
    z = rng.standard_normal((400_000, 4)) @ np.linalg.cholesky(C).T
    dg = np.sqrt(2 / np.pi) * np.exp(-z**2 / 2)
    prod = dg.prod(1)
    assert abs(lhs - prod.mean()) < 5 * prod.std() / np.sqrt(len(prod))
