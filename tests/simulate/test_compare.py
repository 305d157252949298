"""Simulations against ODEs (THEORY.md section 6), for every rule and variant, and simulate.compare.

Tolerances: at each recorded time and for every order parameter, the replicas' deviations
d_r = sim_r - ode_r are independent (independent data streams), so mean(d) / sem(d) follows a
Student t law with R - 1 degrees of freedom up to the O(1/D) finite-size bias, which is
O(sqrt(R / D)) standard errors (here < 0.2). The threshold is the t quantile at a family-wise
false-alarm probability of 1e-4 (Bonferroni over all comparisons of one test); nothing is tuned.
A negative control (a wrong ODE) checks that the criterion has power.
"""

from __future__ import annotations

import numpy as np
import pytest

import simulate
import theory
from simulate._compare import plateau_split, rule_key
from tests.helpers import FAMILY_ALPHA, REPLICAS, T_REC, _deviations, _max_t  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 1000








VARIANTS = [
    dict(rule="bp"),
    dict(rule="fa"),
    dict(rule="afa"),
    dict(rule="afa", presynaptic="clean"),
    dict(rule="afa", sigma_F=-1.0),
    dict(rule="afa", train_second_layer=False),
    dict(rule="pepita"),
    dict(rule="pepita", presynaptic="forward"),
    dict(rule="pepita", error="modulated"),
    dict(rule="pepita", sigma_F=-0.5, eta_v=0.5),
    dict(rule="bp", sigma=0.5),
    dict(rule="fa", weight_decay=0.2),
    dict(rule="bp", K=3, M=2),
    dict(rule="afa", K=2, M=3, independent_init=True),
]


def _id(v):
    return ",".join(f"{k}={val}" for k, val in v.items())


@pytest.mark.parametrize("variant", VARIANTS, ids=[_id(v) for v in VARIANTS])
def test_simulation_matches_ode(variant):
    v = dict(variant)
    K, M = v.pop("K", 2), v.pop("M", 2)
    rule = v.pop("rule")
    init = simulate.Initialisation(K, M, D, seed=3)
    cmp = simulate.compare(
        init,
        [rule],
        T_REC,
        eta=1.0,
        replicas=REPLICAS,
        device="cpu",
        seed=11,
        n_test=0,
        progress=False,
        **v,
        rtol=1e-9,
        atol=1e-11,
    )
    key = cmp.rules[0]
    assert cmp.notes[key] is None, cmp.notes[key]  # the ODE of the simulated rule itself
    stat, thresh = _max_t(_deviations(cmp.results[key], cmp.trajectories[key]))
    assert stat < thresh, f"{key}: max |t| = {stat:.2f} >= {thresh:.2f}"


def test_criterion_has_power():
    """Negative control: afa simulated with the clean input x against the modulated-input ODE must fail."""
    init = simulate.Initialisation(2, 2, D, seed=3)
    res = simulate.run(
        init,
        "afa",
        T_REC,
        eta=1.0,
        presynaptic="clean",
        replicas=REPLICAS,
        device="cpu",
        seed=11,
        n_test=0,
        progress=False,
    )
    wrong = theory.integrate(res.initial_state(), "afa", res.t, eta=1.0, presynaptic="modulated")
    stat, thresh = _max_t(_deviations(res, [wrong]))
    assert stat > 3 * thresh


def test_comparison_summary_and_roundtrip(tmp_path):
    init = simulate.Initialisation(2, 2, 200, seed=1)
    t = np.concatenate([[0.0], np.geomspace(0.1, 5.0, 8)])
    cmp = simulate.compare(init, ("bp", "afa"), t, eta=1.0, replicas=3, device="cpu", n_test=500, progress=False)
    assert cmp.rules == ["bp", "afa"]
    text = cmp.summary()
    for needle in ("[bp]", "[afa]", "before", "t_split", "D=200"):
        assert needle in text
    ag = cmp.agreement["bp"]
    assert ag.rel_dev.shape == cmp.results["bp"].t.shape
    assert set(ag.angle_diff) >= {"teacher", "feedback", "end_to_end"}
    cmp.save(tmp_path)
    back = simulate.Comparison.load(tmp_path)
    assert back.rules == cmp.rules and back.params == cmp.params
    np.testing.assert_array_equal(back.results["afa"].Q, cmp.results["afa"].Q)
    np.testing.assert_allclose(back.ode_eg("bp"), cmp.ode_eg("bp"))
    assert back.summary() == text


def test_compare_per_replica_odes_with_independent_init():
    init = simulate.Initialisation(2, 2, 200, seed=1)
    cmp = simulate.compare(
        init, "bp", [0.0, 1.0], eta=1.0, replicas=3, independent_init=True, device="cpu", n_test=0, progress=False
    )
    trs = cmp.trajectories["bp"]
    assert len(trs) == 3
    for r, tr in enumerate(trs):
        assert tr.state0 == cmp.results["bp"].initial_state(r)
    assert not np.allclose(trs[0].eg, trs[1].eg)


