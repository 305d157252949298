"""theory.sweep: batched integration of many parameter points, against single theory.integrate calls."""

import concurrent.futures
import csv

import numpy as np
import pandas as pd
import pytest

import theory
from theory import plateau, sweep
from theory.solver.dop853 import DOP853, _Tableau
from theory.solver.driver import solve_batched

T_SHORT = np.concatenate([[0.0], np.geomspace(0.05, 200.0, 40)])


@pytest.fixture(scope="module")
def states():
    return [theory.random_state(2, 2, D=500, seed=s) for s in range(3)]


def _flat(tr):
    return np.concatenate([tr.Q.reshape(len(tr.t), -1), tr.R.reshape(len(tr.t), -1), tr.S, tr.v], axis=1)


# ---------------------------------------------------------------- the batched integrator
def test_tableau_invariants():
    assert np.allclose(DOP853.A.sum(1), DOP853.C)
    assert np.isclose(DOP853.B.sum(), 1.0)
    with pytest.raises(ValueError, match="rows of A"):
        _Tableau(A=DOP853.A, B=DOP853.B, C=DOP853.C + 0.1, E3=DOP853.E3, E5=DOP853.E5, error_order=7)


def test_batched_solver_exact_solution_and_order():
    """y' = -lam y (cos t) with per-point lam: y = y0 exp(-lam sin t). Each point meets its tolerance,
    and tightening the tolerance shrinks the error (the test can fail)."""
    lam = np.array([0.1, 1.0, 3.0, 10.0])[:, None] * np.ones((1, 2))
    y0 = np.ones((4, 2))
    t = np.linspace(0, 10, 21)

    # autonomous form: the time is the last state variable
    lam3 = np.concatenate([lam, np.zeros((4, 1))], 1)

    def subset(idx):
        def f(y):
            d = -lam3[idx] * y * np.cos(y[:, -1:])
            d[:, -1] = 1.0
            return d

        return f

    errs = []
    for rtol in (1e-6, 1e-9):
        sol = solve_batched(subset, np.concatenate([y0, np.zeros((4, 1))], 1), t, rtol=rtol, atol=rtol * 1e-3)
        assert np.all(sol.status == 0)
        exact = np.exp(-lam[:, None, :] * np.sin(t)[None, :, None])
        rel = np.abs(sol.y[:, :, :2] / exact - 1).max()
        errs.append(rel)
        assert rel < 1e3 * rtol
        assert np.allclose(sol.y[:, :, -1], t)  # outputs hit exactly
    assert errs[1] < errs[0] / 100


def test_solver_failure_is_per_point():
    """y' = y^2 blows up at t = 1/y0: the point with y0 = 1 fails before t = 2, the others finish."""
    y0 = np.array([[1.0], [0.1], [-1.0]])

    def subset(idx):
        return lambda y: y * y

    def diagnose(y, idx, at_output):
        return [None if abs(v[0]) < 1e6 else "exploded" for v in y]

    sol = solve_batched(subset, y0, np.linspace(0, 2, 9), rtol=1e-8, atol=1e-10, diagnose=diagnose)
    assert sol.status[0] < 0 and sol.status[1] == 0 and sol.status[2] == 0
    assert "t = 0.99" in sol.message[0] or sol.status[0] == -2
    assert sol.n_recorded[0] < 9 and np.all(np.isnan(sol.y[0, sol.n_recorded[0]:]))
    assert np.allclose(sol.y[1, :, 0], 0.1 / (1 - 0.1 * np.linspace(0, 2, 9)), rtol=1e-6)


# ---------------------------------------------------------------- sweep against integrate
CASES = [
    dict(rule="bp", eta=1.0),
    dict(rule="bp", eta=0.3, eta_v=0.1, sigma=0.3, weight_decay=0.01),
    dict(rule="fa", eta=0.5),
    dict(rule="afa", eta=0.8, sigma_F=0.5),
    dict(rule="afa", eta=0.8, sigma_F=-1.5, sigma=0.2, presynaptic="clean"),
    dict(rule="bp", eta=0.5, train_second_layer=False),
]


