"""The exact order-parameter sampler (simulate.engines.reduced) against the D-dimensional dynamics it reduces.

1. One step, deterministically: the same input x applied to explicit weights and to their Gram
   matrix gives the same new order parameters (tests the derivation of the G update, |xp|^2
   included), for every rule and variant, with weight decay.
2. In law: the distribution across replicas of eg and of the order parameters at a few times
   matches a full D-dimensional simulation (a small reference loop written here from the same
   Rule.local_update), by two-sample KS tests and a comparison of means in standard errors.
3. As D grows the mean approaches the ODE and the spread shrinks like 1/sqrt(D) (slow).
4. The compiled CPU kernel (simulate.engines.reduced.kernel, backend "numba") against the rule definition
   Rule.local_update and against the torch step, one step from random states, for every rule,
   variant and activation; its results do not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

import theory
from simulate import empirical_eg, run_reduced
from simulate.engines.reduced import kernel as _reduced_kernel
from simulate.engines.reduced.chain import reduced_chain
from simulate.engines.reduced.step import ReducedStep, _psd_cholesky
from tests.helpers import (  # noqa: F401
    ACTIVATIONS,
    STEP_CONFIGS,
    _assert_same_law,
    _kernel_and_torch_step,
    _per_replica_state,
    _square_root,
    _weights,
)
from theory import _internal

VARIANTS = [
    dict(rule="bp"),
    dict(rule="fa"),
    dict(rule="afa", presynaptic="modulated"),
    dict(rule="afa", presynaptic="clean"),
    dict(rule="pepita", presynaptic="modulated", error="first"),
    dict(rule="pepita", presynaptic="clean", error="modulated"),
]


def _ids(v):
    return "-".join(str(x) for x in v.values())




@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_one_step_equals_explicit_update(variant):
    """G' from the reduced step equals the Gram matrix of the explicitly updated weights (same x)."""
    K, M, D = 3, 2, 40
    eta, eta_v, kappa, sigma, sigma_F = 0.7, 0.4, 0.3, 0.2, 0.8
    w = _weights(K, M, D, 1)
    s0 = theory.state_from_weights(w["W"], w["W_star"], w["v"], w["v_star"], w["f"], w["b"])
    rule = theory.make_rule(variant["rule"], presynaptic=variant.get("presynaptic"), error=variant.get("error"))
    rng = np.random.default_rng(2)
    x, zeta = rng.standard_normal(D), rng.standard_normal()
    # explicit D-dimensional step
    lam, nu, phi = w["W"] @ x / math.sqrt(D), w["W_star"] @ x / math.sqrt(D), w["f"] @ x / math.sqrt(D)
    up = rule.local_update(
        lam, nu, np.float64(zeta), v=w["v"], v_star=w["v_star"], S=s0.S, b=w["b"], sigma=sigma, sigma_F=sigma_F
    )
    xp = x + up.alpha * w["f"] / math.sqrt(D)
    W1 = (1 - eta * kappa / D) * w["W"] - (eta / math.sqrt(D)) * up.delta[:, None] * xp
    v1 = w["v"] - (eta_v / D) * up.e_out * up.h
    s1 = theory.state_from_weights(W1, w["W_star"], v1, w["v_star"], w["f"], w["b"])
    # reduced step with eps such that A eps = z and |eps|^2 + chi2 = |x|^2
    hyper = theory.HyperParams(
        eta=eta, eta_v=eta_v, sigma=sigma, sigma_F=sigma_F, weight_decay=kappa, train_second_layer=True
    )
    step = ReducedStep(
        rule, hyper, D=D, T=s0.T, U=s0.U, P=s0.P, v_star=s0.v_star, b=s0.b, device="cpu", dtype=torch.float64
    )
    t = lambda a: torch.as_tensor(np.array(a, dtype=float))[None]  # noqa: E731
    Q, R, S, v = t(s0.Q), t(s0.R), t(s0.S), t(s0.v)
    A = _square_root(step, Q, R, S)
    eps = np.linalg.solve(A, np.concatenate([nu, [phi], lam]))
    chi2 = x @ x - eps @ eps
    assert chi2 > 0
    Q1, R1, S1, v1r = step(Q, R, S, v, t(eps), t(chi2), t(zeta))
    np.testing.assert_allclose(Q1[0].numpy(), s1.Q, rtol=0, atol=1e-12)
    np.testing.assert_allclose(R1[0].numpy(), s1.R, rtol=0, atol=1e-12)
    np.testing.assert_allclose(S1[0].numpy(), s1.S, rtol=0, atol=1e-12)
    np.testing.assert_allclose(v1r[0].numpy(), s1.v, rtol=0, atol=1e-12)




