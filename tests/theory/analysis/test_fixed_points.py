"""Fixed points of the ODEs (theory.analysis.fixed_points) and their continuation (theory.analysis.continuation).

- a found fixed point has residual <= 1e-10 and an integration started there stays put, for bp, fa, afa (erf and
  relu) and pepita (erf; relu and pepita's exponents against integration in the slow tests);
- bp, K = M = 2, erf: the plateau against Saad & Solla's reduced equations of the symmetric subspace, written out
  here from THEORY.md's ODEs and the erf integrals, independently of the package;
- the eigenvalues against the growth and decay of small perturbations integrated with the ODE (bp's plateau,
  afa's unstable teacher solutions);
- predicted escape times against integrated ODEs from x* + D^-1/2 d (slope ln D / (2 lambda_u)), from a
  Trajectory's plateau (random_state), and (slow) from a symmetric start;
- continuation locates bp's critical learning rate at the specialised solution (a sweep of integrated
  perturbations locates it independently), the fold of afa's plateau in sigma_F (a sweep of direct solves) and a
  Hopf point of afa's plateau in eta (central-difference Jacobians at a sweep of direct solves);
- the bifurcation plot; bad input: errors that name the parameter; a failed solve raises or reports.
"""


import numpy as np
import pytest
import scipy.optimize

import theory
from theory.analysis.continuation import Branch, continuation, plot_bifurcation
from theory.analysis.fixed_points import (
    FixedPoint,
    FixedPointError,
    degenerate_solution,
    fixed_point,
    specialised_solution,
    symmetric_plateau,
    teacher_constants,
)
from theory.results.summaries import crossing_time

BP_FROZEN = dict(eta=0.5, train_second_layer=False)


@pytest.fixture(scope="module")
def bp_plateau():
    return symmetric_plateau("bp", **BP_FROZEN)


# ----------------------------------------------------------------------------------------------- Saad & Solla


def _I3(C):
    """E[g'(a) b g(c)] for g(x) = erf(x / sqrt 2), C the 3 x 3 covariance of (a, b, c) (Saad & Solla 1995)."""
    l3 = (1 + C[0, 0]) * (1 + C[2, 2]) - C[0, 2] ** 2
    return 2 / np.pi / np.sqrt(l3) * (C[1, 2] * (1 + C[0, 0]) - C[0, 1] * C[0, 2]) / (1 + C[0, 0])


def _I4(C):
    """E[g'(a) g'(b) g(c) g(d)], C the 4 x 4 covariance of (a, b, c, d) (Saad & Solla 1995)."""
    l4 = (1 + C[0, 0]) * (1 + C[1, 1]) - C[0, 1] ** 2
    l0 = (l4 * C[2, 3] - C[1, 2] * C[1, 3] * (1 + C[0, 0]) - C[0, 2] * C[0, 3] * (1 + C[1, 1])
          + C[0, 1] * C[0, 2] * C[1, 3] + C[0, 1] * C[0, 3] * C[1, 2])
    l1 = (
        l4 * (1 + C[2, 2])
        - C[1, 2] ** 2 * (1 + C[0, 0])
        - C[0, 2] ** 2 * (1 + C[1, 1])
        + 2 * C[0, 1] * C[0, 2] * C[1, 2]
    )
    l2 = (
        l4 * (1 + C[3, 3])
        - C[1, 3] ** 2 * (1 + C[0, 0])
        - C[0, 3] ** 2 * (1 + C[1, 1])
        + 2 * C[0, 1] * C[0, 3] * C[1, 3]
    )
    return 4 / np.pi ** 2 / np.sqrt(l4) * np.arcsin(l0 / np.sqrt(l1 * l2))


def _saad_solla(z, eta):
    """d(Q, C, R, S)/dt of the symmetric subspace of bp, K = M = 2, T = I, v = v* = 1 (frozen), sigma = 0:
    Q_ii = Q, Q_12 = C, R_ii = R, R_12 = R_21 = S. Fields (lambda_1, lambda_2, nu_1, nu_2); with e = yhat - y,
    dR_in/dt = eta [sum_m I3(l_i, nu_n, nu_m) - sum_j I3(l_i, nu_n, l_j)],
    dQ_ik/dt = eta [sum_m I3(l_i, l_k, nu_m) - sum_j I3(l_i, l_k, l_j)] + (i <-> k)
               + eta^2 [sum_jl I4(l_i, l_k, l_j, l_l) - 2 sum_jm I4(l_i, l_k, l_j, nu_m) + sum_mn I4(l_i, l_k, nu_m,
               nu_n)]."""
    Q, C, R, S = z
    om = np.array([[Q, C, R, S], [C, Q, S, R], [R, S, 1, 0], [S, R, 0, 1]])
    lam, nu = [0, 1], [2, 3]
    cov = lambda *idx: om[np.ix_(idx, idx)]  # noqa: E731

    def lin(i, b):  # eta [sum_m I3(l_i, b, nu_m) - sum_j I3(l_i, b, l_j)]
        return eta * (sum(_I3(cov(i, b, m)) for m in nu) - sum(_I3(cov(i, b, j)) for j in lam))

    def quad(i, k):
        return eta ** 2 * (sum(_I4(cov(i, k, j, l)) for j in lam for l in lam)
                           - 2 * sum(_I4(cov(i, k, j, m)) for j in lam for m in nu)
                           + sum(_I4(cov(i, k, m, n)) for m in nu for n in nu))

    dQ = 2 * lin(0, 0) + quad(0, 0)
    dC = lin(0, 1) + lin(1, 0) + quad(0, 1)
    return np.array([dQ, dC, lin(0, 2), lin(0, 3)])


