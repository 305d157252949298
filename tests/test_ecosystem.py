"""Provenance, labelled arrays, tables and the sweep command line.

Every saved result (Trajectory, SimulationResult, Comparison, sweep tables, the CLI's files)
round-trips with the package version, its dependencies' versions, the device and the full
parameter set; xarray / netCDF round-trips when the extra is installed; sweep tables are pandas
DataFrames with one row per point and the values an independent integration gives.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib

import simulate
import theory
from simulate._cli import main

ROOT = Path(__file__).resolve().parents[1]
STATE = theory.random_state(2, 2, D=500, seed=0)
T = theory.default_times(5.0, 12)


def _provenance_ok(prov, device="cpu"):
    assert prov["pepita_dynamics"] == theory.__version__
    for lib in ("numpy", "scipy", "torch"):
        assert prov[lib] == importlib.metadata.version(lib)
    assert prov["numpy"] == np.__version__
    assert prov["device"].startswith(device)
    assert prov["python"] == ".".join(map(str, sys.version_info[:3]))


# ----------------------------------------------------------------------------- version, license, citation
def test_one_version_string():
    assert re.fullmatch(r"\d+\.\d+\.\d+", theory.__version__)
    assert simulate.__version__ == theory.__version__
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["dynamic"] == ["version"]  # read from theory._version, nowhere else
    assert importlib.metadata.version("pepita-dynamics") == theory.__version__
    assert f"version: {theory.__version__}" in (ROOT / "CITATION.cff").read_text()
    assert f"## [{theory.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_license_is_the_declared_one():
    assert pyproject_license() == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def pyproject_license():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]


def test_citation_file_is_valid_cff():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["title"] and cff["authors"] and cff["license"] == "MIT"
    assert str(cff["version"]) == theory.__version__


# ----------------------------------------------------------------------------- provenance on every result
def test_trajectory_round_trip_keeps_version_and_parameters(tmp_path):
    tr = theory.integrate(STATE, "pepita", T, eta=theory.PowerLaw(0.7, t0=2.0, p=1.0), sigma=0.1, batch=2)
    _provenance_ok(tr.params["provenance"])
    back = theory.Trajectory.load(tr.save(tmp_path / "tr.npz"))
    assert back.params == json.loads(json.dumps(tr.params))
    assert back.params["eta_schedule"].startswith("power(") and back.params["batch"] == 2
    for name in ("eta", "sigma", "rule", "rtol", "atol", "units", "quadrature"):
        assert name in back.params
    np.testing.assert_array_equal(back.eg, tr.eg)


@pytest.mark.parametrize("engine", ["full", "reduced"])
def test_simulation_round_trip_keeps_version_and_parameters(tmp_path, engine):
    init = simulate.Initialisation(2, 2, 40, seed=1)
    res = simulate.run(init, "fa", [0.0, 0.5, 1.0], eta=0.5, replicas=3, seed=2, engine=engine, progress=False)
    _provenance_ok(res.params["provenance"])
    back = simulate.SimulationResult.load(res.save(tmp_path / "sim.npz"))
    assert back.params == json.loads(json.dumps(res.params))
    assert back.params["engine"] == engine and back.params["seed"] == 2 and back.params["D"] == 40
    np.testing.assert_array_equal(back.Q, res.Q)


def test_comparison_and_sweep_table_keep_version(tmp_path):
    init = simulate.Initialisation(2, 2, 40, seed=1)
    cmp = simulate.compare(init, ["bp"], [0.0, 0.5, 1.0], eta=1.0, replicas=2, n_test=0, progress=False)
    _provenance_ok(cmp.params["provenance"])
    back = simulate.Comparison.load(cmp.save(tmp_path / "cmp"))
    assert back.params == json.loads(json.dumps(cmp.params))
    assert back.results["bp"].params["provenance"] == cmp.params["provenance"]

    res = theory.sweep(STATE, "bp", T, grid=dict(eta=[0.5, 1.0]), progress=False)
    _provenance_ok(res.table.attrs["provenance"])
    frame = theory.SweepResult.read_table(res.save(tmp_path / "sweep.csv"))
    pd.testing.assert_frame_equal(frame, res.table, check_dtype=False)
    assert frame.attrs["provenance"] == res.table.attrs["provenance"]
    assert [p["eta"] for p in frame.attrs["points"]] == [0.5, 1.0]
    assert frame.attrs["units"]["t"] == "steps / D"


def test_damaged_sweep_table_is_a_load_error(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(theory.LoadError, match="not a sweep table"):
        theory.SweepResult.read_table(tmp_path / "x.csv")
    with pytest.raises(theory.LoadError, match="no such file"):
        theory.SweepResult.read_table(tmp_path / "none.csv")


# ----------------------------------------------------------------------------- the sweep DataFrame
def test_sweep_frame_one_row_per_point_with_independent_values():
    states = [STATE, theory.random_state(2, 2, D=500, seed=1)]
    res = theory.sweep(states, grid=dict(rule=["bp", "fa"], eta=[0.5, 1.5]), t=T, tags=dict(seed=[0, 1]),
                       eg_target=0.05, progress=False)
    tab = res.table
    assert isinstance(tab, pd.DataFrame) and len(tab) == 8 and list(tab["point"]) == list(range(8))
    assert tab["status"].dtype.kind == "i" and tab["eta"].dtype.kind == "f"
    assert sorted(set(zip(tab["rule"], tab["eta"], tab["seed"]))) == sorted(
        (r, e, s) for r in ("bp", "fa") for e in (0.5, 1.5) for s in (0, 1))
    for _, row in tab.iterrows():  # every row: what integrating that point alone gives
        tr = theory.integrate(states[row["state"]], row["rule"], T, eta=row["eta"])
        np.testing.assert_allclose(row["eg_final"], tr.eg[-1], rtol=1e-5)
        np.testing.assert_allclose(res.eg[row["point"]], tr.eg, rtol=1e-5)
    long = res.curves()
    assert isinstance(long, pd.DataFrame) and len(long) == 8 * len(T)
    np.testing.assert_allclose(long.groupby("point")["eg"].last().to_numpy(), tab["eg_final"])


# ----------------------------------------------------------------------------- xarray and netCDF
xr = pytest.importorskip("xarray", reason="the xarray extra is not installed")


def test_trajectory_to_xarray_and_netcdf(tmp_path):
    pytest.importorskip("h5netcdf")
    tr = theory.integrate(STATE, "afa", T, eta=0.5)
    ds = tr.to_xarray()
    assert ds["Q"].dims == ("t", "k", "l") and ds["R"].dims == ("t", "k", "m") and ds["eg"].dims == ("t",)
    assert list(ds["angle"].values) == list(tr.angles) and ds.attrs["kind"] == "Trajectory"
    assert json.loads(ds.attrs["params"])["provenance"]["pepita_dynamics"] == theory.__version__
    np.testing.assert_array_equal(ds["t"], tr.t)
    back = theory.Trajectory.load(tr.save(tmp_path / "tr.nc"))
    for name in ("t", "Q", "R", "S", "v", "eg"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tr, name))
    for name in tr.angles:
        np.testing.assert_allclose(back.angles[name], tr.angles[name])
    assert back.params == json.loads(json.dumps(tr.params)) and back.status == tr.status
    np.testing.assert_array_equal(back.state0.T, tr.state0.T)


def test_simulation_and_comparison_to_xarray_and_netcdf(tmp_path):
    pytest.importorskip("h5netcdf")
    init = simulate.Initialisation(2, 2, 40, seed=1)
    cmp = simulate.compare(init, ["bp", "pepita"], [0.0, 0.5, 1.0], eta=1.0, replicas=3, n_test=50, progress=False)
    ds = cmp.results["bp"].to_xarray()
    assert ds["Q"].dims == ("replica", "t", "k", "l") and ds.sizes["replica"] == 3
    assert ds["eg_test"].dims == ("replica", "t")
    np.testing.assert_array_equal(ds["Q"].mean("replica"), cmp.results["bp"].Q.mean(0))
    back = simulate.SimulationResult.load(cmp.results["pepita"].save(tmp_path / "sim.nc"))
    np.testing.assert_array_equal(back.R, cmp.results["pepita"].R)
    assert back.params == json.loads(json.dumps(cmp.results["pepita"].params))

    tree = cmp.to_xarray()
    assert set(tree.children) == {"bp", "pepita"}
    again = simulate.Comparison.load(cmp.save(tmp_path / "cmp.nc"))
    assert again.params == json.loads(json.dumps(cmp.params)) and again.ode_rules == cmp.ode_rules
    for key in cmp.rules:
        np.testing.assert_array_equal(again.results[key].eg, cmp.results[key].eg)
        np.testing.assert_array_equal(again.trajectories[key][0].eg, cmp.trajectories[key][0].eg)
    assert again.summary() == cmp.summary()


def test_sweep_to_xarray():
    res = theory.sweep(STATE, grid=dict(rule=["bp", "fa"], eta=[0.5, 1.0]), t=T, progress=False)
    ds = res.to_xarray()
    assert ds["eg"].dims == ("point", "t") and list(ds["rule"].values) == list(res.table["rule"])
    np.testing.assert_array_equal(ds["eg"].where(ds["rule"] == "fa", drop=True), res.eg[2:])
    assert json.loads(ds.attrs["attrs"])["provenance"]["pepita_dynamics"] == theory.__version__


def test_netcdf_of_another_kind_is_a_load_error(tmp_path):
    pytest.importorskip("h5netcdf")
    path = theory.integrate(STATE, "bp", T, eta=1.0).save(tmp_path / "tr.nc")
    with pytest.raises(theory.LoadError, match="not a SimulationResult"):
        simulate.SimulationResult.load(path)
    (tmp_path / "junk.nc").write_bytes(b"not netcdf")
    with pytest.raises(theory.LoadError, match="not a readable netCDF"):
        theory.Trajectory.load(tmp_path / "junk.nc")


# ----------------------------------------------------------------------------- the command line
def test_cli_sweep_end_to_end(tmp_path, capsys):
    out = tmp_path / "sw"
    rc = main(
        [
            "sweep",
            "--rules",
            "bp,fa",
            "--grid",
            "eta=0.5,1.0",
            "--grid",
            "sigma=0:0.2:2",
            "--states",
            "2",
            "--t-max",
            "3",
            "--n-times",
            "5",
            "--D",
            "200",
            "--eg-target",
            "0.1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    tab = theory.SweepResult.read_table(out / "sweep.csv")
    assert len(tab) == 2 * 2 * 2 * 2 and set(tab["rule"]) == {"bp", "fa"} and set(tab["sigma"]) == {0.0, 0.2}
    assert set(tab["seed"]) == {0, 1} and "t_target" in tab.columns and (out / "sweep.png").stat().st_size > 0
    _provenance_ok(tab.attrs["provenance"])
    # the file holds what the library gives for the same points
    res = theory.sweep([theory.random_state(2, 2, D=200, seed=s) for s in (0, 1)], t=theory.default_times(3.0, 100),
                       grid=dict(rule=["bp", "fa"], eta=[0.5, 1.0], sigma=[0.0, 0.2]), progress=False)
    for _, row in tab.iterrows():
        lib = res.table[(res.table["rule"] == row["rule"]) & (res.table["eta"] == row["eta"])
                        & (res.table["sigma"] == row["sigma"]) & (res.table["state"] == row["state"])]
        np.testing.assert_allclose(row["eg_final"], lib["eg_final"].item(), rtol=1e-6)
    assert "16 points" in capsys.readouterr().out


@pytest.mark.parametrize("grid, message", [
    ("eta", "expected NAME=v1,v2"),
    ("etta=1,2", "'etta' is not a sweepable parameter"),
    ("eta=a,b", "cannot read the values"),
    ("eta=0:1", "cannot read the values"),
    ("eta=-1,1", "eta"),
])
def test_cli_sweep_bad_grid_exits_2(tmp_path, capsys, grid, message):
    rc = main(["sweep", "--grid", grid, "--t-max", "1", "--out", str(tmp_path / "bad"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "pepita-dynamics sweep: error:" in err and message in err


def test_cli_activation_on_every_subcommand(tmp_path):
    assert main(["ode", "--rules", "bp", "--g", "linear", "--t-max", "1", "--D", "100", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    assert theory.Trajectory.load(tmp_path / "o" / "ode_bp.npz").params["activation"] == "linear"
    assert main(["sweep", "--rules", "fa", "--g", "linear", "--grid", "eta=0.5", "--t-max", "1", "--out",
                 str(tmp_path / "s"), "--no-progress"]) == 0
    assert theory.SweepResult.read_table(tmp_path / "s" / "sweep.csv")["activation"].tolist() == ["linear"]
    assert main(["compare", "--rules", "bp", "--g", "nope", "--t-max", "1", "--out", str(tmp_path / "c"),
                 "--no-progress"]) == 2


def test_cli_help_lists_sweep():
    out = subprocess.run([sys.executable, "-m", "simulate._cli", "--help"], capture_output=True, text=True, check=True)
    assert "sweep" in out.stdout