def test_square_root_reproduces_gram_matrix_and_handles_singular():
    K, M, D = 3, 2, 40
    w = _weights(K, M, D, 3)
    s0 = theory.state_from_weights(w["W"], w["W_star"], w["v"], w["v_star"], w["f"], w["b"])
    for Wscale in (1.0, 0.0):  # w = 0: G singular
        s = s0.replace(Q=s0.Q * Wscale**2, R=s0.R * Wscale, S=s0.S * Wscale)
        step = ReducedStep(theory.make_rule("bp"), theory.HyperParams(eta=1), D=D, T=s.T, U=s.U, P=s.P, v_star=s.v_star,
                           b=s.b, device="cpu", dtype=torch.float64)
        t = lambda a: torch.as_tensor(np.array(a, dtype=float))[None]  # noqa: E731
        A = _square_root(step, t(s.Q), t(s.R), t(s.S))
        perm = list(range(M + 1, M + 1 + K)) + list(range(M)) + [M]  # (nu, phi, lam) -> (lam, nu, phi)
        np.testing.assert_allclose((A @ A.T)[np.ix_(perm, perm)], s.omega, atol=1e-12)
    # rank-deficient Schur complement
    B = np.random.default_rng(0).standard_normal((4, 2))
    C = torch.as_tensor(B @ B.T)[None]
    L = _psd_cholesky(C)
    np.testing.assert_allclose((L @ L.transpose(-1, -2)).numpy(), C.numpy(), atol=1e-12)


# ----------------------------------------------------------------------------- the compiled kernel
ALL_VARIANTS = VARIANTS + [dict(rule="pepita", presynaptic="modulated", error="modulated"),
                           dict(rule="pepita", presynaptic="clean", error="first")]


@pytest.mark.parametrize("g", ACTIVATIONS)
@pytest.mark.parametrize("variant", ALL_VARIANTS, ids=_ids)
def test_kernel_rule_equals_local_update(variant, g):
    """The kernel's compiled rule gives Rule.local_update's (delta, alpha, e_out, h) sample by sample."""
    K, M, n = 3, 2, 300
    rng = np.random.default_rng(20)
    lam, nu, zeta = 1.5 * rng.standard_normal((n, K)), 1.5 * rng.standard_normal((n, M)), rng.standard_normal(n)
    v, S, b, v_star = (
        rng.standard_normal((n, K)),
        rng.standard_normal((n, K)),
        rng.standard_normal((n, K)),
        rng.standard_normal((n, M)),
    )
    rule = theory.make_rule(variant["rule"], presynaptic=variant.get("presynaptic"), error=variant.get("error"))
    for sigma, sigma_F in ((0.0, 1.0), (0.3, -0.7)):
        ref = rule.local_update(lam, nu, zeta, v=v, v_star=v_star, S=S, b=b, sigma=sigma, sigma_F=sigma_F, g=g)
        got = _internal.compiled.update_batch(rule, g, lam, nu, zeta, v, v_star, S, b, sigma, sigma_F)[:4]
        for name, a, r in zip(("delta", "alpha", "e_out", "h"), got, ref[:4]):
            r = np.broadcast_to(r, a.shape)
            assert np.ptp(r) > 0 or name == "alpha", f"{name}: constant, the comparison would be vacuous"
            np.testing.assert_allclose(
                a, r, rtol=0, atol=1e-13 * max(1.0, np.abs(r).max()), err_msg=f"{rule.label} {g} {name}"
            )