def test_bp_plateau_against_saad_solla(bp_plateau):
    fp = bp_plateau
    assert fp.success and fp.residual <= 1e-10
    # the plateau of the reduced equations (R = S), solved here from an independent guess
    sol = scipy.optimize.root(lambda y: _saad_solla([y[0], y[1], y[2], y[2]], 0.5)[:3], [0.5, 0.4, 0.4], tol=1e-14)
    Q, C, R = sol.x
    assert np.max(np.abs(_saad_solla([Q, C, R, R], 0.5))) < 1e-12
    st = fp.state
    np.testing.assert_allclose([st.Q[0, 0], st.Q[1, 1]], Q, rtol=0, atol=1e-9)
    np.testing.assert_allclose(st.Q[0, 1], C, rtol=0, atol=1e-9)
    np.testing.assert_allclose(st.R, np.full((2, 2), R), rtol=0, atol=1e-9)
    np.testing.assert_allclose(st.v, [1, 1])
    # the reduced Jacobian's exponents (central differences) are among the full space's, the escape one included
    h = 1e-6
    z0 = np.array([Q, C, R, R])
    Jr = np.stack([(_saad_solla(z0 + h * e, 0.5) - _saad_solla(z0 - h * e, 0.5)) / (2 * h) for e in np.eye(4)], axis=1)
    wr = np.linalg.eigvals(Jr)
    for w in wr:
        assert np.min(np.abs(fp.eigenvalues - w)) < 1e-7, (w, fp.eigenvalues)
    assert fp.n_unstable == 1 and np.isclose(fp.eigenvalues[0].real, np.max(wr.real), atol=1e-8)
    # the packed flat-state Jacobian (theory.jacobian's) has the same spectrum plus the spurious zero of Q's
    # antisymmetric direction (and the frozen v's two zero rows)
    flat = np.linalg.eigvals(fp.flat_jacobian().matrix)
    assert np.sum(np.abs(flat) < 1e-12) == 3
    for w in fp.eigenvalues:
        assert np.min(np.abs(flat - w)) < 1e-9
    # the escape direction is specialisation: R_ii - R_12 (antisymmetric in R, nothing in Q)
    d = np.real(fp.eigenvectors[:, 0])
    lab = fp.coordinates
    r = {k: d[lab.index(k)] for k in ("R[0,0]", "R[0,1]", "R[1,0]", "R[1,1]", "Q[0,0]")}
    assert abs(r["R[0,0]"] + r["R[0,1]"]) < 1e-8 and abs(r["R[0,0]"] - r["R[1,1]"]) < 1e-8 and abs(r["Q[0,0]"]) < 1e-8


# ----------------------------------------------------------------------------------------------- residual, stays put

CASES = [
    ("bp", dict(eta=0.5)),
    ("fa", dict(eta=0.5)),
    ("afa", dict(eta=0.5, sigma_F=1.0)),
    ("bp", dict(eta=0.5, g="relu", train_second_layer=False)),
    ("fa", dict(eta=0.5, g="relu", train_second_layer=False)),
    ("afa", dict(eta=0.5, sigma_F=0.5, g="relu", train_second_layer=False)),
]


@pytest.mark.parametrize("rule, kw", CASES, ids=[f"{r}-{kw.get('g', 'erf')}" for r, kw in CASES])
def test_plateau_is_a_fixed_point_and_stays_put(rule, kw):
    fp = symmetric_plateau(rule, **kw)
    assert isinstance(fp, FixedPoint) and fp.success, fp.message
    assert fp.residual <= 1e-10
    assert fp.n_unstable >= 1  # the plateau is a saddle
    assert fp.info["subspace_residual"] < 1e-9
    tr = theory.integrate(fp.state, rule, [0.0, 10.0, 100.0], rtol=1e-10, atol=1e-12, **kw)
    drift = max(np.max(np.abs(tr.Q[-1] - fp.state.Q)), np.max(np.abs(tr.R[-1] - fp.state.R)),
                np.max(np.abs(tr.v[-1] - fp.state.v)), np.max(np.abs(tr.S[-1] - fp.state.S)))
    assert drift < 1e-8
    assert abs(tr.eg[-1] - fp.eg) < 1e-9


def test_pepita_plateau_from_afa():
    """pepita (numerical expectations): its plateau from afa's (its first-order expansion) as the guess."""
    kw = dict(eta=0.5, sigma_F=0.5)
    afa = symmetric_plateau("afa", **kw)
    pep = symmetric_plateau("pepita", guess=afa.state, **kw)
    assert pep.success and pep.residual <= 1e-10
    assert pep.accuracy is not None and pep.accuracy < 1e-6  # distance to the exact ODE's fixed point
    assert afa.accuracy is None  # a closed form
    # pepita's fixed point is close to afa's (the expansion's error is O(sigma_F S e))
    assert np.max(np.abs(pep.state.Q - afa.state.Q)) < 0.05
    assert pep.n_unstable >= 1


def test_fixed_point_from_a_trajectory_plateau(bp_plateau):
    """A trajectory through the plateau (a symmetric start with a small asymmetry): its flattest plateau state is
    the guess for the plateau, its last one for the specialised solution."""
    s0 = teacher_constants(2).replace(Q=0.5 * np.eye(2), R=np.array([[0.3, -0.5], [0.8, 0.1]]) * 1e-3)
    tr = theory.integrate(s0, "bp", theory.default_times(3000.0), **BP_FROZEN)
    fp = fixed_point(tr, "bp", **BP_FROZEN)
    assert fp.success and fp.residual <= 1e-10 and fp.n_unstable == 1
    assert np.max(np.abs(fp.x - bp_plateau.x)) < 1e-9
    end = fixed_point(tr, "bp", point="end", **BP_FROZEN)
    assert end.stable and end.eg < 1e-12


