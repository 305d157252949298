"""Benchmark: a sweep with runaway points (issue 25) against the same sweep without them, in one run.

afa, K = M = 2, erf, D = 500 initial state, t to 1000 (201 log-spaced times): 4 learning rates x 4 feedback
scales. The ordinary grid has sigma_F in {0.3, 0.5, 0.7, 1}; the runaway grid replaces its largest with
sigma_F = 10, where afa's feedback runs away at the larger learning rates (the points stop as diverged or at
max_steps, as theory.integrate stops them). Prints both wall times, their ratio (target: at most 2), and the
statuses. With --pepita the same for the exact pepita ODE (numerical expectations; slow: minutes), sigma_F = 3
as the runaway value as in the issue's report.

    PYTHONPATH=. python benchmarks/bench_runaway.py [--pepita]
"""

import sys
import time

import numpy as np

import theory


def timed_sweep(rule, state, t, etas, sigma_Fs):
    grid = dict(eta=list(etas), sigma_F=list(sigma_Fs))
    theory.sweep(state, rule, t[:3], grid=grid, progress=False)  # warm-up: compilation is not counted
    t0 = time.perf_counter()
    res = theory.sweep(state, rule, t, grid=grid, progress=False)
    return time.perf_counter() - t0, res.table


def main():
    pepita = "--pepita" in sys.argv
    rule = "pepita" if pepita else "afa"
    state = theory.random_state(2, 2, D=500, seed=0)
    t = theory.default_times(1000.0, 200)
    etas = (0.25, 0.5, 1.0, 2.0)
    ordinary = (0.3, 0.5, 0.7, 1.0)
    runaway = (0.3, 0.5, 0.7, 3.0 if pepita else 10.0)
    w0, tab0 = timed_sweep(rule, state, t, etas, ordinary)
    w1, tab1 = timed_sweep(rule, state, t, etas, runaway)
    print(f"{rule} sweep, {len(tab0)} points to t = {t[-1]:g}:")
    print(f"  ordinary grid (sigma_F {ordinary}):  {w0:8.2f} s   statuses {np.bincount(tab0['status'] + 2).tolist()}"
          " (counts of -2, -1, 0)")
    print(f"  with runaway points (sigma_F {runaway[-1]}): {w1:8.2f} s   statuses "
          f"{np.bincount(tab1['status'] + 2, minlength=3).tolist()}")
    stopped = tab1[tab1["status"] != 0]
    for _, row in stopped.iterrows():
        print(f"    eta {row['eta']:g}, sigma_F {row['sigma_F']:g}: status {row['status']}, t_end {row['t_end']:.3g}, "
              f"{row['message'][:70]}")
    print(f"  ratio {w1 / w0:.2f} (target <= 2: {'met' if w1 / w0 <= 2 else 'NOT met'})")


if __name__ == "__main__":
    main()
