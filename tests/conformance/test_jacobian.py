"""Conformance 5: the derived Jacobian view (theory.ode.derivatives) equals finite differences of the right-hand side.

For rules, activations and options across the cross product (thinly in the default run), with the view the
integrator uses (compiled where it exists, numpy otherwise):

- state: J @ d against the central difference (f(y + h d) - f(y - h d)) / 2h along random directions d whose
  Q block is symmetric (the packed coordinates' contract: theory.ode.derivatives module docstring);
- hyper-parameters: the columns d f / d eta and d f / d sigma_F against central differences of right-hand
  sides rebuilt at eta +- h, sigma_F +- h.

Step h = 1e-4 (relative): truncation ~h^2 f''' and rounding ~1e-16 / h, both far below the 1e-6 tolerance
(relative to the largest entry of J d), which is also above the Jacobian's own stated error (~1e-10 .. 1e-12).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import theory
from theory.ode.derivatives import dynamics_jacobian

from .helpers import (
    ACTIVATIONS,
    IGNORE_UNTRACEABLE,
    OPTIONS,
    RULES,
    T_EVAL,
    closed_family,
    fine_quadrature,
    hyper_for,
    rule_id,
    state_for,
    state_vector,
)

K, M = 2, 1
H = 1e-4
TOL = 1e-6


def _dyn(st, rule, hyper):
    """The closed forms where they apply, else the numerical view with the fine rule."""
    quad = None if closed_family(rule, K, M) and hyper.g.closed_forms else \
        fine_quadrature(rule, hyper.g.name, hyper.sigma > 0, K, M)
    return theory.make_dynamics(st, rule, hyper, quadrature=quad)


def _directions(rng, y, n=3):
    """Random directions of the flat state with a symmetric Q block."""
    out = []
    for _ in range(n):
        d = rng.standard_normal(y.shape)
        Q = d[: K * K].reshape(K, K)
        d[: K * K] = (0.5 * (Q + Q.T)).ravel()
        out.append(d)
    return out


def check_state_jacobian(rule, g, option, seed=0, J=None):
    st = state_for(seed, K, M)
    hyper = hyper_for(option, g)
    dyn = _dyn(st, rule, hyper)
    y = state_vector(st, hyper)
    jac = dynamics_jacobian(dyn, y, T_EVAL)
    J = jac.matrix if J is None else J
    rng = np.random.default_rng(seed + 17)
    for d in _directions(rng, y):
        fd = (dyn.rhs(y + H * d, T_EVAL) - dyn.rhs(y - H * d, T_EVAL)) / (2 * H)
        scale = max(np.abs(fd).max(), np.abs(jac.rhs).max(), 1e-300)
        err = np.abs(J @ d - fd).max() / scale
        est = 2.0 * (jac.error @ np.abs(d)).max() / scale  # the Jacobian's own error estimate along d, doubled
        assert err < TOL + est, (f"{rule.label} g={g} {option} ({'closed' if dyn.closed_form else dyn.quadrature}): "
                                 f"J d off the finite difference by {err:.3g} (its estimate {est / 2:.3g})")


def check_hyper_jacobian(rule, g, option, seed=1, names=("eta", "sigma_F")):
    st = state_for(seed, K, M)
    hyper = hyper_for(option, g)
    y = state_vector(st, hyper)
    J = dynamics_jacobian(_dyn(st, rule, hyper), y, T_EVAL, wrt=names)
    for j, name in enumerate(names):
        x = getattr(hyper, name)
        h = H * max(abs(x), 1.0)
        up, down = (_dyn(st, rule, dataclasses.replace(hyper, **{name: x + s * h})).rhs(y, T_EVAL) for s in (1, -1))
        fd = (up - down) / (2 * h)
        # relative to the largest term of the derivative or of f itself (a derivative may vanish by symmetry)
        err = np.abs(J.matrix[:, j] - fd).max() / max(np.abs(fd).max(), np.abs(J.rhs).max(), 1e-300)
        assert err < TOL, f"{rule.label} g={g} {option}: d f / d {name} off the finite difference by {err:.3g}"


def _case(rule, g, option):
    return pytest.param((rule, g, option), id=_ids((rule, g, option)))


def _thin():
    opts = [o for o in OPTIONS if o != "schedule"]
    return [(rule, ACTIVATIONS[i % 4], opts[i % len(opts)]) for i, rule in enumerate(RULES)]


def _ids(case):
    rule, g, opt = case
    return f"{rule_id(rule)}-{g}-{opt}"


@pytest.mark.filterwarnings(IGNORE_UNTRACEABLE)
@pytest.mark.parametrize("case", [_case(*c) for c in _thin()])
def test_state_jacobian_is_the_finite_difference(case):
    check_state_jacobian(*case)


@pytest.mark.filterwarnings(IGNORE_UNTRACEABLE)
@pytest.mark.parametrize("case", _thin()[::3], ids=_ids)
def test_hyper_jacobian_is_the_finite_difference(case):
    rule, g, option = case
    check_hyper_jacobian(rule, g, "plain" if option == "schedule" else option)


@pytest.mark.slow
@pytest.mark.filterwarnings(IGNORE_UNTRACEABLE)
@pytest.mark.parametrize("case", [_case(r, g, o) for r in RULES for g in ACTIVATIONS for o in OPTIONS])
def test_jacobian_all(case):
    rule, g, option = case
    check_state_jacobian(rule, g, option)
    if option != "schedule":  # a schedule's eta is not a differentiable constant (theory.ode.derivatives)
        check_hyper_jacobian(rule, g, option)