def test_rows_equal_single_integrations(states):
    """Every row of one sweep (mixed rules, variants and parameters) equals theory.integrate at that point."""
    kw = {k: [c.get(k, d) for c in CASES] for k, d in
          dict(rule="bp", eta=None, eta_v=None, sigma=0.0, sigma_F=1.0, weight_decay=0.0, presynaptic=None,
               train_second_layer=True).items()}
    st = [states[i % 3] for i in range(len(CASES))]
    res = sweep(st, t=T_SHORT, rtol=1e-10, atol=1e-12, progress=False, **kw)
    assert len(res) == len(CASES)
    assert np.all(res.table["status"] == 0)
    for i, c in enumerate(CASES):
        ref = theory.integrate(st[i], t=T_SHORT, rtol=1e-10, atol=1e-12, **c)
        got = res.trajectory(i)
        # both integrators meet rtol 1e-10 per step; global errors over t = 200 stay far below 1e-6
        assert np.abs(_flat(got) - _flat(ref)).max() < 1e-6, c
        assert np.abs(res.eg[i] - ref.eg).max() < 1e-7
        row = res.table.iloc[i]
        assert row["eg_final"] == pytest.approx(ref.eg[-1], rel=1e-5, abs=1e-9)
        for name, a in ref.angles.items():
            assert row[f"angle_{name}"] == pytest.approx(a[-1], abs=1e-3), name
        assert row["rule"] == ref.params["rule"] and row["presynaptic"] == ref.params["presynaptic"]
        assert row["eta_v"] == ref.params["eta_v"]


def test_steps_are_scipys_dop853(states):
    """Each point takes exactly the steps of scipy's DOP853 (same controller, same dense output)."""
    import scipy.integrate

    from theory import make_dynamics

    etas = [1.0, 0.4]
    res = sweep(states[1], "bp", T_SHORT, eta=etas, progress=False)
    for i, eta in enumerate(etas):
        dyn = make_dynamics(states[1], "bp", eta=eta)
        ref = scipy.integrate.solve_ivp(lambda _t, y: dyn.rhs(y), (T_SHORT[0], T_SHORT[-1]), states[1].to_vector(),
                                        method="DOP853", rtol=1e-8, atol=1e-10, t_eval=T_SHORT)
        # scipy also spends one dense output (3 evaluations) on t_eval[0] = t0, which the sweep records directly
        assert ref.nfev - 3 <= res.table["nfev"][i] <= ref.nfev
        np.testing.assert_allclose(res._Y[i], ref.y.T, rtol=0, atol=1e-11)


def test_tolerance_controls_the_error(states):
    """Loose tolerance -> visibly larger deviation from a tight reference (the comparison has teeth)."""
    ref = theory.integrate(states[0], "bp", t=T_SHORT, eta=1.0, rtol=1e-11, atol=1e-13)
    dev = []
    for rtol in (1e-4, 1e-9):
        res = sweep(states[0], "bp", T_SHORT, eta=1.0, rtol=rtol, atol=rtol * 1e-2, progress=False)
        dev.append(np.abs(_flat(res.trajectory(0)) - _flat(ref)).max())
    assert dev[1] < 1e-6
    assert dev[1] < dev[0] / 10


def test_chunking_does_not_change_results(states):
    kw = dict(t=T_SHORT, grid=dict(eta=[0.2, 0.7, 1.5]), progress=False, rtol=1e-8)
    a = sweep(list(states), "bp", **kw)
    b = sweep(list(states), "bp", chunk_size=2, **kw)
    np.testing.assert_allclose(a.eg, b.eg, rtol=1e-12, atol=1e-15)
    assert list(a.table["nfev"]) == list(b.table["nfev"])


def test_threads_and_blocks_do_not_change_results(states, monkeypatch):
    """The compiled stepper's points go to the threads in blocks (theory.solver.driver.BLOCKS_PER_THREAD): one
    thread, two, and blocks of one point each give the same steps, bit for bit."""
    import theory.solver.driver as driver

    kw = dict(t=T_SHORT, grid=dict(eta=[0.2, 0.7, 1.5, 2.0]), progress=False, rtol=1e-8)
    one = sweep(list(states), "bp", threads=1, **kw)
    two = sweep(list(states), "bp", threads=2, **kw)
    monkeypatch.setattr(driver, "BLOCKS_PER_THREAD", 64)  # more blocks than points: one point a block
    many = sweep(list(states), "bp", threads=2, **kw)
    for other in (two, many):
        np.testing.assert_array_equal(one.eg, other.eg)
        assert list(one.table["nfev"]) == list(other.table["nfev"])


