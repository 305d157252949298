"""Facts about a rule derived from its traced update (theory.rules._facts), never declared or probed.

1. A ``closed_form = "feedback"`` declaration is an assertion: one that disagrees with the update
   (delta, h, e_out, alpha of the presynaptic variant, a feedback that reads the fields, an update
   that cannot be traced) is refused on registration, saying what differs; a true one is accepted.
2. The built-in rules' facts, every variant, against THEORY.md section 3.
3. modulates is "alpha not identically 0": a rule whose alpha is non-zero only in a rare region
   is classed as modulating (random probes miss it) and the full engine keeps its alpha term.
4. A feedback-form rule that declares nothing gets the closed-form view; an untraceable rule
   warns once and runs on the numerical path.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import theory
from simulate.engines.full import FullStep
from tests.helpers import _explicit_step, _weights, random_state
from theory._codegen.rule import compiled_rule
from theory.expectations.closed import closed_form_terms
from theory.expectations.numerical import GaussHermite, numerical_terms
from theory.rules._base import _REGISTRY
from theory.rules._facts import RuleFacts, check_declaration, closed_form_applies, rule_facts


def _bp_delta(x, c=1.0):
    return c * x.v * x.dg(x.lam) * x.e[..., None]


@pytest.fixture(autouse=True)
def _registry():
    """The rules these tests register are removed afterwards (other modules enumerate the registry)."""
    before = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(before)


# ----------------------------------------------------------------------------- 1. declarations are checked
def _declared(name, update, *, feedback=lambda self, x: x.v, presynaptic=None, closed_form="feedback", reads=()):
    """A rule class named ``name`` with the given update and feedback (not registered)."""
    ns = dict(name=name, closed_form=closed_form, update=update, feedback=feedback, reads=reads)
    ann = {}
    if presynaptic is not None:
        ns["presynaptic"] = theory.variant(*presynaptic, short="pre")
        ann["presynaptic"] = str
    ns["__annotations__"] = ann
    return type(name.title().replace("-", ""), (theory.Rule,), ns)


FALSE_DECLARATIONS = {
    "twice-bp": (dict(update=lambda self, x: theory.LocalUpdate(delta=_bp_delta(x, 2.0))),
                 r"delta_0 differs from feedback_0 \* g'\(lambda_0\) \* e"),
    "h-is-lambda": (dict(update=lambda self, x: theory.LocalUpdate(delta=_bp_delta(x), h=x.lam)),
                    r"h_0 is not g\(lambda_0\)"),
    "half-e-out": (dict(update=lambda self, x: theory.LocalUpdate(delta=_bp_delta(x), e_out=x.e / 2)),
                   r"e_out is not e"),
    "clean-with-alpha": (dict(update=lambda self, x: theory.LocalUpdate(delta=_bp_delta(x), alpha=-x.sigma_F * x.e)),
                         r"alpha is not 0, the presynaptic input of presynaptic='clean'"),
    # the modulated variant (the default) says alpha = 0: refused for that variant, though right for "clean"
    "modulated-without-alpha": (dict(update=lambda self, x: theory.LocalUpdate(delta=_bp_delta(x), alpha=0.0 * x.e),
                                     presynaptic=("modulated", "clean")),
                                r"alpha is not -sigma_F e, the presynaptic input of presynaptic='modulated'"),
    "no-feedback": (dict(update=lambda self, x: theory.LocalUpdate(delta=_bp_delta(x)), feedback=lambda self, x: None),
                    r"no feedback vector"),
    "untraceable-declared": (dict(update=lambda self, x: theory.LocalUpdate(delta=_bp_delta(x) * np.sign(x.lam) ** 2)),
                             r"cannot be checked: its update could not be traced"),
}


@pytest.mark.parametrize("name", FALSE_DECLARATIONS)
def test_false_declarations_are_refused_saying_what_differs(name):
    kw, what = FALSE_DECLARATIONS[name]
    cls = _declared(name, **kw)
    with pytest.raises(ValueError, match=f"register_rule: rule {name!r}.*declares closed_form = 'feedback'.*{what}"):
        theory.register_rule(cls)
    assert name not in theory.registered_rules()
    # the same class without the declaration registers, and its facts say it is not in the family
    undeclared = theory.register_rule(_declared(name, closed_form=None, **kw))
    assert not rule_facts(undeclared(), 2, 2).closed_form


def test_true_declarations_are_accepted():
    # the checks can fail (above) and do not fail on right declarations, including every variant's alpha
    cls = theory.register_rule(_declared("declared-afa", update=lambda self, x: theory.LocalUpdate(
        delta=x.sigma_F * x.S * x.dg(x.lam) * x.e[..., None]), feedback=lambda self, x: x.sigma_F * x.S,
        presynaptic=("modulated", "clean"), reads=("S",)))
    assert theory.make_rule("declared-afa", presynaptic="clean").presynaptic == "clean"
    for pre in ("modulated", "clean"):
        assert rule_facts(cls(presynaptic=pre), 2, 2).closed_form
        assert rule_facts(cls(presynaptic=pre), 3, 1).closed_form


def test_a_difference_zero_only_after_simplification_is_zero():
    """sin^2 + cos^2 = 1: expand leaves it, the random witness is at rounding, simplify settles it."""
    def update(self, x):
        one = x.xp.sin(x.v) ** 2 + x.xp.cos(x.v) ** 2
        return theory.LocalUpdate(delta=one * _bp_delta(x))

    cls = theory.register_rule(_declared("trig-bp", update=update))
    assert rule_facts(cls(), 2, 2).closed_form
    check_declaration(cls)
    # and the same with sin^2 + 2 cos^2 (not 1) is refused: the check is not vacuous
    with pytest.raises(ValueError, match="delta_0 differs"):
        theory.register_rule(_declared("trig-bp-2", update=lambda self, x: theory.LocalUpdate(
            delta=(x.xp.sin(x.v) ** 2 + 2 * x.xp.cos(x.v) ** 2) * _bp_delta(x))))


# ----------------------------------------------------------------------------- 2. the built-in rules
BUILTIN = [  # (name, options, closed form, modulates): THEORY.md section 3
    ("bp", {}, True, False),
    ("fa", {}, True, False),
    ("afa", {"presynaptic": "modulated"}, True, True),
    ("afa", {"presynaptic": "clean"}, True, False),
    ("pepita", {"presynaptic": "modulated", "error": "first"}, False, True),
    ("pepita", {"presynaptic": "modulated", "error": "modulated"}, False, True),
    ("pepita", {"presynaptic": "clean", "error": "first"}, False, False),
    ("pepita", {"presynaptic": "clean", "error": "modulated"}, False, False),
]


@pytest.mark.parametrize("name,opts,closed,modulates", BUILTIN, ids=lambda p: str(p))
@pytest.mark.parametrize("K,M", [(2, 2), (3, 1)])
def test_builtin_facts(name, opts, closed, modulates, K, M):
    rule = theory.make_rule(name, **opts)
    facts = rule_facts(rule, K, M)
    assert facts == RuleFacts(closed_form=closed, modulates=modulates, traceable=True, differs=facts.differs,
                             kinks_exact=True)  # every built-in rule is piecewise quadratic for relu
    assert bool(facts.differs) == (not closed)
    assert rule.modulates_input(K, M, "relu") == modulates
    assert "closed_form" not in type(rule).__dict__  # derived, not declared
    for g, applies in (("erf", closed), ("relu", closed), ("linear", closed), ("tanh", False)):
        assert closed_form_applies(rule, g, None, K, M) == applies
    assert closed_form_applies(rule, "erf", "closed", K, M) == closed
    assert not closed_form_applies(rule, "erf", GaussHermite(8), K, M)


def test_the_generated_code_follows_the_facts():
    """Where the generated module holds a closed-form right-hand side iff the facts say closed form."""
    for rule in (theory.make_rule("bp"), theory.make_rule("afa", presynaptic="clean"), theory.make_rule("pepita")):
        comp = compiled_rule(rule, 2, 2)
        assert (comp.closed_rhs is not None) == rule_facts(rule, 2, 2).closed_form, rule.label


# ----------------------------------------------------------------------------- 3. a rare alpha
THRESHOLD = 6.0


class RareAlpha(theory.Rule):
    """bp whose presynaptic input is modulated only where lambda_0 > 6 (probability ~1e-9)."""

    name = "rare-alpha"

    def feedback(self, x):
        return x.v

    def update(self, x):
        step = (1 + x.xp.sign(x.lam[..., 0] - THRESHOLD)) / 2  # heaviside(lambda_0 - 6), in numpy, torch and sympy
        alpha = -x.sigma_F * x.e * step
        return theory.LocalUpdate(delta=_bp_delta(x), alpha=alpha)


def test_rare_alpha_is_classed_as_modulating():
    rule = RareAlpha()
    facts = rule_facts(rule, 3, 2)
    assert facts.modulates and rule.modulates_input(3, 2)
    assert not facts.closed_form and any("alpha is not 0" in d for d in facts.differs)
    # what the former probe saw: 32 random samples, alpha 0 on every one (it classed the rule as not modulating)
    rng = np.random.default_rng(4321)
    up = rule.local_update(rng.standard_normal((32, 3)), rng.standard_normal((32, 2)), rng.standard_normal(32),
                           v=rng.standard_normal((32, 3)), v_star=rng.standard_normal((32, 2)), sigma=0.5, sigma_F=0.9)
    assert not np.any(up.alpha != 0)
    # a rule whose alpha is truly 0 is classed as not modulating (the fact is not always True)
    assert not rule_facts(theory.make_rule("bp"), 3, 2).modulates


def _full_step(rule, w, x, zeta, hyper, K, M):
    t = lambda a: torch.as_tensor(np.array(a, dtype=float))  # noqa: E731
    W, v = t(w["W"])[None].clone(), t(w["v"])[None].clone()
    step = FullStep(rule, hyper, v_star=t(w["v_star"]), b=t(w["b"]), f=t(w["f"]), K=K, M=M)
    xs = t(x)[None] / math.sqrt(x.shape[-1])
    step(W, W.transpose(1, 2), v, xs, xs @ t(w["W_star"]).T, t([zeta]))
    return step, W[0].numpy(), v[0].numpy()


def test_full_engine_keeps_a_rare_alpha(monkeypatch):
    """One full-engine step where the rare region is hit equals the one-sample definition."""
    K, M, D = 3, 2, 40
    hyper = theory.HyperParams(eta=0.8, eta_v=0.5, sigma=0.3, sigma_F=0.9, weight_decay=0.1)
    w = _weights(K, M, D, 3)
    rng = np.random.default_rng(5)
    x, zeta = rng.standard_normal(D), rng.standard_normal()
    w["W"][0] = 1.6 * x  # lambda_0 = 1.6 |x|^2 / sqrt D > 6: the rare region
    rule = RareAlpha()
    lam0 = w["W"][0] @ x / math.sqrt(D)
    assert lam0 > THRESHOLD
    up = rule.local_update(w["W"] @ x / math.sqrt(D), w["W_star"] @ x / math.sqrt(D), np.float64(zeta), v=w["v"],
                           v_star=w["v_star"], sigma=hyper.sigma, sigma_F=hyper.sigma_F)
    assert abs(up.alpha) > 1e-3  # the alpha term matters in this step
    W1, v1 = _explicit_step(rule, w, x, zeta, hyper)
    step, W, v = _full_step(rule, w, x, zeta, hyper, K, M)
    assert step.modulates
    np.testing.assert_allclose(W, W1, rtol=0, atol=1e-13)
    np.testing.assert_allclose(v, v1, rtol=0, atol=1e-13)
    # with the fact wrong (the former probe's answer) the step drops the alpha term, and the check sees it
    monkeypatch.setattr(RareAlpha, "modulates_input", lambda self, K, M, g="erf": False)
    step, W, _ = _full_step(rule, w, x, zeta, hyper, K, M)
    assert not step.modulates and np.abs(W - W1).max() > 1e-6


# ----------------------------------------------------------------------------- 4. the views a rule gets
class UndeclaredSignSymmetry(theory.Rule):
    """README's sign-symmetric feedback without the closed_form declaration."""

    name = "sign-symmetry-undeclared"

    def feedback(self, x):
        return x.xp.sign(x.v)

    def update(self, x):
        return theory.LocalUpdate(delta=self.feedback(x) * x.dg(x.lam) * x.e[..., None])


