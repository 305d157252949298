"""Each rule's closed-form right-hand side against the per-sample update it comes from.

Two independent checks:
1. the expectations (X = E[delta_k xi_u], DD = E[delta_k delta_l], EH = E[e_out h_k]) and the
   assembled dQ, dR, dS, dv against Monte Carlo averages of THEORY.md section 3 written out here
   by hand from the fields (not through Rule.local_update), at random states, within 5 standard
   errors;
2. Rule.local_update against an explicit D-dimensional weight update on single samples: the
   change of the order parameters after one step equals (1/D) times the per-sample terms the
   ODE is built from (an exact identity, no Monte Carlo).
"""

import numpy as np
import pytest
import scipy.special

import theory
from tests.helpers import random_state
from theory.expectations.closed import closed_form_terms

N = 1_000_000
Z = 5.0


def g(z):
    return scipy.special.erf(z / np.sqrt(2))


def dg(z):
    return np.sqrt(2 / np.pi) * np.exp(-z * z / 2)


def by_hand(st, name, presynaptic, z, zeta, sigma, sigma_F):
    """One-sample quantities of THEORY.md section 3, written independently of theory.rules._base."""
    K, M = st.K, st.M
    lam, nu, phi = z[:, :K], z[:, K:K + M], z[:, -1]
    y = g(nu) @ st.v_star + sigma * zeta
    e = g(lam) @ st.v - y
    coef = {"bp": st.v, "fa": st.b, "afa": sigma_F * st.S}[name]
    delta = coef * dg(lam) * e[:, None]
    if presynaptic == "modulated":  # xt = x - sigma_F e f / sqrt D
        xi = np.concatenate(
            [lam - sigma_F * e[:, None] * st.S, nu - sigma_F * e[:, None] * st.U, (phi - sigma_F * e * st.P)[:, None]],
            1,
        )
    else:
        xi = z
    return delta, xi, e, g(lam)


CASES = [("bp", "clean"), ("fa", "clean"), ("afa", "modulated"), ("afa", "clean")]


@pytest.mark.parametrize("name,presynaptic", CASES)
@pytest.mark.parametrize("seed", range(2))
def test_terms_against_monte_carlo(name, presynaptic, seed):
    rng = np.random.default_rng(100 + seed)
    K, M = (2, 2) if seed == 0 else (3, 2)
    st = random_state(rng, K, M)
    sigma, sigma_F = (0.0, 1.0) if seed == 0 else (0.4, -0.7)
    rule = theory.make_rule(name, presynaptic=presynaptic)
    X, DD, EH = closed_form_terms(
        rule, st.Q, st.R, st.T, st.S, st.U, st.P, st.v, st.v_star, st.b, sigma=sigma, sigma_F=sigma_F
    )
    L = np.linalg.cholesky(st.omega)
    z = rng.standard_normal((N, K + M + 1)) @ L.T
    zeta = rng.standard_normal(N)
    delta, xi, e, h = by_hand(st, name, presynaptic, z, zeta, sigma, sigma_F)

    def check(closed, samples, what):
        mean = samples.mean(0)
        se = samples.std(0) / np.sqrt(N)
        bad = np.abs(closed - mean) > Z * se + 1e-12
        assert not bad.any(), f"{what}: closed {closed[bad]} vs MC {mean[bad]} +- {se[bad]}"

    check(X, delta[:, :, None] * xi[:, None, :], "X = E[delta xi]")
    check(DD, delta[:, :, None] * delta[:, None, :], "DD = E[delta delta]")
    check(EH, e[:, None] * h, "EH = E[e g(lambda)]")

    # the assembled right-hand side, with weight decay and separate eta_v
    eta, eta_v, kappa = 0.7, 0.3, 0.05
    d = theory.rhs(st, rule, eta=eta, eta_v=eta_v, sigma=sigma, sigma_F=sigma_F, weight_decay=kappa)
    dQ_samples = (-eta * (delta[:, :, None] * xi[:, None, :K] + delta[:, None, :] * xi[:, :K, None])
                  + eta**2 * delta[:, :, None] * delta[:, None, :] - 2 * eta * kappa * st.Q)
    check(d["Q"], dQ_samples, "dQ/dt")
    check(d["R"], -eta * delta[:, :, None] * xi[:, None, K:K + M] - eta * kappa * st.R, "dR/dt")
    check(d["S"], -eta * delta * xi[:, -1:] - eta * kappa * st.S, "dS/dt")
    check(d["v"], -eta_v * e[:, None] * h, "dv/dt")