def test_pepita_fallback_switch(monkeypatch):
    import simulate._compare as sc

    monkeypatch.setattr(sc, "PEPITA_ODE_RULE", "afa")
    rule, note = sc.ode_rule_for(theory.make_rule("pepita", presynaptic="clean"))
    assert rule == theory.make_rule("afa", presynaptic="clean") and "afa" in note
    monkeypatch.setattr(sc, "PEPITA_ODE_RULE", "pepita")
    rule, note = sc.ode_rule_for(theory.make_rule("bp"))
    assert rule.name == "bp" and note is None


def test_plateau_split():
    t = np.geomspace(0.01, 1000, 400)
    # a synthetic curve: fast drop to a plateau at 0.02, escape at t ~ 200
    eg = 0.5 * np.exp(-t) + 0.02 / (1 + (t / 200.0) ** 6)
    ts = plateau_split(t, eg)
    assert 150 < ts < 260
    assert plateau_split(t, 0.5 * np.exp(-t / 1e6) + 0.01) == t[-1]  # no escape in the window


def test_rule_keys_and_bad_input():
    assert rule_key(theory.make_rule("pepita", presynaptic="forward", error="modulated")) == "pepita-clean-errmod"
    init = simulate.Initialisation(2, 2, 50)
    with pytest.raises(ValueError, match="distinct"):
        simulate.compare(init, ["bp", "bp"], [0, 1], eta=1.0, progress=False)
    with pytest.raises(ValueError, match="at least one"):
        simulate.compare(init, [], [0, 1], eta=1.0, progress=False)
    with pytest.raises(ValueError, match="unknown rule"):
        simulate.compare(init, ["sgd"], [0, 1], eta=1.0, progress=False)
    with pytest.raises(ValueError, match="engine"):
        simulate.compare(init, ["bp"], [0, 1], eta=1.0, engine="nope", progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["bp", "fa", "afa", "pepita"])
def test_deviation_shrinks_with_D(rule):
    """Every rule: the deviation from the ODE falls like 1/sqrt(D) (slope of a log-log fit)."""
    Ds = [250, 1000, 4000]
    t = np.array([0.0, 1.0, 2.0, 4.0])
    rms = []
    for Dn in Ds:
        init = simulate.Initialisation(2, 2, Dn, seed=5)
        res = simulate.run(
            init, rule, t, eta=1.0, replicas=16, independent_init=True, device="cpu", seed=2, n_test=0, progress=False
        )
        trs = [theory.integrate(res.initial_state(r), rule, res.t, eta=1.0) for r in range(res.replicas)]
        dev = _deviations(res, trs)[:, 1:]
        # per-replica fluctuation around its own ODE; the median over replicas, because at small D
        # a rare replica of pepita can enter its runaway regime (weights growing without bound,
        # in the ODE as in the simulation), where deviations are amplified rather than O(1/sqrt D)
        rms.append(np.median(np.sqrt(np.mean(dev**2, axis=(1, 2)))))
    slope = np.polyfit(np.log(Ds), np.log(rms), 1)[0]
    assert -0.7 < slope < -0.3, (rms, slope)


def test_cli_compare_and_ode(tmp_path, capsys):
    from simulate._cli import main

    out = tmp_path / "cmp"
    rc = main(["compare", "--rules", "bp,pepita", "--D", "60", "--t-max", "1", "--n-times", "4", "--replicas", "2",
               "--n-test", "100", "--device", "cpu", "--out", str(out), "--no-progress"])
    assert rc == 0
    for name in (
        "comparison.json",
        "summary.txt",
        "eg.png",
        "angles.png",
        "directions.png",
        "sim_bp.npz",
        "ode_pepita.npz",
    ):
        assert (out / name).stat().st_size > 0, name
    cmp = simulate.Comparison.load(out)
    assert cmp.params["D"] == 60 and cmp.rules == ["bp", "pepita"]
    assert "[pepita]" in (out / "summary.txt").read_text()
    rc = main(
        ["ode", "--rules", "bp,afa", "--t-max", "2", "--D", "100", "--out", str(tmp_path / "ode"), "--no-progress"]
    )
    assert (
        rc == 0 and (tmp_path / "ode" / "learning_curves.png").exists() and (tmp_path / "ode" / "ode_afa.npz").exists()
    )
    capsys.readouterr()
    assert main(["compare", "--t-max", "0", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "t-max" in capsys.readouterr().err
    assert (
        main(
            [
                "compare",
                "--engine",
                "nope",
                "--D",
                "20",
                "--t-max",
                "1",
                "--out",
                str(tmp_path / "bad"),
                "--no-progress",
            ]
        )
        == 2
    )
