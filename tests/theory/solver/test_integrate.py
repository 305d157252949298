"""integrate(): fixed points, symmetries, tolerance convergence, divergence, persistence, bad input."""

import re

import numpy as np
import pytest

import theory
from tests.helpers import random_state


def teacher_state(M=2, sigma_F_overlap=0.0):
    T = np.eye(M)
    return theory.OrderParams(Q=T, R=T, T=T, v=np.ones(M), v_star=np.ones(M), S=np.full(M, sigma_F_overlap),
                              U=np.full(M, sigma_F_overlap), P=1.0, b=np.ones(M))


@pytest.mark.parametrize("rule", ["bp", "fa", "afa"])
def test_student_equal_to_teacher_is_a_fixed_point(rule):
    st = teacher_state(sigma_F_overlap=0.3)
    assert theory.generalisation_error(st) == pytest.approx(0.0, abs=1e-15)
    d = theory.rhs(st, rule, eta=0.9, sigma=0.0)
    for k, val in d.items():
        np.testing.assert_allclose(val, 0.0, atol=1e-14, err_msg=f"d{k}/dt")
    tr = theory.integrate(st, rule, [0, 10, 100], eta=0.9)
    np.testing.assert_allclose(tr.eg, 0.0, atol=1e-13)


def test_noise_moves_the_fixed_point():
    """With sigma > 0 the teacher is not a fixed point of bp (the eta^2 sigma^2 J2 term)."""
    d = theory.rhs(teacher_state(), "bp", eta=0.9, sigma=0.5)
    assert np.all(np.diag(d["Q"]) > 0)