def test_specialised_and_degenerate_solutions():
    c = theory.random_state(2, 2, D=500, seed=0)
    bp = specialised_solution("bp", eta=0.5, constants=c)
    assert bp.residual == pytest.approx(0, abs=1e-15) and bp.eg < 1e-14 and bp.stable
    flip = degenerate_solution("bp", eta=0.5, constants=c)
    assert flip.angles["teacher"] == pytest.approx(180, abs=1e-4) and flip.stable
    np.testing.assert_allclose(flip.eigenvalues, bp.eigenvalues, atol=1e-9)  # a symmetry image for bp
    for rule in ("afa", "fa"):
        fp = degenerate_solution(rule, eta=0.5, sigma_F=1.0, signs=(-1, 1), constants=c)
        assert fp.success and fp.eg < 1e-14 and fp.angles["teacher"] == pytest.approx(90, abs=1e-4)
        assert (
            fp.n_unstable + fp.n_marginal + int(np.sum(fp.eigenvalues.real < -fp.marginal_tol)) == fp.eigenvalues.size
        )


def test_afa_teacher_solutions_are_unstable():
    """afa (modulated input), f slightly correlated with the teacher (U != 0): the specialised and the degenerate
    solutions (e = 0) are saddles, and a physical perturbation of the weights (w = s w* + eps a) grows at about the
    second exponent (the first, ~2x larger, is not excited by physical perturbations: at this singular Omega some
    directions of the linearisation leave the positive semi-definite states)."""
    U = np.array([0.02, -0.03])
    c = teacher_constants(2, U=U)
    kw = dict(eta=0.5, sigma_F=1.0)
    fp = degenerate_solution("afa", signs=(-1, -1), constants=c, **kw)
    same = specialised_solution("afa", constants=c, **kw)
    np.testing.assert_allclose(fp.eigenvalues, same.eigenvalues, atol=1e-9)  # (w_k, v_k, S_k) -> -(...) symmetry
    assert fp.residual == 0 and fp.n_unstable >= 2
    rng = np.random.default_rng(0)
    f = np.array([U[0], U[1], 0, 0, np.sqrt(1 - U @ U)])
    Ws = np.hstack([np.eye(2), np.zeros((2, 3))])
    W = -Ws + 1e-5 * rng.standard_normal((2, 5))
    s0 = c.replace(Q=W @ W.T, R=W @ Ws.T, S=W @ f, v=-np.ones(2) + 1e-5 * rng.standard_normal(2))
    tr = theory.integrate(s0, "afa", [0.0, 500.0, 1000.0], rtol=1e-11, atol=1e-16, **kw)
    d = [np.linalg.norm(tr.state(i).to_vector() - fp.state.to_vector()) for i in (1, 2)]
    assert np.log(d[1] / d[0]) / 500.0 == pytest.approx(fp.eigenvalues[1].real, rel=0.1)


# ----------------------------------------------------------------------------------------------- eigenvalues


def test_eigenvalues_against_integrated_perturbations(bp_plateau):
    """Each mode's component c_i(t) of a small random perturbation grows or decays like exp(lambda_i t): measured
    at a time where |lambda_i| t is between 0.1 and 6 (so that it has changed measurably but not drowned)."""
    fp = bp_plateau
    rng = np.random.default_rng(1)
    d = rng.standard_normal(fp.eigenvalues.size)
    # a small unstable component, so that it does not outgrow the stable ones (quadratically) by t = 200
    c = np.linalg.solve(fp.eigenvectors.real, d)
    c *= 1e-7 / np.linalg.norm(c)
    c[0] = 1e-9
    eps = 1e-9
    s0 = fp.perturbed(fp.eigenvectors.real @ c, 1.0)
    times = np.array([0.0, 2.0, 10.0, 50.0, 200.0])
    tr = theory.integrate(s0, "bp", times, rtol=1e-13, atol=1e-20, **BP_FROZEN)
    assert np.all(fp.eigenvalues.imag == 0)
    c0 = fp.projections(s0).real
    checked = 0
    for i, lam in enumerate(fp.eigenvalues.real):
        ok = np.flatnonzero((np.abs(lam) * times > 0.1) & (np.abs(lam) * times < 6))
        if abs(c0[i]) < 1e-3 * eps or ok.size == 0:
            continue
        j = ok[-1]
        ci = fp.projections(tr.state(j)).real[i]
        assert np.log(ci / c0[i]) / times[j] == pytest.approx(lam, rel=1e-4, abs=1e-7)
        checked += 1
    assert checked >= fp.eigenvalues.size - 1


# ----------------------------------------------------------------------------------------------- escape


def test_escape_time_against_integration(bp_plateau):
    """From x* + D^-1/2 d (d a fixed random direction: a finite-D asymmetry of the overlaps), the predicted escape
    times match integrated ODEs, and grow like ln D / (2 lambda_u)."""
    fp = bp_plateau
    rng = np.random.default_rng(0)
    d = rng.standard_normal(fp.eigenvalues.size)
    d /= np.linalg.norm(d)
    t = np.concatenate([[0.0], np.geomspace(1e-2, 2000.0, 3000)])
    Ds = np.array([1e8, 1e12, 1e16])
    pred, meas = [], []
    for D in Ds:
        s0 = fp.perturbed(d, D ** -0.5)
        esc = fp.escape(s0)
        tr = theory.integrate(s0, "bp", t, rtol=1e-10, atol=1e-13, **BP_FROZEN)
        pred.append(esc.time)
        meas.append(crossing_time(tr.t, tr.eg, esc.level))
    pred, meas = np.array(pred), np.array(meas)
    np.testing.assert_allclose(pred, meas, rtol=2e-4)
    slope = np.polyfit(np.log(Ds), meas, 1)[0]
    assert slope == pytest.approx(esc.per_ln_D, rel=1e-3)
    assert esc.per_ln_D == pytest.approx(0.5 / fp.eigenvalues[0].real)


