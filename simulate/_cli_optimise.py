"""``pepita-dynamics optimise``: the optimal protocol of each rule (theory.optimal_protocol), against the baselines.

    pepita-dynamics optimise --rules bp,pepita --control eta=0.05:3 [--control sigma_F=0.2:2] [--t-max 20]
            [--objective eg_final|eg_integral|time_to_target] [--pieces 8] [--simulate-D 1000]

Writes into --out, per rule: protocol_<rule>.json (the schedules of the optimum and the baselines, their values
and gains, the optimiser's record), schedule_<rule>_<control>.csv (t, value: ``--eta-schedule table:<file>``
reads it back), and for all rules curves.csv (protocol, t, eg, the controls), optimise.png (drawn from curves.csv
read back), summary.txt; with --simulate-D, the simulated eps_g(T) of each protocol (the exact sampler) in the
JSON and sim_<rule>_<protocol>.npz.
"""

from __future__ import annotations

import json
import time

import numpy as np

from . import _cli_common as cli

__all__ = ["add_parser", "cmd_optimise"]


def add_parser(sub):
    p = sub.add_parser("optimise", help="optimal protocols (eta, eta_v, sigma_F, eta_F in time) against the best "
                                        "constant and power law")
    cli._common(p, D=1000, t_max=20.0)
    p.add_argument("--control", action="append", default=[], metavar="NAME=LO:HI", required=True,
                   help="a control and its bounds: eta, eta_v, sigma_F or eta_F, e.g. eta=0.05:3; repeatable")
    p.add_argument("--objective", default="eg_final", choices=["eg_final", "eg_integral", "time_to_target"],
                   help="eg at --t-max, its (weighted) mean over [0, --t-max], or the time to reach --target")
    p.add_argument("--target", type=float, default=None, help="--objective time_to_target: the eg to reach")
    p.add_argument("--weight", type=float, default=None,
                   help="--objective eg_integral: weight t^q (q > -1; default the plain mean)")
    p.add_argument("--pieces", type=int, default=8, help="pieces of each control's schedule")
    p.add_argument("--spacing", default="linear", choices=["linear", "log"], help="the pieces' spacing in time")
    p.add_argument("--shape", default=None, choices=["constant", "linear"],
                   help="piecewise constant or piecewise linear (default linear; constant with a sigma_F control)")
    p.add_argument("--maxiter", type=int, default=50, help="optimiser iterations")
    p.add_argument("--no-baselines", action="store_true", help="skip the best constant and power law")
    p.add_argument("--simulate-D", type=int, default=None, metavar="D",
                   help="also simulate each protocol at this D (the exact sampler) and report eg(T)")
    p.add_argument("--replicas", type=int, default=8, help="--simulate-D: independent data streams")
    return p


def _controls(specs) -> dict:
    out = {}
    for spec in specs:
        name, sep, rng = spec.partition("=")
        lo, sep2, hi = rng.partition(":")
        name = name.strip()
        if not sep or not sep2:
            raise ValueError(f"--control {spec!r}: expected NAME=LO:HI, e.g. eta=0.05:3")
        if name in out:
            raise ValueError(f"--control {name!r} given twice")
        try:
            out[name] = (float(lo), float(hi))
        except ValueError:
            raise ValueError(f"--control {spec!r}: the bounds must be numbers, got {lo!r} and {hi!r}") from None
    return out


def _write_schedules(out, key, res) -> list:
    """schedule_<rule>_<control>.csv for each control of the optimum: (t, value) rows that ``table:`` reads back
    (a piecewise-constant schedule as its steps: each jump written as two rows a hair apart)."""
    written = []
    T = res.T
    for name, sched in res.schedules.items():
        times = [0.0, *[float(b) for b in sched.breakpoints() if 0 < b < T], T]
        if sched.kind == "piecewise":
            pts = [(0.0, float(sched(0.0)))]
            for b in times[1:-1]:
                pts += [(b - 1e-9 * T, float(sched(b - 1e-9 * T))), (b, float(sched(b)))]
            pts.append((T, float(sched(T))))
        else:  # linear between its knots (or constant): the knots are the table
            pts = [(t, float(sched(t))) for t in times]
        path = out / f"schedule_{key}_{name}.csv"
        np.savetxt(path, np.array(pts), delimiter=",", fmt="%.17g")
        written.append(path)
    return written