@pytest.mark.parametrize("rule", ["bp", "fa", "afa"])
def test_permuting_hidden_units_permutes_the_solution(rule, rng):
    st = random_state(rng, 3, 2, scale=0.5)
    perm = np.array([2, 0, 1])
    pst = st.replace(Q=st.Q[np.ix_(perm, perm)], R=st.R[perm], S=st.S[perm], v=st.v[perm], b=st.b[perm])
    t = np.linspace(0, 5, 6)
    a = theory.integrate(st, rule, t, eta=0.5, sigma=0.2, sigma_F=0.8)
    b = theory.integrate(pst, rule, t, eta=0.5, sigma=0.2, sigma_F=0.8)
    np.testing.assert_allclose(b.Q, a.Q[:, perm][:, :, perm], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(b.R, a.R[:, perm], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(b.v, a.v[:, perm], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(b.eg, a.eg, rtol=1e-7, atol=1e-10)


def test_Q_stays_symmetric(rng):
    st = random_state(rng, 3, 3, scale=0.5)
    d = theory.rhs(st, "afa", eta=0.7, sigma=0.1, sigma_F=1.3, weight_decay=0.01)
    np.testing.assert_allclose(d["Q"], d["Q"].T, atol=1e-15)


def test_tolerance_convergence():
    """Errors shrink with rtol: rtol 1e-6 is off by ~1e-6 (relative), 1e-8 by ~100x less than that."""
    st = theory.random_state(2, 2, D=1000, seed=3)
    t = theory.default_times(100.0, 40)
    ref = theory.integrate(st, "bp", t, eta=1.0, rtol=1e-12, atol=1e-14)
    err = {}
    for rtol in (1e-6, 1e-8, 1e-10):
        tr = theory.integrate(st, "bp", t, eta=1.0, rtol=rtol, atol=rtol * 1e-2)
        err[rtol] = np.max(np.abs(tr.Q - ref.Q) / (np.abs(ref.Q).max()))
    assert err[1e-6] < 1e-3
    assert err[1e-8] < err[1e-6] / 10
    assert err[1e-10] < err[1e-8] / 10


@pytest.mark.parametrize("how,why", [("explode", "(exploded|positive semi-definite)"), ("nan", "non-finite")])
def test_divergence_stops_and_says_why(monkeypatch, how, why):
    """A right-hand side that blows up (exponential growth) or turns NaN stops the run with when and why.

    (erf students saturate rather than blow up, so the failure is injected; the linear network's
    real divergence is tested with the numerical engine.)
    """
    st = theory.random_state(2, 2, D=1000, seed=0)
    orig = theory.Dynamics.rhs

    def rhs(self, y):
        return 5.0 * y

    if how == "nan":
        calls = {"n": 0}

        def nan_later(self, y):
            calls["n"] += 1
            return orig(self, y) * (np.nan if calls["n"] > 200 else 1.0)

        monkeypatch.setattr(theory.Dynamics, "rhs", nan_later)
    else:
        monkeypatch.setattr(theory.Dynamics, "rhs", rhs)
    t = np.linspace(0, 50, 51)
    # the scipy path (the compiled path never calls Dynamics.rhs after the start)
    with pytest.raises(theory.DivergenceError, match=rf"diverged at t = .*steps/D.*{why}") as info:
        theory.integrate(st, "bp", t, eta=1.0, method="RK45")
    partial = info.value.trajectory
    assert partial.status == -1 and 1 <= len(partial) < len(t)
    assert np.all(np.isfinite(partial.Q))
    if how == "nan":
        calls["n"] = 0
    tr = theory.integrate(st, "bp", t, eta=1.0, throw=False, method="RK45")
    assert tr.status == -1 and re.search(why, tr.message) and not tr.success
    assert tr.t[-1] < 50


def test_interrupt_keeps_what_was_computed(monkeypatch):
    st = theory.random_state(2, 2, D=1000, seed=0)
    calls = {"n": 0}
    orig = theory.Dynamics.rhs

    def rhs(self, y):
        calls["n"] += 1
        if calls["n"] > 300:
            raise KeyboardInterrupt
        return orig(self, y)

    monkeypatch.setattr(theory.Dynamics, "rhs", rhs)
    tr = theory.integrate(st, "bp", theory.default_times(1000.0, 100), eta=1.0, method="RK45")
    assert tr.status == 1 and "interrupted" in tr.message
    assert 1 < len(tr) < 101


def test_interrupt_keeps_what_was_computed_compiled(monkeypatch):
    import theory.solver.dop853 as jit

    if jit.dop853_segment is None:
        pytest.skip("numba not installed")
    orig, calls = jit.dop853_segment, {"n": 0}

    def segment(*args):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return orig(*args)

    monkeypatch.setattr(jit, "dop853_segment", segment)
    tr = theory.integrate(theory.random_state(2, 2, D=1000, seed=0), "bp", theory.default_times(1000.0, 100), eta=1.0)
    assert tr.status == 1 and "interrupted" in tr.message
    assert len(tr) == 1 + 3 * 8


def test_compiled_path_detects_blowup(monkeypatch):
    """Large eta makes Q grow (erf saturates, so slowly); with a low blow-up threshold the compiled path stops."""
    import theory.solver.divergence as integ

    monkeypatch.setattr(integ, "BLOWUP", 20.0)
    st = theory.random_state(2, 2, D=1000, seed=0)
    tr = theory.integrate(st, "bp", np.linspace(0, 50, 51), eta=50.0, throw=False)
    assert tr.status == -1 and "exploded" in tr.message and tr.t[-1] < 50
    assert np.abs(tr.Q).max() <= 20.0


@pytest.mark.parametrize("rule,kw", [("bp", {}), ("fa", dict(sigma=0.3)), ("afa", dict(sigma_F=1.5)),
                                     ("afa", dict(presynaptic="clean", weight_decay=0.01))])
def test_compiled_integrator_matches_scipy(rule, kw):
    st = theory.random_state(2, 3, D=1000, seed=2)
    t = theory.default_times(300.0, 60)
    a = theory.integrate(st, rule, t, eta=0.8, rtol=1e-10, atol=1e-12, **kw)
    b = theory.integrate(st, rule, t, eta=0.8, rtol=1e-10, atol=1e-12, method="RK45", **kw)
    assert a.params["method"] == "DOP853"
    np.testing.assert_allclose(a.Q, b.Q, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(a.eg, b.eg, rtol=0, atol=1e-7)


def test_save_and_load_roundtrip(tmp_path):
    st = theory.random_state(2, 3, D=500, seed=1)
    tr = theory.integrate(st, "afa", np.linspace(0, 3, 4), eta=0.5, sigma=0.1, sigma_F=0.7, presynaptic="clean")
    path = tr.save(tmp_path / "run.npz")
    back = theory.Trajectory.load(path)
    np.testing.assert_array_equal(back.Q, tr.Q)
    np.testing.assert_array_equal(back.eg, tr.eg)
    assert back.params == tr.params and back.params["presynaptic"] == "clean"
    assert back.state0 == tr.state0
    for k in tr.angles:
        np.testing.assert_array_equal(back.angles[k], tr.angles[k])


def test_trajectory_observables_match_single_states():
    st = theory.random_state(3, 2, D=500, seed=2)
    tr = theory.integrate(st, "fa", np.linspace(0, 2, 5), eta=0.5)
    for i in range(len(tr)):
        s = tr.state(i)
        assert tr.eg[i] == pytest.approx(theory.generalisation_error(s), rel=1e-13)
        ang = theory.alignment_angles(s, "fa")
        assert tr.angles["feedback"][i] == pytest.approx(ang["feedback"], rel=1e-13)


def test_frozen_second_layer_and_separate_eta_v():
    st = theory.random_state(2, 2, D=500, seed=4)
    tr = theory.integrate(st, "bp", np.linspace(0, 5, 6), eta=0.5, train_second_layer=False)
    np.testing.assert_array_equal(tr.v, np.broadcast_to(st.v, tr.v.shape))
    a = theory.rhs(st, "bp", eta=0.5, eta_v=0.1)
    b = theory.rhs(st, "bp", eta=0.5, eta_v=0.2)
    np.testing.assert_allclose(2 * a["v"], b["v"], rtol=1e-14)
    np.testing.assert_array_equal(a["Q"], b["Q"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(rule="sgd", eta=1.0), "unknown rule"),
    (dict(rule="bp", eta=-1.0), "eta"),
    (dict(rule="bp", eta=1.0, eta_v=-0.1), "eta_v"),
    (dict(rule="bp", eta=1.0, sigma=-0.1), "sigma"),
    (dict(rule="bp", eta=1.0, weight_decay=-1), "weight_decay"),
    (dict(rule="bp", eta=1.0, presynaptic="modulated"), "presynaptic"),
    (dict(rule="afa", eta=1.0, presynaptic="sideways"), "presynaptic"),
    (dict(rule="bp", eta=1.0, error="modulated"), "pepita only"),
    (dict(rule="bp", eta=1.0, g="sigmoid"), "unknown activation"),
    (dict(rule="bp", eta=1.0, method="Euler"), "unknown method"),
])
def test_bad_parameters(kwargs, match):
    st = theory.random_state(2, 2, D=100, seed=0)
    rule = kwargs.pop("rule")
    with pytest.raises(ValueError, match=match):
        theory.integrate(st, rule, [0, 1], **kwargs)


def test_bad_times_and_missing_feedback():
    st = theory.random_state(2, 2, D=100, seed=0)
    with pytest.raises(ValueError, match="increasing"):
        theory.integrate(st, "bp", [0, 2, 1], eta=1.0)
    with pytest.raises(ValueError, match="feedback vector b"):
        theory.integrate(st.replace(b=None), "fa", [0, 1], eta=1.0)


def test_runaway_state_reports_divergence_instead_of_crashing():
    """afa at eta = 10, sigma_F = 3 runs away; the run must stop with a status, not a ZeroDivisionError."""
    st = theory.random_state(2, 2, D=1000, seed=0)
    tr = theory.integrate(st, "afa", theory.default_times(100.0, 50), eta=10.0, sigma_F=3.0, throw=False)
    assert tr.status in (-1, -2, 0)
    if tr.status != 0:
        assert "t = " in tr.message
    assert np.all(np.isfinite(tr.Q))
