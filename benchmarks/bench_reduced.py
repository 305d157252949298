"""Replica-steps per second of the exact order-parameter sampler against the full simulation.

Same run, same machine, K = M = 2, erf, eta = 1, bp and pepita, at D = 500 and D = 10^4, no test set:
- full: simulate.run(engine="full") (float32, its default; the baseline);
- reduced, numba backend (the CPU default): simulate.run_reduced(backend="numba"), float64;
- reduced, torch backend (the reference / CUDA path): simulate.run_reduced(backend="torch"), float64.
Prints the rates (the reduced sampler's from its own wall time, run_reduced's params["wall_s"]:
the chain without measuring the initial weights' overlaps) and the ratios reduced / full, and the
rate of the numba backend's in-kernel draws alone (its floor), next to numpy's SFC64 drawing the same variables.
Then feedback mirroring (afa, pepita; eta_F = 0.6, mirror_norm) on both backends, next to the numba backend
without mirroring. Target (issue #5): ratio >= 50 at D = 500, and the
reduced rate flat in D. Each rate is the best of ``--repeats`` timed runs after a warm-up (the
machine may be shared).

    PYTHONPATH=. python benchmarks/bench_reduced.py [--replicas-full 256] [--replicas-reduced 4096] [--steps 1000]

With ``--finite-size D:t_max ...`` it runs instead the finite-size study of bp
(simulate.finite_size_study: K = M = 2, erf, eta = 2, Initialisation(K=2, M=2, D, seed=0),
threshold eg < 1e-2, ``--fs-replicas`` replicas, records every 0.5) at each D up to its t_max
(chosen above the ODE escape time) and prints the escape-time quantiles next to the ODE's.

    PYTHONPATH=. python benchmarks/bench_reduced.py --finite-size 1000:600 10000:300 100000:300

Measured on the 2-core CPU (this script, numba backend, 100 replicas): median escape time (10%, 90%)
234.5 (200.5, 305.1) at D = 1e3 [ODE 271.4], 92.1 (81.7, 109.9) at 1e4 [ODE 91.6],
97.6 (90.2, 113.0) at 1e5 [ODE 98.8]; 4.5 minutes in all.
"""

from __future__ import annotations

import argparse
import time

import _user_rules  # noqa: F401  (registers "sign-symmetry", a rule written as a user would)
import numba
import torch

import simulate


def rate_full(rule, D, replicas, steps, device, repeats):
    init = simulate.Initialisation(K=2, M=2, D=D, seed=0)
    kw = dict(eta=1.0, replicas=replicas, engine="full", n_test=0, progress=False, device=device)
    simulate.run(init, rule, [0.0, min(20, steps) / D], **kw)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = simulate.run(init, rule, [0.0, steps / D], **kw)
        best = min(best, time.perf_counter() - t0)
    n = int(res.params["steps"][-1] - res.params["steps"][0])
    return replicas * n / best


def rate_reduced(rule, D, replicas, steps, device, backend, repeats, **options):
    init = simulate.Initialisation(K=2, M=2, D=D, seed=0)
    kw = dict(eta=1.0, replicas=replicas, n_test=0, progress=False, device=device, backend=backend, **options)
    simulate.run_reduced(init, rule, [0.0, min(20, steps) / D], **kw)  # warm-up (and numba compile / cache load)
    best = float("inf")
    for _ in range(repeats):
        res = simulate.run_reduced(init, rule, [0.0, steps / D], **kw)
        best = min(best, res.params["wall_s"])  # the chain itself (not the initial weights' overlaps)
    assert res.params["backend"] == backend
    return res.params["replica_steps"] / best


