"""theory.explorer, driven headless through its widgets' callbacks: a control change integrates again and redraws
the curves the package computes for those values; divergence and refused combinations are reported, not raised."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import theory

pytest.importorskip("ipywidgets")
from theory.explorer import EXPLORER_ANGLES, explore  # noqa: E402

T_MAX, N = 50.0, 40


def _drawn(ex, panel):
    x, y = ex._lines[panel].get_data()
    return np.asarray(x), np.asarray(y)


def _expected(rule, K=2, M=2, **kw):
    return theory.integrate(theory.random_state(K, M, D=300, seed=3), rule, theory.default_times(T_MAX, N), **kw)


@pytest.fixture
def ex():
    return explore(("bp", "afa"), D=300, seed=3, t_max=T_MAX, n_times=N, eta=0.5)


def test_every_control_redraws_what_integrate_gives(ex):
    x, y = _drawn(ex, "eg")
    want = _expected("bp", eta=0.5)
    np.testing.assert_allclose(y, want.eg[1:], rtol=1e-10)
    np.testing.assert_allclose(x, want.t[1:])
    ex.controls["eta"].value = 1.5  # what a slider move does
    np.testing.assert_allclose(_drawn(ex, "eg")[1], _expected("bp", eta=1.5).eg[1:], rtol=1e-10)
    assert ex.controls["sigma_F"].disabled and "no effect" in ex.status.value  # bp has no top-down projection
    ex.controls["rule"].value = "afa"
    assert not ex.controls["sigma_F"].disabled  # derived from the rule, not from its name
    ex.controls["sigma_F"].value = 2.0
    want = _expected("afa", eta=1.5, sigma_F=2.0)
    np.testing.assert_allclose(_drawn(ex, "eg")[1], want.eg[1:], rtol=1e-10)
    for name in EXPLORER_ANGLES:
        np.testing.assert_allclose(_drawn(ex, name)[1], want.angles[name][1:], rtol=1e-10)
    ex.set(K=3, M=1, sigma=0.2)  # several controls, one redraw
    want = _expected("afa", K=3, M=1, eta=1.5, sigma_F=2.0, sigma=0.2)
    np.testing.assert_allclose(_drawn(ex, "eg")[1], want.eg[1:], rtol=1e-10)
    assert ex.trajectory.K == 3 and "K = 3, M = 1" in ex.status.value
    # angle(v, v*) needs K = M: its panel says so instead of staying silently empty
    assert ex._notes["teacher"].get_text() == "not defined for these K, M" and not ex._notes["feedback"].get_text()
    assert not np.any(np.isnan(_drawn(ex, "eg")[1]))


def test_divergence_is_drawn_up_to_where_it_stopped(ex):
    ex.set(rule="afa", eta=8.0, sigma_F=10.0)
    assert "diverged" in ex.status.value and ex.trajectory.status < 0
    x, _ = _drawn(ex, "eg")
    assert 0 < x[-1] < T_MAX


def test_refused_values_keep_the_curves_and_say_why(ex, monkeypatch):
    before = _drawn(ex, "eg")[1].copy()
    monkeypatch.setattr(ex, "g", "sigmoid")  # an activation the package does not know
    ex.controls["eta"].value = 0.9
    assert "not drawn" in ex.status.value and "sigmoid" in ex.status.value
    np.testing.assert_array_equal(_drawn(ex, "eg")[1], before)
    with pytest.raises(ValueError, match="unknown controls"):
        ex.set(lr=0.1)


def test_bad_construction_names_the_parameter():
    with pytest.raises(ValueError, match="not in the menu"):
        explore(("bp",), rule="afa")
    with pytest.raises(ValueError, match="D"):
        explore(("bp",), D=0)
    with pytest.raises(ValueError, match="t_max"):
        explore(("bp",), t_max=-1.0)


def test_numerical_rules_run_at_the_explorers_accuracy():
    ex = explore(("pepita",), D=300, seed=3, t_max=5.0, n_times=8, eta=0.5)
    assert ex.trajectory.params["expectation_tol"] == 1e-3 and ex.trajectory.status == 0
    ref = theory.integrate(theory.random_state(2, 2, D=300, seed=3), "pepita", theory.default_times(5.0, 8), eta=0.5)
    np.testing.assert_allclose(_drawn(ex, "eg")[1], ref.eg[1:], rtol=1e-3)  # what the looser tolerance costs
