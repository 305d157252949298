"""Reliability: every public entry point refuses bad input clearly, never hangs, and a Ctrl-C stops everything.

The explicit cases of the reliability issue (hangs, bare tracebacks, silent acceptance, unclear
messages, interrupts, slow failures), then property-based tests (hypothesis) over the public
signatures: any value either works or raises ValueError / TypeError naming the parameter.
"""

from __future__ import annotations

import json
import os
import time
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simulate
import theory
from simulate._cli import main
from theory import _internal

STATE = theory.random_state(2, 2, D=1000, seed=0)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- hangs and slow failures
@pytest.mark.parametrize("method", ["DOP853", "RK45"])
def test_stiff_run_stops_in_seconds(method):
    t0 = time.perf_counter()
    tr = theory.integrate(STATE, "bp", eta=1e6, method=method, throw=False)
    assert tr.status == -2 and "step size too small" in tr.message and "t = " in tr.message
    assert time.perf_counter() - t0 < 20
    with pytest.raises(theory.DivergenceError, match="solver failure"):
        theory.integrate(STATE, "bp", eta=1e6, method=method)


def test_step_budget_stops_a_crawling_run():
    tr = theory.integrate(STATE, "bp", theory.default_times(1000.0, 20), eta=1.0, max_steps=30, throw=False)
    assert tr.status == -2 and "too many steps (30" in tr.message and tr.t[-1] < 1000
    tr = theory.integrate(
        STATE, "bp", theory.default_times(1000.0, 20), eta=1.0, max_steps=30, method="RK45", throw=False
    )
    assert tr.status == -2 and "too many steps" in tr.message


def test_sweep_fails_the_stiff_point_and_finishes_the_others():
    t0 = time.perf_counter()
    res = theory.sweep(STATE, "bp", eta=[1.0, 1e6], progress=False)
    assert list(res.table["status"]) == [0, -2] and "t = " in res.table["message"][1]
    assert time.perf_counter() - t0 < 30
    res = theory.sweep(STATE, "bp", theory.default_times(1000.0, 20), eta=[1.0, 2.0], max_steps=40, progress=False)
    assert np.all(res.table["status"] == -2) and "too many steps" in res.table["message"][0]


def test_astronomical_times_stop():
    tr = theory.integrate(STATE, "bp", [0.0, 1e300], eta=1.0, throw=False)
    assert tr.status < 0 and "t = " in tr.message


def test_requests_too_large_for_memory_are_refused_up_front():
    with pytest.raises(theory.TooLarge, match="GB"):
        theory.random_state(2, 2, D=10**11)
    with pytest.raises(theory.TooLarge, match="replicas"):
        simulate.run(simulate.Initialisation(2, 2, 10**4), "bp", [0, 1], eta=1.0, replicas=10**8, progress=False)
    with pytest.raises(theory.TooLarge):
        theory.default_times(10.0, 10**12)
    with pytest.raises(theory.TooLarge):
        theory.sweep(STATE, "bp", eta=np.linspace(0.1, 1, 10**6), progress=False)
    assert main(["ode", "--n-times", str(10**12), "--out", "/tmp/never-written", "--no-progress"]) == 2


