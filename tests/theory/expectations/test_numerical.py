"""The numerical expectation engine (theory.expectations.numerical) against every independent reference we have.

- pepita (all variants), relu and tanh: Monte Carlo of Rule.local_update, within 5 standard errors
  (Monte Carlo's and, for QMC, the quadrature's own);
- bp, fa, afa with erf: the closed forms of theory.expectations.closed (all variants);
- linear g: polynomial closed forms derived here with sympy from the one-sample update;
- the quadrature's stated error against a much finer rule; QMC's error estimate against the truth;
- pepita -> afa as sigma_F -> 0 (first-order Taylor expansion of the postsynaptic term);
- theory.integrate(rule="pepita") at two quadrature accuracies.
"""

import numpy as np
import pytest

import theory
from tests.helpers import args, linear_closed_forms, maxabs, random_state  # noqa: F401
from theory.expectations.closed import closed_form_terms
from theory.expectations.montecarlo import monte_carlo_terms
from theory.expectations.numerical import QMC, GaussHermite, SparseGrid, default_quadrature, numerical_terms

Z = 5.0
N_MC = 200_000






def assert_within(est, ref, se, label):
    for name, a, b, s in zip(("X", "DD", "EH"), est, ref, se):
        bad = np.abs(a - b) > Z * s + 1e-12
        assert not bad.any(), f"{label}: {name} off by {np.abs(a - b)[bad]} > {Z} x se {s[bad]}"


PEPITA_VARIANTS = [
    dict(presynaptic="modulated", error="first", sigma=0.0, sigma_F=1.0),
    dict(presynaptic="clean", error="first", sigma=0.0, sigma_F=1.0),
    dict(presynaptic="modulated", error="modulated", sigma=0.0, sigma_F=1.0),
    dict(presynaptic="clean", error="modulated", sigma=0.0, sigma_F=1.5),
    dict(presynaptic="modulated", error="first", sigma=0.0, sigma_F=-1.5),
    dict(presynaptic="modulated", error="modulated", sigma=0.5, sigma_F=1.0),
]


