"""Benchmark: the exact pepita ODE (numerical Gaussian expectations), issue #4.

Prints, in one run on this machine:
1. K = M = 2 pepita ODE to t = 300 from theory.random_state(2, 2, D=1000) at eta = 1, at expectation
   accuracy ~1e-5 (GaussHermite(16)) and ~1e-7 (GaussHermite(24)); the accuracy is measured here
   against GaussHermite(48) at states along the trajectory.
2. K = M = 4 (d = 8) with the default QMC rule (its standard error printed), to t = 50.
3. The baseline: plain Monte Carlo right-hand side (2e5 samples, theory.expectations.montecarlo) with fixed-step
   RK4 (dt = 0.05) to t = 50; it takes minutes, so it is timed over t = 0.5 and extrapolated linearly.
   Its noise is measured as the spread of 5 independent Monte Carlo RHS evaluations.
4. Where AFA departs from exact pepita: final eg at t = 300 of both ODEs from the same initial
   condition for sigma_F in (0.1, 0.3, 1, 2, 3), eta = 1, K = M = 2.

0. (issue 25) One K = M = 2 curve to t = 1000 at eta = 1, sigma_F = 1 from theory.random_state(2, 2, D=500) with
   the default error-controlled quadrature, against the AFA curve from the same state, with its floor: nodes x
   cost of one node x evaluations (one compiled right-hand side timed alone); and a 16-point sweep
   (sigma_F in {0.3, 1, 2, 3} x eta in {0.25, 0.5, 1, 2}) to t = 1000, its time per point against the single
   curve divided by the threads.

Run: PYTHONPATH=. python benchmarks/bench_pepita.py [--quick]
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import theory
from theory._state import pack, unpack
from theory.expectations.closed import assemble
from theory.expectations.montecarlo import monte_carlo_terms
from theory.expectations.numerical import GaussHermite, numerical_terms


def terms_error(traj, quad, ref_quad, rule="pepita", sigma_F=1.0, n_states=6):
    idx = np.unique(np.linspace(0, len(traj.t) - 1, n_states).astype(int))
    err = 0.0
    for i in idx:
        s = traj.state(i)
        a = (s.Q, s.R, s.T, s.S, s.U, s.P, s.v, s.v_star, s.b)
        x = numerical_terms(rule, *a, sigma_F=sigma_F, quadrature=quad)
        y = numerical_terms(rule, *a, sigma_F=sigma_F, quadrature=ref_quad)
        err = max(err, max(np.abs(p - q).max() for p, q in zip(x, y)))
    return err


def timed_integrate(state, rule, t, **kw):
    t0 = time.perf_counter()
    tr = theory.integrate(state, rule, t, **kw)
    return tr, time.perf_counter() - t0


def mc_rk4(state, t_end, dt, n_samples, seed, eta=1.0, sigma_F=1.0):
    rng = np.random.default_rng(seed)
    rule = theory.make_rule("pepita")
    K, M = state.K, state.M

    def f(y):
        Q, R, S, v = unpack(y, K, M)
        st = state.from_vector(y, validate=False)
        (X, DD, EH), _ = monte_carlo_terms(st, rule, n_samples=n_samples, rng=rng, sigma_F=sigma_F)
        return pack(*assemble(X, DD, EH, st.Q, st.R, st.S, st.v, eta=eta, eta_v=eta))

    y = state.to_vector()
    for _ in range(int(round(t_end / dt))):
        k1 = f(y)
        k2 = f(y + 0.5 * dt * k1)
        k3 = f(y + 0.5 * dt * k2)
        k4 = f(y + dt * k3)
        y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def one_rhs_seconds(state, rule, repeats=20, **kw):
    """One compiled right-hand side evaluation (best of ``repeats``) and the number of quadrature nodes it sums."""
    rhs, p = theory.make_dynamics(state, rule, **kw).compiled()
    y = state.to_vector()
    dy = np.empty_like(y)
    rhs(0.0, y, p, dy)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        rhs(0.0, y, p, dy)
        best = min(best, time.perf_counter() - t0)
    afa = theory.make_dynamics(state, "afa", **kw).compiled()[1]  # the same parameters without the node block
    return best, int(p[len(afa)])


def erf_seconds(n=2_000_000, repeats=5):
    """One erf in a compiled loop that stores its values (best of ``repeats``): (libm's math.erf, the package's
    theory._codegen.special.erf, which the quadrature's node loop of a rule without closed forms uses)."""
    import math

    import numba

    from theory._codegen.special import erf

    @numba.njit
    def libm(x, out):
        for i in range(x.size):
            out[i] = math.erf(x[i])

    @numba.njit
    def ours(x, out):
        for i in range(x.size):
            out[i] = erf(x[i])

    x = np.random.default_rng(0).standard_normal(n)
    out = np.empty_like(x)
    best = []
    for f in (libm, ours):
        f(x[:10], out[:10])
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(x, out)
            times.append(time.perf_counter() - t0)
        best.append(min(times) / n)
    return tuple(best)


def exploration(quick=False):
    """Section 0: the figures of issue 25 (exact pepita at the speed of exploration)."""
    st = theory.random_state(2, 2, D=500, seed=0)
    t = theory.default_times(1000.0, 100)
    kw = dict(eta=1.0, sigma_F=1.0)
    theory.integrate(st, "pepita", [0.0, 1.0], **kw)  # compile / load the cache
    theory.integrate(st, "afa", [0.0, 1.0], **kw)
    tr, dt = timed_integrate(st, "pepita", t, **kw)
    tr_afa, dt_afa = timed_integrate(st, "afa", t, **kw)
    t_rhs, nodes = one_rhs_seconds(st, "pepita", **kw)
    floor = t_rhs * tr.nfev
    libm_ns, erf_ns = (1e9 * x for x in erf_seconds())
    print("== issue 25: one K = M = 2 pepita curve to t = 1000, eta = 1, sigma_F = 1, D = 500 initial state ==")
    print(f"  pepita: {dt:.2f} s, nfev {tr.nfev}, {tr.params['quadrature']}, expectation error "
          f"{tr.params['expectation_error']:.1e}, eg(1000) = {tr.eg[-1]:.6f}")
    print(f"  afa from the same state: {dt_afa:.3f} s, nfev {tr_afa.nfev} -> pepita / afa {dt / dt_afa:.0f}x")
    print(f"  floor: {nodes} nodes x {1e9 * t_rhs / nodes:.1f} ns per node = {1e3 * t_rhs:.2f} ms per evaluation x "
          f"{tr.nfev} evaluations = {floor:.2f} s (the curve: {dt:.2f} s; target 2 s)")
    print(f"  of a node's {1e9 * t_rhs / nodes:.0f} ns: its 6 erf (g of the K student, M teacher and K modulated "
          f"fields) at {erf_ns:.1f} ns each = {6 * erf_ns:.0f} ns (theory._codegen.special.erf in a compiled loop, "
          f"timed alone; libm's: {libm_ns:.1f} ns each = {6 * libm_ns:.0f} ns, {libm_ns / erf_ns:.1f}x)")
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    grid = dict(sigma_F=[0.3, 1.0, 2.0, 3.0], eta=[0.25, 0.5, 1.0, 2.0]) if not quick else dict(sigma_F=[1.0, 3.0],
                                                                                               eta=[0.5, 1.0])
    n = len(grid["sigma_F"]) * len(grid["eta"])
    t0 = time.perf_counter()
    sw = theory.sweep(st, "pepita", t, grid=grid, progress=False)
    dt_sw = time.perf_counter() - t0
    tab = sw.table
    print(f"  sweep of {n} points (sigma_F x eta) to t = 1000 on {threads} threads: {dt_sw:.1f} s, "
          f"{dt_sw / n:.2f} s per point against the single curve / threads = {dt / threads:.2f} s; "
          f"status {dict(tab['status'].value_counts())}; nfev per point: median {int(tab['nfev'].median())}, "
          f"max {int(tab['nfev'].max())}")
    per_eval = dt_sw * threads / tab["nfev"].sum()
    print(f"  per evaluation (the points differ in their steps): the sweep {1e3 * per_eval:.2f} ms x threads against "
          f"the single curve's {1e3 * dt / tr.nfev:.2f} ms ({dt / tr.nfev / per_eval:.2f}); the points where the "
          f"default rule misses expectation_tol climb to finer ones (the AccuracyWarning), so theirs cost more")


def main(quick=False):
    exploration(quick)
    st = theory.random_state(2, 2, D=1000, seed=0)
    t = np.linspace(0, 300, 61)
    ref = GaussHermite(48)
    print("== K = M = 2 exact pepita ODE, t = 0..300, eta = 1, sigma_F = 1, DOP853 rtol 1e-8 ==")
    rows = {}
    for label, q in (("1e-5", GaussHermite(16)), ("1e-7", GaussHermite(24))):
        tr, dt = timed_integrate(st, "pepita", t, eta=1.0, quadrature=q)
        err = terms_error(tr, q, ref)
        rows[label] = (tr, dt)
        print(f"  target {label}: {q}  measured expectation error {err:.1e}  wall {dt:6.2f} s  nfev {tr.nfev}  "
              f"eg(300) = {tr.eg[-1]:.8f}")
    print(
        f"  eg(300) difference between the two accuracies: {abs(rows['1e-5'][0].eg[-1] - rows['1e-7'][0].eg[-1]):.1e}"
    )

    print("== K = M = 4 (d = 8), default QMC(2^14 x 8), eta = 0.3, t = 0..50, rtol 1e-6 ==")
    st4 = theory.random_state(4, 4, D=1000, seed=0)
    a4 = (st4.Q, st4.R, st4.T, st4.S, st4.U, st4.P, st4.v, st4.v_star, st4.b)
    t0 = time.perf_counter()
    _, se = numerical_terms("pepita", *a4, return_error=True)
    t_call = time.perf_counter() - t0
    t0 = time.perf_counter()
    numerical_terms("pepita", *a4)
    t_call = time.perf_counter() - t0
    t4 = np.linspace(0, 10 if quick else 50, 11)
    tr4, dt4 = timed_integrate(st4, "pepita", t4, eta=0.3, rtol=1e-6, atol=1e-8, throw=False)
    print(f"  QMC standard error {max(s.max() for s in se):.1e}; one RHS {t_call * 1e3:.0f} ms; "
          f"t = {t4[-1]:g}: wall {dt4:.1f} s, nfev {tr4.nfev}, eg {tr4.eg[-1]:.5f}, status {tr4.status} {tr4.message}")

    print("== baseline: Monte Carlo RHS (2e5 samples) + fixed-step RK4 (dt = 0.05) ==")
    span = 0.25 if quick else 0.5
    t0 = time.perf_counter()
    y_mc = mc_rk4(st, span, 0.05, 200_000, seed=1)
    dt_mc = time.perf_counter() - t0
    rng = np.random.default_rng(2)
    reps = [monte_carlo_terms(st, "pepita", n_samples=200_000, rng=rng)[0] for _ in range(5)]
    noise = max(np.std(np.stack([r[i] for r in reps]), axis=0, ddof=1).max() for i in range(3))
    exact = theory.integrate(st, "pepita", [0, span], eta=1.0, quadrature=GaussHermite(24))
    dev = np.abs(y_mc - exact.state(-1).to_vector()).max()
    extrap = dt_mc * 50 / span
    print(f"  measured over t = {span}: {dt_mc:.1f} s -> extrapolated to t = 50: {extrap:.0f} s; "
          f"MC noise of the terms {noise:.1e}; |y_MC - y_exact| at t = {span}: {dev:.1e}")
    print(f"  ratio baseline(t=50) / ours(t=300, 1e-5): {extrap / rows['1e-5'][1]:.0f}x  "
          f"(per unit time: {extrap / 50 / (rows['1e-5'][1] / 300):.0f}x)")

    print("== AFA against exact pepita: eg at t = 300 (t = 1000), eta = 1, K = M = 2, same initial condition ==")
    print("  sigma_F   eg_pepita(300)  eg_afa(300)   eg_pepita(1000) eg_afa(1000)  max|S| pepita(1000)")
    tt = np.array([0, 300, 1000.0]) if not quick else np.array([0, 300.0])
    for sF in (0.1, 0.3, 1.0, 2.0, 3.0):
        kw = dict(eta=1.0, sigma_F=sF, rtol=1e-7, atol=1e-9, throw=False)
        p = theory.integrate(st, "pepita", tt, quadrature=GaussHermite(16), **kw)
        a = theory.integrate(st, "afa", tt, **kw)
        cells = [f"{x.eg[i]:.5f}" if i < len(x.eg) else "diverged" for i in (1, 2) for x in (p, a)]
        print(
            f"  {sF:6.1f}   {cells[0]:>14} {cells[1]:>12}   {cells[2]:>14} {cells[3]:>12}  {np.abs(p.S[-1]).max():.3f}"
            + ("" if p.status == 0 and a.status == 0 else f"  [{p.message} | {a.message}]")
        )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
