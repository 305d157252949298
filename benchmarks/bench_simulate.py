"""Replica-steps per second of the batched simulation, against a plain per-sample numpy loop.

    PYTHONPATH=. python benchmarks/bench_simulate.py [--D 500] [--replicas 1,16,64,256,1024] [--rules bp,fa,afa,pepita]

For each rule: the numpy baseline (one replica, one sample per step: draw x, fields, the rule's
one-sample update from theory.Rule.local_update, rank-one weight update; the style of the public
reference simulators) and simulate.run at several replica counts, measured in the same run; the
ratio is ours / baseline. Runs on the CPU and, when present, on CUDA (the device is printed).
Target (issue 3): >= 5e5 replica-steps/s for bp at D = 500, K = M = 2 on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

import simulate
import theory


def numpy_loop(rule_name, D, K, M, steps, eta=1.0, seed=0):
    """Steps per second of a plain per-sample numpy loop (one replica)."""
    rule = theory.make_rule(rule_name)
    rng = np.random.default_rng(seed)
    W, Ws, f = rng.standard_normal((K, D)), rng.standard_normal((M, D)), rng.standard_normal(D)
    v, vs, b = rng.standard_normal(K), np.ones(M), rng.standard_normal(K)
    sq = math.sqrt(D)
    g = theory.activation("erf")
    start = time.perf_counter()
    for _ in range(steps):
        x = rng.standard_normal(D)
        lam, nu = W @ x / sq, Ws @ x / sq
        S = W @ f / D
        up = rule.local_update(lam, nu, 0.0, v=v, v_star=vs, S=S, b=b, sigma=0.0, sigma_F=1.0, g=g)
        xp = x + up.alpha * f / sq
        W -= (eta / sq) * np.outer(up.delta, xp)
        v -= (eta / D) * up.e_out * up.h
    return steps / (time.perf_counter() - start)


def ours(rule_name, D, K, M, replicas, device, min_seconds=1.0):
    """Replica-steps per second of simulate.run (timed over enough steps for ~min_seconds)."""
    init = simulate.Initialisation(K, M, D, seed=0)
    steps = 200
    while True:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        simulate.run(
            init, rule_name, [0.0, steps / D], eta=1.0, replicas=replicas, device=device, n_test=0, progress=False
        )
        if device == "cuda":
            torch.cuda.synchronize()
        el = time.perf_counter() - start
        if el >= min_seconds or steps >= 1 << 22:
            return replicas * steps / el
        steps = int(steps * max(2.0, 1.2 * min_seconds / max(el, 1e-3)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--D", type=int, default=500)
    p.add_argument("--K", type=int, default=2)
    p.add_argument("--M", type=int, default=2)
    p.add_argument("--rules", default="bp,fa,afa,pepita")
    p.add_argument("--replicas", default="1,16,64,256,1024")
    p.add_argument("--cuda-replicas", default="1024,4096,16384")
    p.add_argument("--baseline-steps", type=int, default=20000)
    a = p.parse_args()
    rules = a.rules.split(",")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"D={a.D}, K={a.K}, M={a.M}; torch {torch.__version__}; CPU cores {os.cpu_count()}, torch threads "
        f"{torch.get_num_threads()}"
    )
    for dev in devices:
        name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
        print(f"\ndevice: {dev} ({name})")
        reps = [int(r) for r in (a.cuda_replicas if dev == "cuda" else a.replicas).split(",")]
        print(
            f"{'rule':8s} {'numpy loop (steps/s)':>22s} "
            + " ".join(f"{'R=' + str(r):>14s}" for r in reps)
            + "   best ratio"
        )
        for rule in rules:
            base = numpy_loop(rule, a.D, a.K, a.M, a.baseline_steps)
            rates = [ours(rule, a.D, a.K, a.M, r, dev) for r in reps]
            print(
                f"{rule:8s} {base:22,.0f} " + " ".join(f"{x:14,.0f}" for x in rates) + f"   x{max(rates) / base:,.1f}"
            )
    print("\nunits: replica-steps per second (the numpy loop runs one replica); ratio = best of ours / numpy loop")


if __name__ == "__main__":
    main()
