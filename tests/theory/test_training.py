"""Training protocols: mini-batches of B samples per step and learning-rate schedules eta(t).

1. The mini-batch ODE (second-order terms divided by B) against Monte Carlo of the batch-averaged
   per-sample update, written out in D dimensions.
2. The reduced sampler's batch step against an explicit D-dimensional batch step (exact), the
   compiled kernel's against the torch step (same draws), and the reduced sampler's law against the
   full simulation (KS tests), for B > 1.
3. Simulations with B = 4 and B = 32 against their ODEs (statistical thresholds of test_compare;
   approaching the ODE as D grows: slow).
4. Schedules: a piecewise-constant schedule equals running its segments one after the other; the
   compiled paths equal scipy's; 1/t annealing of online bp with output noise gives eps_g ~ 1/t.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

import simulate
import theory
from simulate.engines.reduced.backends import _NumbaChain
from simulate.engines.reduced.kernel import ChunkSampler
from simulate.engines.reduced.step import ReducedStep
from tests.helpers import _assert_same_law, _deviations, _max_t, _per_replica_state, _square_root, _weights


def g(z):
    return theory.activation("erf").g(z)


# ----------------------------------------------------------------------------- 1. the mini-batch ODE
@pytest.mark.parametrize("rule", ["bp", "afa", "pepita"])
def test_batch_rhs_is_the_mean_of_the_batch_update(rule):
    """E[D (Q' - Q)] over one explicit D-dimensional step averaging B samples equals dQ/dt of the ODE with
    batch = B (its second-order term divided by B), up to O(1/D); the B = 1 ODE is rejected."""
    K, M, D, B, n_batches = 2, 2, 2000, 4, 40_000
    eta, sigma = 2.5, 0.3
    rng = np.random.default_rng(5)
    w = _weights(K, M, D, 6)
    W, Ws, v, vs, b = (w[k] for k in ("W", "W_star", "v", "v_star", "b"))
    f = (w["f"] + W[0] - 0.5 * W[1]) / math.sqrt(2.25)  # S = O(1): afa's and pepita's feedback is not small
    st = theory.state_from_weights(W, Ws, v, vs, f, b)
    r = theory.make_rule(rule)
    dQ = np.empty((n_batches, K, K))
    for c0 in range(0, n_batches, 2000):
        n = min(2000, n_batches - c0)
        x = rng.standard_normal((n, B, D))
        zeta = rng.standard_normal((n, B))
        lam, nu = x @ W.T / math.sqrt(D), x @ Ws.T / math.sqrt(D)
        up = r.local_update(lam, nu, zeta, v=v, v_star=vs, S=st.S, b=b, sigma=sigma, sigma_F=1.0)
        xp = x + up.alpha[..., None] * f / math.sqrt(D)
        W1 = W - (eta / (B * math.sqrt(D))) * np.einsum("nsk,nsd->nkd", up.delta, xp)
        dQ[c0 : c0 + n] = D * (W1 @ np.swapaxes(W1, -1, -2) / D - st.Q)
    mean, se = dQ.mean(0), dQ.std(0, ddof=1) / math.sqrt(n_batches)
    ode = theory.rhs(
        st, rule, eta=eta, eta_v=0.0, sigma=sigma, batch=B, quadrature="gauss-hermite" if rule == "pepita" else None
    )
    one = theory.rhs(
        st, rule, eta=eta, eta_v=0.0, sigma=sigma, batch=1, quadrature="gauss-hermite" if rule == "pepita" else None
    )
    tol = 5 * se + 20.0 / D * np.abs(ode["Q"]).max()  # Monte Carlo error and the O(1/D) finite-size terms
    assert np.all(np.abs(mean - ode["Q"]) < tol), (mean, ode["Q"], se)
    assert np.any(np.abs(mean - one["Q"]) > 10 * tol), "the B = 1 ODE should be rejected: the test would have no power"


def test_batch_size_one_is_the_online_ode():
    st = theory.random_state(2, 2, D=500, seed=1)
    t = theory.default_times(50.0, 20)
    a = theory.integrate(st, "afa", t, eta=0.8, sigma=0.2)
    b = theory.integrate(st, "afa", t, theory.HyperParams(eta=0.8, sigma=0.2, batch=1))
    np.testing.assert_array_equal(a.Q, b.Q)
    c = theory.integrate(st, "afa", t, eta=0.8, sigma=0.2, batch=8)
    assert c.params["batch"] == 8 and np.abs(c.eg - a.eg).max() > 1e-3
    np.testing.assert_allclose(c.samples_per_D, 8 * c.t)


# ----------------------------------------------------------------------------- 2. the reduced sampler
@pytest.mark.parametrize("rule", ["bp", "fa", "afa", "pepita"])
def test_reduced_batch_step_is_the_weight_update(rule):
    """One batch step on the Gram matrix equals the Gram matrix of explicitly updated weights (same inputs)."""
    K, M, D, B = 3, 2, 50, 3
    hyper = theory.HyperParams(eta=0.7, eta_v=0.4, sigma=0.2, sigma_F=0.8, weight_decay=0.3, batch=B)
    w = _weights(K, M, D, 1)
    W, Ws, f, v, vs, b = (w[k] for k in ("W", "W_star", "f", "v", "v_star", "b"))
    s0 = theory.state_from_weights(W, Ws, v, vs, f, b)
    r = theory.make_rule(rule)
    rng = np.random.default_rng(2)
    x, zeta = rng.standard_normal((B, D)), rng.standard_normal(B)
    lam, nu = x @ W.T / math.sqrt(D), x @ Ws.T / math.sqrt(D)
    up = r.local_update(lam, nu, zeta, v=v, v_star=vs, S=s0.S, b=b, sigma=hyper.sigma, sigma_F=hyper.sigma_F)
    xp = x + up.alpha[:, None] * f / math.sqrt(D)
    W1 = (1 - hyper.eta * hyper.weight_decay / D) * W - (hyper.eta / (B * math.sqrt(D))) * up.delta.T @ xp
    v1 = v - (hyper.eta_v / (B * D)) * (up.e_out[:, None] * up.h).sum(0)
    s1 = theory.state_from_weights(W1, Ws, v1, vs, f, b)
    step = ReducedStep(
        r, hyper, D=D, T=s0.T, U=s0.U, P=s0.P, v_star=s0.v_star, b=s0.b, device="cpu", dtype=torch.float64
    )
    tt = lambda a: torch.as_tensor(np.array(a, dtype=float))[None]  # noqa: E731
    Q, R, S, vv = tt(s0.Q), tt(s0.R), tt(s0.S), tt(s0.v)
    A = _square_root(step, Q, R, S)
    z = np.concatenate([nu, (x @ f / math.sqrt(D))[:, None], lam], 1)  # (B, r) ordered (nu, phi, lambda)
    eps = np.linalg.solve(A, z.T).T
    Wgram = x @ x.T - eps @ eps.T  # the inputs' components orthogonal to the r vectors
    Q1, R1, S1, v1r = step.batch_step(Q, R, S, vv, tt(eps), tt(Wgram), tt(zeta))
    for got, ref in ((Q1, s1.Q), (R1, s1.R), (S1, s1.S), (v1r, s1.v)):
        np.testing.assert_allclose(got[0].numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rule", ["bp", "afa", "pepita"])
def test_kernel_batch_step_equals_torch_batch_step(rule):
    K, M, D, R_, B = 3, 2, 40, 37, 3
    state = _per_replica_state(K, M, D, R_, seed=3)
    r = theory.make_rule(rule)
    hyper = theory.HyperParams(eta=0.7, eta_v=0.4, sigma=0.3, sigma_F=-0.8, weight_decay=0.2, batch=B)
    consts = dict(D=D, T=state.T, U=state.U, P=state.P, v_star=state.v_star, b=state.b)
    x0 = [np.broadcast_to(np.asarray(getattr(state, k), dtype=float), (R_,) + sh).copy()
          for k, sh in (("Q", (K, K)), ("R", (K, M)), ("S", (K,)), ("v", (K,)))]
    chain = _NumbaChain(r, hyper, [a.copy() for a in x0], replicas=R_, r=K + M + 1, seed=4, threads=2, **consts)
    chain.advance(1)
    mine = [a - a0 for a, a0 in zip(chain.state(), x0)]
    chain.close()
    d = ChunkSampler(4, R_, K + M + 1, D, noise=True, batch=B).draw(1)
    per = lambda a: np.moveaxis(a[:, 0], -1, 1).reshape((-1,) + a.shape[2:-1])[:R_]  # noqa: E731
    eps = per(d.eps).reshape(R_, B, K + M + 1)
    L = np.zeros((R_, B, B))
    gam, offd = per(d.gam), per(d.offd)
    for i in range(B):
        L[:, i, i] = np.sqrt(2.0 * gam[:, i])
        for j in range(i):
            L[:, i, j] = offd[:, i * (i - 1) // 2 + j]
    step = ReducedStep(r, hyper, device="cpu", dtype=torch.float64, **consts)
    tt = lambda a: torch.as_tensor(np.ascontiguousarray(a))  # noqa: E731
    ref = step.batch_step(*(tt(a) for a in x0), tt(eps), tt(L @ np.swapaxes(L, 1, 2)), tt(per(d.zeta)))
    for name, a, b_, a0 in zip("QRSv", mine, ref, x0):
        inc = b_.numpy() - a0
        assert np.abs(inc).max() > 1e-6
        np.testing.assert_allclose(a, inc, rtol=0, atol=1e-12 * np.abs(inc).max(), err_msg=name)


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("rule", ["bp", "pepita"])
def test_reduced_batch_law_matches_full_simulation(rule, backend):
    init = simulate.Initialisation(K=2, M=2, D=80, seed=3)
    kw = dict(eta=1.5, batch=4, replicas=300, n_test=0, progress=False, dtype=torch.float64, device="cpu")
    full = simulate.run(init, rule, [0.0, 1.5], seed=1, **kw)
    red = simulate.run_reduced(
        init, rule, [0.0, 1.5], eta=1.5, batch=4, replicas=300, seed=2, n_test=0, backend=backend
    )
    assert red.params["backend"] == backend and red.params["samples"][-1] == 4 * 120
    _assert_same_law(full, red)
    # and B matters: the B = 1 sampler's law differs (the test has power)
    one = simulate.run_reduced(init, rule, [0.0, 1.5], eta=1.5, replicas=300, seed=2, n_test=0, backend=backend)
    assert scipy.stats.ks_2samp(full.Q[:, -1, 0, 0], one.Q[:, -1, 0, 0]).pvalue < 1e-4


# ----------------------------------------------------------------------------- 3. simulations against the ODE
T_REC = np.array([0.0, 0.5, 1.0, 2.0, 3.0])


@pytest.mark.parametrize("rule,batch", [("bp", 4), ("pepita", 32)])
def test_batch_simulation_matches_ode(rule, batch):
    init = simulate.Initialisation(2, 2, 1000, seed=3)
    cmp = simulate.compare(init, [rule], T_REC, eta=1.0, batch=batch, replicas=24, device="cpu", seed=11, n_test=0,
                           progress=False, rtol=1e-9, atol=1e-11)
    key = cmp.rules[0]
    stat, thresh = _max_t(_deviations(cmp.results[key], cmp.trajectories[key]))
    assert stat < thresh, f"{key} B={batch}: max |t| = {stat:.2f} >= {thresh:.2f}"
    wrong = theory.integrate(cmp.results[key].initial_state(), rule, cmp.results[key].t, eta=1.0, batch=1)
    assert _max_t(_deviations(cmp.results[key], [wrong]))[0] > thresh  # the criterion tells B from 1


@pytest.mark.slow
@pytest.mark.parametrize("batch", [4, 32])
@pytest.mark.parametrize("rule", ["bp", "fa", "afa", "pepita"])
def test_batch_deviation_shrinks_with_D(rule, batch):
    Ds = [250, 1000, 4000]
    t = np.array([0.0, 1.0, 2.0, 4.0])
    rms = []
    for Dn in Ds:
        init = simulate.Initialisation(2, 2, Dn, seed=5)
        res = simulate.run(
            init,
            rule,
            t,
            eta=1.0,
            batch=batch,
            replicas=16,
            independent_init=True,
            device="cpu",
            seed=2,
            n_test=0,
            progress=False,
        )
        trs = [theory.integrate(res.initial_state(r), rule, res.t, eta=1.0, batch=batch) for r in range(res.replicas)]
        dev = _deviations(res, trs)[:, 1:]
        rms.append(np.median(np.sqrt(np.mean(dev**2, axis=(1, 2)))))
    slope = np.polyfit(np.log(Ds), np.log(rms), 1)[0]
    assert -0.7 < slope < -0.3, (rms, slope)


def test_schedule_in_simulation_matches_ode():
    init = simulate.Initialisation(2, 2, 1000, seed=3)
    eta = theory.Piecewise((1.0, 2.0), (1.5, 0.6, 0.2))
    cmp = simulate.compare(init, ["afa"], T_REC, eta=eta, replicas=24, device="cpu", seed=11, n_test=0, progress=False,
                           rtol=1e-9, atol=1e-11)
    stat, thresh = _max_t(_deviations(cmp.results["afa"], cmp.trajectories["afa"]))
    assert stat < thresh
    assert cmp.results["afa"].params["eta_schedule"] == eta.describe()
    red = simulate.run(init, "afa", T_REC, eta=eta, replicas=24, seed=11, n_test=0, progress=False, engine="reduced")
    stat, _ = _max_t(_deviations(red, cmp.trajectories["afa"]))
    assert stat < thresh


# ----------------------------------------------------------------------------- 4. schedules in the ODE
def test_piecewise_schedule_equals_its_segments():
    st = theory.random_state(2, 2, D=1000, seed=0)
    eta = theory.Piecewise((10.0, 50.0), (1.0, 0.5, 0.25))
    whole = theory.integrate(st, "bp", [0.0, 5.0, 10.0, 20.0, 50.0, 80.0], eta=eta)
    s1 = theory.integrate(st, "bp", [0.0, 5.0, 10.0], eta=1.0)
    s2 = theory.integrate(s1.state(-1), "bp", [10.0, 20.0, 50.0], eta=0.5)
    s3 = theory.integrate(s2.state(-1), "bp", [50.0, 80.0], eta=0.25)
    np.testing.assert_array_equal(whole.Q, np.concatenate([s1.Q, s2.Q[1:], s3.Q[1:]]))
    # the output grid need not contain the breaks; the scipy path restarts there too
    fine = theory.integrate(st, "bp", theory.default_times(80.0, 30), eta=eta, method="RK45", rtol=1e-10, atol=1e-12)
    coarse = theory.integrate(st, "bp", theory.default_times(80.0, 30), eta=eta)
    assert np.abs(fine.eg - coarse.eg).max() < 1e-7


@pytest.mark.parametrize(
    "schedule",
    [
        theory.PowerLaw(1.5, 5.0, 0.7),
        theory.Interpolated((0.0, 20.0, 60.0), (1.5, 0.5, 1.0)),
        theory.Piecewise.step_decay(1.5, 15.0, 0.5, 60.0),
    ],
    ids=lambda s: s.kind,
)
def test_schedules_compiled_equal_scipy_and_sweep(schedule):
    st = theory.random_state(2, 3, D=1000, seed=2)
    t = theory.default_times(100.0, 40)
    a = theory.integrate(st, "afa", t, eta=schedule, sigma=0.1, rtol=1e-10, atol=1e-12)
    b = theory.integrate(st, "afa", t, eta=schedule, sigma=0.1, method="RK45", rtol=1e-10, atol=1e-12)
    assert a.params["eta_schedule"] == schedule.describe()
    np.testing.assert_allclose(a.eg, b.eg, rtol=0, atol=1e-7)
    res = theory.sweep(st, "afa", t, eta=[schedule, 1.0], sigma=0.1, rtol=1e-10, atol=1e-12, progress=False)
    assert np.abs(res.eg[0] - a.eg).max() < 1e-7
    assert list(res.table["eta_schedule"]) == [schedule.describe(), "constant"]
    # eta_v follows eta unless given
    c = theory.integrate(st, "afa", t, eta=schedule, eta_v=0.0, sigma=0.1)
    np.testing.assert_array_equal(c.v, np.broadcast_to(st.v, c.v.shape))


def test_annealed_bp_decays_like_one_over_t():
    """Online bp with output noise and eta = eta0 / (1 + t / t0): eps_g ~ 1/t (docs/extensions.md, after
    Saad & Rattray 1997); without noise the decay is much faster (exponent -2 a eta0 t0)."""
    st = theory.random_state(2, 2, D=1000, seed=0)
    t = np.concatenate([[0.0], np.geomspace(0.1, 1e6, 300)])
    eta = theory.PowerLaw(1.0, 1000.0, 1.0)
    noisy = theory.integrate(st, "bp", t, eta=eta, sigma=0.1)
    late = noisy.t >= 3e4
    slope = np.polyfit(np.log(noisy.t[late]), np.log(noisy.eg[late]), 1)[0]
    assert abs(slope + 1.0) < 0.02, slope
    clean = theory.integrate(st, "bp", t, eta=eta, sigma=0.0)
    i = np.searchsorted(t, 1e5)
    assert abs(clean.eg[i]) < 1e-3 * noisy.eg[i]


# ----------------------------------------------------------------------------- sweeps, command line, bad input
def test_sweep_over_batch_and_power_law_parameters():
    st = theory.random_state(2, 2, D=500, seed=1)
    t = theory.default_times(60.0, 30)
    scheds = [theory.PowerLaw(1.0, t0, p) for t0 in (5.0, 50.0) for p in (0.5, 1.0)]
    res = theory.sweep(st, "bp", t, grid=dict(eta=scheds, batch=[1, 8]), progress=False)
    assert len(res) == 8 and list(res.table["batch"]) == [1, 8] * 4
    for i in (0, 5):
        ref = theory.integrate(st, "bp", t, eta=scheds[i // 2], batch=int(res.table["batch"][i]))
        assert np.abs(res.eg[i] - ref.eg).max() < 1e-7


def test_cli_batch_and_schedule(tmp_path):
    from simulate._cli import main

    out = tmp_path / "cmp"
    rc = main(["compare", "--rules", "bp", "--D", "60", "--t-max", "2", "--n-times", "4", "--replicas", "2",
               "--n-test", "0", "--device", "cpu", "--out", str(out), "--no-progress", "--batch", "4",
               "--eta-schedule", "piecewise:1=0.5"])
    assert rc == 0
    cmp = simulate.Comparison.load(out)
    p = cmp.results["bp"].params
    assert p["batch"] == 4 and p["eta_schedule"] == "piecewise(times=[1], values=[1,0.5])"
    assert "B=4" in (out / "summary.txt").read_text()
    rc = main(["ode", "--rules", "bp", "--t-max", "5", "--D", "100", "--batch", "2", "--eta-schedule", "power:t0=2,p=1",
               "--out", str(tmp_path / "ode"), "--no-progress"])
    assert rc == 0
    assert theory.Trajectory.load(tmp_path / "ode" / "ode_bp.npz").params["eta_schedule"] == "power(eta0=1, t0=2, p=1)"
    assert main(["ode", "--eta-schedule", "power:t=2", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2


@pytest.mark.parametrize("kw, match", [
    (dict(batch=0), "batch"), (dict(batch=2.5), "batch"), (dict(batch=True), "batch"),
    (dict(eta="fast"), "eta"), (dict(eta_v=-1.0), "eta_v"),
])
def test_bad_training_options(kw, match):
    st = theory.random_state(2, 2, D=100, seed=0)
    with pytest.raises(ValueError, match=match):
        theory.integrate(st, "bp", [0, 1], **{"eta": 1.0, **kw})


def test_bad_schedules():
    with pytest.raises(ValueError, match="t0"):
        theory.PowerLaw(1.0, 0.0)
    with pytest.raises(ValueError, match="increasing"):
        theory.Piecewise((2.0, 1.0), (1.0, 0.5, 0.2))
    with pytest.raises(ValueError, match="len"):
        theory.Piecewise((1.0,), (1.0,))
    with pytest.raises(ValueError, match=">= 0"):
        theory.Interpolated((0.0, 1.0), (1.0, -1.0))
    with pytest.raises(ValueError, match="unknown kind"):
        theory.parse_schedule("cosine:t0=1", 1.0)
    with pytest.raises(ValueError, match="D"):
        simulate.run_reduced(theory.random_state(2, 2, D=10, seed=0), "bp", [0, 1], D=6, eta=1.0, batch=3)