def _same_table(a, b):
    assert list(a.table.columns) == list(b.table.columns)
    for c in a.table.columns:
        x, y = a.table[c], b.table[c]
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14, equal_nan=True, err_msg=c)
        else:
            assert list(x) == list(y), c


def test_process_pool_equals_serial(states):
    kw = dict(t=T_SHORT, grid=dict(eta=[0.3, 1.0], rule=["bp", "afa"]), progress=False)
    serial = sweep(list(states), **kw)
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as ex:
        par = sweep(list(states), executor=ex, chunk_size=3, **kw)
    _same_table(serial, par)


def test_dask_local_cluster_equals_serial(states):
    distributed = pytest.importorskip("distributed")
    kw = dict(t=T_SHORT, eta=[0.4, 0.9, 1.3], progress=False)
    serial = sweep(list(states), "bp", **kw)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster) as client:
            par = sweep(list(states), "bp", executor=client.get_executor(), chunk_size=1, **kw)
    _same_table(serial, par)


# ---------------------------------------------------------------- points and table
def test_grid_and_zip_semantics(states):
    res = sweep(states[:2], "bp", T_SHORT[:10], eta=0.5, grid=dict(sigma=[0.0, 0.1, 0.2], eta_v=[0.1, 0.2]),
                tags=dict(seed=[10, 11]), progress=False)
    tab = res.table
    assert len(tab) == 2 * 3 * 2
    assert list(tab["state"]) == [0] * 6 + [1] * 6
    assert list(tab["seed"]) == [10] * 6 + [11] * 6
    assert list(tab["sigma"][:6]) == [0.0, 0.0, 0.1, 0.1, 0.2, 0.2]
    assert list(tab["eta_v"][:6]) == [0.1, 0.2] * 3
    assert np.all(tab["eta"] == 0.5)
    assert len(res.states) == 2
    long = res.curves()
    assert len(long) == 12 * 10 and "Q[0,1]" in long and "sigma" in long and "seed" in long
    np.testing.assert_array_equal(long["eg"][long["point"] == 3], res.eg[3])


def test_states_as_grid_axis(states):
    res = sweep(rule="bp", t=T_SHORT[:5], eta=[0.5, 1.0], grid=dict(states=states), progress=False)
    assert list(res.table["state"]) == [0, 1, 2, 0, 1, 2]


def test_table_roundtrip(tmp_path, states):
    res = sweep(states[0], "bp", T_SHORT[:8], eta=[0.5, 1.0], progress=False, eg_target=0.5)
    path = tmp_path / "s.csv"
    res.table.to_csv(path, index=False)
    back = pd.read_csv(path)
    assert list(back.columns) == list(res.table.columns) and len(back) == 2
    np.testing.assert_array_equal(back["eg_final"], res.table["eg_final"])
    with open(path) as fh:
        assert next(csv.reader(fh))[0] == "point"
    assert isinstance(res.table.iloc[0].to_dict(), dict) and len(res.table[res.table["eta"] > 0.7]) == 1
    assert [r["eta"] for _, r in res.table.iterrows()] == [0.5, 1.0]


def test_failure_is_per_point(states):
    """afa with a strong top-down projection runs away (S grows until Omega degenerates); that point
    stops with a negative status and says when, while the other points finish."""
    res = sweep(states[0], "afa", T_SHORT, eta=[0.5, 10.0, 0.7], sigma_F=[1.0, 10.0, 1.0], progress=False)
    st, msg = res.table["status"], res.table["message"]
    assert st[0] == 0 and st[2] == 0 and st[1] < 0, msg
    assert " at t = " in msg[1]
    assert np.isnan(res.table["eg_final"][1]) and res.table["t_end"][1] < T_SHORT[-1]
    assert len(res.trajectory(1).t) < len(T_SHORT) and np.all(np.isfinite(res.trajectory(1).Q))
    single = sweep(states[0], "afa", T_SHORT, eta=0.7, progress=False)
    np.testing.assert_allclose(single.eg[0], res.eg[2], rtol=1e-12)


