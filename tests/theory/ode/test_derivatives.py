"""The Jacobian of the ODE right-hand side (theory.ode.derivatives): against an exact symbolic derivative (linear g,
where the ODE is a polynomial in the order parameters), against plain finite differences for every rule, view and
option, as directional derivatives, and that each check can fail."""

import dataclasses

import numpy as np
import pytest
import sympy as sp

import theory
from theory.expectations import closed as _closed
from theory.ode.derivatives import _independent, dynamics_jacobian, state_labels
from theory.ode.dynamics import Dynamics, make_dynamics

# ----------------------------------------------------------------------------------------------- helpers


def _state(K=2, M=2, seed=1):
    return theory.random_state(K, M, D=400, seed=seed)


def _sym_y(rng, n, K):
    """A random direction of the flat state whose Q block is symmetric."""
    d = rng.standard_normal(n)
    q = d[: K * K].reshape(K, K)
    d[: K * K] = (0.5 * (q + q.T)).ravel()
    return d


def _fd_state(dyn, y, h=1e-5, t=0.0):
    """Plain central differences of dyn.rhs along each independent coordinate, rows k <= l of Q."""
    E, rows, _ = _independent(dyn.K, dyn.M, dyn.mirror)
    cols = [(dyn.rhs(y + h * E[:, j], t) - dyn.rhs(y - h * E[:, j], t)) / (2 * h) for j in range(E.shape[1])]
    return np.stack(cols, axis=1)[rows]


def _fd_hyper(dyn, y, name, h=1e-5):
    hp = dyn.hyper
    at = lambda val: dataclasses.replace(dyn, hyper=dataclasses.replace(hp, **{name: val})).rhs(y)  # noqa: E731
    val = getattr(hp, name)
    return (at(val + h) - at(val - h)) / (2 * h)


# ----------------------------------------------------------------------------------------------- exact: linear g


def _linear_ode(rule, K, M, st, *, eta, eta_v, sigma, sigma_F, kappa, batch, eta_F=0.0, kappa_F=0.0):
    """The ODE of THEORY.md section 4 for g(z) = z, derived here with sympy (independently of the package).

    With g linear every field is a linear form in z = (lambda, nu, phi) ~ N(0, Omega): e = c . z - sigma zeta with
    c = (v, -v_star, 0), so E[e z_u] = (Omega c)_u and E[e^2] = c^T Omega c + sigma^2. bp: delta_k = v_k e,
    xi = z. afa (modulated): delta_k = sigma_F S_k e, xi_u = z_u - sigma_F Omega_{phi,u} e. Last layer: e lambda_k.
    Mirroring (f <- f + eta_F yhat_xi xi / sqrt D - eta_F kappa_F f / D, yhat_xi = v . lambda_xi): dS_k +=
    eta_F ((Q v)_k - kappa_F S_k), dU = eta_F (R^T v - kappa_F U), dP = 2 eta_F (v . S - kappa_F P) + eta_F^2 v^T Q v.
    Returns (f as a sympy Matrix in the independent coordinates, their symbols, the hyper symbols).
    """
    q = {(k, l): sp.Symbol(f"q{k}{l}") for k in range(K) for l in range(k, K)}
    Q = sp.Matrix(K, K, lambda k, l: q[min(k, l), max(k, l)])
    R = sp.Matrix(K, M, lambda k, m: sp.Symbol(f"r{k}{m}"))
    S = sp.Matrix(K, 1, lambda k, _: sp.Symbol(f"s{k}"))
    v = sp.Matrix(K, 1, lambda k, _: sp.Symbol(f"v{k}"))
    mirror = eta_F != 0.0
    U = sp.Matrix(M, 1, lambda m, _: sp.Symbol(f"u{m}")) if mirror else sp.Matrix(st.U)
    P = sp.Symbol("p") if mirror else sp.Float(st.P)
    T = sp.Matrix(st.T)
    vs = sp.Matrix(st.v_star)
    h_eta, h_eta_v, h_sigma, h_sigma_F, h_kappa, h_eta_F, h_kappa_F = sp.symbols(
        "eta eta_v sigma sigma_F kappa eta_F kappa_F")
    om = sp.zeros(K + M + 1, K + M + 1)
    om[:K, :K] = Q
    om[:K, K:K + M] = R
    om[K:K + M, :K] = R.T
    om[K:K + M, K:K + M] = T
    om[:K, -1] = S
    om[-1, :K] = S.T
    om[K:K + M, -1] = U
    om[-1, K:K + M] = U.T
    om[-1, -1] = P
    c = sp.Matrix.vstack(v, -vs, sp.zeros(1, 1))
    Ez = om * c                                  # E[e z_u]
    Ee2 = (c.T * om * c)[0, 0] + h_sigma**2      # E[e^2]
    if rule == "bp":
        a = v                                    # delta_k = a_k e
        X = a * Ez.T                             # E[delta_k xi_u]
    else:
        a = h_sigma_F * S
        X = a * (Ez.T - h_sigma_F * om[-1, :] * Ee2)
    DD = a * a.T * Ee2
    XQ = X[:, :K]
    dQ = -h_eta * (XQ + XQ.T) + h_eta**2 / batch * DD - 2 * h_eta * h_kappa * Q
    dR = -h_eta * X[:, K:K + M] - h_eta * h_kappa * R
    dS = -h_eta * X[:, -1] - h_eta * h_kappa * S
    dv = -h_eta_v * Ez[:K, 0]
    parts = [dQ[k, l] for k in range(K) for l in range(k, K)] + list(dR) + list(dS) + list(dv)
    coords = list(q.values()) + list(R) + list(S) + list(v)
    if mirror:
        dS_m = h_eta_F * (Q * v - h_kappa_F * S)
        dU = h_eta_F * (R.T * v - h_kappa_F * U)
        dP = 2 * h_eta_F * ((v.T * S)[0, 0] - h_kappa_F * P) + h_eta_F**2 * (v.T * Q * v)[0, 0]
        n_q = len(q) + K * M
        for k in range(K):
            parts[n_q + k] += dS_m[k]
        parts += list(dU) + [dP]
        coords += list(U) + [P]
    hyper = dict(eta=(h_eta, eta), eta_v=(h_eta_v, eta_v), sigma=(h_sigma, sigma), sigma_F=(h_sigma_F, sigma_F),
                 weight_decay=(h_kappa, kappa), eta_F=(h_eta_F, eta_F), kappa_F=(h_kappa_F, kappa_F))
    return sp.Matrix(parts), coords, hyper


