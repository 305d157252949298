"""simulate: initial weights, the batched simulation, its records, reproducibility, dtypes, devices, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

import simulate
import theory
from simulate import Initialisation, SimulationResult, Weights

CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _run(init, rule="bp", t=(0.0, 0.5, 1.0), **kw):
    kw = {"eta": 1.0, "replicas": 4, "device": "cpu", "n_test": 0, "progress": False, **kw}
    return simulate.run(init, rule, np.asarray(t), **kw)


# ----------------------------------------------------------------------------- initial conditions
def test_weights_shapes_shared_and_independent():
    init = Initialisation(3, 2, 64, seed=4)
    w = init.weights(5)
    assert isinstance(w, Weights)
    assert (w.W.shape, w.W_star.shape, w.v.shape, w.v_star.shape, w.f.shape, w.b.shape) == (
        (5, 3, 64), (2, 64), (5, 3), (2,), (64,), (3,))
    assert w.W.dtype == torch.float32
    assert torch.equal(w.W[0], w.W[4]) and torch.equal(w.v[0], w.v[4])
    wi = init.weights(5, independent=True)
    assert not torch.equal(wi.W[0], wi.W[1])
    assert torch.equal(wi.W_star, w.W_star)  # teacher, f and b are shared
    assert torch.equal(init.weights(5).W, w.W)  # same seed, same weights
    assert not torch.equal(Initialisation(3, 2, 64, seed=5).weights().W[0], w.W[0])
    w64 = init.weights(2, dtype=torch.float64)
    np.testing.assert_allclose(w64.W[0].numpy(), w.W[0].numpy(), rtol=1e-6)  # drawn in float64, then cast


def test_order_params_are_measured_overlaps():
    init = Initialisation(2, 3, 128, seed=1, w_std=0.5, v_std=2.0, v_star=(1.0, -1.0, 0.5))
    w = init.weights(1, dtype=torch.float64)
    st = init.order_params()
    W, Ws, f = w.W[0].numpy(), w.W_star.numpy(), w.f.numpy()
    np.testing.assert_allclose(st.Q, W @ W.T / 128)
    np.testing.assert_allclose(st.R, W @ Ws.T / 128)
    np.testing.assert_allclose(st.S, W @ f / 128)
    np.testing.assert_allclose(st.U, Ws @ f / 128)
    np.testing.assert_allclose(st.v_star, [1.0, -1.0, 0.5])
    np.testing.assert_allclose(st.b, w.b.numpy())
    sts = init.order_params(3, independent=True)
    assert len(sts) == 3 and not np.allclose(sts[0].Q, sts[1].Q)


def test_initial_distribution_matches_theory_random_state():
    """Same law as theory.random_state: compare the overlaps' means and spreads over seeds (5 sigma)."""
    D, n = 400, 60
    K = M = 2
    ours = [Initialisation(K, M, D, seed=s, w_std=0.7, v_std=1.5).order_params() for s in range(n)]
    ref = [theory.random_state(K, M, D=D, seed=s, w_std=0.7, v_std=1.5) for s in range(n)]
    feats = lambda st: np.concatenate([st.Q.ravel(), st.R.ravel(), st.T.ravel(), st.S, st.U, [st.P], st.v, st.b])  # noqa: E731
    a, b = np.array([feats(s) for s in ours]), np.array([feats(s) for s in ref])
    z = (a.mean(0) - b.mean(0)) / np.sqrt(a.var(0, ddof=1) / n + b.var(0, ddof=1) / n)
    assert np.abs(z).max() < 5
    # spreads agree too (F test at a family-wise level of 1e-4)
    ratio = a.var(0, ddof=1) / b.var(0, ddof=1)
    lo, hi = scipy.stats.f.ppf([1e-4 / (2 * a.shape[1]), 1 - 1e-4 / (2 * a.shape[1])], n - 1, n - 1)
    keep = b.var(0) > 0  # v_star-like constants
    assert np.all((ratio[keep] > lo) & (ratio[keep] < hi))


@pytest.mark.parametrize("kw, match", [
    (dict(K=0), "K"), (dict(D=2.5), "D"), (dict(seed=-1), "seed"), (dict(w_std=-1.0), "w_std"),
    (dict(v_star=(1.0, 2.0, 3.0)), "v_star"),
])
def test_initialisation_bad_input(kw, match):
    args = dict(K=2, M=2, D=10)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        Initialisation(**args)


def test_weights_bad_shapes():
    w = Initialisation(2, 2, 10).weights(2)
    with pytest.raises(ValueError, match="f must have shape"):
        Weights(W=w.W, W_star=w.W_star, v=w.v, v_star=w.v_star, f=w.f[:5], b=w.b)
    with pytest.raises(ValueError, match="W must be"):
        Weights(W=w.W[0], W_star=w.W_star, v=w.v, v_star=w.v_star, f=w.f, b=w.b)
    with pytest.raises(ValueError, match="replicas"):
        Initialisation(2, 2, 10).weights(0)


