"""Conformance 3: an untraceable rule (np.sign / np.tanh called directly: the sympy tracer fails) gives the same
right-hand side and the same simulation steps as its traceable twin (helpers.TWINS).

- right-hand side, same quadrature nodes: the untraceable rule's numerical view (numpy, the only one it has)
  equals the twin's numerical views (numpy and compiled) to rounding;
- right-hand side, accuracy: with a fine rule it agrees with the twin's best view (its closed forms where
  they apply, else its compiled numerical view with the fine rule) within the stated accuracy of the
  untraceable rule's quadrature (for relu the kink-aware line rule in numpy, theory.expectations.numerical._line_terms);
- simulation: one step of the full engine and of the reduced torch step, same samples, equal to rounding;
  the untraceable rule has no compiled view, with the tracer's reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import theory
from simulate.engines.reduced.step import ReducedStep
from theory.expectations.numerical import GaussHermite

from .helpers import (
    ACTIVATIONS,
    IGNORE_UNTRACEABLE,
    OPTIONS,
    T_EVAL,
    TWINS,
    assert_agree,
    dynamics,
    fine_quadrature,
    hyper_for,
    random_net,
    rel_err,
    rhs_views,
    state_for,
    state_vector,
    stated,
)
from .test_steps import full_step, t64

pytestmark = pytest.mark.filterwarnings(IGNORE_UNTRACEABLE)

K, M = 2, 1


def check_twin_rhs(traced, untraced, g, option, seed=0):
    st = state_for(seed, K, M)
    hyper = hyper_for(option, g)
    label = f"{untraced.name} vs {traced.name}, g={g} {option}"
    same = GaussHermite(12, n_noise=8)
    a = rhs_views(st, untraced, hyper, same)
    b = rhs_views(st, traced, hyper, same)
    assert sorted(a) == ["numerical"], (
        f"{label}: an untraceable rule has only the numpy numerical view, got {sorted(a)}"
    )
    assert_agree({"untraceable": a["numerical"], **b}, [("untraceable", "numerical", 1e-12),
                                                        ("untraceable", "numerical-jit", 1e-11)], label)
    fine = fine_quadrature(untraced, g, hyper.sigma > 0, K, M)
    mine = dynamics(st, untraced, hyper, fine).rhs(state_vector(st, hyper), T_EVAL)
    ref_views = rhs_views(st, traced, hyper, fine_quadrature(traced, g, hyper.sigma > 0, K, M))
    best = next(ref_views[k] for k in ("closed-jit", "closed", "numerical-jit", "numerical") if k in ref_views)
    tol = stated(untraced, g, fine)
    err = rel_err(mine, best)
    assert err <= tol, f"{label}: fine {fine} off the twin by {err:.3g} of the largest term (stated {tol:.1g})"
    return err


def check_twin_steps(traced, untraced, g, option, seed=3):
    Kn, Mn, D = 3, 2, 40
    hyper = hyper_for(option, g)
    net = random_net(seed, Kn, Mn, D)
    rng = np.random.default_rng(seed)
    B = hyper.batch
    X, zeta, xi = rng.standard_normal((2, B, D)), rng.standard_normal((2, B)), rng.standard_normal((2, D))
    for got, want, name in zip(full_step(net, untraced, hyper, X, zeta, xi), full_step(net, traced, hyper, X, zeta, xi),
                               "Wvf"):
        assert np.abs(got - want).max() <= 1e-13 * max(1.0, np.abs(want).max()), f"full engine {name}: {untraced.name}"
    st = net.state()
    tt = lambda a: t64(a)[None]  # noqa: E731
    eps, chi2 = rng.standard_normal((B, Kn + Mn + 1)), rng.chisquare(D - Kn - Mn - 1, B)
    out = []
    for rule in (untraced, traced):
        step = ReducedStep(
            rule,
            hyper,
            D=D,
            T=st.T,
            U=st.U,
            P=st.P,
            v_star=st.v_star,
            b=st.b,
            device=torch.device("cpu"),
            dtype=torch.float64,
        )
        args = (tt(st.Q), tt(st.R), tt(st.S), tt(st.v))
        UP = dict(U=tt(st.U), P=tt(np.float64(st.P))) if hyper.mirroring else {}
        if B == 1:
            out.append(step(*args, tt(eps[0]), tt(chi2[0]), tt(zeta[0, :1].sum()), t=T_EVAL, **UP))
        else:
            out.append(step.batch_step(*args, tt(eps), tt(np.diag(chi2)), tt(zeta[0]), t=T_EVAL, **UP))
    for a, b, name in zip(*out, "QRSv"):
        assert torch.allclose(a, b, rtol=0, atol=1e-13 * max(1.0, float(b.abs().max()))), (
            f"reduced step {name}: {untraced.name}"
        )


def _pairs():
    return [(t(), u()) for t, u in TWINS]


CASES = [("erf", "noise"), ("relu", "plain"), ("tanh", "mirror"), ("linear", "batch"), ("erf", "schedule"),
         ("relu", "decay"), ("erf", "frozen")]


@pytest.mark.parametrize("g,option", CASES)
@pytest.mark.parametrize("pair", range(len(TWINS)), ids=[u.name for _, u in TWINS])
def test_untraceable_rhs_is_the_twins(pair, g, option):
    check_twin_rhs(*_pairs()[pair], g, option)


@pytest.mark.parametrize("g,option", [("erf", "noise"), ("relu", "batch"), ("tanh", "mirror"), ("linear", "decay")])
@pytest.mark.parametrize("pair", range(len(TWINS)), ids=[u.name for _, u in TWINS])
def test_untraceable_steps_are_the_twins(pair, g, option):
    check_twin_steps(*_pairs()[pair], g, option)


def _all():
    out = []
    for pair in range(len(TWINS)):
        for g in ACTIVATIONS:
            for option in OPTIONS:
                out.append(pytest.param(pair, g, option, id=f"{TWINS[pair][1].name}-{g}-{option}"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("pair,g,option", _all())
def test_untraceable_twins_all(pair, g, option):
    check_twin_rhs(*_pairs()[pair], g, option)
    check_twin_steps(*_pairs()[pair], g, option)


def test_untraceable_rules_have_no_compiled_view_and_say_why():
    for traced, untraced in _pairs():
        assert theory.compiled_rule(traced, K, M).ok
        comp = theory.compiled_rule(untraced, K, M)
        assert not comp.ok and "traced" in comp.reason, comp.reason
