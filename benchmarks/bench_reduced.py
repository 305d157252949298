"""Replica-steps per second of the exact order-parameter sampler against the full simulation.

Same run, same machine: simulate.run(engine="full") (float32, its default) and
simulate.run(engine="reduced") (float64, its default), K = M = 2, erf, bp and pepita, at
D = 500 and D = 10^4, no test set. Prints the figures and the ratio reduced / full.
Target (issue #5): ratio >= 50 at D = 500, and the reduced rate flat in D.

    PYTHONPATH=. python benchmarks/bench_reduced.py [--replicas-full 256] [--replicas-reduced 4096] [--steps 2000]
"""

from __future__ import annotations

import argparse
import time

import torch

import simulate


def rate(engine, rule, D, replicas, steps, device):
    init = simulate.Initialisation(K=2, M=2, D=D, seed=0)
    t = [0.0, steps / D]
    simulate.run(init, rule, [0.0, min(20, steps) / D], eta=1.0, replicas=replicas, engine=engine, n_test=0,
                 progress=False, device=device)  # warm-up
    t0 = time.perf_counter()
    res = simulate.run(init, rule, t, eta=1.0, replicas=replicas, engine=engine, n_test=0, progress=False, device=device)
    wall = time.perf_counter() - t0
    n = int(res.params["steps"][-1] - res.params["steps"][0])
    return replicas * n / wall, wall


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas-full", type=int, default=256)
    p.add_argument("--replicas-reduced", type=int, default=4096)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {a.device}; K = M = 2, erf; "
          f"{a.steps} steps; replicas: full {a.replicas_full}, reduced {a.replicas_reduced}")
    print(f"{'rule':8s} {'D':>6s} {'full rep-steps/s':>18s} {'reduced rep-steps/s':>20s} {'ratio':>7s}")
    reduced_rates = {}
    for rule in ("bp", "pepita"):
        for D in (500, 10_000):
            full, _ = rate("full", rule, D, a.replicas_full, a.steps, a.device)
            red, _ = rate("reduced", rule, D, a.replicas_reduced, a.steps, a.device)
            reduced_rates[rule, D] = red
            print(f"{rule:8s} {D:6d} {full:18.3g} {red:20.3g} {red / full:7.1f}")
    for rule in ("bp", "pepita"):
        print(f"flatness in D ({rule}): reduced rate at D=1e4 / D=500 = {reduced_rates[rule, 10_000] / reduced_rates[rule, 500]:.2f}")


if __name__ == "__main__":
    main()
