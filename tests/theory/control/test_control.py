"""Optimal protocols (theory.optimal_protocol, theory.control).

Held to: the gradients of every objective by every control against central finite differences of whole
integrations; the one optimum known in closed form (linear g, K = M = 1, bp with output noise: Lambert's W,
theory.control.analytic); the optimum never worse than the best constant and the best power law it starts from;
the optimum of the ODE realised by the simulation at large D (slow); bad requests refused with the parameter named.
"""

import functools
import json
import math

import numpy as np
import pytest

import theory
from theory.control.analytic import linear_optimal_eg, linear_optimal_eta
from theory.control.protocol import _setup
from theory.control.sensitivities import flow


def _problem(state0, rule, T, controls, objective="eg_final", *, differences="central", pieces=3, shape=None,
             target=None, weight=None, **options):
    return _setup(state0, rule, T, controls, objective, None, pieces=pieces, spacing="linear", shape=shape,
                  piece_times=None, target=target, weight=weight, quadrature=None, rtol=1e-10, atol=1e-12,
                  differences=differences, options=options, where="test")


def _value(s, theta):
    fl = flow(s.problem, s.family, theta, sensitivities=False, weight=s.objective.weight, target=s.objective.target)
    return s.objective.value(fl, s.problem)


def _gradient_and_differences(s, theta, h=1e-5):
    """The sensitivities' gradient of the objective, and the central differences of whole integrations."""
    fl = flow(s.problem, s.family, theta, sensitivities=True, weight=s.objective.weight, target=s.objective.target)
    grad = s.objective.gradient(fl, s.problem)
    fd = np.empty_like(theta)
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h * (1.0 + abs(theta[j]))
        fd[j] = (_value(s, theta + e) - _value(s, theta - e)) / (2.0 * e[j])
    return grad, fd


def _eg0(state):
    return float(theory.generalisation_error(state, "erf"))


ERF2 = theory.random_state(2, 2, D=1000, seed=0)
ERF1 = theory.random_state(1, 1, D=1000, seed=1)
# (label, state, rule, T, controls, objective, options)
GRADIENT_CASES = [
    ("bp eta eg_final", ERF2, "bp", 5.0, {"eta": (0.1, 2.0)}, "eg_final", {}),
    ("bp eta+eta_v eg_integral t^1", ERF2, "bp", 5.0, {"eta": (0.1, 2.0), "eta_v": (0.0, 2.0)}, "eg_integral",
     {"weight": 1.0}),
    ("bp eta eg_integral w(t)", ERF2, "bp", 5.0, {"eta": (0.1, 2.0)}, "eg_integral",
     {"weight": lambda t: np.exp(-t)}),
    ("bp eta time_to_target", ERF2, "bp", 5.0, {"eta": (0.1, 2.0)}, "time_to_target",
     {"target": 0.9 * _eg0(ERF2)}),
    ("fa eta constant pieces", ERF2, "fa", 5.0, {"eta": (0.1, 2.0)}, "eg_final", {"shape": "constant"}),
    ("pepita sigma_F", ERF1, "pepita", 4.0, {"sigma_F": (0.2, 2.0)}, "eg_final", {"eta": 0.5}),
    ("pepita eta_F (mirroring)", ERF1, "pepita", 4.0, {"eta_F": (0.0, 1.0)}, "eg_final", {"eta": 0.5}),
    ("pepita eta+sigma_F eg_integral", ERF1, "pepita", 4.0, {"eta": (0.1, 1.0), "sigma_F": (0.2, 2.0)},
     "eg_integral", {}),
]


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=[c[0] for c in GRADIENT_CASES])
@pytest.mark.parametrize("differences, tol", [("central", 1e-6), ("forward", 1e-4)])
def test_gradient_matches_finite_differences_of_whole_integrations(case, differences, tol):
    _, state, rule, T, controls, objective, options = case
    options = dict(options)
    target, weight, shape = options.pop("target", None), options.pop("weight", None), options.pop("shape", None)
    s = _problem(state, rule, T, controls, objective, differences=differences, target=target, weight=weight,
                 shape=shape, **options)
    theta = s.family.from_constants([0.6 + 0.1 * i for i in range(len(controls))]) + 0.04 * np.arange(s.family.size)
    grad, fd = _gradient_and_differences(s, theta)
    assert np.all(np.isfinite(grad))
    assert np.max(np.abs(fd)) > 1e-6, "the objective does not depend on the protocol: the check would be empty"
    err = np.max(np.abs(grad - fd)) / np.max(np.abs(fd))
    assert err < tol, (grad, fd)