# ----------------------------------------------------------------------------- the simulation
def test_result_fields_and_helpers(tmp_path):
    init = Initialisation(2, 2, 100, seed=2)
    res = _run(init, "afa", t=(0.0, 0.005, 0.5, 1.0), n_test=200)
    R = 4
    # t = 0.005 rounds to step 0 at D = 100, like t = 0: recorded once; t = steps / D
    assert res.params["steps"] == [0, 50, 100]
    np.testing.assert_allclose(res.t, np.asarray(res.params["steps"]) / 100)
    n = len(res.t)
    assert (
        res.Q.shape == (R, n, 2, 2)
        and res.R.shape == (R, n, 2, 2)
        and res.S.shape == (R, n, 2)
        and res.v.shape == (R, n, 2)
    )
    assert res.eg.shape == (R, n) and res.eg_test.shape == (R, n)
    assert set(res.angles) >= {"teacher", "degenerate_min", "feedback", "end_to_end"}
    np.testing.assert_allclose(res.mean("eg"), res.eg.mean(0))
    np.testing.assert_allclose(res.sem("Q"), res.Q.std(0, ddof=1) / 2)
    np.testing.assert_allclose(res.mean("feedback"), res.angles["feedback"].mean(0))
    st0 = res.initial_state()
    ref = init.order_params()
    for k in ("T", "U", "P", "v_star", "b"):  # constants: measured from the float64 draw
        np.testing.assert_array_equal(getattr(st0, k), getattr(ref, k))
    for k in ("Q", "R", "S", "v"):  # the float32 weights, measured in float64
        np.testing.assert_allclose(getattr(st0, k), getattr(ref, k), rtol=1e-5, atol=1e-7)
    # eg is the closed form of the recorded order parameters
    np.testing.assert_allclose(res.eg[1, -1], theory.generalisation_error(res.state(-1, r=1)))
    path = res.save(tmp_path / "sim.npz")
    back = SimulationResult.load(path)
    for k in ("t", "Q", "R", "S", "v", "eg", "eg_test", "T", "U", "v_star", "b"):
        np.testing.assert_array_equal(getattr(back, k), getattr(res, k))
    assert back.params == res.params and back.angles.keys() == res.angles.keys()
    with pytest.raises(ValueError, match="unknown quantity"):
        res.mean("nope")


def test_same_seed_same_result_different_seed_different():
    init = Initialisation(2, 2, 200, seed=0)
    a = _run(init, "pepita", sigma=0.3)
    b = _run(init, "pepita", sigma=0.3)
    c = _run(init, "pepita", sigma=0.3, seed=1)
    d = _run(init, "pepita", sigma=0.3, threads=2)  # the number of sampling threads does not matter
    np.testing.assert_array_equal(a.Q, b.Q)
    np.testing.assert_array_equal(a.Q, d.Q)
    assert not np.allclose(a.Q[:, -1], c.Q[:, -1])
    assert not np.allclose(a.Q[0, -1], a.Q[1, -1])  # replicas see independent data streams


def test_float32_against_float64():
    """Same initial weights; different data draws, so the replica means agree within their errors."""
    init = Initialisation(2, 2, 500, seed=0)
    kw = dict(t=(0.0, 1.0, 2.0), replicas=16)
    r32, r64 = _run(init, "bp", dtype=torch.float32, **kw), _run(init, "bp", dtype=torch.float64, **kw)
    assert r64.params["dtype"] == "float64"
    np.testing.assert_allclose(r32.Q[:, 0], r64.Q[:, 0], rtol=1e-6)
    for name in ("Q", "R", "v", "eg"):
        diff = r32.mean(name)[1:] - r64.mean(name)[1:]
        err = np.sqrt(r32.sem(name)[1:] ** 2 + r64.sem(name)[1:] ** 2)
        n = diff.size
        assert np.all(np.abs(diff) < scipy.stats.t.ppf(1 - 1e-4 / (2 * 4 * n), df=15) * err), name


def test_empirical_test_error_matches_closed_form():
    """eg_test (fresh test sets: seeds) against the closed form of the same weights, at t = 0."""
    for init in (Initialisation(2, 2, 300, seed=1), Initialisation(3, 2, 300, seed=2, w_std=0.4, v_std=0.5)):
        runs = [_run(init, "bp", t=(0.0,), replicas=1, n_test=4000, seed=s) for s in range(12)]
        est = np.array([r.eg_test[0, 0] for r in runs])
        eg = runs[0].eg[0, 0]
        assert all(r.eg[0, 0] == eg for r in runs)
        z = (est.mean() - eg) / (est.std(ddof=1) / np.sqrt(len(est)))
        assert abs(z) < scipy.stats.t.ppf(1 - 1e-4, df=len(est) - 1)
    # after training, on 1e5 test inputs (relative standard error ~ sqrt(2e-5) ~ 0.5%, so 5% is ~10 sigma):
    # a wrong eg formula or a wrong test-error estimate would show here
    res = _run(Initialisation(2, 2, 300, seed=3), "fa", t=(0.0, 5.0), replicas=2, n_test=100_000)
    np.testing.assert_allclose(res.eg_test[:, -1], res.eg[:, -1], rtol=0.05)


