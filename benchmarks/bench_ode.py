"""Benchmark: closed-form ODE learning curves (issue: theory core).

Prints, in one run:
- K = M = 2 bp learning curve from random initial overlaps (weights at D = 1000) to t = 1000,
  through the plateau and its escape, with theory.integrate (DOP853, rtol 1e-8), next to a
  fixed-step Euler (dt = 0.01) integration of the same compiled right-hand side and of the
  numpy right-hand side (the public integrators' scheme), with the accuracy of each against a
  tight reference (rtol 1e-12).
- K = M = 10 bp to t = 1000.

Run: python benchmarks/bench_ode.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import _user_rules  # noqa: F401  (registers "sign-symmetry", a rule written as a user would)
import numpy as np

import theory


def best_of(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def euler(dyn, y0, t_max, dt, t_out):
    """Fixed-step explicit Euler, recording at the grid points nearest to t_out."""
    n = int(round(t_max / dt))
    rec: dict[int, list[int]] = {}
    for i, t in enumerate(t_out):
        rec.setdefault(int(round(t / dt)), []).append(i)
    out = np.full((len(t_out), len(y0)), np.nan)
    y = y0.copy()
    for step in range(n + 1):
        for i in rec.get(step, ()):
            out[i] = y
        if step < n:
            y = y + dt * dyn.rhs(y)
    return out


def paths(st, repeats):
    """The wall time of each path of the ODE on the same curve (K = M = 2, t = 0..100, rtol 1e-8)."""
    t = theory.default_times(100.0, 60)
    print("paths of a rule's ODE, K = M = 2, t = 0 .. 100, rtol 1e-8 (the user's rule is defined in this script):")
    for rule in ("bp", "sign-symmetry"):
        theory.integrate(st, rule, t, eta=1.0)  # compile / load the cache
        w_c, tr_c = best_of(lambda: theory.integrate(st, rule, t, eta=1.0), repeats)
        w_s, tr_s = best_of(lambda: theory.integrate(st, rule, t, eta=1.0, method="RK45"), 1)
        w_n, tr_n = best_of(lambda: theory.integrate(st, rule, t, eta=1.0, quadrature="gauss-hermite"), 1)
        print(
            f"  {rule:14s} compiled closed form + compiled DOP853 {w_c * 1e3:8.1f} ms | compiled closed form + "
            f"scipy RK45 "
            f"{w_s * 1e3:8.1f} ms | generic numerical expectations GH(20) + scipy DOP853 {w_n:6.2f} s "
            f"(max |eg - compiled| {np.abs(tr_n.eg - tr_c.eg).max():.1e})"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--eta", type=float, default=1.0)
    args = ap.parse_args()

    st = theory.random_state(2, 2, D=1000, seed=1)
    t = theory.default_times(1000.0, 100)
    kw = dict(eta=args.eta)
    theory.integrate(st, "bp", t, **kw)  # compile / load the numba cache
    ref = theory.integrate(st, "bp", t, rtol=1e-12, atol=1e-14, **kw)
    wall, tr = best_of(lambda: theory.integrate(st, "bp", t, rtol=1e-8, atol=1e-10, **kw), args.repeats)
    err = np.max(np.abs(tr.eg - ref.eg))
    print(f"K = M = 2, bp, eta = {args.eta:g}, random initial overlaps (D = 1000), t = 0 .. 1000")
    print(
        "  eg at t = "
        + ", ".join(f"{tt:g}: {np.interp(tt, ref.t, ref.eg):.3g}" for tt in (0, 1, 10, 30, 100, 300, 1000))
    )
    print(
        f"  integrate (DOP853, rtol 1e-8):           {wall * 1e3:8.1f} ms   nfev {tr.nfev:6d}   max|eg - ref| {err:.1e}"
    )

    dyn = theory.make_dynamics(st, "bp", **kw)
    y0 = st.to_vector()
    wall_e, Ye = best_of(lambda: euler(dyn, y0, 1000.0, 0.01, t), 1)
    eg_e = theory.generalisation_error(st.from_vector(Ye[-1], validate=False))
    eg_e_all = np.array([theory.generalisation_error(st.from_vector(y, validate=False)) for y in Ye])
    print(
        f"  Euler dt = 0.01, compiled RHS:           {wall_e * 1e3:8.1f} ms   nfev {100_000:6d}   max|eg - ref| "
        f"{np.max(np.abs(eg_e_all - ref.eg)):.1e}"
    )
    numpy_dyn = theory.make_dynamics(st, "bp", **kw)
    object.__setattr__(numpy_dyn, "use_jit", False)
    n_probe = 2000
    t0 = time.perf_counter()
    y = y0.copy()
    for _ in range(n_probe):
        y = y + 0.01 * numpy_dyn.rhs(y)
    per = (time.perf_counter() - t0) / n_probe
    print(f"  Euler dt = 0.01, numpy RHS (extrapolated from {n_probe} steps): {per * 1e5:8.2f} s")
    print(f"  public compiled C++ Euler (issue's figure): 210 ms -> ratio {0.21 / wall:.1f}x; target < 50 ms: "
          f"{'met' if wall < 0.05 else 'NOT met'}")
    print(
        f"  speed-up over Euler with the same compiled RHS: {wall_e / wall:.1f}x  (final eg: Euler {eg_e:.3g}, ref "
        f"{ref.eg[-1]:.3g})"
    )

    paths(st, args.repeats)

    st10 = theory.random_state(10, 10, D=1000, seed=1)
    theory.integrate(st10, "bp", [0, 1], **kw)
    wall10, tr10 = best_of(
        lambda: theory.integrate(st10, "bp", t, rtol=1e-8, atol=1e-10, **kw), max(1, args.repeats // 2)
    )
    print(f"K = M = 10, bp, eta = {args.eta:g}, t = 0 .. 1000")
    print(
        f"  integrate (DOP853, rtol 1e-8):           {wall10:8.3f} s    nfev {tr10.nfev:6d}   eg(1000) "
        f"{tr10.eg[-1]:.3g}; "
        f"target < 2 s: {'met' if wall10 < 2 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