def test_time_to_target_gradient_vanishes_after_the_crossing():
    """The pieces after the first time eps_g reaches the target cannot change that time: zero, not noise."""
    s = _problem(ERF2, "bp", 5.0, {"eta": (0.1, 2.0)}, "time_to_target", target=0.9 * _eg0(ERF2))
    theta = s.family.from_constants([1.0])
    fl = flow(s.problem, s.family, theta, target=s.objective.target)
    assert 0 < fl.crossing < s.family.edges[1]
    grad = s.objective.gradient(fl, s.problem)
    assert np.all(grad[2:] == 0.0) and np.all(grad[:2] != 0.0)


def test_linear_optimum_is_the_lambert_w_protocol():
    """Linear g, K = M = 1, bp, frozen v, output noise: the greedy protocol of theory.control.analytic is optimal;
    the piecewise-linear optimum over 10 pieces reaches its eps_g(T) and follows its eta*(t)."""
    st = theory.random_state(1, 1, D=1000, seed=3)
    sigma, T = 0.5, 10.0
    res = theory.optimal_protocol(st, "bp", T, {"eta": (0.0, 4.0)}, g="linear", sigma=sigma,
                                  train_second_layer=False, pieces=10)
    assert res.status == 0, res.message
    eg0, v = float(res.trajectory.eg[0]), float(np.ravel(st.v)[0])
    best = linear_optimal_eg(T, eg0, sigma, v)
    assert res.value >= best * (1 - 1e-7)  # nothing beats the optimum
    assert res.value == pytest.approx(best, rel=1e-4)
    tm = np.linspace(0.5, T - 0.5, 10)
    np.testing.assert_allclose(res.schedules["eta"](tm), linear_optimal_eta(tm, eg0, sigma, v), rtol=0.01)
    t = res.trajectory.t
    np.testing.assert_allclose(res.trajectory.eg, linear_optimal_eg(t, eg0, sigma, v), rtol=1e-3)
    assert res.gains["constant"] > 1.3  # annealing matters with noise: the best constant is far off