def test_an_undeclared_feedback_rule_gets_the_closed_forms(rng):
    st = random_state(rng, 2, 1)
    rule = UndeclaredSignSymmetry()
    assert "closed_form" not in UndeclaredSignSymmetry.__dict__ and UndeclaredSignSymmetry.closed_form is None
    assert rule_facts(rule, 2, 1).closed_form and not rule_facts(rule, 2, 1).modulates
    dyn = theory.make_dynamics(st, rule, eta=0.7, sigma=0.3, sigma_F=-0.8)
    assert dyn.closed_form and compiled_rule(rule, 2, 1).closed_rhs is not None
    assert dyn.compiled()[0] is compiled_rule(rule, 2, 1).closed_rhs  # the compiled closed-form view serves it
    # the closed forms it gets are its own update's expectations (numerical view, d = 3 fields)
    args = (st.Q, st.R, st.T, st.S, st.U, st.P, st.v, st.v_star, st.b)
    cf = closed_form_terms(rule, *args, sigma=0.3, sigma_F=-0.8)
    num = numerical_terms(rule, *args, sigma=0.3, sigma_F=-0.8, quadrature=GaussHermite(40, n_noise=3))
    assert max(np.abs(a - b).max() for a, b in zip(cf, num)) < 1e-8 * max(1.0, max(np.abs(a).max() for a in cf))
    # a rule outside the family gets no closed form (the numerical view), and closed_form_terms refuses it
    assert not theory.make_dynamics(st, "pepita", eta=0.7).closed_form
    with pytest.raises(ValueError, match="has no closed form"):
        closed_form_terms(theory.make_rule("pepita"), *args)