def rate_draws_only(D, replicas, steps):
    """The numba backend's floor: its in-kernel draws alone (counter-based Philox streams, one thread),
    and, for comparison, the same numbers of variables from numpy's fastest generator (SFC64) in bulk
    (what the kernel was given before it drew its own), in replica-steps / s."""
    import numpy as np

    from simulate.engines.reduced import kernel as _reduced_kernel
    from simulate.engines.reduced import rng as _rng

    r = 5
    shapes = np.array([0.5 * (D - r)])
    key = _rng.key_of(0)
    _reduced_kernel.draws_only(key, 32, 64, r, 0, 2, shapes, False)  # compile / load
    t0 = time.perf_counter()
    _reduced_kernel.draws_only(key, 32, replicas, r, 0, steps, shapes, False)
    kernel = replicas * steps / (time.perf_counter() - t0)
    g = np.random.Generator(np.random.SFC64(0))
    n = max(1, 2_000_000 // replicas)
    t0 = time.perf_counter()
    for _ in range(max(1, steps // n)):
        g.standard_normal((n, r, replicas))
        g.standard_gamma(shapes[0], (n, replicas))
    sfc = replicas * n * max(1, steps // n) / (time.perf_counter() - t0)
    return kernel, sfc


def finite_size(specs, replicas):
    print(f"finite-size study, bp, K = M = 2, erf, eta = 2, init seed 0, threshold eg < 1e-2, {replicas} replicas, "
          f"numba {numba.config.NUMBA_NUM_THREADS} threads; times in steps / D")
    print(f"{'D':>7s} {'t_max':>6s} {'escaped':>8s} {'q10':>8s} {'median':>8s} {'q90':>8s} {'mean':>8s} {'std':>7s} "
          f"{'ODE':>8s} {'eg_std@10':>10s} {'eg_std@50':>10s} {'wall s':>7s} {'rep-steps/s':>12s}")
    rows = []
    for spec in specs:
        D, t_max = (float(x) for x in spec.split(":"))
        (row,) = simulate.finite_size_study("bp", Ds=(int(D),), replicas=replicas, eta=2.0, t_max=t_max, dt=0.5,
                                            threshold=1e-2, spread_times=(1.0, 10.0, 50.0), init_seed=0, seed=0,
                                            progress=False)
        rows.append(row)
        rate = replicas * round(row["t_max"] * row["D"]) / row["wall_s"]
        print(
            f"{row['D']:7d} {row['t_max']:6g} {row['escaped_fraction']:8.2f} {row['escape_q0.1']:8.1f} "
            f"{row['escape_q0.5']:8.1f} {row['escape_q0.9']:8.1f} {row['escape_mean']:8.1f} {row['escape_std']:7.1f} "
            f"{row['ode_escape']:8.1f} {row['eg_std@10']:10.3g} {row['eg_std@50']:10.3g} {row['wall_s']:7.0f} "
            f"{rate:12.3g}",
            flush=True,
        )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas-full", type=int, default=256)
    p.add_argument("--replicas-reduced", type=int, default=4096)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument(
        "--steps-torch", type=int, default=200, help="steps for the (slow) torch backend of the reduced sampler"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--finite-size", nargs="+", metavar="D:T_MAX", help="run the bp finite-size study instead")
    p.add_argument("--fs-replicas", type=int, default=100)
    a = p.parse_args(argv)
    if a.finite_size:
        finite_size(a.finite_size, a.fs_replicas)
        return
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), numba {numba.__version__} "
        f"({numba.config.NUMBA_NUM_THREADS} threads), device {a.device}; K = M = 2, erf, eta = 1; steps: {a.steps} "
        f"(torch backend {a.steps_torch}); replicas: full {a.replicas_full}, reduced {a.replicas_reduced}; best of "
        f"{a.repeats}"
    )
    print(f"{'rule':7s} {'D':>6s} {'full':>10s} {'numba':>10s} {'torch':>10s} {'numba/full':>11s} {'torch/full':>11s} "
          f"{'numba/torch':>12s}   (replica-steps / s)")
    rates = {}
    for rule in ("bp", "pepita"):
        for D in (500, 10_000):
            full = rate_full(rule, D, a.replicas_full, a.steps, a.device, a.repeats)
            nb = rate_reduced(rule, D, a.replicas_reduced, a.steps, "cpu", "numba", a.repeats)
            tr = rate_reduced(rule, D, a.replicas_reduced, a.steps_torch, a.device, "torch", a.repeats)
            rates[rule, D] = nb, tr
            print(
                f"{rule:7s} {D:6d} {full:10.3g} {nb:10.3g} {tr:10.3g} {nb / full:11.1f} {tr / full:11.1f} "
                f"{nb / tr:12.1f}"
            )
    draws, sfc = rate_draws_only(500, a.replicas_reduced, a.steps)
    print(f"draws alone (r = 5 normals + 1 gamma per replica-step), one thread: in the kernel (Philox4x64-10 streams "
          f"keyed by seed, replica, step) {draws:.3g} replica-steps / s; numpy SFC64 in bulk {sfc:.3g} "
          f"(ratio {draws / sfc:.2f})")
    for rule in ("bp", "pepita"):
        (n5, t5), (n4, t4) = rates[rule, 500], rates[rule, 10_000]
        print(f"flatness in D ({rule}): rate at D=1e4 / D=500: numba {n4 / n5:.2f}, torch {t4 / t5:.2f}")
    print("paths of a rule (D = 500): the numba backend runs the rule's compiled update, generated from its one "
          "definition (theory.compiled_rule); the torch backend is the generic path, correct for any rule")
    for rule in ("bp", "sign-symmetry"):
        nb = rate_reduced(rule, 500, a.replicas_reduced, a.steps, "cpu", "numba", a.repeats)
        tr = rate_reduced(rule, 500, a.replicas_reduced, a.steps_torch, a.device, "torch", a.repeats)
        print(f"  {rule:14s} compiled (numba) {nb:10.3g}   generic (torch) {tr:10.3g}   ratio {nb / tr:5.1f}")
    print("feedback mirroring (eta_F = 0.6, mirror_norm; D = 500): every step factors the whole Gram matrix twice "
          "and draws xi (r normals + 1 chi-square) besides the learning step; the plain run beside it")
    for rule in ("afa", "pepita"):
        plain = rate_reduced(rule, 500, a.replicas_reduced, a.steps, "cpu", "numba", a.repeats)
        nb = rate_reduced(rule, 500, a.replicas_reduced, a.steps, "cpu", "numba", a.repeats, eta_F=0.6,
                          mirror_norm=True)
        tr = rate_reduced(rule, 500, a.replicas_reduced, a.steps_torch, a.device, "torch", a.repeats, eta_F=0.6,
                          mirror_norm=True)
        print(f"  {rule:7s} mirroring: numba {nb:10.3g}   torch {tr:10.3g}   numba/torch {nb / tr:6.1f}   "
              f"(numba without mirroring {plain:10.3g}: cost of mirroring x{plain / nb:.2f})")


if __name__ == "__main__":
    main()