def test_frozen_second_layer_and_zero_rates():
    init = Initialisation(2, 2, 200, seed=0)
    res = _run(init, "bp", train_second_layer=False)
    assert np.all(res.v == res.v[:, :1]) and not np.allclose(res.Q[:, -1], res.Q[:, 0])
    still = _run(init, "bp", eta=0.0, eta_v=0.0)
    np.testing.assert_allclose(still.Q, still.Q[:, :1].repeat(still.Q.shape[1], 1))


def test_divergence_is_reported():
    init = Initialisation(2, 2, 100, seed=0)
    with pytest.raises(theory.DivergenceError, match="diverged between t =") as info:
        _run(init, "bp", t=np.linspace(0, 50, 11), g="linear", eta=8.0)
    part = info.value.trajectory
    assert isinstance(part, SimulationResult) and part.status == -1 and len(part.t) >= 1
    res = _run(init, "bp", t=np.linspace(0, 50, 11), g="linear", eta=8.0, throw=False)
    assert res.status == -1 and "diverged" in res.message and np.all(np.isfinite(res.Q))


def test_interrupt_keeps_records(monkeypatch):
    import simulate.engines.full as eng

    calls = {"n": 0}
    real = eng._diagnose

    def interrupt_on_third(W, v, D):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(W, v, D)

    monkeypatch.setattr(eng, "_diagnose", interrupt_on_third)
    res = _run(Initialisation(2, 2, 50, seed=0), "bp", t=np.arange(6.0))
    assert res.status == 1 and "interrupted" in res.message and len(res.t) == 3


@pytest.mark.parametrize("kw, match", [
    (dict(rule="sgd"), "unknown rule"),
    (dict(eta=-1.0), "eta"),
    (dict(eta_v=-0.1), "eta_v"),
    (dict(sigma=-1.0), "sigma"),
    (dict(weight_decay=-1.0), "weight_decay"),
    (dict(replicas=0), "replicas"),
    (dict(replicas=2.5), "replicas"),
    (dict(t=(0.0, 2.0, 1.0)), "strictly increasing"),
    (dict(t=(-1.0, 1.0)), "t must be"),
    (dict(engine="gpu-magic"), "unknown engine"),
    (dict(dtype=torch.float16), "dtype"),
    (dict(n_test=-5), "n_test"),
    (dict(seed=-2), "seed"),
    (dict(rule="bp", presynaptic="modulated"), "presynaptic"),
    (dict(rule="afa", error="modulated"), "pepita only"),
    (dict(g="softplus"), "activation"),
    (dict(threads=0), "threads"),
])
def test_run_bad_input(kw, match):
    init = Initialisation(2, 2, 20)
    kw = dict(kw)
    rule = kw.pop("rule", "bp")
    t = kw.pop("t", (0.0, 1.0))
    with pytest.raises(ValueError, match=match):
        _run(init, rule, t=t, **kw)


def test_run_bad_init_type_and_device():
    with pytest.raises(TypeError, match="Initialisation"):
        simulate.run(theory.random_state(2, 2, D=10), "bp", [0, 1], eta=1.0)
    if not CUDA:
        with pytest.raises(ValueError, match="CUDA is not available"):
            _run(Initialisation(2, 2, 20), device="cuda")


def test_engine_registry_dispatch():
    seen = {}

    def fake(spec):
        seen["spec"] = spec
        return simulate.ENGINES["full"](spec)

    simulate.register_engine("fake-test", fake)
    try:
        res = _run(Initialisation(2, 2, 30), engine="fake-test")
        assert res.params["engine"] == "fake-test" and seen["spec"].D == 30
    finally:
        simulate.ENGINES.pop("fake-test")


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_same_initial_weights_and_ode_agreement():
    init = Initialisation(2, 2, 1000, seed=3)
    wc, wg = init.weights(4, device="cpu"), init.weights(4, device="cuda")
    assert torch.equal(wc.W, wg.W.cpu())
    res = _run(init, "pepita", t=(0.0, 1.0, 2.0), device="cuda", replicas=64, n_test=1000)
    assert res.params["device"].startswith("cuda")
    again = _run(init, "pepita", t=(0.0, 1.0, 2.0), device="cuda", replicas=64, n_test=1000)
    np.testing.assert_array_equal(res.Q, again.Q)
    tr = theory.integrate(res.initial_state(), "pepita", res.t, eta=1.0)
    d = res.eg[:, 1:] - tr.eg[None, 1:]
    tq = scipy.stats.t.ppf(1 - 1e-4 / (2 * d.shape[1]), df=res.replicas - 1)
    assert np.all(np.abs(d.mean(0)) < tq * d.std(0, ddof=1) / np.sqrt(res.replicas))
