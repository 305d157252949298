"""Benchmark: 1,000 K = M = 2 bp learning curves to t = 1000 with theory.sweep, against one-at-a-time
theory.integrate in the same run.

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
    print(f"  target: {n} curves under 5 s -> {'met' if dt_sweep < 5 else 'NOT met'} at rtol 1e-8 "
          f"({dt_sweep:.2f} s), {'met' if res[1e-6][1] < 5 else 'NOT met'} at rtol 1e-6 ({res[1e-6][1]:.2f} s)")
    tab = sw.table
    print(f"  median plateau length {np.nanmedian(tab['plateau_length'][tab['plateau_length'] > 0]):.1f} (steps/D), "
          f"points with a plateau {np.sum(tab['plateau_length'] > 0)}/{n}")


if __name__ == "__main__":
    main()