LINEAR_CASES = [
    ("bp", 1, 1, dict(sigma=0.0, weight_decay=0.0, batch=1)),
    ("bp", 2, 2, dict(sigma=0.3, weight_decay=0.05, batch=3)),
    ("bp", 2, 1, dict(sigma=0.2, weight_decay=0.0, batch=1, eta_F=0.3, kappa_F=0.1)),
    ("afa", 2, 2, dict(sigma=0.1, weight_decay=0.02, batch=2)),
]


def _linear_exact(rule, K, M, opts, seed=3):
    st = _state(K, M, seed)
    eta, eta_v, sigma_F = 0.7, 0.4, 0.8
    dyn = make_dynamics(st, rule, eta=eta, eta_v=eta_v, sigma_F=sigma_F, g="linear", **opts)
    f, coords, hyper = _linear_ode(rule, K, M, st, eta=eta, eta_v=eta_v, sigma=opts["sigma"], sigma_F=sigma_F,
                                   kappa=opts["weight_decay"], batch=opts["batch"], eta_F=opts.get("eta_F", 0.0),
                                   kappa_F=opts.get("kappa_F", 0.0))
    y = st.to_vector(mirror=dyn.mirror)
    E, rows, _ = _independent(K, M, dyn.mirror)
    x = E.T @ y / E.sum(axis=0)
    subs = dict(zip(coords, x)) | {s: val for s, val in hyper.values()}
    return dyn, y, f, coords, hyper, subs, rows


def _num(expr, subs):
    syms = list(subs)
    return np.array(sp.lambdify(syms, expr, "numpy")(*[subs[k] for k in syms]), dtype=float)


@pytest.mark.parametrize("rule,K,M,opts", LINEAR_CASES)
def test_state_jacobian_equals_exact_derivative_for_linear_g(rule, K, M, opts):
    """g linear: the ODE is a polynomial in the order parameters; sympy differentiates it exactly."""
    dyn, y, f, coords, _, subs, rows = _linear_exact(rule, K, M, opts)
    # the derivation above is the package's ODE (else the comparison below would mean nothing)
    np.testing.assert_allclose(dyn.rhs(y)[rows], _num(f, subs).ravel(), rtol=1e-12, atol=1e-13)
    exact = _num(f.jacobian(coords), subs)
    J = dynamics_jacobian(dyn, y, coordinates="independent")
    scale = np.abs(exact).max()
    assert np.abs(J.matrix - exact).max() <= 1e-8 * scale
    assert np.all(np.abs(J.matrix - exact) <= J.error + 1e-13 * scale)  # the error estimate bounds the error
    assert J.rows == J.columns == state_labels(K, M, dyn.mirror, "independent")


