"""Benchmark: 1,000 K = M = 2 bp learning curves to t = 1000 with theory.sweep, against one-at-a-time
theory.integrate and against the numpy-vectorised DOP853 (the previous sweep engine) in the same run,
with the floor set by the right-hand side (one evaluation's time x the evaluations / threads).

Grid: 10 learning rates eta in [0.2, 2] x 100 initial conditions (random weights at D = 1000:
50 seeds x w_std in {0.3, 1.0}); 201 output times (0 and 200 log-spaced in [1e-2, 1e3]); DOP853 at
rtol 1e-8, atol 1e-10 (and the sweep again at rtol 1e-6). The one-at-a-time baseline integrates
N_BASELINE points chosen at random from the grid (after a warm-up call, so compilation is not
counted) and is extrapolated to the 1,000 points: said so in the output.

    PYTHONPATH=. python benchmarks/bench_sweep.py
"""

import os
import time

import numpy as np

import theory

N_BASELINE = 20


def main():
    etas = np.linspace(0.2, 2.0, 10)
    states, seeds, wstds = [], [], []
    for w in (0.3, 1.0):
        for s in range(50):
            states.append(theory.random_state(2, 2, D=1000, seed=s, w_std=w))
            seeds.append(s)
            wstds.append(w)
    n = len(states) * len(etas)
    print(f"bench_sweep: {n} K=M=2 bp curves to t=1000 on {os.cpu_count()} CPUs")

    # warm-up (numba compilation is cached on disk; not part of the figures)
    theory.sweep(states[:2], "bp", eta=[1.0, 0.5], progress=False)
    theory.integrate(states[0], "bp", eta=1.0)

    res = {}
    for rtol in (1e-8, 1e-6):
        t0 = time.perf_counter()
        res[rtol] = theory.sweep(states, "bp", grid=dict(eta=etas), tags=dict(seed=seeds, w_std=wstds),
                                 rtol=rtol, atol=rtol * 1e-2, progress=False)
        dt = time.perf_counter() - t0
        tab = res[rtol].table
        print(f"  sweep rtol={rtol:g}: {dt:.2f} s for {n} curves ({1e3 * dt / n:.2f} ms/curve); "
              f"status 0: {np.sum(tab['status'] == 0)}/{n}; mean nfev/curve {tab['nfev'].mean():.0f}")
        res[rtol] = (res[rtol], dt)

    # the previous engine of sweeps: DOP853 vectorised over the points in numpy (still the path of right-hand
    # sides that exist only in Python), on the same points
    import theory._sweep as sw

    compiled_rhs = sw._Chunk.compiled_rhs
    sw._Chunk.compiled_rhs = lambda self: None
    try:
        t0 = time.perf_counter()
        old = theory.sweep(states, "bp", grid=dict(eta=etas), tags=dict(seed=seeds, w_std=wstds), rtol=1e-8, atol=1e-10,
                           progress=False)
        dt_numpy = time.perf_counter() - t0
    finally:
        sw._Chunk.compiled_rhs = compiled_rhs
    print(f"  numpy-vectorised DOP853 on the same points (the previous sweep engine): {dt_numpy:.2f} s -> compiled "
          f"stepper {dt_numpy / res[1e-8][1]:.1f}x faster; max |eg difference| {np.nanmax(np.abs(old.eg - res[1e-8][0].eg)):.2g}")

    # the floor: one compiled right-hand-side evaluation, times the evaluations, over the threads
    import numba

    from theory._compiled import RHS_TYPE, function_pointer

    @numba.njit(numba.void(RHS_TYPE, numba.float64[::1], numba.float64[::1], numba.float64[::1], numba.int64))
    def repeat(f, y, p, dy, m):
        for _ in range(m):
            f(0.0, y, p, dy)

    rhs, p = theory.make_dynamics(states[0], "bp", eta=1.0).compiled()
    y, dy = states[0].to_vector(), np.empty(states[0].to_vector().size)
    fp = function_pointer(rhs)
    repeat(fp, y, p, dy, 10)
    t0 = time.perf_counter()
    repeat(fp, y, p, dy, 200_000)
    us = (time.perf_counter() - t0) / 200_000 * 1e6
    nfev = res[1e-8][0].table["nfev"].sum()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"  floor: one K=M=2 bp right-hand side {us:.2f} us x {nfev} evaluations / {cpus} threads = "
          f"{us * 1e-6 * nfev / cpus:.2f} s (the sweep at rtol 1e-8: {res[1e-8][1]:.2f} s; target 1 s)")

    rng = np.random.default_rng(0)
    pick = rng.choice(n, N_BASELINE, replace=False)
    sw, dt_sweep = res[1e-8]
    t0 = time.perf_counter()
    dev = 0.0
    for i in pick:
        row = sw.table.iloc[int(i)]
        tr = theory.integrate(states[row["state"]], "bp", eta=row["eta"], rtol=1e-8, atol=1e-10)
        dev = max(dev, float(np.abs(tr.eg - sw.eg[i]).max()))
    dt_one = (time.perf_counter() - t0) / N_BASELINE
    print(f"  one at a time (theory.integrate, rtol=1e-8): {1e3 * dt_one:.1f} ms/curve measured on {N_BASELINE} "
          f"random points -> extrapolated {dt_one * n:.1f} s for {n} curves")
    print(f"  speed-up of the sweep (rtol 1e-8): {dt_one * n / dt_sweep:.1f}x; max |eg_sweep - eg_integrate| on those "
          f"points: {dev:.2g}")
    print(f"  target: {n} curves under 1 s -> {'met' if dt_sweep < 1 else 'NOT met'} at rtol 1e-8 "
          f"({dt_sweep:.2f} s), {'met' if res[1e-6][1] < 1 else 'NOT met'} at rtol 1e-6 ({res[1e-6][1]:.2f} s)")
    tab = sw.table
    print(f"  median plateau length {np.nanmedian(tab['plateau_length'][tab['plateau_length'] > 0]):.1f} (steps/D), "
          f"points with a plateau {np.sum(tab['plateau_length'] > 0)}/{n}")


if __name__ == "__main__":
    main()