def _untraceable_bp():
    """bp times sign(lambda)^2 (= 1 almost surely), with np.sign called directly: sympy cannot trace it."""
    class UntraceableBP(theory.Rule):
        name = "untraceable-bp"

        def feedback(self, x):
            return x.v

        def update(self, x):
            return theory.LocalUpdate(delta=np.sign(x.lam) ** 2 * _bp_delta(x))

    return UntraceableBP


def test_an_untraceable_rule_warns_once_and_runs_on_the_numerical_path(rng):
    rule = _untraceable_bp()()
    with pytest.warns(
        theory.UntraceableRuleWarning, match=r"'untraceable-bp'.*could not be traced.*generic numpy/torch"
    ):
        facts = rule_facts(rule, 2, 1)
    assert facts == RuleFacts(
        closed_form=False, modulates=True, traceable=False, reason=compiled_rule(rule, 2, 1).reason
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per class: not again at another size, nor through the views
        assert not rule_facts(rule, 3, 2).closed_form
        st = random_state(rng, 2, 1)
        dyn = theory.make_dynamics(st, rule, eta=0.7, sigma=0.2, quadrature=GaussHermite(40, n_noise=3))
        assert not dyn.closed_form and dyn.compiled() is None
        got = dyn.rhs(st.to_vector())
    ref = theory.make_dynamics(st, "bp", eta=0.7, sigma=0.2).rhs(st.to_vector())  # bp's closed form
    assert np.abs(got - ref).max() < 1e-8 * max(1.0, np.abs(ref).max())
    # a fresh class of the same rule warns again (the warning is per class), and is not vacuous
    with pytest.warns(theory.UntraceableRuleWarning):
        rule_facts(_untraceable_bp()(), 2, 1)