@pytest.mark.parametrize("rule,K,M,opts", LINEAR_CASES[1:])
def test_hyper_jacobian_equals_exact_derivative_for_linear_g(rule, K, M, opts):
    dyn, y, f, _, hyper, subs, _ = _linear_exact(rule, K, M, opts)
    names = ("eta", "eta_v", "sigma", "sigma_F", "weight_decay") + (("eta_F", "kappa_F") if dyn.mirror else ())
    exact = _num(f.jacobian([hyper[nm][0] for nm in names]), subs)
    J = dynamics_jacobian(dyn, y, wrt=names, coordinates="independent")
    assert J.columns == names
    assert np.abs(J.matrix - exact).max() <= 1e-8 * np.abs(exact).max()


def test_exact_comparison_can_fail(monkeypatch):
    """A deliberately altered term of the right-hand side (eta^2 / B -> eta^2 / (B + 1) in dQ) is caught."""
    rule, K, M, opts = LINEAR_CASES[1]
    dyn, y, f, coords, _, subs, _ = _linear_exact(rule, K, M, opts)
    exact = _num(f.jacobian(coords), subs)
    orig = _closed.assemble
    monkeypatch.setattr(_closed, "assemble", lambda *a, batch=1, **kw: orig(*a, batch=batch + 1, **kw))
    monkeypatch.setattr("theory.ode.dynamics.assemble", _closed.assemble)
    mutated = dataclasses.replace(dyn, use_jit=False)
    J = dynamics_jacobian(mutated, y, coordinates="independent")
    assert np.abs(J.matrix - exact).max() > 1e-3 * np.abs(exact).max()


# ----------------------------------------------------------------------------------------------- every rule and view

FD_CASES = [
    ("bp", "erf", dict(sigma=0.2, weight_decay=0.01, batch=3)),
    ("bp", "relu", dict(train_second_layer=False)),
    ("fa", "erf", dict(eta_F=0.2, kappa_F=0.1)),
    ("fa", "relu", dict(sigma=0.2)),
    ("afa", "erf", dict(weight_decay=0.02, batch=2)),
    ("afa", "relu", dict(eta_F=0.3, train_second_layer=False)),
    ("pepita", "erf", dict(weight_decay=0.01, eta_F=0.2)),
]


@pytest.mark.parametrize("rule,g,opts", FD_CASES, ids=[f"{r}-{g}-{'-'.join(o)}" for r, g, o in FD_CASES])
def test_jacobian_matches_finite_differences(rule, g, opts):
    st = _state(seed=2)
    dyn = make_dynamics(st, rule, eta=0.6, sigma_F=0.7, g=g, **opts)
    y = st.to_vector(mirror=dyn.mirror)
    J = dynamics_jacobian(dyn, y, coordinates="independent")
    fd = _fd_state(dyn, y)
    scale = np.abs(fd).max()
    assert np.abs(J.matrix - fd).max() <= 1e-6 * scale
    assert J.relative_error < 1e-8
    names = ("eta", "sigma_F") + tuple(n for n in ("sigma", "weight_decay", "eta_F") if opts.get(n))
    Jh = dynamics_jacobian(dyn, y, wrt=names)
    for j, name in enumerate(names):
        col = _fd_hyper(dyn, y, name)
        assert np.abs(Jh.matrix[:, j] - col).max() <= 1e-6 * max(np.abs(col).max(), 1e-3 * scale), name


@pytest.mark.parametrize("rule,g,quadrature", [("bp", "erf", None), ("pepita", "erf", None), ("bp", "tanh", None),
                                               ("fa", "erf", theory.GaussHermite(6))])