@pytest.mark.slow
def test_escape_scales_with_ln_D(bp_plateau):
    """From a symmetric start plus a D^-1/2 asymmetry (what a finite-D draw gives), integrated through the plateau,
    the escape time grows like ln D / (2 lambda_u), asymptotically in D."""
    fp = bp_plateau
    base = teacher_constants(2).replace(Q=0.5 * np.eye(2), R=np.zeros((2, 2)))
    xi = np.array([[0.3, -0.5], [0.8, 0.1]])
    t = np.concatenate([[0.0], np.geomspace(1e-2, 5000.0, 2000)])
    Ds = np.array([1e3, 1e5, 1e7, 1e9, 1e11, 1e13])
    times = []
    for D in Ds:
        s0 = base.replace(R=xi / np.sqrt(D))
        tr = theory.integrate(s0, "bp", t, rtol=1e-10, atol=1e-14, **BP_FROZEN)
        times.append(crossing_time(tr.t, tr.eg, 0.5 * fp.eg))
    slopes = np.diff(times) / np.diff(np.log(Ds))
    # ~2 % above 1 / (2 lambda_u): the start reaches the plateau along its slow mode (lambda ~ -5e-4), so the
    # asymmetry grows at the slightly smaller rates of the approach before it grows at lambda_u itself
    print("escape times", times, "slopes", slopes, "1/(2 lambda_u)", 0.5 / fp.eigenvalues[0].real)
    np.testing.assert_allclose(slopes, 0.5 / fp.eigenvalues[0].real, rtol=0.05)
    # measured: slopes 16.60, 16.31, 16.15, 16.05, 15.99 against 15.81: they fall towards 1 / (2 lambda_u) as the
    # escape comes later, after more of the approach (whose slow mode, -5.2e-4, is slower than the escape itself)
    assert np.all(np.diff(slopes) < 0) and np.all(slopes > 0.5 / fp.eigenvalues[0].real)
    assert slopes[-1] == pytest.approx(0.5 / fp.eigenvalues[0].real, rel=0.02)


def test_escape_from_random_initial_conditions():
    """random_state(D) (T, U measured at D, v = 1): fixed_point finds the trajectory's plateau, and the escape
    predicted from the plateau's flattest state is within 6 % of the integrated one at D = 1e5 (the linear
    prediction improves with D: 9 %, 7 %, 4.6 %, 3 % at D = 1e3 .. 1e6, measured)."""
    from theory.analysis.fixed_points import plateau_index

    s0 = theory.random_state(2, 2, D=100_000, seed=0).replace(v=np.ones(2))
    t = np.concatenate([[0.0], np.geomspace(1e-2, 5000.0, 2000)])
    tr = theory.integrate(s0, "bp", t, rtol=1e-10, atol=1e-13, **BP_FROZEN)
    fp = fixed_point(tr, "bp", **BP_FROZEN)
    assert fp.n_unstable == 1 and fp.residual <= 1e-10
    i = plateau_index(tr, fp.dynamics)
    esc = fp.escape(tr.state(i))
    measured = crossing_time(tr.t, tr.eg, esc.level)
    assert tr.t[i] + esc.time == pytest.approx(measured, rel=0.06)


# ----------------------------------------------------------------------------------------------- continuation


def _near_teacher(eps, rng):
    """Order parameters of student weights w_k = w*_k + eps a_k (teachers orthonormal, f orthogonal to them): a
    physical perturbation of the specialised solution (which sits on the boundary of the positive semi-definite
    states). The weights live in the span of w*_1, w*_2, two more directions and f (the last coordinate)."""
    A = rng.standard_normal((2, 5))
    W = np.hstack([np.eye(2), np.zeros((2, 3))]) + eps * A
    Ws = np.hstack([np.eye(2), np.zeros((2, 3))])
    f = np.eye(5)[-1]
    return teacher_constants(2).replace(Q=W @ W.T, R=W @ Ws.T, S=W @ f)


def _growth_rate(eta, fp, s0, t_end=600.0):
    """The leading exponent measured by integration: the growth rate of a perturbation of the specialised solution
    between t_end / 2 and t_end."""
    tr = theory.integrate(s0, "bp", [0.0, 0.5 * t_end, t_end], rtol=1e-10, atol=1e-14, eta=eta,
                          train_second_layer=False)
    dist = [np.linalg.norm(tr.state(i).to_vector() - fp.state.to_vector()) for i in (1, 2)]
    return np.log(dist[1] / dist[0]) / (0.5 * t_end)


def test_continuation_locates_the_critical_learning_rate():
    """bp, K = M = 2, erf, frozen v: the specialised solution loses stability as eta grows (an exponent crosses
    0: a branch point); a sweep of integrated perturbations locates the same eta."""
    fp = specialised_solution("bp", **BP_FROZEN)
    br = continuation(fp, "eta", (0.5, 4.0), direction="up")
    assert isinstance(br, Branch) and np.all(br.residual <= 1e-10)
    kinds = [b.kind for b in br.bifurcations]
    assert kinds == ["branch point"], br
    eta_c = br.bifurcations[0].value
    assert abs(br.bifurcations[0].eigenvalue.real) < 1e-9
    assert br.stable[br.values < eta_c - 1e-3].all() and (br.n_unstable[br.values > eta_c + 1e-3] > 0).all()
    # independently: integrate perturbations at a sweep of eta around eta_c and interpolate the sign change
    s0 = _near_teacher(1e-4, np.random.default_rng(2))
    etas = np.round(eta_c, 2) + np.array([-0.04, -0.02, 0.0, 0.02, 0.04])
    rates = np.array([_growth_rate(e, fp, s0) for e in etas])
    assert rates[0] < 0 < rates[-1]
    i = int(np.flatnonzero(np.diff(np.sign(rates)))[0])
    eta_sweep = etas[i] - rates[i] * (etas[i + 1] - etas[i]) / (rates[i + 1] - rates[i])
    assert eta_sweep == pytest.approx(eta_c, abs=2e-3)


