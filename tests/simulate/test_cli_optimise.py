"""``pepita-dynamics optimise``: what it writes is what theory.optimal_protocol found, and its schedules read back."""

import json

import numpy as np
import pandas as pd
import pytest

import theory
from simulate._cli import main

SMALL = ["--K", "1", "--M", "1", "--sigma", "0.3", "--t-max", "10", "--pieces", "4", "--no-progress"]


def test_optimise_writes_protocols_schedules_curves_and_figure(tmp_path, capsys):
    rc = main(["optimise", "--rules", "bp", "--control", "eta=0.05:3", *SMALL, "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "protocol_bp.json").read_text())
    assert doc["controls"] == {"eta": [0.05, 3.0]} and set(doc["baselines"]) == {"constant", "power_law"}
    assert doc["gains"]["constant"] > 1.05  # with output noise, annealing pays
    for p in ("curves.csv", "summary.txt", "optimise.png", "schedule_bp_eta.csv"):
        assert (tmp_path / p).stat().st_size > 0, p
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert set(curves["protocol"]) == {"optimal", "constant", "power_law"} and "eta" in curves
    # the written schedule, read back as the command line's table:, gives the reported optimum
    sched = theory.parse_schedule(f"table:{tmp_path / 'schedule_bp_eta.csv'}", 1.0)
    state0 = theory.random_state(1, 1, D=1000, seed=0)
    traj = theory.integrate(state0, "bp", np.linspace(0, 10, 3), eta=sched, sigma=0.3)
    assert traj.eg[-1] == pytest.approx(doc["optimal"]["value"], rel=1e-6)
    opt = curves[(curves["protocol"] == "optimal")]
    assert opt["eg"].iloc[-1] == pytest.approx(doc["optimal"]["value"], rel=1e-6)


def test_optimise_piecewise_constant_schedule_reads_back(tmp_path):
    rc = main(["optimise", "--rules", "bp", "--control", "eta=0.05:3", "--shape", "constant", *SMALL,
               "--no-baselines", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "protocol_bp.json").read_text())
    sched = theory.parse_schedule(f"table:{tmp_path / 'schedule_bp_eta.csv'}", 1.0)
    state0 = theory.random_state(1, 1, D=1000, seed=0)
    traj = theory.integrate(state0, "bp", np.linspace(0, 10, 3), eta=sched, sigma=0.3)
    assert traj.eg[-1] == pytest.approx(doc["optimal"]["value"], rel=1e-5)  # steps a hair (1e-9 T) wide


def test_optimise_simulates_each_protocol(tmp_path):
    rc = main(["optimise", "--rules", "bp", "--control", "eta=0.05:3", *SMALL, "--simulate-D", "300",
               "--replicas", "2", "--out", str(tmp_path)])
    assert rc == 0
    sim = json.loads((tmp_path / "protocol_bp.json").read_text())["simulation"]
    assert sim["D"] == 300 and sim["engine"] == "reduced"
    for name in ("optimal", "constant", "power_law"):
        assert np.isfinite(sim[name]["eg_T"]) and (tmp_path / f"sim_bp_{name}.npz").exists()


@pytest.mark.parametrize("args, match", [
    (["--control", "eta"], "expected NAME=LO:HI"),
    (["--control", "eta=a:b"], "the bounds must be numbers"),
    (["--control", "eta=0.1:1", "--control", "eta=0.2:2"], "given twice"),
    (["--control", "sigma_F=0.1:2"], "no effect on the error"),
    (["--control", "eta=0.1:1", "--target", "0.1"], "target = 0.1 has no effect"),
    (["--control", "eta=0.1:1", "--simulate-D", "0"], "--simulate-D"),
    (["--control", "kappa=0:1"], "unknown control 'kappa'"),
])
def test_optimise_bad_input_exits_2_naming_it(tmp_path, capsys, args, match):
    rc = main(["optimise", "--rules", "bp", *args, *SMALL, "--out", str(tmp_path)])
    assert rc == 2
    assert match in capsys.readouterr().err


def test_optimise_refuses_to_simulate_a_sigma_F_protocol(tmp_path, capsys):
    rc = main(["optimise", "--rules", "pepita", "--control", "sigma_F=0.2:2", "--eta", "0.5", *SMALL,
               "--simulate-D", "300", "--maxiter", "2", "--no-baselines", "--out", str(tmp_path)])
    assert rc == 2
    assert "sigma_F protocol" in capsys.readouterr().err