# ---------------------------------------------------------------- summaries
def test_plateau_and_target_on_a_constructed_curve():
    """eg = 0.5 until t=1, falls to 0.02 by t=10, flat to t=300, falls to 1e-6: the plateau is [10, 300]."""
    t = np.concatenate([[0.0], np.geomspace(0.01, 1e3, 401)])
    lt = np.log(np.maximum(t, 1e-300))
    ln_eg = np.interp(lt, np.log([0.01, 1, 10, 300, 1000]), np.log([0.5, 0.5, 0.02, 0.02, 1e-6]))
    eg = np.exp(ln_eg)
    length, start, end, level, escaped = plateau(t, eg, spread_end=1.0)
    grid_step = np.log(t[2] / t[1])
    assert start == pytest.approx(10, rel=3 * grid_step) and end == pytest.approx(300, rel=3 * grid_step)
    assert length == pytest.approx(290, rel=0.05) and level == pytest.approx(0.02) and escaped
    # never escaped: flat to the end, still unspecialised -> a censored plateau; specialised -> none
    eg2 = np.exp(np.interp(lt, np.log([0.01, 1, 10, 1000]), np.log([0.5, 0.5, 0.02, 0.02])))
    assert plateau(t, eg2, spread_end=0.01)[4] is False and plateau(t, eg2, spread_end=0.01)[0] > 900
    assert plateau(t, eg2, spread_end=0.9)[0] == 0.0
    from theory import crossing_time as _t_target

    # ln eg is linear in ln t from (300, 0.02) to (1000, 1e-6): eg = 1e-3 at t = 300 (10/3)^(ln 20 / ln 2e4)
    assert _t_target(t, eg, 1e-3) == pytest.approx(300 * (10 / 3) ** (np.log(20) / np.log(2e4)), rel=1e-3)
    assert np.isnan(_t_target(t, eg, 1e-9))


def test_plateau_status_in_the_table(states):
    """A plateau length is a number only when there is one: censored (still on it at the end: a lower bound),
    escaped; NaN with its status for a point with no plateau (K = M = 1) and for one that diverged, never 0."""
    s0 = theory.random_state(2, 2, D=1000, seed=0)
    t = np.concatenate([[0.0], np.geomspace(0.01, 2000, 120)])
    res = sweep(s0, "bp", t, eta=[0.02, 1.0], progress=False).table
    assert list(res["plateau_status"]) == ["censored", "escaped"]
    assert res["plateau_length"][0] > 1000 and not res["plateau_escaped"][0] and res["plateau_escaped"][1]
    none = sweep(theory.random_state(1, 1, D=1000, seed=0), "bp", t, eta=1.0, progress=False).table
    assert none["plateau_status"][0] == "none" and np.isnan(none["plateau_length"][0])
    bad = sweep(states[0], "afa", T_SHORT, eta=[10.0, 0.5], sigma_F=[10.0, 1.0], progress=False).table
    assert bad["status"][0] < 0 and bad["plateau_status"][0] in ("diverged", "failed")
    assert all(np.isnan(bad[c][0]) for c in ("plateau_length", "plateau_start", "plateau_end", "plateau_eg"))
    assert not bad["plateau_escaped"][0] and bad["plateau_status"][1] != "diverged"