# ----------------------------------------------------------------------------- bad input: the cases
@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: theory.integrate(STATE, "bp", 100.0, eta=1.0), ValueError, "scalar"),
        (lambda: theory.default_times(-5.0), ValueError, "t_min < t_max"),
        (lambda: theory.default_times(10.0, 0), ValueError, "n must be"),
        (lambda: theory.I2(1.0, 3.0, 1.0), ValueError, "not a covariance"),
        (lambda: theory.J2(-1.0, 0.0, 1.0), ValueError, "variance C11"),
        (lambda: theory.I4(1, 0, 0, 0, 1, 0, 0, 1, 0, float("nan")), ValueError, "finite"),
        (
            lambda: theory.OrderParams(Q=[[1j]], R=[[0.0]], T=[[1.0]], v=[1.0], v_star=[1.0]),
            ValueError,
            "Q must be real",
        ),
        (lambda: theory.OrderParams(Q="abc", R=[[0.0]], T=[[1.0]], v=[1.0], v_star=[1.0]), ValueError, "Q must be"),
        (
            lambda: theory.OrderParams(Q=[[1.0]], R=[[0.0]], T=[[1.0]], v=[1.0], v_star=[1.0], P="x"),
            ValueError,
            "P must be",
        ),
        (lambda: theory.integrate(STATE, "bp", [0, 1], eta="abc"), ValueError, "eta must be a number"),
        (lambda: theory.integrate(STATE, "bp", [0, 1], eta=[1.0, 2.0]), ValueError, "eta must be a number"),
        (lambda: theory.integrate(STATE, "bp", [0, 1], eta=1.0, rtol="1e-6"), ValueError, "rtol must be a number"),
        (
            lambda: theory.integrate(STATE, "bp", [0, 1], eta=1.0, train_second_layer="False"),
            ValueError,
            "train_second_layer",
        ),
        (lambda: theory.integrate(STATE, "bp", [0, 1], eta=1.0, max_steps=0), ValueError, "max_steps"),
        (lambda: theory.integrate(STATE, "bp", [0, 1], eta=1.0, throw="yes"), ValueError, "throw"),
        (lambda: theory.random_state(2, 2, D=10, seed=-1), ValueError, "seed"),
        (lambda: theory.random_state(2, 2, D=10, w_std=float("nan")), ValueError, "w_std"),
        (lambda: simulate.Initialisation(2, 2, 10, w_std=float("nan")), ValueError, "w_std"),
        (lambda: simulate.Initialisation(2, 2, 10, seed=-1), ValueError, "seed"),
        (lambda: simulate.run_reduced(STATE, "bp", [0, 1], D=100, eta=1.0, sigma_f=3.0), TypeError, "sigma_F"),
        (lambda: simulate.run_reduced(STATE, "bp", [0, 1], D=100, eta=1.0, replica=64), TypeError, "replicas"),
        (
            lambda: simulate.compare(
                simulate.Initialisation(2, 2, 20), ["bp", "afa"], [0, 1], eta=1.0, presynaptic="bogus", progress=False
            ),
            ValueError,
            "presynaptic",
        ),
        (
            lambda: simulate.compare(
                simulate.Initialisation(2, 2, 20), ["bp"], [0, 1], eta=1.0, error="modulated", progress=False
            ),
            ValueError,
            "none of the rules",
        ),
        (lambda: simulate.register_engine("x", 5), TypeError, "callable"),
        (lambda: simulate.register_engine("", simulate.ENGINES["full"]), ValueError, "name"),
        (lambda: simulate.finite_size_study(Ds=(50,), dt=0.0, replicas=2, progress=False), ValueError, "dt"),
        (
            lambda: simulate.finite_size_study(Ds=(50,), quantiles=(2.0,), replicas=2, progress=False),
            ValueError,
            "quantiles",
        ),
        (lambda: simulate.finite_size_study(Ds=(3,), replicas=2, progress=False), ValueError, "Ds"),
        (
            lambda: simulate.run(simulate.Initialisation(2, 2, 20), "bp", [0, 1], eta=1e300, progress=False),
            ValueError,
            "float32",
        ),
        (
            lambda: simulate.run(
                simulate.Initialisation(2, 2, 20), "bp", [0, 1], eta=1.0, independent_init="no", progress=False
            ),
            ValueError,
            "independent_init",
        ),
        (lambda: theory.sweep(STATE, "bp", eta=1.0, threads=0, progress=False), ValueError, "threads"),
        (lambda: theory.sweep(STATE, "bp", eta=1.0, eg_target="x", progress=False), ValueError, "eg_target"),
    ],
)
def test_bad_input_gets_a_clear_error(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_eta_1e300_in_float64_diverges_with_a_message():
    res = simulate.run(simulate.Initialisation(2, 2, 20), "bp", [0, 1], eta=1e300, dtype=torch.float64, progress=False,
                       throw=False, n_test=0)
    assert res.status == -1 and "diverged" in res.message


# ----------------------------------------------------------------------------- files
def _files(tmp_path):
    tr = theory.integrate(STATE, "bp", [0.0, 1.0], eta=1.0)
    good = tr.save(tmp_path / "good.npz")
    sim = simulate.run(simulate.Initialisation(2, 2, 30), "bp", [0, 1], eta=1.0, replicas=2, n_test=0,
                       progress=False).save(tmp_path / "sim.npz")
    data = good.read_bytes()
    bad = {}
    (tmp_path / "empty.npz").write_bytes(b"")
    bad["empty"] = tmp_path / "empty.npz"
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    bad["truncated"] = tmp_path / "truncated.npz"
    (tmp_path / "garbage.npz").write_bytes(os.urandom(4096))
    bad["garbage"] = tmp_path / "garbage.npz"
    np.save(tmp_path / "plain.npy", np.zeros(3))
    bad["plain npy"] = tmp_path / "plain.npy"
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    bad["foreign npz"] = tmp_path / "foreign.npz"
    bad["missing"] = tmp_path / "nothing-here.npz"
    bad["other kind"] = sim
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    nan = dict(arrays, Q=np.full_like(arrays["Q"], np.nan))
    np.savez(tmp_path / "nan.npz", **nan)
    bad["NaN arrays"] = tmp_path / "nan.npz"
    cut = dict(arrays, Q=arrays["Q"][:1])
    np.savez(tmp_path / "cut.npz", **cut)
    bad["truncated arrays"] = tmp_path / "cut.npz"
    meta = json.loads(str(arrays["__meta__"]))
    newer = dict(arrays, __meta__=np.array(json.dumps(dict(meta, format=99))))
    np.savez(tmp_path / "newer.npz", **newer)
    bad["newer format"] = tmp_path / "newer.npz"
    nometa = {k: v for k, v in arrays.items() if k != "__meta__"}
    np.savez(tmp_path / "nometa.npz", **nometa)
    bad["no metadata"] = tmp_path / "nometa.npz"
    garbled = dict(arrays, __meta__=np.array("{not json"))
    np.savez(tmp_path / "garbled.npz", **garbled)
    bad["garbled metadata"] = tmp_path / "garbled.npz"
    return good, sim, bad


def test_load_refuses_bad_files_with_one_error_type(tmp_path):
    good, sim, bad = _files(tmp_path)
    assert theory.Trajectory.load(good).params["rule"] == "bp"
    assert simulate.SimulationResult.load(sim).params["rule"] == "bp"
    for what, path in bad.items():
        with pytest.raises(theory.LoadError, match=str(path.name) if what != "missing" else "no such file"):
            theory.Trajectory.load(path)
        if what not in ("other kind",):
            with pytest.raises(theory.LoadError):
                simulate.SimulationResult.load(path)
    with pytest.raises(theory.LoadError, match="holds a Trajectory"):
        simulate.SimulationResult.load(good)
    assert isinstance(theory.LoadError("x"), ValueError)


def test_comparison_load_refuses_bad_folders(tmp_path):
    with pytest.raises(theory.LoadError, match="no comparison.json"):
        simulate.Comparison.load(tmp_path)
    (tmp_path / "comparison.json").write_text("{broken")
    with pytest.raises(theory.LoadError, match="damaged"):
        simulate.Comparison.load(tmp_path)
    (tmp_path / "comparison.json").write_text(json.dumps(dict(rules=["bp"])))
    with pytest.raises(theory.LoadError, match="damaged"):
        simulate.Comparison.load(tmp_path)
    cmp = simulate.compare(simulate.Initialisation(2, 2, 30), ["bp"], [0.0, 1.0], eta=1.0, replicas=2, n_test=0,
                           progress=False)
    cmp.save(tmp_path)
    (tmp_path / "ode_bp.npz").unlink()
    with pytest.raises(theory.LoadError, match="no such file"):
        simulate.Comparison.load(tmp_path)


# ----------------------------------------------------------------------------- the command line
def test_cli_checks_the_output_folder_before_computing(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    base = [
        "compare",
        "--rules",
        "bp",
        "--D",
        "20",
        "--t-max",
        "1",
        "--n-times",
        "2",
        "--replicas",
        "2",
        "--no-progress",
    ]
    for out, why in ((str(a_file), "not a folder"), ("", "non-empty"), ("/proc/pepita-no", "cannot write")):
        t0 = time.perf_counter()
        assert main(base + ["--out", out]) == 2
        assert why in capsys.readouterr().err and time.perf_counter() - t0 < 5
    assert main(base + ["--n-times", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--n-times" in capsys.readouterr().err


def test_cli_exit_code_on_divergence(tmp_path):
    rc = main(
        [
            "compare",
            "--rules",
            "bp",
            "--g",
            "linear",
            "--eta",
            "8",
            "--D",
            "40",
            "--t-max",
            "50",
            "--n-times",
            "4",
            "--replicas",
            "2",
            "--n-test",
            "0",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 3 and (tmp_path / "summary.txt").exists()
    assert "diverged" in (tmp_path / "summary.txt").read_text()


# ----------------------------------------------------------------------------- interrupts
def _interrupt_on(monkeypatch, module, name, after):
    """Replace module.name by a wrapper that raises KeyboardInterrupt on call number ``after``."""
    orig, calls = getattr(module, name), {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == after:
            raise KeyboardInterrupt
        return orig(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_interrupted_compare_stops_everything(monkeypatch):
    import simulate._compare as sc

    _interrupt_on(monkeypatch, sc, "run", 2)  # during the second rule's simulation
    t0 = time.perf_counter()
    cmp = simulate.compare(simulate.Initialisation(2, 2, 50), ["bp", "fa", "afa"], [0.0, 1.0], eta=1.0, replicas=2,
                           n_test=0, progress=False)
    assert cmp.rules == ["bp"] and cmp.params["status"] == "interrupted"
    assert time.perf_counter() - t0 < 20


def test_interrupted_cli_writes_what_it_has_and_exits_130(tmp_path, monkeypatch):
    import simulate._compare as sc

    _interrupt_on(monkeypatch, sc, "run", 3)
    rc = main(["compare", "--D", "30", "--t-max", "1", "--n-times", "3", "--replicas", "2", "--n-test", "0", "--device",
               "cpu", "--out", str(tmp_path), "--no-progress"])
    assert rc == 130
    cmp = simulate.Comparison.load(tmp_path)
    assert cmp.rules == ["bp", "fa"] and "interrupted" in (tmp_path / "summary.txt").read_text()


def test_interrupt_inside_compiled_code_is_an_interrupt(monkeypatch):
    """numba reports a Ctrl-C that arrives while it returns as SystemError(...) from KeyboardInterrupt."""
    import theory.solver.dop853 as jit

    orig, calls = jit.dop853_segment, {"n": 0}

    def segment(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                raise SystemError("CPUDispatcher(...) returned a result with an exception set") from exc
        return orig(*args)

    monkeypatch.setattr(jit, "dop853_segment", segment)
    tr = theory.integrate(STATE, "bp", theory.default_times(100.0, 40), eta=1.0)
    assert tr.status == 1 and len(tr) == 1 + 8


def test_interrupted_reduced_run_keeps_the_state_where_it_stopped(monkeypatch):
    import simulate.engines.reduced.backends as red

    calls = {"n": 0}
    orig = red._NumbaChain.advance

    def advance(self, n):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return orig(self, n)

    monkeypatch.setattr(red._NumbaChain, "advance", advance)
    res = simulate.run_reduced(STATE, "bp", [0.0, 400.0], D=100, eta=1.0, replicas=64, n_test=0)
    assert res.status == 1 and len(res.t) == 2 and 0 < res.t[-1] < 400
    assert res.params["steps"][-1] == int(round(res.t[-1] * 100))


def test_interrupted_pepita_ode_is_reported_in_the_summary(monkeypatch):
    calls = {"n": 0}
    orig = theory.Dynamics.rhs

    def rhs(self, y, t=0.0):
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return orig(self, y, t)

    monkeypatch.setattr(theory.Dynamics, "rhs", rhs)
    monkeypatch.setattr(
        theory.Dynamics, "compiled", lambda self: None
    )  # the Python right-hand side, where rhs is patched
    cmp = simulate.compare(simulate.Initialisation(2, 2, 30), ["pepita", "bp"], [0.0, 1.0, 2.0], eta=1.0, replicas=2,
                           n_test=0, progress=False)
    assert cmp.params["status"] == "interrupted" and cmp.rules == ["pepita"]
    assert "ODE: interrupted" in cmp.summary()


# ----------------------------------------------------------------------------- property-based
junk = st.one_of(st.none(), st.booleans(), st.text(max_size=5), st.floats(allow_nan=True, allow_infinity=True),
                 st.integers(-10**12, 10**12), st.lists(st.floats(), max_size=3), st.complex_numbers(max_magnitude=10))


@FAST
@given(field=st.sampled_from(["eta", "eta_v", "sigma", "sigma_F", "weight_decay", "train_second_layer", "g", "batch"]),
       value=junk)
def test_hyper_params_accept_or_name_the_parameter(field, value):
    try:
        hp = theory.HyperParams(**{"eta": 1.0, field: value})
    except (ValueError, TypeError) as exc:
        assert (
            field in str(exc) or (field == "g" and "activation" in str(exc)) or (field == "eta_v" and "eta" in str(exc))
        )
        return
    assert isinstance(hp.eta, float) or hp.time_dependent


@FAST
@given(name=st.text(min_size=1, max_size=12).filter(lambda s: s.isidentifier()), value=junk)
def test_unknown_keywords_are_refused_everywhere(name, value):
    known = set(theory.registered_rules()) | {
        "eta",
        "eta_v",
        "sigma",
        "sigma_F",
        "weight_decay",
        "train_second_layer",
        "g",
        "batch",
        "presynaptic",
        "error",
        "quadrature",
        "method",
        "rtol",
        "atol",
        "throw",
        "progress",
        "max_steps",
        "params",
        "t",
        "state0",
        "rule",
    }
    if name in known:
        return
    with pytest.raises(TypeError, match=name):
        theory.integrate(STATE, "bp", [0, 1], eta=1.0, **{name: value})
    from simulate.engines.reduced.chain import reduced_chain

    if name in set(_internal.checks.parameters(simulate.run_reduced)) | set(_internal.checks.parameters(reduced_chain)):
        return  # a real keyword of the sampler (D, dtype, seed, ...): the checks of its value are tested elsewhere
    with pytest.raises(TypeError, match=name):
        simulate.run_reduced(STATE, "bp", [0, 1], D=50, eta=1.0, **{name: value})


@FAST
@given(t=st.one_of(junk, st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6)))
def test_times_are_valid_or_refused(t):
    try:
        a = _internal.checks.times(t, where="integrate")
    except ValueError as exc:
        assert "t must be" in str(exc)
        return
    assert a.ndim == 1 and a.size >= 1 and np.all(np.diff(a) > 0) and a[0] >= 0


@FAST
@given(c11=st.floats(-2, 5), c12=st.floats(-5, 5), c22=st.floats(-2, 5))
def test_gaussian_integrals_are_finite_or_refuse_a_non_covariance(c11, c12, c22):
    for f in (theory.I2, theory.J2):
        try:
            val = f(c11, c12, c22)
        except ValueError as exc:
            assert "covariance" in str(exc) or "variance" in str(exc)
            continue
        assert np.isfinite(val)


@FAST
@given(Q=st.lists(st.lists(junk | st.floats(-2, 2), min_size=1, max_size=3), min_size=1, max_size=3),
       P=st.one_of(junk, st.floats(-1, 3)))
def test_order_params_valid_or_a_clear_value_error(Q, P):
    try:
        theory.OrderParams(Q=Q, R=[[0.1, 0.0]], T=np.eye(2), v=[1.0], v_star=[1.0, 1.0], P=P)
    except ValueError as exc:
        assert str(exc).startswith("OrderParams:")


@settings(max_examples=25, deadline=None)
@given(blob=st.binary(max_size=2048))
def test_any_bytes_load_as_a_result_or_a_load_error(blob, tmp_path_factory):
    path = tmp_path_factory.mktemp("blobs") / "blob.npz"
    path.write_bytes(blob)
    with pytest.raises(theory.LoadError):
        theory.Trajectory.load(path)


@settings(max_examples=20, deadline=None)
@given(entries=st.dictionaries(st.sampled_from(["t", "Q", "R", "S", "v", "eg", "__meta__"]),
                               st.lists(st.floats(allow_nan=True), max_size=4), max_size=5))
def test_foreign_npz_archives_are_refused(entries, tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "x.npz"
    with zipfile.ZipFile(path, "w"):
        pass
    np.savez(path, **{k: np.asarray(v) for k, v in entries.items()})
    with pytest.raises(theory.LoadError):
        theory.Trajectory.load(path)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["power", "step", "piecewise", "table", "cosine", ""]),
       body=st.text(alphabet="0123456789.,=tpefvryuncilod", max_size=20))
def test_schedule_specs_parse_or_a_value_error(kind, body):
    try:
        s = theory.parse_schedule(f"{kind}:{body}" if kind else body, 1.0)
    except ValueError as exc:
        assert "schedule" in str(exc) or "Piecewise" in str(exc) or "PowerLaw" in str(exc) or "Interpolated" in str(exc)
        return
    assert np.all(np.isfinite(s(np.array([0.0, 1.0, 10.0]))))