def test_lambert_w_formula_solves_its_ode():
    """The closed form itself against the scalar ODE d eps/dt = -eps^2 / (eps + s) (and eta* = the greedy rate)."""
    from scipy.integrate import solve_ivp

    eg0, sigma, v = 0.7, 0.4, 1.3
    s = sigma**2 / 2
    t = np.linspace(0, 50, 11)
    sol = solve_ivp(lambda _, e: -(e**2) / (e + s), (0, 50), [eg0], t_eval=t, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(linear_optimal_eg(t, eg0, sigma, v), sol.y[0], rtol=1e-8)
    e = sol.y[0]
    np.testing.assert_allclose(linear_optimal_eta(t, eg0, sigma, v), e / (v**2 * (e + s)), rtol=1e-8)
    # far out, where exp overflows, the log-space branch continues the same curve
    far = linear_optimal_eg(np.array([1e3, 1e4]), eg0, sigma, v)
    assert np.all(np.isfinite(far)) and far[1] < far[0] and far[1] == pytest.approx(s / 1e4, rel=0.01)


# bp through the Saad-Solla plateau (K = M = 2); pepita with output noise, where annealing pays
@pytest.mark.parametrize("rule, K, T, pieces, sigma", [("bp", 2, 20.0, 6, 0.0), ("pepita", 1, 20.0, 4, 0.3)])
def test_optimum_beats_the_best_constant_and_power_law(rule, K, T, pieces, sigma):
    st = theory.random_state(K, K, D=1000, seed=0)
    res = theory.optimal_protocol(st, rule, T, {"eta": (0.05, 3.0)}, pieces=pieces, sigma=sigma)
    assert set(res.baselines) == {"constant", "power_law"}
    for name, b in res.baselines.items():
        assert b.value >= res.value * (1 - 1e-6), name  # it starts from them
    assert res.gains["constant"] > 1.01
    # the reported values are those of theory.integrate under the reported schedules
    traj = theory.integrate(st, rule, np.linspace(0, T, 5), res.params)
    assert traj.eg[-1] == pytest.approx(res.value, rel=1e-5)
    assert res.trajectory.eg[-1] == pytest.approx(res.value, rel=1e-5)
    curves = res.curves(np.linspace(0, T, 5))
    assert set(curves["protocol"]) == {"optimal", "constant", "power_law"}
    assert np.all(np.isfinite(curves["eg"])) and "eta" in curves


def test_result_carries_its_request_and_saves(tmp_path):
    st = theory.random_state(1, 1, D=1000, seed=1)
    res = theory.optimal_protocol(st, "bp", 5.0, {"eta": (0.1, 2.0)}, pieces=2, baselines=False, maxiter=5)
    assert res.T == 5.0 and res.controls == {"eta": (0.1, 2.0)} and res.baselines == {}
    assert res.status in (0, 2)
    assert list(res.record["history"].columns) == ["phase", "J", "F", "grad_norm", "seconds"]
    back = json.loads(res.save(tmp_path / "p.json").read_text())
    assert back["rule"] == "bp" and back["optimal"]["value"] == pytest.approx(res.value)
    assert back["objective"] == "eg_final" and back["units"] == res.objective.units
    assert "optimal protocol of bp" in res.summary()


@functools.cache
def _phase_calls() -> dict:
    """Evaluations of each phase of the uninterrupted search (bp, K = M = 2, T = 10, 3 pieces), in order: measured
    here, not written down (they move with the rounding of the right-hand side)."""
    res = theory.optimal_protocol(ERF2, "bp", 10.0, {"eta": (0.1, 2.0)}, pieces=3)
    phases = list(res.record["history"]["phase"])
    return {ph: (phases.index(ph), phases.count(ph)) for ph in dict.fromkeys(phases)}


def _interrupted_after(monkeypatch, after: int):
    """optimal_protocol's run of _phase_calls with one Ctrl-C on evaluation ``after`` + 1."""
    import theory.control.protocol as P

    calls = {"n": 0}
    real = P.flow

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == after + 1:  # one Ctrl-C
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(P, "flow", interrupted)
    return theory.optimal_protocol(ERF2, "bp", 10.0, {"eta": (0.1, 2.0)}, pieces=3)


@pytest.mark.parametrize("phase", ["constant", "power_law", "optimal"])
def test_ctrl_c_keeps_the_best_protocol_so_far(monkeypatch, phase):
    first, count = _phase_calls()[phase]
    assert count >= 2, f"phase {phase}: {count} evaluation(s), nothing to interrupt in its middle"
    after = first + count // 2  # one Ctrl-C in the middle of the phase
    res = _interrupted_after(monkeypatch, after)
    assert res.status == 1 and "interrupted" in res.message
    history = res.record["history"]
    assert len(history) == after and history["phase"].iloc[-1] == phase  # every evaluation made is kept
    # the protocol returned is the best one evaluated
    assert math.isfinite(res.value) and res.value == pytest.approx(history["J"].min(), rel=1e-9)


def test_ctrl_c_at_the_first_step_after_the_grid_keeps_the_grids_best(monkeypatch):
    """A Ctrl-C on the first evaluation of the refinement that follows the constant grid: that search has no point
    of its own yet, and the grid's best is returned (it was lost: the interrupt escaped optimal_protocol)."""
    from theory.control.baselines import CONSTANT_GRID

    after = len(CONSTANT_GRID)  # one control: the grid's points, then the refinement's first evaluation
    res = _interrupted_after(monkeypatch, after)
    assert res.status == 1 and "interrupted" in res.message
    history = res.record["history"]
    assert len(history) == after and set(history["phase"]) == {"constant"}
    assert math.isfinite(res.value) and res.value == pytest.approx(history["J"].min(), rel=1e-9)


BAD = [
    (dict(controls={}), "controls must be a non-empty dict"),
    (dict(controls={"kappa": (0, 1)}), "unknown control 'kappa'"),
    (dict(controls={"eta": (1.0, 0.5)}), "reversed"),
    (dict(controls={"eta": (0.5, 0.5)}), "are equal"),
    (dict(controls={"eta": (-1.0, 0.5)}), "lower bound of control 'eta'"),
    (dict(controls={"eta": 0.5}), "must be a pair"),
    (dict(controls={"sigma_F": (0.1, 1.0)}, eta=0.5), "no effect on the error under rule 'bp'"),
    (dict(T=0.0), "T (the horizon"),
    (dict(objective="loss"), "unknown objective 'loss'"),
    (dict(target=0.1), "target = 0.1 has no effect"),
    (dict(objective="time_to_target"), "needs target="),
    (dict(objective="time_to_target", target=5.0), "target must be in (0, eps_g(0))"),
    (dict(weight=1.0), "weight has no effect"),
    (dict(objective="eg_integral", weight=-2.0), "weight (the exponent q"),
    (dict(method="nelder-mead"), "method"),
    (dict(pieces=0), "pieces"),
    (dict(piece_times=[6.0]), "piece_times must lie strictly inside"),
    (dict(shape="cubic"), "shape"),
    (dict(controls={"sigma_F": (0.1, 1.0)}, rule="pepita", eta=0.5, shape="linear"), "piecewise constant"),
    (dict(differences="backward"), "differences"),
    (dict(eta=theory.PowerLaw(1.0, 1.0, 1.0)), "eta is a control"),
]


@pytest.mark.parametrize("change, match", BAD, ids=[m for _, m in BAD])
def test_bad_requests_name_the_parameter(change, match):
    kw = dict(rule="bp", T=5.0, controls={"eta": (0.1, 2.0)})
    kw.update(change)
    rule, T, controls = kw.pop("rule"), kw.pop("T"), kw.pop("controls")
    with pytest.raises(ValueError, match=None) as info:
        theory.optimal_protocol(ERF1, rule, T, controls, **kw)
    assert match in str(info.value)


def test_state0_must_be_order_parameters():
    with pytest.raises(TypeError, match="state0 must be a theory.OrderParams"):
        theory.optimal_protocol({"Q": 1}, "bp", 5.0, {"eta": (0.1, 1.0)})


@pytest.mark.slow
@pytest.mark.parametrize("rule, sigma", [("bp", 0.0), ("pepita", 0.3)])
@pytest.mark.parametrize("D", [1000, 10000])
def test_optimal_protocol_beats_the_baselines_in_simulation(rule, sigma, D):
    """The ODE's optimum is realised by the network (the exact sampler, 32 replicas): at D = 1000 and 10000 the
    simulated eps_g(T) under the optimal protocol is below that under the best constant and the best power law by
    more than 3 standard errors of the replicas' paired differences, and each protocol's simulation matches its ODE."""
    import simulate

    K = 2 if rule == "bp" else 1
    st = theory.random_state(K, K, D=D, seed=0)
    T = 20.0
    res = theory.optimal_protocol(st, rule, T, {"eta": (0.05, 3.0)}, pieces=6, sigma=sigma)
    t = np.linspace(0, T, 11)
    eg = {}
    for name, prot in res.protocols().items():
        params = theory.control.protocol.protocol_params(res.hyper, prot.schedules, where="test")
        sim = simulate.run_reduced(st, rule, t, params, D=D, replicas=32, seed=1)
        ode = theory.integrate(st, rule, t, params)
        m, sem = sim.mean("eg")[-1], sim.sem("eg")[-1]
        assert abs(m - ode.eg[-1]) < 4 * sem + 2.0 / D ** 0.5 * ode.eg[-1], (name, m, sem, ode.eg[-1])
        eg[name] = np.asarray(sim.eg)[:, -1]  # per replica; the same seed: the same data streams
    for name in ("constant", "power_law"):
        gap = eg[name] - eg["optimal"]  # paired by replica
        assert gap.mean() > 3 * gap.std(ddof=1) / np.sqrt(gap.size), (name, gap.mean(), gap.std(ddof=1))


def test_optimal_protocol_plot_draws_its_curves():
    """OptimalProtocol.plot: eps_g of the optimum and of both baselines, and the eta schedule of each, drawn from
    curves() (the data in the lines is the table's); theory.plots.protocols refuses a table that is not one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from theory.plots import protocols

    res = theory.optimal_protocol(ERF2, "bp", 5.0, {"eta": (0.1, 2.0)}, pieces=2, maxiter=5, progress=False)
    t = np.linspace(0.0, 5.0, 11)
    fig = res.plot(t)
    eg_ax, eta_ax = fig.get_axes()
    curves = res.curves(t)
    for ax, col in ((eg_ax, "eg"), (eta_ax, "eta")):
        lines = {ln.get_label(): ln for ln in ax.lines}
        assert set(lines) == {"optimal", "constant", "power_law"}
        for name, ln in lines.items():
            np.testing.assert_allclose(ln.get_ydata(), curves[curves["protocol"] == name][col])
    assert eg_ax.get_yscale() == "log" and eta_ax.get_ylabel() == "eta"
    with pytest.raises(ValueError, match="lacks columns"):
        protocols(curves.drop(columns="eg"))
    plt.close("all")