@pytest.mark.parametrize("name,presynaptic,error", [
    ("bp", "clean", "first"), ("fa", "clean", "first"), ("afa", "modulated", "first"), ("afa", "clean", "first"),
    ("pepita", "modulated", "first"), ("pepita", "clean", "first"), ("pepita", "modulated", "modulated"),
])
def test_local_update_is_the_weight_update(name, presynaptic, error):
    """One explicit D-dimensional step changes the order parameters by exactly the ODE's per-sample terms / D."""
    rng = np.random.default_rng(7)
    K, M, D = 3, 2, 400
    eta, eta_v, kappa, sigma, sigma_F = 0.8, 0.5, 0.1, 0.3, 0.9
    W, Ws, f = rng.standard_normal((K, D)), rng.standard_normal((M, D)), rng.standard_normal(D)
    v, vs, b = rng.standard_normal(K), rng.standard_normal(M), rng.standard_normal(K)
    st = theory.state_from_weights(W, Ws, v, vs, f, b)
    rule = theory.make_rule(name, presynaptic=presynaptic, error=error)
    for _ in range(3):
        x, zeta = rng.standard_normal(D), rng.standard_normal()
        # explicit step, THEORY.md sections 1 and 3
        lam, nu, phi = W @ x / np.sqrt(D), Ws @ x / np.sqrt(D), f @ x / np.sqrt(D)
        y = vs @ g(nu) + sigma * zeta
        e = v @ g(lam) - y
        F = sigma_F * f / np.sqrt(D)
        xt = x - F * e
        if name == "pepita":
            lam_t = W @ xt / np.sqrt(D)
            delta = g(lam) - g(lam_t)
            e_out = v @ g(lam_t) - y if error == "modulated" else e
            h = g(lam_t)
        else:
            coef = {"bp": v, "fa": b, "afa": sigma_F * (W @ f / D)}[name]
            delta, e_out, h = coef * dg(lam) * e, e, g(lam)
        xp = xt if presynaptic == "modulated" else x
        W1 = W - (eta / np.sqrt(D)) * np.outer(delta, xp) - (eta * kappa / D) * W
        v1 = v - (eta_v / D) * e_out * h
        new = theory.state_from_weights(W1, Ws, v1, vs, f, b)
        # the same step through the rule's one-sample definition on the fields
        up = rule.local_update(lam, nu, np.float64(zeta), v=v, v_star=vs, S=st.S, b=b, sigma=sigma, sigma_F=sigma_F)
        Ov = st.omega[:, -1]
        xi = np.concatenate([lam, nu, [phi]]) + up.alpha * Ov
        xp2 = (x @ x + 2 * up.alpha * phi + up.alpha**2 * st.P) / D  # |xp|^2 / D
        c = eta * kappa / D
        Q1 = ((1 - c) ** 2 * st.Q - (1 - c) * (eta / D) * (np.outer(up.delta, xi[:K]) + np.outer(xi[:K], up.delta))
              + (eta**2 / D) * np.outer(up.delta, up.delta) * xp2)
        np.testing.assert_allclose(new.Q, Q1, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(
            new.R, (1 - c) * st.R - (eta / D) * np.outer(up.delta, xi[K : K + M]), rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(new.S, (1 - c) * st.S - (eta / D) * up.delta * xi[-1], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(new.v, st.v - (eta_v / D) * up.e_out * up.h, rtol=1e-12, atol=1e-14)
        W, v, st = W1, v1, new


def test_fa_with_b_equal_v_is_bp(rng):
    st = random_state(rng, 3, 2)
    st = st.replace(b=st.v)
    t = np.linspace(0, 20, 11)
    # dv/dt moves v but not b, so they agree only at t = 0 exactly; compare the right-hand sides there,
    # and whole trajectories with a frozen second layer (then b = v at all times).
    ra, rb = theory.rhs(st, "bp", eta=0.8), theory.rhs(st, "fa", eta=0.8)
    for k in ra:
        np.testing.assert_allclose(ra[k], rb[k], rtol=1e-14, atol=1e-15)
    a = theory.integrate(st, "bp", t, eta=0.8, sigma=0.1, train_second_layer=False)
    b = theory.integrate(st, "fa", t, eta=0.8, sigma=0.1, train_second_layer=False)
    np.testing.assert_allclose(a.Q, b.Q, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(a.eg, b.eg, rtol=1e-12, atol=1e-13)


def test_afa_with_sigma_F_S_equal_v_is_bp_on_the_clean_input(rng):
    st = random_state(rng, 2, 2)
    sigma_F = 0.5
    st = st.replace(v=sigma_F * st.S)
    ra = theory.rhs(st, "bp", eta=0.6)
    rb = theory.rhs(st, "afa", eta=0.6, sigma_F=sigma_F, presynaptic="clean")
    for k in ("Q", "R", "v"):
        np.testing.assert_allclose(ra[k], rb[k], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name,presynaptic", CASES)
@pytest.mark.parametrize("K,M", [(2, 2), (3, 1), (1, 3)])
def test_compiled_rhs_equals_numpy_reference(name, presynaptic, K, M, rng):
    """The numba single-state right-hand side is the batched numpy one, entry by entry."""
    from theory._codegen.rule import HAVE_NUMBA

    if not HAVE_NUMBA:
        pytest.skip("numba not installed")
    st = random_state(rng, K, M)
    kw = dict(presynaptic=presynaptic, eta=0.7, eta_v=0.3, sigma=0.2, sigma_F=-0.8, weight_decay=0.05)
    jit = theory.make_dynamics(st, name, **kw)
    ref = theory.make_dynamics(st, name, **kw)
    object.__setattr__(ref, "use_jit", False)
    assert jit._jit_args is not None and ref._jit_args is None
    y = st.to_vector()
    np.testing.assert_allclose(jit.rhs(y), ref.rhs(y), rtol=1e-12, atol=1e-14)