def test_plateau_found_in_a_real_bp_curve(states):
    """bp, K = M = 2 from small random weights: a plateau with unspecialised R, then specialisation."""
    s0 = theory.random_state(2, 2, D=1000, seed=0)
    res = sweep(s0, "bp", eta=1.0, progress=False, eg_target=1e-3)
    row = res.table.iloc[0]
    assert row["plateau_escaped"] and row["plateau_length"] > 50
    tr = res.trajectory(0)
    inside = (tr.t > row["plateau_start"]) & (tr.t < row["plateau_end"])
    sp = np.abs(tr.specialisation)
    spread = (sp.max(-1) - sp.min(-1)).max(-1)  # how unequally each unit overlaps the teacher units
    assert np.all(spread[inside] < 0.2) and spread[-1] > 0.8  # symmetric on the plateau, specialised at the end
    assert row["plateau_end"] < row["t_target"] < 1000


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(eta=-1.0), "eta"),
        (dict(eta=[0.1, 0.2], sigma=[0.1, 0.2, 0.3]), "same length"),
        (dict(eta=[0.1, 0.2], grid=dict(eta=[0.1])), "both"),
        (dict(eta=0.1, grid=dict(nonsense=[1])), "unknown grid axis"),
        (dict(eta=0.1, grid=dict(sigma=[])), "empty"),
        (dict(eta=0.1, rule="sgd"), "unknown rule"),
        (dict(eta=0.1, t=[0, 2, 1]), "t must be"),
        (dict(eta=0.1, rtol=0), "rtol"),
        (dict(eta=0.1, chunk_size=0), "chunk_size"),
        (dict(eta=0.1, eg_target=-1), "eg_target"),
        (dict(eta=np.array([[0.1]])), "1-D"),
        (dict(eta=[[0.1]]), "must be a number"),
        (dict(eta=float("nan")), "finite"),
        (dict(eta=0.1, plateau_options=dict(foo=1)), "plateau option"),
        (dict(eta=0.1, tags=dict(eta=[1])), "clashes"),
    ],
)
def test_bad_input(states, kw, match):
    with pytest.raises(ValueError, match=match):
        sweep(states[0], **{"rule": "bp", **kw, "progress": False})


def test_bad_states():
    with pytest.raises(TypeError, match="states"):
        sweep("not a state", "bp", eta=0.1)
    s = theory.random_state(2, 2, D=100, seed=0).replace(b=None)
    with pytest.raises(ValueError, match="feedback vector b"):
        sweep(s, "fa", eta=0.1, progress=False)


def test_compiled_batch_kernel_equals_numpy_dynamics(states):
    """The compiled batched right-hand side (numba) equals theory.Dynamics' numpy one, point by point."""
    from theory.sweeps.sweep import _batch_kernel

    if _batch_kernel() is None:
        pytest.skip("numba not available")
    from theory.sweeps.sweep import _Chunk, _factory

    rng = np.random.default_rng(1)
    for rule, pre in (("bp", "clean"), ("fa", "clean"), ("afa", "modulated"), ("afa", "clean")):
        B = 5
        ss = [states[i % 3] for i in range(B)]
        hyper = theory._hyper.HyperBatch.of([theory.HyperParams(
            eta=rng.uniform(0.1, 2), eta_v=rng.uniform(0.1, 2), sigma=rng.uniform(0, 0.5), sigma_F=rng.uniform(-2, 2),
            weight_decay=rng.uniform(0, 0.1)) for _ in range(B)])
        ch = _Chunk(
            rule=theory.make_rule(rule, presynaptic=pre),
            hyper=hyper,
            quadrature=None,
            K=2,
            M=2,
            y0=np.stack([s.to_vector() for s in ss]),
            T=np.stack([s.T for s in ss]),
            U=np.stack([s.U for s in ss]),
            P=np.array([s.P for s in ss]),
            v_star=np.stack([s.v_star for s in ss]),
            b=np.stack([s.b for s in ss]),
            t=T_SHORT,
            rtol=1e-8,
            atol=1e-10,
        )
        idx = np.array([4, 0, 2])
        fast = _factory(ch, compiled=True)(idx)(ch.y0[idx])
        ref = _factory(ch, compiled=False)(idx)(ch.y0[idx])
        np.testing.assert_allclose(fast, ref, rtol=1e-11, atol=1e-13)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            big = np.repeat(np.arange(B), 30)
            threaded = _factory(ch, pool=pool)(big)(ch.y0[big])
        np.testing.assert_allclose(threaded, _factory(ch, compiled=False)(big)(ch.y0[big]), rtol=1e-11, atol=1e-13)
