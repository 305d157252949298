"""Conformance 4: each kind of check above can fail. One term is altered (monkeypatch) and the check that holds
that view is shown to catch it, with the message naming the pair of views or the engine:

- one closed-form integral (I4 of erf, numpy only)             -> closed vs closed-jit
- one quadrature node weight (both numerical views)             -> numerical vs closed
- the whitening of the numpy numerical view (phi's regression)  -> numerical vs numerical-jit
- the full engine's f / D (the presynaptic alpha term)          -> full engine vs the definition
- the reduced torch step's weight decay c = eta kappa / D       -> reduced torch vs the definition
- the numba kernel's learning rates                             -> reduced numba vs the definition
- an "untraceable twin" that differs by 1e-6                    -> twin right-hand side and steps
- one entry of the Jacobian                                     -> Jacobian vs finite differences
Each unaltered check passes in the same set-up (the other test files), so it is the alteration that is caught.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import simulate.engines.reduced.kernel
import theory
import theory.activations.erf
import theory.expectations.numerical
from simulate.engines.full import FullStep
from simulate.engines.reduced.step import ReducedStep
from theory.ode.derivatives import dynamics_jacobian

from .helpers import (
    IGNORE_UNTRACEABLE,
    T_EVAL,
    SignFeedback,
    hyper_for,
    state_for,
    state_vector,
)
from .test_jacobian import _dyn, check_state_jacobian
from .test_rhs_views import check_views
from .test_steps import check_full, check_reduced_numba, check_reduced_torch
from .test_twins import check_twin_rhs, check_twin_steps

pytestmark = pytest.mark.filterwarnings(IGNORE_UNTRACEABLE)


def test_an_altered_closed_form_integral_is_caught(monkeypatch):
    check_views(theory.make_rule("bp"), "erf", "noise", 0)  # unaltered: passes
    I4 = theory.activations.erf.I4_tensor
    monkeypatch.setattr(theory.activations.erf, "I4_tensor", lambda *a, **k: I4(*a, **k) * (1 + 1e-6))
    with pytest.raises(AssertionError, match="closed vs closed-jit"):
        check_views(theory.make_rule("bp"), "erf", "noise", 0)


def test_an_altered_node_weight_is_caught(monkeypatch):
    prepared = theory.expectations.numerical._prepared

    def altered(*args):
        nodes, weights, groups = prepared(*args)
        weights = weights.copy()
        off = np.linalg.norm(nodes, axis=1) > 0.5  # at the origin every integrand of an odd g vanishes
        weights[np.flatnonzero(off)[np.argmax(weights[off])]] += 1e-4
        return nodes, weights, groups

    monkeypatch.setattr(theory.expectations.numerical, "_prepared", altered)
    with pytest.raises(AssertionError, match="numerical vs closed"):
        check_views(theory.make_rule("afa"), "erf", "plain", 0)


def test_an_altered_numpy_whitening_is_caught(monkeypatch):
    whiten = theory.expectations.numerical._whiten

    def altered(om, n):
        B = whiten(om, n).copy()
        B[..., -1, :] *= 1 + 1e-6  # E[phi | y]: enters X_k,phi (dS/dt)
        return B

    monkeypatch.setattr(theory.expectations.numerical, "_whiten", altered)
    with pytest.raises(AssertionError, match="numerical vs numerical-jit"):
        check_views(theory.make_rule("pepita"), "erf", "plain", 0)


def test_an_altered_full_engine_term_is_caught(monkeypatch):
    rule = theory.make_rule("afa")
    check_full(rule, "erf", "plain", seed=3)
    init = FullStep.__init__

    def altered(self, *args, **kw):
        init(self, *args, **kw)
        self.fD = self.fD * (1 + 1e-6)  # the presynaptic term alpha f / D

    monkeypatch.setattr(FullStep, "__init__", altered)
    with pytest.raises(AssertionError, match="full engine"):
        check_full(rule, "erf", "plain", seed=3)


def test_an_altered_reduced_step_term_is_caught(monkeypatch):
    rule = theory.make_rule("bp")
    check_reduced_torch(rule, "erf", "decay", seed=3)
    rates = ReducedStep._rates

    def altered(self, t):
        eta, eta_v, c = rates(self, t)
        return eta, eta_v, c * (1 + 1e-6)

    monkeypatch.setattr(ReducedStep, "_rates", altered)
    with pytest.raises(AssertionError, match="reduced torch"):
        check_reduced_torch(rule, "erf", "decay", seed=3)


def test_an_altered_kernel_term_is_caught(monkeypatch):
    rule = theory.make_rule("pepita")
    check_reduced_numba(rule, "erf", "plain", seed=3)
    kernel = simulate.engines.reduced.kernel.chain_block

    def altered(*args):
        args = list(args)
        args[19] = args[19] * (1 + 1e-6)  # etas: the learning rate of each step
        kernel(*args)

    monkeypatch.setattr(simulate.engines.reduced.kernel, "chain_block", altered)
    with pytest.raises(AssertionError, match="reduced numba"):
        check_reduced_numba(rule, "erf", "plain", seed=3)


class DriftedTwin(theory.Rule):
    """Not the twin of SignFeedback: its feedback is off by 1e-6 (and it is untraceable: np.sign called directly)."""

    name = "conformance-drifted-twin"

    def update(self, x):
        sign = torch.sign(x.v) if torch.is_tensor(x.v) else np.sign(x.v)
        return theory.LocalUpdate(delta=(1 + 1e-6) * sign * x.dg(x.lam) * x.e[..., None])


def test_a_twin_that_differs_is_caught():
    with pytest.raises(AssertionError, match="untraceable vs numerical"):
        check_twin_rhs(SignFeedback(), DriftedTwin(), "erf", "noise")
    with pytest.raises(AssertionError, match="full engine"):
        check_twin_steps(SignFeedback(), DriftedTwin(), "erf", "noise")


def test_an_altered_jacobian_entry_is_caught():
    rule = theory.make_rule("pepita")
    check_state_jacobian(rule, "erf", "plain")
    st, hyper = state_for(0, 2, 1), hyper_for("plain", "erf")
    jac = dynamics_jacobian(_dyn(st, rule, hyper), state_vector(st, hyper), T_EVAL)
    J = jac.matrix.copy()
    J[0, -1] += 1e-4 * np.abs(J).max()  # dQ_00/dt against v_1
    with pytest.raises(AssertionError, match="finite difference"):
        check_state_jacobian(rule, "erf", "plain", J=J)
