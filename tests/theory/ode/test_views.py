"""The one view selector (theory.ode.views, issue 21): which right-hand side serves a rule, activation and
quadrature is decided in one place, from the rule's derived facts, and integrate, sweep and simulate ask it.

Also the fact it needs for the kink-aware kernel (RuleFacts.kinks_exact, theory.rules._facts): the compiled kernel
integrates piecewise quadratics exactly and nothing else; a rule whose integrands are not piecewise
quadratic (tanh of the error, the sign of a field) gets the numpy line rule, which agrees with a fine
Gauss-Hermite reference where the compiled kernel would not.
"""

from __future__ import annotations

import numpy as np
import pytest

import theory
from simulate.engines.reduced.backends import _numba_ok
from tests.helpers import random_state
from theory._codegen.rule import HAVE_NUMBA
from theory.expectations.numerical import GaussHermite, KinkAware, numerical_terms
from theory.ode.views import rhs_view, update_view
from theory.rules._facts import rule_facts

needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="needs numba")


class TanhError(theory.Rule):
    """delta_k = g(lambda_k) tanh(e): traceable, but tanh(e) is not a polynomial between the kinks."""

    name = "views-tanh-error"

    def update(self, x):
        return theory.LocalUpdate(delta=x.g_lam * x.xp.tanh(x.e)[..., None])


class SignOfField(theory.Rule):
    """delta_k = sign(lambda_k) e: a kink of the fields that is not an argument of g or g'."""

    name = "views-sign-of-field"

    def update(self, x):
        return theory.LocalUpdate(delta=x.xp.sign(x.lam) * x.e[..., None])


@pytest.mark.parametrize("name", ["bp", "fa", "afa", "pepita"])
def test_builtin_rules_are_piecewise_quadratic(name):
    assert rule_facts(theory.make_rule(name), 2, 2).kinks_exact


@pytest.mark.parametrize("cls", [TanhError, SignOfField])
def test_other_functions_of_the_fields_are_not(cls):
    assert not rule_facts(cls(), 2, 2).kinks_exact


@needs_numba
@pytest.mark.parametrize("g,closed,engine", [("erf", True, "closed-jit"), ("relu", True, "closed-jit"),
                                             ("linear", True, "closed-jit"), ("tanh", False, "numerical-jit")])
def test_bp_views(g, closed, engine):
    view = rhs_view(theory.make_rule("bp"), g, None, 2, 2)
    assert (view.closed, view.engine) == (closed, engine)
    assert view.single is not None and (view.rows is not None) == closed
    assert rhs_view(theory.make_rule("bp"), g, None, 2, 2, use_jit=False).single is None


@needs_numba
def test_numerical_views_follow_the_facts():
    pep = rhs_view(theory.make_rule("pepita"), "relu", None, 2, 2)
    assert (pep.closed, pep.engine, pep.quadrature) == (False, "kinks-jit", KinkAware(24, outer="sphere"))
    tanh = rhs_view(TanhError(), "relu", None, 2, 2)
    assert tanh.engine == "lines-numpy" and "piecewise quadratic" in tanh.reason
    assert rhs_view(TanhError(), "erf", None, 2, 2).engine == "numerical-jit"
    mirror = rhs_view(theory.make_rule("pepita"), "tanh", None, 2, 2, mirror=True)
    assert mirror.engine == "numerical-numpy" and "mirror" in mirror.reason


@needs_numba
def test_dynamics_sweep_and_simulate_ask_the_selector(rng, monkeypatch):
    st = random_state(rng, 2, 2)
    for name, g in (("bp", "erf"), ("pepita", "relu"), ("pepita", "erf")):
        rule = theory.make_rule(name)
        dyn = theory.make_dynamics(st, rule, theory.HyperParams(eta=0.5, g=g))
        view = rhs_view(rule, g, None, 2, 2)
        assert dyn.view == view and dyn.closed_form == view.closed
        assert dyn.compiled()[0] is view.single
        assert _numba_ok(rule, theory.activation(g), 2, 2) == (update_view(rule, g, 2, 2)[0] is not None)
    dyn = theory.make_dynamics(st, TanhError(), theory.HyperParams(eta=0.5, g="relu"))
    assert dyn.compiled() is None  # the line rule in numpy, not the compiled kink kernel
    import theory.sweeps.sweep as sweep_module

    asked = []

    def spy(*args, **kw):
        asked.append(args[:2])
        return rhs_view(*args, **kw)

    monkeypatch.setattr(sweep_module, "rhs_view", spy)
    theory.sweep(st, "bp", [0.0, 1.0], eta=[0.5, 1.0], progress=False)
    assert asked and all(r.name == "bp" for r, _ in asked)


@needs_numba
def test_the_line_rule_serves_what_the_kink_kernel_cannot(rng):
    """A tanh(e) relu rule: the line rule (its default) against GaussHermite(48) and (64): within 1e-4 of the
    largest term, where the compiled kink kernel (were it used) is ~1e-3 off (its 3-point pieces assume
    quadratics)."""
    st = random_state(rng, 2, 1)
    args = (st.Q, st.R, st.T, st.S, st.U, st.P, st.v, st.v_star, st.b)
    rule = TanhError()
    line = numerical_terms(rule, *args, g="relu")
    refs = [numerical_terms(rule, *args, g="relu", quadrature=GaussHermite(n)) for n in (48, 64)]
    scale = max(np.abs(t).max() for t in refs[1])
    gh_err = max(np.abs(a - b).max() for a, b in zip(*refs)) / scale
    err = max(np.abs(a - b).max() for a, b in zip(line, refs[1])) / scale
    assert err < max(1e-4, 3 * gh_err), (err, gh_err)
    with pytest.raises(ValueError, match="piecewise quadratic"):
        theory.expectations.numerical._compiled_terms(rule, *args, g="relu", quadrature=KinkAware(16))


@needs_numba
def test_numerical_sweeps_run_the_compiled_kernel_and_equal_integrate(monkeypatch):
    """A pepita sweep asks the selector, gets the compiled numerical right-hand side (one stepper per point, as
    integrate), and gives integrate's curves to rounding."""
    import theory.sweeps.sweep as sweep_module

    st = theory.random_state(2, 2, D=500, seed=0)
    t = np.linspace(0.0, 5.0, 6)
    used = []
    real = sweep_module.CompiledStepper

    def spy(rhs, p, *a, **kw):
        used.append(np.shape(p))
        return real(rhs, p, *a, **kw)

    monkeypatch.setattr(sweep_module, "CompiledStepper", spy)
    res = theory.sweep(st, "pepita", t, eta=[0.5, 1.0], progress=False)
    assert used and used[0][0] == 2 and used[0][1] > 1000  # two rows, each with the node block
    for i, eta in enumerate((0.5, 1.0)):
        tr = theory.integrate(st, "pepita", t, eta=eta)
        np.testing.assert_allclose(res.eg[i], tr.eg, rtol=1e-12, atol=1e-14)
        assert res._params[i]["quadrature"] == tr.params["quadrature"]