def test_directional_derivative(rule, g, quadrature, rng):
    """J @ d = (f(y + h d) - f(y - h d)) / 2h for random symmetric d (packed coordinates); 0 for an antisymmetric
    Q direction (f reads the symmetric part of Q)."""
    st = _state(seed=4)
    dyn = make_dynamics(st, rule, eta=0.5, sigma_F=0.6, g=g, quadrature=quadrature)
    y = st.to_vector()
    J = dynamics_jacobian(dyn, y)
    assert J.rows == J.columns == state_labels(2, 2)
    h = 1e-5
    for _ in range(3):
        d = _sym_y(rng, y.size, 2)
        fd = (dyn.rhs(y + h * d) - dyn.rhs(y - h * d)) / (2 * h)
        assert np.abs(J.matrix @ d - fd).max() <= 1e-7 * np.abs(fd).max()
    anti = np.zeros(y.size)
    anti[1], anti[2] = 1.0, -1.0
    assert np.abs(J.matrix @ anti).max() <= 1e-12 * np.abs(J.matrix).max()


def test_packed_and_independent_coordinates_agree():
    st = _state(seed=5)
    dyn = make_dynamics(st, "bp", eta=0.5)
    y = st.to_vector()
    Jp = dynamics_jacobian(dyn, y)
    Ji = dynamics_jacobian(dyn, y, coordinates="independent")
    E, rows, _ = _independent(2, 2, False)
    np.testing.assert_allclose((Jp.matrix @ E)[rows], Ji.matrix, rtol=0, atol=1e-12 * np.abs(Ji.matrix).max())
    np.testing.assert_array_equal(Jp.matrix[1], Jp.matrix[2])  # rows dQ_01 = dQ_10
    np.testing.assert_allclose(Jp.rhs, dyn.rhs(y), rtol=1e-15)
    assert Jp.entry("Q[0,1]", "v[1]") == Jp.matrix[1, -1]


def test_public_jacobian_and_dynamics_method():
    st = _state(seed=6)
    J = theory.jacobian(st, "afa", eta=0.5, sigma_F=0.7, wrt=("eta", "sigma_F"))
    dyn = make_dynamics(st, "afa", eta=0.5, sigma_F=0.7)
    J2 = dyn.jacobian(st.to_vector(), wrt=("eta", "sigma_F"))
    np.testing.assert_array_equal(J.matrix, J2.matrix)
    assert J.rows == state_labels(2, 2) and J.columns == ("eta", "sigma_F")
    assert list(J.to_frame().columns) == ["eta", "sigma_F"]


def test_schedule_state_jacobian_is_the_one_at_its_rate():
    """With eta(t) a schedule, df/dy at t is the Jacobian of the constant-rate ODE at eta(t)."""
    st = _state(seed=7)
    sched = theory.PowerLaw(0.8, t0=2.0)
    t = 3.0
    J = theory.jacobian(st, "bp", eta=sched, eta_v=0.3, t=t)
    Jc = theory.jacobian(st, "bp", eta=float(sched(t)), eta_v=0.3)
    np.testing.assert_allclose(J.matrix, Jc.matrix, rtol=0, atol=1e-9 * np.abs(Jc.matrix).max())


def test_sigma_at_zero_and_eta_at_its_bound():
    """f is even in sigma: df/dsigma = 0 at sigma = 0; at eta = 0 the one-sided extrapolation gives
    df/deta = -(the first-order terms), i.e. the rhs at eta = 1 minus its eta^2 part: check by finite differences."""
    st = _state(seed=8)
    dyn = make_dynamics(st, "bp", eta=0.0, eta_v=0.3)
    y = st.to_vector()
    J = dynamics_jacobian(dyn, y, wrt=("sigma", "eta"))
    assert np.all(J.matrix[:, 0] == 0.0)
    at = lambda e: dataclasses.replace(dyn, hyper=dataclasses.replace(dyn.hyper, eta=e)).rhs(y)  # noqa: E731
    h = 1e-4
    fd = (-3 * at(0.0) + 4 * at(h) - at(2 * h)) / (2 * h)  # second-order one-sided
    assert np.abs(J.matrix[:, 1] - fd).max() <= 1e-6 * np.abs(fd).max()


# ----------------------------------------------------------------------------------------------- the checks can fail