def _direct_solves_up_to_the_fold(fp, rule, grid, **hyper):
    """Direct fixed-point solves at fixed sigma_F along ``grid``, each from the extrapolation of the two before,
    until one fails or jumps to another solution: the last sigma_F solved (None if none)."""
    prev, last = [(fp.hyper.sigma_F, fp.x)], None
    for sf in grid:
        (p1, x1), (p2, x2) = prev[-2:] if len(prev) > 1 else (prev[0], prev[0])
        xg = x2 if p1 == p2 else x2 + (x2 - x1) * (sf - p2) / (p2 - p1)
        r = fixed_point(fp.perturbed(xg - fp.x, 1.0), rule, sigma_F=sf, throw=False, **hyper)
        if not r.success or np.max(np.abs(r.x - xg)) > 0.05:
            break
        prev.append((sf, r.x))
        last = sf
    return last


def test_continuation_locates_the_fold_of_the_afa_plateau_in_sigma_F():
    """afa, K = M = 2, erf, eta = 0.5: the symmetric plateau (S != 0) exists up to a fold in sigma_F, where it
    meets a fixed point with one more unstable direction (beyond, afa's feedback runs away). A sweep of direct
    fixed-point solves at fixed sigma_F (each from the extrapolation of the two before) stops at the same place."""
    fp = symmetric_plateau("afa", eta=0.5, sigma_F=1.0)
    br = continuation(fp, "sigma_F", (1.0, 4.0), direction="up", max_points=150, ds_max=0.1)
    folds = [b for b in br.bifurcations if b.kind == "fold"]
    assert len(folds) == 1, br
    sf_c = folds[0].value
    assert 3.2 < sf_c < 3.3 and abs(folds[0].eigenvalue) < 1e-9
    i = folds[0].index
    assert br.n_unstable[i + 2] == br.n_unstable[i - 1] + 1  # past the fold: the other branch, one more unstable
    grid = np.concatenate([np.arange(1.05, 3.2001, 0.05), np.arange(3.202, 3.25, 0.002)])
    last = _direct_solves_up_to_the_fold(fp, "afa", grid, eta=0.5)
    assert last is not None and last < sf_c <= last + 0.002 + 1e-12


def test_continuation_locates_a_hopf_point_of_the_afa_plateau_in_eta():
    """afa, K = M = 2, erf, sigma_F = 1, frozen v: on the symmetric plateau a slow complex pair (a rotation of
    the students' feedback against each other: antisymmetric in Q, R and S) crosses the imaginary axis as eta
    grows, at eta ~ 1.104 (measured; |Re| ~ 1e-7 about it, Im ~ 1.1e-4): a Hopf point, two fewer unstable
    directions past it. Independently: direct solves at a sweep of eta and the eigenvalues of a central-difference
    Jacobian of the right-hand side (not the derived one) put the pair's sign change at the same eta."""
    from theory.analysis.fixed_points import _Coordinates

    kw = dict(sigma_F=1.0, train_second_layer=False)
    fp = symmetric_plateau("afa", eta=0.5, **kw)
    br = continuation(fp, "eta", (0.5, 1.5), direction="up")
    assert [b.kind for b in br.bifurcations] == ["hopf"], br
    hopf = br.bifurcations[0]
    assert abs(hopf.eigenvalue.real) < 1e-12 and abs(hopf.eigenvalue.imag) > 1e-5
    i = hopf.index
    assert br.n_unstable[i] == br.n_unstable[i + 1] + 2
    etas = np.array([1.04, 1.07, 1.10, 1.13, 1.16])
    real_parts = []
    for eta in etas:
        r = fixed_point(hopf.state, "afa", eta=float(eta), **kw)
        assert r.success and r.residual <= 1e-10
        co = _Coordinates.of(r.dynamics, r.state)
        h = 1e-6
        J = np.stack([(co.f(r.x + h * e) - co.f(r.x - h * e)) / (2 * h) for e in np.eye(r.x.size)], axis=1)
        w = np.linalg.eigvals(J)
        pair = w[np.abs(w.imag) > 1e-6]
        assert pair.size == 2
        real_parts.append(pair[0].real)
    real_parts = np.array(real_parts)
    assert real_parts[0] > 0 > real_parts[-1]
    j = int(np.flatnonzero(np.diff(np.sign(real_parts)))[0])
    eta_sweep = etas[j] - real_parts[j] * (etas[j + 1] - etas[j]) / (real_parts[j + 1] - real_parts[j])
    assert eta_sweep == pytest.approx(hopf.value, abs=2e-3)


@pytest.mark.slow
def test_continuation_locates_the_fold_of_the_pepita_plateau_in_sigma_F():
    """pepita (numerical expectations), K = M = 2, erf, eta = 0.5: as afa's, its symmetric plateau exists up to a
    fold in sigma_F (at 3.163, measured: a third direction turns unstable past it); a sweep of direct solves at
    fixed sigma_F stops at the same place (3.4 minutes on 2 cores)."""
    fp = symmetric_plateau("pepita", eta=0.5, sigma_F=1.0)
    br = continuation(fp, "sigma_F", (1.0, 4.0), direction="up", ds=0.05, max_points=60, ds_max=0.5)
    folds = [b for b in br.bifurcations if b.kind == "fold"]
    assert len(folds) == 1, br
    sf_c = folds[0].value
    assert 3.1 < sf_c < 3.25 and abs(folds[0].eigenvalue) < 1e-9
    i = folds[0].index
    assert br.n_unstable[i + 2] == br.n_unstable[i - 1] + 1
    grid = np.concatenate([np.arange(1.1, 3.1001, 0.1), np.arange(3.104, 3.25, 0.004)])
    last = _direct_solves_up_to_the_fold(fp, "pepita", grid, eta=0.5)
    assert last is not None and last < sf_c <= last + 0.004 + 1e-12