@pytest.mark.parametrize("g", ACTIVATIONS)
@pytest.mark.parametrize("variant", ALL_VARIANTS, ids=_ids)
def test_kernel_step_equals_torch_step(variant, g):
    """One numba step equals one ReducedStep (built on Rule.local_update) with the same draws, to ~1e-12 of the
    increment, from random per-replica states (K = 3 != M = 2; 37 replicas: a full block and a partial one)."""
    K, M, D, R_ = 3, 2, 40, 37
    state = _per_replica_state(K, M, D, R_, seed=ALL_VARIANTS.index(variant) * 10 + ACTIVATIONS.index(g))
    rule = theory.make_rule(variant["rule"], presynaptic=variant.get("presynaptic"), error=variant.get("error"))
    for cfg in STEP_CONFIGS:
        mine, ref = _kernel_and_torch_step(state, rule, D=D, g=g, R_=R_, **cfg)
        for name, a, b in zip("QRSv", mine, ref):
            if name == "v" and not cfg["train_second_layer"]:
                assert np.all(a == 0) and np.all(b == 0)
                continue
            assert np.abs(b).max() > 1e-6, f"{name}: no increment, the comparison would be vacuous"
            np.testing.assert_allclose(
                a, b, rtol=0, atol=1e-12 * np.abs(b).max(), err_msg=f"{rule.label} {g} {name} {cfg}"
            )


@pytest.mark.parametrize("variant", [dict(rule="fa"), dict(rule="afa", presynaptic="modulated"),
                                     dict(rule="pepita", presynaptic="modulated", error="modulated")], ids=_ids)
def test_kernel_step_per_replica_constants_and_zero_weights(variant):
    """Per-replica T, U, P, v_star, b (the kernel's per-replica constant path), and a student w = 0 (singular G)."""
    K, M, D, R_ = 2, 2, 30, 40
    s = _per_replica_state(K, M, D, R_, seed=8)
    rng = np.random.default_rng(9)
    Ws, f = rng.standard_normal((R_, M, D)), rng.standard_normal((R_, D))
    s.T, s.U, s.P = Ws @ Ws.transpose(0, 2, 1) / D, (Ws @ f[:, :, None])[..., 0] / D, (f * f).sum(-1) / D
    s.v_star, s.b = rng.standard_normal((R_, M)), rng.standard_normal((R_, K))
    s.Q[:5], s.R[:5], s.S[:5] = 0.0, 0.0, 0.0  # w = 0 in the first replicas (they keep the teacher's constants)
    rule = theory.make_rule(variant["rule"], presynaptic=variant.get("presynaptic"), error=variant.get("error"))
    mine, ref = _kernel_and_torch_step(s, rule, D=D, g="erf", R_=R_, **STEP_CONFIGS[0])
    for name, a, b in zip("QRSv", mine, ref):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max(), err_msg=name)


def test_numba_results_do_not_depend_on_threads():
    s0 = theory.random_state(2, 2, D=100, seed=0)
    kw = dict(D=100, eta=1.0, sigma=0.1, replicas=70, seed=3, backend="numba")
    a = reduced_chain(s0, "pepita", [0, 0.5, 1.0], threads=1, **kw)
    b = reduced_chain(s0, "pepita", [0, 0.5, 1.0], threads=3, **kw)
    for k in "QRSv":
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_divergence_stops_with_reason(backend):
    s0 = theory.random_state(2, 2, D=50, seed=0)
    out = reduced_chain(s0, "bp", np.arange(0.0, 20.5, 0.5), D=50, eta=60.0, replicas=4, seed=0, backend=backend)
    assert out["status"] == -1 and "diverged" in out["message"], out["message"]
    assert len(out["t"]) < 41 and np.all(np.isfinite(out["Q"]))