def test_mutated_compiled_rhs_changes_the_jacobian(monkeypatch):
    """An extra term 0.01 * Q_00 * v_1 in dv_0/dt of the compiled right-hand side shows in exactly the entries it
    must: the Jacobian is of the function that serves the ODE, not of a copy."""
    st = _state(seed=9)
    dyn = make_dynamics(st, "bp", eta=0.5)
    y = st.to_vector()
    J = dynamics_jacobian(dyn, y)
    fn, p = dyn.compiled()

    def mutated(t, yy, pp, dy):
        fn(t, yy, pp, dy)
        dy[-2] += 0.01 * yy[0] * yy[-1]

    monkeypatch.setattr(Dynamics, "compiled", lambda self: (mutated, p))
    Jm = dynamics_jacobian(dataclasses.replace(dyn), y)
    delta = Jm.matrix - J.matrix
    expect = np.zeros_like(delta)
    expect[-2, 0], expect[-2, -1] = 0.01 * y[-1], 0.01 * y[0]
    np.testing.assert_allclose(delta, expect, rtol=0, atol=1e-9)


def test_finite_difference_check_can_fail(monkeypatch):
    """The finite-difference comparison catches a Jacobian that is off in one entry."""
    st = _state(seed=2)
    dyn = make_dynamics(st, "bp", eta=0.6)
    y = st.to_vector()
    J = dynamics_jacobian(dyn, y, coordinates="independent").matrix.copy()
    fd = _fd_state(dyn, y)
    assert np.abs(J - fd).max() <= 1e-6 * np.abs(fd).max()
    J[3, 4] *= 1.001
    assert np.abs(J - fd).max() > 1e-6 * np.abs(fd).max()


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_input_is_a_clear_error():
    st = _state(seed=1)
    with pytest.raises(ValueError, match="eta is a schedule.*only a constant"):
        theory.jacobian(st, "bp", eta=theory.PowerLaw(0.5, t0=1.0), wrt="eta")
    with pytest.raises(ValueError, match="wrt='foo' is not a continuous hyper-parameter"):
        theory.jacobian(st, "bp", eta=0.5, wrt="foo")
    with pytest.raises(ValueError, match="batch.*integer"):
        theory.jacobian(st, "bp", eta=0.5, wrt=("eta", "batch"))
    with pytest.raises(ValueError, match="eta_F.*needs feedback mirroring"):
        theory.jacobian(st, "bp", eta=0.5, wrt="eta_F")
    with pytest.raises(ValueError, match="twice"):
        theory.jacobian(st, "bp", eta=0.5, wrt=("eta", "eta"))
    with pytest.raises(ValueError, match="coordinates="):
        theory.jacobian(st, "bp", eta=0.5, coordinates="full")
    with pytest.raises(ValueError, match="step must be > 0"):
        theory.jacobian(st, "bp", eta=0.5, step=0.0)
    with pytest.raises(TypeError, match="unknown option 'wrtt'"):
        theory.jacobian(st, "bp", eta=0.5, wrtt="eta")
    dyn = make_dynamics(st, "bp", eta=0.5)
    with pytest.raises(ValueError, match=r"y must be the flat state of shape \(12,\)"):
        dyn.jacobian(np.zeros(11))
    with pytest.raises(ValueError, match="non-finite"):
        dyn.jacobian(np.full(12, np.nan))


# ----------------------------------------------------------------------------------------------- a singular Omega


def _learnt_state():
    """The student that has learnt its teacher (Q = R = T, v = v_star, S = U): Omega is singular."""
    st = _state(seed=1)
    return theory.OrderParams(Q=st.T, R=st.T, T=st.T, v=st.v_star, v_star=st.v_star, S=st.U, U=st.U, P=st.P)


def test_jacobian_at_the_learnt_fixed_point_erf():
    """At the fixed point f = 0 of perfect learning (singular Omega) the erf closed forms are analytic: the
    Jacobian is accurate there and matches plain finite differences."""
    st = _learnt_state()
    dyn = make_dynamics(st, "bp", eta=0.5)
    y = st.to_vector()
    assert np.abs(dyn.rhs(y)).max() < 1e-12
    J = dynamics_jacobian(dyn, y, coordinates="independent")
    fd = _fd_state(dyn, y)
    assert J.relative_error < 1e-8
    assert np.abs(J.matrix - fd).max() <= 1e-6 * np.abs(fd).max()


def test_error_estimate_flags_a_non_smooth_view():
    """relu's closed forms are not analytic at correlation 1 (singular Omega): the estimate says so."""
    st = _learnt_state()
    J = theory.jacobian(st, "bp", eta=0.5, g="relu")
    assert J.relative_error > 1e-6
