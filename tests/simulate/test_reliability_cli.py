"""Reliability of the command line (issue: CLI input and exit codes): every bad input is exit 2 with a message that
names the option the user typed; a diverged run is exit 3 whatever happens while drawing; a broken --rule file is
reported with its file, line and error; messages are printed with --no-progress; --help shows the defaults."""

from __future__ import annotations

import pytest

from simulate import _cli
from simulate._cli import build_parser, main

ODE = ["ode", "--rules", "bp", "--t-max", "1", "--n-times", "3", "--D", "100", "--no-progress"]


@pytest.mark.parametrize("extra, option", [
    (["--kappa-F", "0.1"], "--kappa-F"),
    (["--mirror-norm"], "--mirror-norm"),
    (["--eta-F-schedule", "power:t0=2,p=1"], "--eta-F-schedule"),
])
def test_mirroring_options_without_eta_F_are_refused(tmp_path, capsys, extra, option):
    assert main(ODE + extra + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert option in err and "--eta-F" in err and "no effect" in err
    assert not list(tmp_path.glob("*.npz"))  # refused before computing


def test_mirroring_options_with_eta_F_are_accepted(tmp_path):
    assert main(ODE + ["--kappa-F", "0.1", "--mirror-norm", "--eta-F", "0.5", "--out", str(tmp_path / "a")]) == 0
    assert main(ODE + ["--kappa-F", "0.1", "--eta-F", "0", "--out", str(tmp_path / "b")]) == 0  # explicitly off
    assert _cli._hyper(build_parser().parse_args(["sweep", "--grid", "eta_F=0,1", "--kappa-F", "0.1"]),
                       {"eta_F": [0.0, 1.0]}).kappa_F == 0.1  # an eta_F grid axis is mirroring too


@pytest.mark.parametrize("command", ["ode", "compare", "sweep"])
@pytest.mark.parametrize("extra, option", [
    (["--eta", "-1"], "--eta"), (["--eta-v", "-1"], "--eta-v"), (["--sigma", "-1"], "--sigma"),
    (["--weight-decay", "-1"], "--weight-decay"), (["--batch", "0"], "--batch"), (["--eta-F", "-1"], "--eta-F"),
    (["--eta-F", "1", "--kappa-F", "-1"], "--kappa-F"), (["--t-pre", "-1"], "--t-pre"), (["--eta", "nan"], "--eta"),
    (["--sigma-F", "inf"], "--sigma-F"), (["--K", "0"], "--K"), (["--M", "0"], "--M"), (["--D", "0"], "--D"),
    (["--g", "nope"], "--g"), (["--eta-schedule", "power:t=2"], "--eta-schedule"),
])
def test_bad_values_name_the_option(tmp_path, capsys, command, extra, option):
    argv = [command, "--rules", "bp", "--t-max", "1", "--n-times", "3", "--D", "20", "--no-progress"]
    if command == "compare":
        argv += ["--replicas", "1", "--device", "cpu"]
    if command == "sweep":
        argv += ["--grid", "sigma=0,0.1"]
    assert main(argv + extra + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {option}" in err or f"{option} " in err, err
    assert "Constant" not in err and "Traceback" not in err


def test_help_shows_defaults(capsys):
    for command in ("ode", "compare", "sweep"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "first-layer learning rate (default: 1.0)" in text
        assert "output noise std (default: 0.0)" in text and "--out OUT output folder (default: ./out)" in text
        assert "(default: None)" not in text and "(default: False)" not in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ode", "--help"])
    assert "(default: 1000)" in capsys.readouterr().out  # --D of ode


@pytest.mark.parametrize("source, line, error", [
    ("import theory\nclass R(theory.Rule:\n    pass\n", 2, "SyntaxError"),
    ("import theory\n\nimport no_such_module_pepita_xyz\n", 3, "ModuleNotFoundError"),
    ("x = 1\ny = 1 / 0\n", 2, "ZeroDivisionError"),
])
def test_broken_rule_file_is_reported_with_file_line_and_error(tmp_path, capsys, source, line, error):
    script = tmp_path / "broken_rule.py"
    script.write_text(source)
    assert main(["ode", "--rule", f"{script}:R", "--t-max", "1", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(script) in err and f"line {line}" in err and error in err and "Traceback" not in err


def test_divergence_exits_3_and_messages_print_without_progress(tmp_path, capsys):
    rc = main(["ode", "--rules", "bp", "--g", "linear", "--eta", "100", "--t-max", "50", "--D", "100",
               "--out", str(tmp_path), "--no-progress"])
    io = capsys.readouterr()
    assert rc == 3 and "diverged or failed" in io.err
    assert "bp: " in io.out and "wrote" in io.out and (tmp_path / "ode_bp.npz").exists()


@pytest.mark.parametrize("plot", ["learning_curves", "phase_diagrams"])
def test_divergence_exits_3_whatever_happens_while_drawing(tmp_path, capsys, monkeypatch, plot):
    from simulate import plots

    def broken(*args, **kwargs):
        raise ValueError("cannot draw this")

    monkeypatch.setattr(plots, plot, broken)
    if plot == "learning_curves":
        argv = ["ode", "--rules", "bp", "--g", "linear", "--eta", "100", "--t-max", "50", "--D", "100"]
        expect_ok = ["ode", "--rules", "bp", "--t-max", "1", "--n-times", "3", "--D", "100"]
    else:
        argv = ["sweep", "--rules", "bp", "--g", "linear", "--grid", "eta=100", "--t-max", "50", "--D", "100"]
        expect_ok = ["sweep", "--rules", "bp", "--grid", "eta=1", "--t-max", "1", "--n-times", "3", "--D", "100"]
    assert main(argv + ["--out", str(tmp_path / "div"), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "could not draw" in err and "cannot draw this" in err and "diverged or failed" in err
    # a finished run whose figure fails: its data are written, exit 3 (failed), never a traceback
    assert main(expect_ok + ["--out", str(tmp_path / "ok"), "--no-progress"]) == 3
    assert "could not draw" in capsys.readouterr().err
    assert list((tmp_path / "ok").glob("*.npz")) or (tmp_path / "ok" / "sweep.csv").exists()