def test_run_reduced_throw_raises_divergence_error_with_partial_result():
    s0 = theory.random_state(2, 2, D=50, seed=0)
    with pytest.raises(theory.DivergenceError, match="diverged") as info:
        run_reduced(s0, "bp", np.arange(0.0, 20.5, 0.5), D=50, eta=60.0, replicas=4, seed=0, throw=True)
    partial = info.value.trajectory
    assert partial.status == -1 and len(partial.t) < 41 and np.all(np.isfinite(partial.Q))


def test_auto_backend():
    s0 = theory.random_state(2, 2, D=100, seed=0)
    assert reduced_chain(s0, "bp", [0, 0.1], D=100, eta=1.0)["backend"] == (
        "numba" if _reduced_kernel.HAVE_NUMBA else "torch"
    )
    assert reduced_chain(s0, "bp", [0, 0.1], D=100, eta=1.0, dtype=torch.float32)["backend"] == "torch"


# ----------------------------------------------------------------------------- against full D
def _full_reference(W, W_star, v, v_star, f, b, rule, steps, *, eta, eta_v, sigma, sigma_F, kappa, gen):
    """Plain full D-dimensional online simulation of R_ replicas (float64), from theory's Rule."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only contend (30x slower on a loaded 2-core machine)
    try:
        return _full_reference_loop(W, W_star, v, v_star, f, b, rule, steps, eta=eta, eta_v=eta_v, sigma=sigma,
                                    sigma_F=sigma_F, kappa=kappa, gen=gen)
    finally:
        torch.set_num_threads(threads)


def _full_reference_loop(W, W_star, v, v_star, f, b, rule, steps, *, eta, eta_v, sigma, sigma_F, kappa, gen):
    R_, K, D = W.shape
    W, v = W.clone(), v.clone()
    sq = math.sqrt(D)
    out = []
    S = W @ f / D
    for n in range(max(steps) + 1):
        if n in steps:
            out.append((W @ W.transpose(-1, -2) / D, W @ W_star.T / D, W @ f / D, v.clone()))
        if n == max(steps):
            break
        x = torch.randn(R_, D, generator=gen, dtype=W.dtype)
        zeta = torch.randn(R_, generator=gen, dtype=W.dtype)
        lam = (W @ x[:, :, None]).squeeze(-1) / sq
        nu = x @ W_star.T / sq
        S = W @ f / D
        up = rule.local_update(lam, nu, zeta, v=v, v_star=v_star, S=S, b=b, sigma=sigma, sigma_F=sigma_F)
        alpha = up.alpha if torch.is_tensor(up.alpha) else torch.zeros(R_, dtype=W.dtype)
        xp = x + alpha[:, None] * f / sq
        W = (1 - eta * kappa / D) * W - (eta / sq) * up.delta[:, :, None] * xp[:, None, :]
        v = v - (eta_v / D) * up.e_out[:, None] * up.h
    return [torch.stack(z).numpy() for z in zip(*out)]  # each (n_times, R_, ...)


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_law_matches_full_simulation(variant, backend):
    K, M, D, R_ = 2, 2, 60, 400
    eta, sigma, sigma_F, kappa = 1.5, 0.1, 1.0, 0.05
    times = np.array([0.0, 1.0, 3.0])
    steps = [int(round(x * D)) for x in times]
    w = _weights(K, M, D, 7)
    s0 = theory.state_from_weights(w["W"], w["W_star"], w["v"], w["v_star"], w["f"], w["b"])
    rule = theory.make_rule(variant["rule"], presynaptic=variant.get("presynaptic"), error=variant.get("error"))
    tt = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    gen = torch.Generator().manual_seed(11)
    Qf, Rf, Sf, vf = _full_reference(
        tt(w["W"]).expand(R_, K, D),
        tt(w["W_star"]),
        tt(w["v"]).expand(R_, K),
        tt(w["v_star"]),
        tt(w["f"]),
        tt(w["b"]),
        rule,
        steps,
        eta=eta,
        eta_v=eta,
        sigma=sigma,
        sigma_F=sigma_F,
        kappa=kappa,
        gen=gen,
    )
    red = reduced_chain(
        s0,
        rule,
        times,
        D=D,
        eta=eta,
        sigma=sigma,
        sigma_F=sigma_F,
        weight_decay=kappa,
        replicas=R_,
        seed=12,
        backend=backend,
    )
    assert red["status"] == 0 and red["backend"] == backend
    iu = np.triu_indices(K)
    checks = []
    for i in (1, 2):
        full = dict(Q=Qf[i][:, iu[0], iu[1]], R=Rf[i].reshape(R_, -1), S=Sf[i], v=vf[i])
        mine = dict(
            Q=red["Q"][:, i][:, iu[0], iu[1]], R=red["R"][:, i].reshape(R_, -1), S=red["S"][:, i], v=red["v"][:, i]
        )
        eg_f = theory.generalisation_error(_ns(Qf[i], Rf[i], vf[i], s0))
        eg_m = theory.generalisation_error(_ns(red["Q"][:, i], red["R"][:, i], red["v"][:, i], s0))
        full["eg"], mine["eg"] = eg_f[:, None], eg_m[:, None]
        for name in full:
            for j in range(full[name].shape[1]):
                checks.append((f"{name}[{j}] at t={times[i]}", full[name][:, j], mine[name][:, j]))
    # Bonferroni: the family of KS tests fails by chance with probability <= 1e-3
    alpha = 1e-3 / len(checks)
    for label, a, b in checks:
        assert np.std(a) > 0 and np.std(b) > 0, f"{label}: no spread, the test would have no power"
        p = scipy.stats.ks_2samp(a, b).pvalue
        assert p > alpha, f"{rule.label} {label}: KS p = {p:.2g} < {alpha:.2g}"
        se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
        assert abs(a.mean() - b.mean()) < 4.5 * se, (
            f"{rule.label} {label}: means {a.mean():.5g} vs {b.mean():.5g}, se {se:.2g}"
        )


def _ns(Q, R, v, s0):
    import types

    return types.SimpleNamespace(Q=Q, R=R, v=v, T=s0.T, v_star=s0.v_star)


def test_law_test_has_power():
    """The comparison above detects a wrong step: a sampler with eta off by 15% fails the KS tests."""
    K, M, D, R_ = 2, 2, 60, 400
    w = _weights(K, M, D, 7)
    s0 = theory.state_from_weights(w["W"], w["W_star"], w["v"], w["v_star"], w["f"], w["b"])
    a = reduced_chain(s0, "bp", [0.0, 3.0], D=D, eta=1.5, replicas=R_, seed=1)
    b = reduced_chain(s0, "bp", [0.0, 3.0], D=D, eta=1.5 * 1.15, replicas=R_, seed=2)
    p = min(scipy.stats.ks_2samp(a[k][:, -1].reshape(R_, -1)[:, j], b[k][:, -1].reshape(R_, -1)[:, j]).pvalue
            for k in "QRv" for j in range(2))
    assert p < 1e-5


# ----------------------------------------------------------------------------- API
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_reproducible_with_seed(backend):
    s0 = theory.random_state(2, 2, D=100, seed=0)
    a = reduced_chain(s0, "pepita", [0, 0.5, 1.0], D=100, eta=1.0, replicas=8, seed=3, backend=backend)
    b = reduced_chain(s0, "pepita", [0, 0.5, 1.0], D=100, eta=1.0, replicas=8, seed=3, backend=backend)
    c = reduced_chain(s0, "pepita", [0, 0.5, 1.0], D=100, eta=1.0, replicas=8, seed=4, backend=backend)
    for k in "QRSv":
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["Q"], c["Q"])
    # replicas are independent streams: they differ from one another
    assert np.ptp(a["Q"][:, -1, 0, 0]) > 0


def test_starts_from_zero_weights():
    s0 = theory.random_state(2, 2, D=100, seed=0)
    s0 = s0.replace(Q=np.zeros((2, 2)), R=np.zeros((2, 2)), S=np.zeros(2))
    out = reduced_chain(s0, "bp", [0, 1.0], D=100, eta=1.0, replicas=4, seed=0)
    assert out["status"] == 0 and np.all(np.isfinite(out["Q"])) and out["Q"][:, -1, 0, 0].min() >= 0


def test_run_reduced_result_and_eg_test():
    from simulate._init import Initialisation

    init = Initialisation(K=2, M=2, D=200, seed=1)
    res = run_reduced(init, "afa", [0.0, 1.0, 2.0], eta=1.0, replicas=16, seed=0, n_test=4000, device="cpu")
    assert res.Q.shape == (16, 3, 2, 2) and res.eg.shape == (16, 3) and res.params["engine"] == "reduced"
    assert res.status == 0 and set(res.angles) >= {"teacher", "feedback", "end_to_end"}
    # eg_test is a Monte Carlo estimate of eg: compare in units of its standard error (~ eg * sqrt(2 / n_test) upper
    # bound)
    z = np.abs(res.eg_test - res.eg) / (res.eg * math.sqrt(8.0 / 4000))
    assert np.all(z < 5), z.max()


def test_empirical_eg_detects_a_wrong_state():
    s = theory.random_state(2, 2, D=500, seed=2)
    rng = np.random.default_rng(0)
    est = empirical_eg(s.Q, s.R, s.S, s.v, s.T, s.U, s.P, s.v_star, n_test=200_000, rng=rng)
    assert abs(est - theory.generalisation_error(s)) < 5 * theory.generalisation_error(s) * math.sqrt(8 / 200_000)
    wrong = empirical_eg(s.Q, s.R, s.S, 1.2 * s.v, s.T, s.U, s.P, s.v_star, n_test=200_000, rng=rng)
    assert abs(wrong - theory.generalisation_error(s)) > 10 * theory.generalisation_error(s) * math.sqrt(8 / 200_000)


@pytest.mark.parametrize("kwargs, match", [
    (dict(D=4), "D"),
    (dict(replicas=0), "replicas"),
    (dict(eta=-1.0), "eta"),
    (dict(t=[0.0, 0.0]), "t"),
    (dict(t=[0.0, 0.001]), "t"),
    (dict(sigma_F=float("nan")), "sigma_F"),
    (dict(rule="sgd"), "rule"),
    (dict(dtype=torch.int32), "dtype"),
    (dict(backend="gpu"), "backend"),
    (dict(backend="numba", dtype=torch.float32), "backend"),
    (dict(threads=0), "threads"),
])
def test_bad_input(kwargs, match):
    s0 = theory.random_state(2, 2, D=100, seed=0)
    args = dict(rule="bp", t=[0.0, 1.0], D=100, eta=1.0)
    args.update(kwargs)
    rule, t = args.pop("rule"), args.pop("t")
    with pytest.raises(ValueError, match=match):
        reduced_chain(s0, rule, t, **args)


def test_fa_needs_b():
    s0 = theory.random_state(2, 2, D=100, seed=0).replace(b=None)
    with pytest.raises(ValueError, match="b"):
        reduced_chain(s0, "fa", [0, 1], D=100, eta=1.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_in_law():
    s0 = theory.random_state(2, 2, D=100, seed=0)
    a = reduced_chain(s0, "bp", [0, 2.0], D=100, eta=1.0, replicas=2000, seed=0, device="cpu")
    b = reduced_chain(s0, "bp", [0, 2.0], D=100, eta=1.0, replicas=2000, seed=0, device="cuda")
    assert scipy.stats.ks_2samp(a["Q"][:, -1, 0, 0], b["Q"][:, -1, 0, 0]).pvalue > 1e-4


# ----------------------------------------------------------------------------- large D (slow)
@pytest.mark.slow
def test_approaches_ode_and_spread_shrinks_like_inverse_sqrt_D():
    s0 = theory.random_state(2, 2, D=10_000, seed=5)
    t = np.array([0.0, 2.0])
    ode = theory.integrate(s0, "bp", t, eta=1.0)
    Ds, stds, errs = [200, 800, 3200], [], []
    R_ = 400
    for D in Ds:
        out = reduced_chain(s0, "bp", t, D=D, eta=1.0, replicas=R_, seed=D)
        q = out["Q"][:, -1, 0, 0]
        stds.append(q.std(ddof=1))
        errs.append(abs(q.mean() - ode.Q[-1, 0, 0]) / (q.std(ddof=1) / math.sqrt(R_)))
    slope, _ = np.polyfit(np.log(Ds), np.log(stds), 1)
    # the std of a std from R_ Gaussian samples is ~ std / sqrt(2 R_): slope error ~ 0.035 / log(16) per end
    assert abs(slope + 0.5) < 0.12, (slope, stds)
    assert errs[-1] < 5, errs




@pytest.mark.parametrize("rule", ["bp", "pepita"])
def test_run_engine_reduced_matches_engine_full(rule):
    """simulate.run(engine="reduced") against simulate.run(engine="full"), same init, in law."""
    import simulate

    init = simulate.Initialisation(K=2, M=2, D=80, seed=3)
    kw = dict(eta=1.5, replicas=300, n_test=0, progress=False, dtype=torch.float64, device="cpu")
    full = simulate.run(init, rule, [0.0, 2.0], seed=1, **kw)
    red = simulate.run(init, rule, [0.0, 2.0], seed=2, engine="reduced", **kw)
    assert red.params["engine"] == "reduced" and red.Q.shape == full.Q.shape
    np.testing.assert_allclose(red.Q[:, 0], full.Q[:, 0], atol=1e-12)
    _assert_same_law(full, red)


# ----------------------------------------------------------------------------- finite-size study
def test_plateau_escape_times_definition():
    from simulate import plateau_escape_times

    t = np.array([0.0, 1.0, 2.0, 3.0])
    eg = np.array([[0.5, 0.02, 0.02 * 0.5 ** 0.0, 0.001],   # crosses 1e-2 between t=2 and 3
                   [0.5, 0.02, 0.02, 0.02],                  # never escapes: censored
                   [0.5, 0.02, 0.01 * 0.1, 0.0001]])         # crosses between t=1 and 2
    esc = plateau_escape_times(t=t, eg=eg, threshold=1e-2)
    # log-linear interpolation: log(0.02) -> log(0.001) reaches log(0.01) at fraction log 2 / log 20
    assert esc[0] == pytest.approx(2 + math.log(2) / math.log(20), rel=1e-12)
    assert np.isnan(esc[1])
    assert esc[2] == pytest.approx(1 + math.log(2) / math.log(20), rel=1e-12)
    with pytest.raises(ValueError, match="threshold"):
        plateau_escape_times(t=t, eg=eg, threshold=-1)


def test_finite_size_study_table():
    from simulate import finite_size_study

    rows = finite_size_study("bp", Ds=(50, 100), replicas=16, eta=2.0, t_max=4.0, dt=0.5, threshold=0.3,
                             spread_times=(1.0, 4.0), progress=False)
    assert [r["D"] for r in rows] == [50, 100]
    for r in rows:
        assert r["status"] == 0 and 0 <= r["escaped_fraction"] <= 1
        assert {"escape_q0.5", "eg_std@1", "eg_mean@4", "ode_escape"} <= set(r)
        assert r["eg_std@4"] > 0