@pytest.mark.parametrize("var", PEPITA_VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_pepita_against_monte_carlo(rng, var):
    st = random_state(rng, 2, 2)
    rule = theory.make_rule("pepita", presynaptic=var["presynaptic"], error=var["error"])
    kw = dict(sigma=var["sigma"], sigma_F=var["sigma_F"])
    mc, se = monte_carlo_terms(st, rule, n_samples=N_MC, rng=rng, **kw)
    num, err = numerical_terms(rule, *args(st), **kw, return_error=True)
    # The quadrature error is orders of magnitude below the Monte Carlo error; add it anyway.
    assert_within(num, mc, [s + e for s, e in zip(se, err)], f"pepita {var}")


@pytest.mark.parametrize("g", ["relu", "tanh"])
@pytest.mark.parametrize("rule", ["bp", "fa", "afa", "pepita"])
def test_other_activations_against_monte_carlo(rng, g, rule):
    st = random_state(rng, 2, 2)
    mc, se = monte_carlo_terms(st, rule, n_samples=N_MC, rng=rng, g=g, sigma_F=1.2)
    # relu: QMC, whose own standard error is combined with Monte Carlo's; tanh: the default rule.
    quad = QMC(2**13, 8) if g == "relu" else None
    num, qse = numerical_terms(rule, *args(st), g=g, sigma_F=1.2, quadrature=quad, return_error=True)
    assert_within(num, mc, [np.hypot(s, q) for s, q in zip(se, qse)], f"{rule} {g}")


CLOSED_VARIANTS = [
    ("bp", None, 0.0, 1.0),
    ("bp", None, 0.5, 1.0),
    ("fa", None, 0.0, 1.0),
    ("fa", None, 0.3, 1.0),
    ("afa", "modulated", 0.0, 1.0),
    ("afa", "modulated", 0.5, -1.5),
    ("afa", "clean", 0.0, 2.0),
    ("afa", "clean", 0.4, 1.0),
]


@pytest.mark.parametrize("name,pre,sigma,sigma_F", CLOSED_VARIANTS)
def test_engine_against_erf_closed_forms(rng, name, pre, sigma, sigma_F):
    st = random_state(rng, 2, 1)  # K != M
    rule = theory.make_rule(name, presynaptic=pre)
    cf = closed_form_terms(rule, *args(st), sigma=sigma, sigma_F=sigma_F)
    # n_noise = 3 integrates bp/fa/afa exactly in zeta (polynomials of degree <= 2 in it).
    num = numerical_terms(rule, *args(st), sigma=sigma, sigma_F=sigma_F, quadrature=GaussHermite(40, n_noise=3))
    scale = max(np.abs(x).max() for x in cf)
    assert maxabs(num, cf) < 1e-8 * max(1.0, scale), f"{rule.label}: {maxabs(num, cf):.3g}"


def test_default_rule_against_closed_form_k4m4(rng):
    """K = M = 4 (d = 8): the default QMC rule agrees with the closed form within its own error estimate."""
    st = random_state(rng, 4, 4)
    rule = theory.make_rule("afa")
    cf = closed_form_terms(rule, *args(st), sigma_F=1.0)
    num, se = numerical_terms(rule, *args(st), sigma_F=1.0, return_error=True)
    assert isinstance(default_quadrature(8), QMC)
    assert_within(num, cf, se, "afa K=M=4 QMC")


# ----------------------------------------------------------------------------- linear g (sympy)




@pytest.mark.parametrize("name,pre,err,sigma,sigma_F", [
    ("bp", None, None, 0.3, 1.0), ("fa", None, None, 0.0, 1.0), ("afa", "modulated", None, 0.3, 1.3),
    ("afa", "clean", None, 0.0, -1.0), ("pepita", "modulated", "first", 0.3, 1.5),
    ("pepita", "clean", "modulated", 0.0, -0.7), ("pepita", "modulated", "modulated", 0.2, 1.0),
])
def test_engine_against_sympy_linear(rng, name, pre, err, sigma, sigma_F):
    K, M = 2, 1
    st = random_state(rng, K, M)
    rule = theory.make_rule(name, presynaptic=pre, error=err)
    evaluate = linear_closed_forms(rule, K, M, sigma, sigma_F)
    ref = evaluate(st)
    # Gauss-Hermite with 3 nodes is exact for these quadratics; the default rule too.
    for quad in (GaussHermite(3), None):
        num = numerical_terms(rule, *args(st), sigma=sigma, sigma_F=sigma_F, g="linear", quadrature=quad)
        assert maxabs(num, ref) < 1e-10, f"{rule.label}: {maxabs(num, ref):.3g}"


# ----------------------------------------------------------------------------- quadrature error


def test_stated_gauss_hermite_error(rng):
    """The module docstring's figures for the default GH(20), K = M = 2, erf, against GH(48):
    pepita < 1e-5, bp (peaked g'^2 e^2 integrand) < 1e-3."""
    states = [theory.random_state(2, 2, D=1000, seed=s) for s in range(2)] + [random_state(rng, 2, 2) for _ in range(2)]
    for st in states:
        for rule in ("pepita", "bp"):
            ref = numerical_terms(rule, *args(st), sigma_F=1.0, quadrature=GaussHermite(48))
            est = numerical_terms(rule, *args(st), sigma_F=1.0)
            assert maxabs(est, ref) < {"pepita": 1e-5, "bp": 1e-3}[rule], f"{rule}: {maxabs(est, ref):.3g}"
            # Convergence: a coarser rule is clearly worse, so the check has teeth.
            coarse = numerical_terms(rule, *args(st), sigma_F=1.0, quadrature=GaussHermite(6))
            assert maxabs(coarse, ref) > 10 * maxabs(est, ref)


def test_qmc_error_estimate_is_honest(rng):
    """QMC's reported standard error covers its actual error against an accurate GH rule."""
    st = random_state(rng, 2, 2)
    ref = numerical_terms("pepita", *args(st), quadrature=GaussHermite(32))
    est, se = numerical_terms("pepita", *args(st), quadrature=QMC(2**10, 16, seed=3), return_error=True)
    assert_within(est, ref, se, "QMC")
    assert max(s.max() for s in se) < 1e-2


def test_sparse_grid_converges(rng):
    st = random_state(rng, 2, 2)
    ref = numerical_terms("pepita", *args(st), quadrature=GaussHermite(32))
    errs = [maxabs(numerical_terms("pepita", *args(st), quadrature=SparseGrid(lv)), ref) for lv in (3, 5, 7)]
    assert errs[2] < errs[1] < errs[0] and errs[2] < 1e-3, errs


def test_folding_and_pruning_are_exact(rng):
    """Folding onto a half-space (odd g) and pruning corners change nothing beyond 1e-12."""
    st = random_state(rng, 2, 2)
    a = numerical_terms("pepita", *args(st), quadrature=GaussHermite(12, prune=0.0))
    b = numerical_terms("pepita", *args(st), quadrature=GaussHermite(12))
    assert maxabs(a, b) < 1e-12
    # relu is not odd: no folding; still a valid (unfolded) rule, agreeing with QMC within its error.
    r = numerical_terms("pepita", *args(st), g="relu", quadrature=GaussHermite(40))
    q, se = numerical_terms("pepita", *args(st), g="relu", quadrature=QMC(2**12, 8), return_error=True)
    assert_within(q, r, [s + 2e-3 for s in se], "relu GH vs QMC")


def test_batched_equals_single(rng):
    states = [random_state(rng, 2, 3) for _ in range(3)]
    stack = lambda name: np.stack([getattr(s, name) for s in states])  # noqa: E731
    batched = numerical_terms(
        "pepita",
        *(stack(n) for n in ("Q", "R", "T", "S", "U", "P", "v", "v_star", "b")),
        sigma_F=0.8,
        quadrature=GaussHermite(8),
    )
    for i, st in enumerate(states):
        single = numerical_terms("pepita", *args(st), sigma_F=0.8, quadrature=GaussHermite(8))
        assert maxabs([x[i] for x in batched], single) < 1e-13


def test_singular_covariance(rng):
    """A student unit equal to a teacher unit (Omega singular) gives finite terms equal to the limit."""
    st = random_state(rng, 2, 2)
    om = st.omega.copy()
    om[0, :] = om[2, :]
    om[:, 0] = om[:, 2]
    om[0, 0] = om[2, 2]
    sing = st.replace(Q=om[:2, :2], R=om[:2, 2:4], S=om[:2, -1])
    out = numerical_terms("pepita", *args(sing), quadrature=GaussHermite(16))
    assert all(np.all(np.isfinite(x)) for x in out)
    mc, se = monte_carlo_terms(sing, "pepita", n_samples=N_MC, rng=rng)
    assert_within(out, mc, se, "singular Omega")


def test_bad_quadrature_raises():
    st = theory.random_state(2, 2, D=100, seed=0)
    for bad in ("simpson", 3, GaussHermite):
        with pytest.raises(ValueError, match="quadrature"):
            numerical_terms("pepita", *args(st), quadrature=bad)
    for ctor in (lambda: GaussHermite(0), lambda: GaussHermite(2.5), lambda: QMC(1000), lambda: QMC(1024, 1),
                 lambda: SparseGrid(0), lambda: GaussHermite(4, prune=1.0)):
        with pytest.raises(ValueError):
            ctor()


# ----------------------------------------------------------------------------- limits and integration


def test_pepita_tends_to_afa_as_sigma_F_vanishes(rng):
    """pepita's postsynaptic term g(lambda) - g(lambda - sigma_F S e) = sigma_F S g'(lambda) e + O(sigma_F^2):
    at fixed S the relative difference of the right-hand sides shrinks linearly in sigma_F."""
    st = random_state(rng, 2, 2)
    eps = np.array([0.2, 0.1, 0.05, 0.025])
    rel = []
    for s in eps:
        p = theory.rhs(st, "pepita", eta=1.0, sigma_F=s, quadrature=GaussHermite(20))
        a = theory.rhs(st, "afa", eta=1.0, sigma_F=s)
        rel.append(max(np.abs(p[k] - a[k]).max() for k in p) / max(np.abs(a[k]).max() for k in a))
    slope = np.polyfit(np.log(eps), np.log(rel), 1)[0]
    assert 0.85 < slope < 1.15, (rel, slope)
    assert rel[-1] < 0.05


def test_integrate_pepita_two_accuracies():
    st = theory.random_state(2, 2, D=1000, seed=1)
    t = np.linspace(0, 20, 5)
    coarse = theory.integrate(st, "pepita", t, eta=1.0, quadrature=GaussHermite(12), rtol=1e-7, atol=1e-9)
    fine = theory.integrate(st, "pepita", t, eta=1.0, rtol=1e-7, atol=1e-9)
    assert coarse.status == 0 and fine.status == 0
    assert coarse.params["rule"] == "pepita"
    # GH(12) terms are accurate to ~1e-4 (docstring); over t = 20 the curves agree to that order.
    assert np.abs(coarse.eg - fine.eg).max() < 1e-4
    assert fine.eg[-1] < fine.eg[0]  # it learns
    # and it differs from afa (not silently the same right-hand side)
    afa = theory.integrate(st, "afa", t, eta=1.0, rtol=1e-7, atol=1e-9)
    assert np.abs(afa.eg - fine.eg).max() > 1e-4


def test_integrate_relu_all_rules():
    st = theory.random_state(2, 2, D=1000, seed=2)
    t = np.linspace(0, 2, 3)
    for rule in ("bp", "fa", "afa", "pepita"):
        tr = theory.integrate(st, rule, t, eta=0.5, g="relu", quadrature=GaussHermite(10), rtol=1e-5, atol=1e-7)
        assert tr.status == 0 and np.all(np.isfinite(tr.Q))