def test_plot_bifurcation(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    fp = specialised_solution("bp", **BP_FROZEN)
    br = continuation(fp, "eta", (0.5, 4.0), direction="up")
    ax = plot_bifurcation(br, y="R[0,0]")
    styles = {ln.get_linestyle() for ln in ax.get_lines()}
    assert "-" in styles and "--" in styles
    ax.figure.savefig(tmp_path / "bif.png")
    assert br.table().shape[0] == len(br)


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_input_names_the_parameter(bp_plateau):
    st = bp_plateau.state
    with pytest.raises(TypeError, match="guess"):
        fixed_point("plateau", "bp", eta=0.5)
    with pytest.raises(ValueError, match="tol"):
        fixed_point(st, "bp", eta=0.5, tol=-1)
    with pytest.raises(ValueError, match="method"):
        fixed_point(st, "bp", eta=0.5, method="newton")
    with pytest.raises(TypeError, match="bogus"):
        fixed_point(st, "bp", eta=0.5, bogus=1)
    with pytest.raises(ValueError, match="eta"):
        fixed_point(st, "bp", eta=theory.PowerLaw(0.5, 10.0, 1.0))
    with pytest.raises(ValueError, match="parameter='batch'"):
        continuation(bp_plateau, "batch", (1, 4))
    with pytest.raises(ValueError, match="outside span"):
        continuation(bp_plateau, "eta", (1.0, 2.0))
    with pytest.raises(ValueError, match="signs"):
        degenerate_solution("bp", eta=0.5, signs=(2, 1))
    with pytest.raises(ValueError, match="K=3"):
        symmetric_plateau("bp", eta=0.5, K=3, constants=teacher_constants(2))
    with pytest.raises(TypeError, match="constants"):
        symmetric_plateau("bp", eta=0.5, constants="identity")
    with pytest.raises(ValueError, match="span"):
        continuation(bp_plateau, "eta", (0.5,))
    with pytest.raises(ValueError, match="direction"):
        continuation(bp_plateau, "eta", (0.1, 1.0), direction="sideways")
    with pytest.raises(TypeError, match="fixed_point"):
        continuation(st, "eta", (0.1, 1.0))
    with pytest.raises(ValueError, match="level"):
        bp_plateau.escape(st, level=-1.0)
    with pytest.raises(ValueError, match="K == M"):
        degenerate_solution("bp", eta=0.5, constants=teacher_constants(3, 2))
    stable = specialised_solution("bp", **BP_FROZEN)
    with pytest.raises(ValueError, match="no unstable direction"):
        stable.escape(st)
    with pytest.raises(ValueError, match="amplitude"):
        bp_plateau.escape(st, amplitude=0)


def test_failed_solve_raises_or_reports():
    """bp with frozen v = 1 from a random state has no fixed point within 3 iterations: FixedPointError names the
    residual; throw=False returns success False with the message."""
    s0 = theory.random_state(2, 2, D=100, seed=0).replace(v=np.ones(2))
    with pytest.raises(FixedPointError, match="residual"):
        fixed_point(s0, "bp", max_iter=1, **BP_FROZEN)
    res = fixed_point(s0, "bp", max_iter=1, throw=False, **BP_FROZEN)
    assert not res.success and "residual" in res.message and res.residual > 1e-10


def test_relu_with_a_trained_second_layer_has_no_isolated_plateau():
    """relu is positively homogeneous: w_k -> c w_k, v_k -> v_k / c leaves the network unchanged, and on the plateau
    the flow runs along that family (Q grows, v shrinks, v sqrt(Q_kk) and eps_g nearly constant), so there is no
    plateau fixed point to find. The finder says so; an integration shows the drift independently; freezing v
    gives a fixed point."""
    with pytest.raises(theory.FixedPointError, match="No isolated plateau fixed point.*rescaling.*train_second_layer"):
        symmetric_plateau("bp", g="relu", eta=0.5)
    c = teacher_constants(2, 2)
    start = c.replace(Q=0.5 * np.eye(2), R=np.zeros((2, 2)), S=np.zeros(2), v=np.ones(2))
    tr = theory.integrate(start, "bp", [0.0, 30.0, 300.0], eta=0.5, g="relu")
    q, v = tr.Q[1:, 0, 0], tr.v[1:, 0]
    assert q[1] > 2 * q[0] and v[1] < 0.7 * v[0]  # it moves a lot ...
    assert abs(v[1] * np.sqrt(q[1]) / (v[0] * np.sqrt(q[0])) - 1) < 0.02  # ... along the rescaling
    assert abs(tr.eg[2] / tr.eg[1] - 1) < 0.15  # still on the plateau
    frozen = symmetric_plateau("bp", g="relu", eta=0.5, train_second_layer=False)
    assert frozen.success and frozen.residual <= 1e-10 and frozen.n_unstable >= 1
    # erf is not homogeneous: its trained-v plateau is a fixed point (the explanation is not given where it is wrong)
    assert symmetric_plateau("bp", g="erf", eta=0.5).success


# ----------------------------------------------------------------------------------------------- slow validations


@pytest.mark.slow
def test_pepita_plateau_stays_put_and_its_exponents_match_integration():
    """pepita (numerical view), sigma_F = 0.5: the integration from its plateau stays put, and the components of a
    small perturbation along the leading modes grow or decay at their exponents."""
    kw = dict(eta=0.5, sigma_F=0.5)
    pep = symmetric_plateau("pepita", guess=symmetric_plateau("afa", **kw).state, **kw)
    tr = theory.integrate(pep.state, "pepita", [0.0, 50.0], rtol=1e-10, atol=1e-13, **kw)
    assert np.max(np.abs(tr.state().to_vector() - pep.state.to_vector())) < 1e-8
    c = np.zeros(pep.eigenvalues.size)
    c[:3] = 1e-7
    s0 = pep.perturbed(pep.eigenvectors.real @ c, 1.0)
    t = 400.0
    tr = theory.integrate(s0, "pepita", [0.0, t], rtol=1e-12, atol=1e-18, **kw)
    c1 = pep.projections(tr.state()).real
    print("pepita exponents", pep.eigenvalues[:3], "measured", np.log(c1[:3] / 1e-7) / t)
    np.testing.assert_allclose(np.log(c1[:3] / 1e-7) / t, pep.eigenvalues[:3].real, rtol=0, atol=2e-6)


@pytest.mark.slow
def test_relu_pepita_plateau():
    """relu pepita (kink-aware quadrature, only piecewise smooth in the state): its plateau from afa's, v frozen."""
    kw = dict(eta=0.5, sigma_F=0.5, g="relu", train_second_layer=False)
    afa = symmetric_plateau("afa", **kw)
    pep = symmetric_plateau("pepita", guess=afa.state, **kw)
    print("relu pepita", pep, "accuracy", pep.accuracy, "jacobian error", pep.jacobian.max_error)
    assert pep.success and pep.residual <= 1e-10 and pep.n_unstable >= 1
    assert pep.accuracy < 1e-3 and abs(pep.eg - afa.eg) < 0.01


# ----------------------------------------------------------------------------------------------- command line


def test_cli_fixed_points_writes_what_theory_computes(tmp_path, capsys):
    """pepita-dynamics fixed-points: the plateau of bp (frozen v) continued in eta; fixed_points.json holds what
    theory.symmetric_plateau gives directly (eigenvalues, state, escape rate), branch.csv the branch, and the
    figure is written."""
    import json

    import pandas as pd

    from simulate._cli import main

    out = tmp_path / "fp"
    rc = main(["fixed-points", "--rules", "bp", "--eta", "0.5", "--freeze-second-layer", "--continue", "eta=0.45:0.55",
               "--max-points", "30", "--D", "1000", "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "bp plateau" in printed and "branch in eta" in printed
    doc = json.loads((out / "fixed_points.json").read_text())
    (rec,) = doc["fixed_points"]
    fp = symmetric_plateau("bp", **BP_FROZEN)
    eig = np.array([complex(*z) for z in rec["eigenvalues"]])
    np.testing.assert_allclose(eig, fp.eigenvalues, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rec["x"], fp.x, rtol=0, atol=1e-12)
    assert rec["coordinates"] == list(fp.coordinates)
    assert rec["eg"] == pytest.approx(fp.eg, rel=1e-12) and rec["n_unstable"] == 1 and rec["success"]
    np.testing.assert_allclose(rec["state"]["R"], fp.state.R, atol=1e-12)
    esc = rec["escape"]
    assert esc["D"] == 1000 and esc["per_ln_D"] == pytest.approx(0.5 / fp.eigenvalues[0].real, rel=1e-12)
    assert esc["time"] == pytest.approx(esc["linear_time"] + esc["manifold_time"])
    table = pd.read_csv(out / "branch.csv")
    assert len(table) == rec["branch"]["points"] >= 5 and set(table["rule"]) == {"bp"}
    assert table["eta"].min() == pytest.approx(0.45) and table["eta"].max() == pytest.approx(0.55)
    assert (table["residual"] <= 1e-10).all() and (table["n_unstable"] == 1).all()
    row = table.iloc[int(np.argmin(np.abs(table["eta"] - 0.5)))]
    if abs(row["eta"] - 0.5) < 1e-12:
        assert row["eg"] == pytest.approx(fp.eg, rel=1e-9)
    # the branch against direct solves at its end points
    for eta in (0.45, 0.55):
        direct = symmetric_plateau("bp", eta=eta, train_second_layer=False)
        end = table.iloc[int(np.argmin(np.abs(table["eta"] - eta)))]
        assert end["eg"] == pytest.approx(direct.eg, rel=1e-8)
        assert end["leading"] == pytest.approx(direct.eigenvalues[0].real, rel=1e-7)
    assert (out / "bifurcation.png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["--continue", "batch=1:2"], "--continue"),
    (["--continue", "eta=0.6:0.9"], "around the current eta"),
    (["--kind", "specialised", "--K", "3"], "--K == --M"),
    (["--kind", "degenerate", "--signs", "1,2"], "--signs"),
])
def test_cli_fixed_points_bad_input_exits_2(tmp_path, capsys, args, message):
    from simulate._cli import main

    rc = main(["fixed-points", "--rules", "bp", "--eta", "0.5", "--out", str(tmp_path / "o"), *args])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "fixed_points.json").exists()


# ----------------------------------------------------------------------------------------------- the exact sampler


def _median_interval(x):
    """The median of x and its distribution-free 95 % interval: the order statistics of ranks n/2 -+ 1.96 sqrt(n)/2."""
    x = np.sort(np.asarray(x, dtype=float))
    n = x.size
    h = 1.96 * np.sqrt(n) / 2
    return (
        float(np.median(x)),
        float(x[max(int(np.floor(n / 2 - h)), 0)]),
        float(x[min(int(np.ceil(n / 2 + h)), n - 1)]),
    )


def _sampler_escape(fp, s0, D, replicas, t_max, seed=1):
    """Per-replica escape times of the exact finite-D sampler (simulate.run_reduced) started at s0: the first time
    eps_g falls to the prediction's level (half the plateau's), records every 0.25."""
    import simulate

    t = np.arange(0.0, t_max, 0.25)
    res = simulate.run_reduced(s0, "bp", t, D=D, replicas=replicas, seed=seed, **BP_FROZEN)
    esc = simulate.plateau_escape_times(res, threshold=0.5 * fp.eg)
    assert np.all(np.isfinite(esc)), "a replica did not escape by t_max"
    return esc


def test_escape_time_against_the_exact_sampler(bp_plateau):
    """bp erf, K = M = 2, frozen v: replicas of the exact finite-D sampler started at x* + D^-1/2 r_u (r_u the unit
    unstable eigenvector: FixedPoint.escape's deterministic initial projection c_u = D^-1/2; the sampler adds its own
    O(D^-1/2) noise along the way). Their median escape time is the predicted one within its 95 % order-statistic
    interval, and grows like ln D / (2 lambda_u). Measured (128 replicas; 64 at D = 1e4): predicted 85.98, 107.90,
    133.35 at D = 500, 2000, 1e4; sampler medians 85.36 [84.73, 86.02], 107.56 [107.30, 107.92], 133.58
    [133.28, 133.83]."""
    fp = bp_plateau
    r = np.real(fp.eigenvectors[:, 0])
    rows = []
    for D in (500, 1000):
        s0 = fp.perturbed(r / np.linalg.norm(r), D ** -0.5)
        pred = fp.escape(s0).time
        med, lo, hi = _median_interval(_sampler_escape(fp, s0, D, 64, pred + 40.0))
        rows.append((D, pred, med, lo, hi))
        assert lo - 0.3 <= pred <= hi + 0.3, (D, pred, med, lo, hi)
    (D1, p1, m1, _, _), (D2, p2, m2, _, _) = rows
    assert (p2 - p1) / np.log(D2 / D1) == pytest.approx(0.5 / fp.eigenvalues[0].real, rel=1e-3)
    assert (m2 - m1) / np.log(D2 / D1) == pytest.approx(0.5 / fp.eigenvalues[0].real, rel=0.15)


@pytest.mark.slow
def test_escape_time_from_perturbed_weights_against_the_exact_sampler(bp_plateau):
    """As above, from a physical perturbation of the weights: w_k = w_k* + D^-1/2 a_k, the plateau's weights
    realised in 5 dimensions (teacher e_1, e_2, f = e_5) plus a fixed Gaussian a (2 x 5): every mode is excited,
    c_u = -0.60 D^-1/2. The sampler's median agrees with the ODE integrated from the same start within its 95 %
    interval; the linear prediction comes later than both, by the nonlinear effect of the O(D^-1/2) stable
    components (which the linear phase ignores): 1.44, 0.87, 0.44, 0.16 after the ODE's own crossing at D = 500,
    2000, 1e4, 1e5 (about 5 ln D / sqrt D). Measured (128, 128, 64, 32
    replicas): predicted 102.13, 124.05, 149.50, 185.91; ODE 100.69, 123.18, 149.06, 185.76; sampler medians 100.32
    [99.90, 100.89], 123.10 [122.67, 123.75], 148.53 [147.92, 149.30], 185.10 [184.22, 186.38] (D = 1e5 takes 5
    minutes: not run here); slope of the medians against ln D 16.0 (500 .. 1e5) against 1 / (2 lambda_u) = 15.81."""
    fp = bp_plateau
    st = fp.state
    rng = np.random.default_rng(0)
    A = rng.standard_normal((2, 5))
    W0 = np.hstack([st.R, np.linalg.cholesky(st.Q - st.R @ st.R.T), np.zeros((2, 1))])
    Ws, f = np.hstack([np.eye(2), np.zeros((2, 3))]), np.eye(5)[-1]
    t = np.concatenate([[0.0], np.geomspace(1e-2, 1000.0, 4000)])
    Ds, medians = np.array([500, 2000, 10000]), []
    for D in Ds:
        W = W0 + A / np.sqrt(D)
        s0 = st.replace(Q=W @ W.T, R=W @ Ws.T, S=W @ f)
        esc = fp.escape(s0)
        ode = crossing_time(*(lambda tr: (tr.t, tr.eg))(theory.integrate(s0, "bp", t, rtol=1e-10, atol=1e-13,
                                                                          **BP_FROZEN)), esc.level)
        med, lo, hi = _median_interval(_sampler_escape(fp, s0, int(D), 64, esc.time + 40.0))
        print(f"D = {D}: predicted {esc.time:.2f}, ODE {ode:.2f}, sampler median {med:.2f} [{lo:.2f}, {hi:.2f}]")
        assert lo - 0.3 <= ode <= hi + 0.3
        assert 0 < esc.time - ode < 6.0 * np.log(D) / np.sqrt(D)  # the linearisation's error, O(ln D / sqrt D)
        medians.append(med)
    slope = np.polyfit(np.log(Ds), medians, 1)[0]
    assert slope == pytest.approx(0.5 / fp.eigenvalues[0].real, rel=0.08)


def test_afa_plateau_at_large_feedback_by_homotopy():
    """At sigma_F = 2.5 afa's symmetric-subspace flow from the default start runs away, but the plateau exists:
    symmetric_plateau follows it from sigma_F = 1 by continuation; the result is a symmetric fixed point there."""
    with pytest.raises(theory.FixedPointError):
        theory.symmetric_plateau("afa", eta=0.5, sigma_F=2.5, homotopy=False)
    fp = theory.symmetric_plateau("afa", eta=0.5, sigma_F=2.5)
    assert "continued in sigma_F" in fp.info["homotopy"]
    assert fp.hyper.sigma_F == 2.5 and fp.residual < 1e-10
    st = fp.state
    np.testing.assert_allclose(np.diag(st.Q), st.Q[0, 0], rtol=1e-8)
    np.testing.assert_allclose(st.S, st.S[0], rtol=1e-8)
    dy = theory.rhs(st, "afa", eta=0.5, sigma_F=2.5)
    assert max(np.max(np.abs(np.asarray(d))) for d in dy.values() if d is not None) < 1e-9
