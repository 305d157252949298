"""The fast paths of issue 14: one compiled batched DOP853 for single curves and sweeps, and start-up
without torch, sympy or tracing."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.integrate

import theory
from theory import make_dynamics

ROOT = Path(__file__).resolve().parents[1]
T = theory.default_times(300.0, 60)


def _fresh(code: str, tmp_path) -> list[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


@pytest.mark.parametrize("rule,kw", [("bp", {}), ("afa", dict(sigma=0.2, sigma_F=1.3))])
def test_single_curve_takes_scipys_dop853_steps(rule, kw):
    """integrate() runs the compiled batched stepper with one point: scipy's steps and dense output."""
    st = theory.random_state(2, 2, D=1000, seed=3)
    tr = theory.integrate(st, rule, T, eta=0.9, **kw)
    dyn = make_dynamics(st, rule, eta=0.9, **kw)
    ref = scipy.integrate.solve_ivp(lambda _t, y: dyn.rhs(y), (T[0], T[-1]), st.to_vector(), method="DOP853",
                                    rtol=1e-8, atol=1e-10, t_eval=T)
    assert ref.nfev - 3 <= tr.nfev <= ref.nfev
    np.testing.assert_allclose(np.concatenate([tr.Q.reshape(len(T), -1), tr.R.reshape(len(T), -1), tr.S, tr.v], 1),
                               ref.y.T, rtol=0, atol=1e-10)


def test_sweep_does_not_depend_on_threads_or_segments(monkeypatch):
    states = [theory.random_state(2, 2, D=1000, seed=s) for s in range(3)]
    kw = dict(t=T, grid=dict(eta=[0.3, 0.8, 1.6]), progress=False)
    a = theory.sweep(states, "bp", threads=1, **kw)
    b = theory.sweep(states, "bp", threads=2, **kw)
    import theory.sweeps.sweep as sw

    monkeypatch.setattr(sw, "SWEEP_SEGMENT", 3)
    c = theory.sweep(states, "bp", threads=2, **kw)
    np.testing.assert_array_equal(a.eg, b.eg)
    np.testing.assert_array_equal(a.eg, c.eg)
    assert list(a.table["nfev"]) == list(c.table["nfev"])


def test_sweep_equals_one_curve_at_a_time():
    st = theory.random_state(2, 3, D=500, seed=1)
    res = theory.sweep(st, "fa", T, eta=[0.5, 1.2], sigma=0.1, progress=False)
    for i, eta in enumerate([0.5, 1.2]):
        one = theory.integrate(st, "fa", T, eta=eta, sigma=0.1)
        np.testing.assert_allclose(res.eg[i], one.eg, rtol=0, atol=1e-14)
        assert res.table["nfev"][i] == one.nfev


def test_failures_keep_what_was_computed():
    """A point that blows up stops with its message and keeps its outputs; the other points finish."""
    st = theory.random_state(2, 2, D=1000, seed=0)
    res = theory.sweep(st, "bp", np.linspace(0, 20, 21), eta=[1.0, 1e6], progress=False)
    assert list(res.table["status"]) == [0, -2] or list(res.table["status"]) == [0, -1]
    assert np.isfinite(res.eg[0]).all()


def test_start_up_does_not_import_torch_or_sympy(tmp_path):
    warm = ("import theory; theory.integrate(theory.random_state(2, 2, D=100, seed=0), 'bp', [0, 1, 2], eta=1.0); "
            "print('ok')")
    assert _fresh(warm, tmp_path) == ["ok"]  # compiles and traces once (cached on disk)
    out = _fresh(
        "import sys, theory; theory.integrate(theory.random_state(2, 2, D=100, seed=0), 'bp', [0, 1, 2], eta=1.0); "
        "import simulate; print('torch' in sys.modules, 'sympy' in sys.modules)",
        tmp_path,
    )
    assert out == ["False", "False"]
    out = _fresh(
        "import sys\nfrom simulate._cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)",
        tmp_path,
    )
    assert out[-1] == "False"
    out = _fresh(
        f"import sys\nfrom simulate._cli import main\nrc = main(['ode', '--rules', 'bp', '--t-max', '2', '--n-times', "
        f"'3', '--out', {str(tmp_path / 'o')!r}, '--no-progress'])\nprint(rc, 'torch' in sys.modules)",
        tmp_path,
    )
    assert out[-2:] == ["0", "False"]
    out = _fresh(
        "import simulate, sys; simulate.Initialisation; print('torch' in sys.modules, *sorted(simulate.ENGINES))",
        tmp_path,
    )
    assert out == ["True", "full", "reduced"]  # the engine "reduced" is known however simulate was imported