def _simulate(res, rule, D, replicas, seed, progress) -> dict:
    """{protocol: its SimulationResult}: each protocol simulated by the exact sampler at D from res.state0."""
    import theory

    from ._run import run_reduced

    t = np.linspace(0.0, res.T, 21)
    sims = {}
    for name, prot in res.protocols().items():
        params = theory.control.protocol.protocol_params(res.hyper, prot.schedules, where="--simulate-D")
        sims[name] = run_reduced(res.state0, rule, t, params, D=D, replicas=replicas, seed=seed, progress=progress,
                                 throw=False)
    return sims


def _figure(out):
    """optimise.png from curves.csv read back (theory.plots.protocols): what the file holds is what is drawn."""
    import pandas as pd

    from theory.plots import protocols

    fig = protocols(pd.read_csv(out / "curves.csv"))
    return cli._save_fig(fig, out / "optimise.png")


def cmd_optimise(a) -> int:
    """Each rule's optimal protocol: its JSON and schedules as soon as it is found, then curves.csv, the figure."""
    import pandas as pd

    import theory

    cli._headless()
    out = cli._out(a)
    hyper = cli._hyper(a)
    controls = _controls(a.control)
    rules = [cli._variants(r, a) for r in cli._rules(a)]
    if a.simulate_D is not None:
        theory._internal.checks.integer("--simulate-D", a.simulate_D, min=1)
        if "sigma_F" in controls:
            raise ValueError("--simulate-D: a sigma_F protocol changes F between pieces; one simulation run holds F "
                             "fixed")
    state0 = theory.random_state(a.K, a.M, D=a.D, seed=a.init_seed)
    T = theory._internal.checks.number("--t-max", a.t_max, min=0.0)
    extra = {k: v for k, v in (("target", a.target), ("weight", a.weight)) if v is not None}
    lines, frames, statuses, interrupted = [], [], [], False
    for rule in rules:
        start = time.perf_counter()
        res = theory.optimal_protocol(state0, rule, T, controls, a.objective, hyper, pieces=a.pieces,
                                      spacing=a.spacing, shape=a.shape, baselines=not a.no_baselines,
                                      maxiter=a.maxiter, progress=not a.no_progress, **extra)
        doc = res.to_dict()
        written = _write_schedules(out, rule.key, res)
        doc["schedule_files"] = {k: str(p) for k, p in zip(res.schedules, written)}
        line = res.summary()
        if a.simulate_D is not None and res.status != 1:
            sims = _simulate(res, rule, a.simulate_D, a.replicas, a.seed, not a.no_progress)
            doc["simulation"] = {"D": a.simulate_D, "replicas": a.replicas, "seed": a.seed, "engine": "reduced"}
            for name, sim in sims.items():
                sim.save(out / f"sim_{rule.key}_{name}.npz")
                m, s = float(sim.mean("eg")[-1]), float(sim.sem("eg")[-1])
                doc["simulation"][name] = {"eg_T": m, "sem": s, "status": sim.status}
                statuses.append(sim.status)
                line += f"\n  simulated (D = {a.simulate_D}) {name:<10} eg(T) = {m:.5g} +- {s:.2g}"
        doc["wall_s"] = time.perf_counter() - start
        (out / f"protocol_{rule.key}.json").write_text(json.dumps(cli._jsonable(doc), indent=1))
        curves = res.curves()
        curves.insert(0, "rule", rule.key)
        frames.append(curves)
        pd.concat(frames, ignore_index=True).to_csv(out / "curves.csv", index=False)
        lines.append(line)
        print(line, flush=True)
        if res.status == 1:
            interrupted = True
            break
    (out / "summary.txt").write_text("\n\n".join(lines) + "\n")
    figs = cli._draw(lambda: _figure(out), "optimise.png")
    print("wrote", ", ".join(str(p) for p in [*(out / f"protocol_{r.key}.json" for r in rules[: len(frames)]),
                                             out / "curves.csv", out / "summary.txt", *(figs or [])]))
    return cli._exit(interrupted, statuses + ([] if figs is not None else [-1]))
