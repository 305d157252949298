"""The command line ``pepita-dynamics``.

    pepita-dynamics compare [--rules bp,fa,afa,pepita] [--rule file.py:NAME] [--g erf] [--D 500] [--eta 1] ...
        simulate every rule, integrate its ODE from the measured initial state, and write into
        --out: sim_<rule>.npz, ode_<rule>.npz, comparison.json (all parameters and agreement),
        summary.txt and the figures eg.png, angles.png, directions.png (K = 2).
    pepita-dynamics ode [--K 2] [--M 2] [--D 1000] [--eta 1] [--t-max 1000] ...
        integrate the ODEs of all rules from a default random initial condition (overlaps of random
        weights at dimension D) and write ode_<rule>.npz and learning_curves.png.

A rule is a registered name (bp, fa, afa, pepita) or a rule of your own, given as
``path/to/file.py:NAME`` or ``module:NAME`` (NAME a theory.Rule subclass or instance, see
theory.load_rule), in --rules (comma-separated) or with --rule (repeatable).

Computing writes data first; the figures are then drawn from the data read back from disk.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser"]

#: Defaults of ``compare``: every rule learns visibly (bp and fa escape the plateau, afa and
#: pepita leave the initial error) and the whole job takes under 2 minutes on a 2-core CPU.
COMPARE_DEFAULTS = dict(rules="bp,fa,afa,pepita", D=500, K=2, M=2, eta=1.0, t_max=200.0, replicas=8, n_times=50, n_test=None)


def _common(p, *, D, t_max):
    p.add_argument("--rules", default=None, help="comma-separated rules: names (bp, fa, afa, pepita) or file.py:NAME / "
                   f"module:NAME (default {COMPARE_DEFAULTS['rules']}, unless --rule is given)")
    p.add_argument("--rule", action="append", default=[], metavar="RULE",
                   help="a rule to add (name, path/to/file.py:NAME or module:NAME); repeatable")
    p.add_argument("--g", default="erf", help="activation of teacher and student (erf, relu, tanh, linear)")
    p.add_argument("--presynaptic", default=None, choices=["modulated", "clean", "forward"], help="afa/pepita presynaptic input")
    p.add_argument("--error", default=None, choices=["first", "modulated"], help="pepita's last-layer error")
    p.add_argument("--K", type=int, default=COMPARE_DEFAULTS["K"], help="student hidden units")
    p.add_argument("--M", type=int, default=COMPARE_DEFAULTS["M"], help="teacher hidden units")
    p.add_argument("--D", type=int, default=D, help="input dimension")
    p.add_argument("--eta", type=float, default=COMPARE_DEFAULTS["eta"], help="first-layer learning rate")
    p.add_argument("--eta-v", type=float, default=None, help="second-layer learning rate (default eta)")
    p.add_argument("--eta-schedule", default=None,
                   help="learning-rate schedule from --eta: constant, power:t0=10,p=1, step:every=50,factor=0.5,until=500, "
                        "piecewise:50=0.5,100=0.25 or table:path.csv (t, eta)")
    p.add_argument("--eta-v-schedule", default=None, help="second-layer schedule (same forms; default: eta's)")
    p.add_argument("--batch", type=int, default=1, help="mini-batch: samples averaged per step (t stays steps / D)")
    p.add_argument("--sigma", type=float, default=0.0, help="output noise std")
    p.add_argument("--sigma-F", type=float, default=1.0, help="scale (and sign) of the top-down projection F")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay kappa")
    p.add_argument("--freeze-second-layer", action="store_true", help="do not train v")
    p.add_argument("--eta-F", type=float, default=0.0, help="feedback mirroring rate of f (0: F fixed)")
    p.add_argument("--eta-F-schedule", default=None, help="mirroring schedule from --eta-F (the forms of --eta-schedule, "
                   "or windows:every=20,duration=5,until=500: mirroring during 5 of every 20 time units)")
    p.add_argument("--kappa-F", type=float, default=0.0, help="mirroring decay of f")
    p.add_argument("--mirror-norm", action="store_true", help="keep |f|^2 / D at its initial value while mirroring")
    p.add_argument("--t-pre", type=float, default=0.0, help="pre-mirroring time: the rule learns from t_pre on")
    p.add_argument("--t-max", type=float, default=t_max, help="final time (steps / D)")
    p.add_argument("--n-times", type=int, default=COMPARE_DEFAULTS["n_times"], help="number of log-spaced recording times")
    p.add_argument("--seed", type=int, default=0, help="seed of the data streams (compare) / initial weights (ode)")
    p.add_argument("--init-seed", type=int, default=0, help="seed of the initial weights")
    p.add_argument("--out", default="./out", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pepita-dynamics", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pc = sub.add_parser("compare", help="simulations against ODEs, figures and summary")
    _common(pc, D=COMPARE_DEFAULTS["D"], t_max=COMPARE_DEFAULTS["t_max"])
    pc.add_argument("--replicas", type=int, default=COMPARE_DEFAULTS["replicas"], help="independent data streams")
    pc.add_argument("--independent-init", action="store_true", help="each replica draws its own initial student")
    pc.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    pc.add_argument("--dtype", default=None, choices=["float32", "float64"], help="default: the engine's (full float32, reduced float64)")
    pc.add_argument("--n-test", type=int, default=COMPARE_DEFAULTS["n_test"], help="held-out inputs for the empirical test error (default 10000; 0 with --engine reduced when "
                    "the activation's eps_g has a closed form, where it only re-estimates eg)")
    pc.add_argument("--engine", default="full", help="simulation engine (full, or a registered one such as reduced)")
    po = sub.add_parser("ode", help="ODE learning curves of all rules from a default initial condition")
    _common(po, D=1000, t_max=1000.0)
    ps = sub.add_parser("sweep", help="a grid of ODE learning curves: table (CSV) and phase diagrams")
    _common(ps, D=1000, t_max=1000.0)
    ps.add_argument("--grid", action="append", default=[], metavar="NAME=VALUES", required=True,
                    help="a grid axis: NAME=v1,v2,... or NAME=start:stop:num[:log] over a hyper-parameter (eta, eta_v, "
                         "sigma, sigma_F, weight_decay, batch, train_second_layer, g, eta_F, kappa_F, mirror_norm, t_pre) or a rule "
                         "option (presynaptic, "
                         "error); repeatable")
    ps.add_argument("--states", type=int, default=1, help="random initial conditions (seeds --init-seed, +1, ...)")
    ps.add_argument("--eg-target", type=float, default=None, help="add the time to reach this eg (column t_target)")
    ps.add_argument("--workers", type=int, default=None, help="run chunks of points in this many processes")
    ps.add_argument("--dask", default=None, metavar="ADDRESS", help="run chunks on a Dask scheduler (e.g. tcp://host:8786)")
    return parser


#: exit codes: 0 finished, 2 bad input, 3 a run diverged or failed (its results are written), 130 interrupted
EXIT_OK, EXIT_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 130


def _headless():
    """The command line writes figures to files: matplotlib's Agg backend, whatever the environment says."""
    import matplotlib

    matplotlib.use("Agg")


def _times(t_max, n):
    import theory

    t_max = theory.checks.number("--t-max", t_max)
    n = theory.checks.integer("--n-times", n, min=1)
    if not t_max > 0.05:
        raise ValueError(f"--t-max must be > 0.05, got {t_max}")
    theory.checks.memory(f"--n-times {n}", 8.0 * n * 200)
    return np.concatenate([[0.0], np.geomspace(0.05, t_max, n)])


def _save_fig(fig, path):
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _rules(a) -> list:
    """The rules of the command line: --rules (comma-separated) then every --rule, loaded and registered."""
    import theory

    names = [r.strip() for r in (a.rules or ("" if a.rule else COMPARE_DEFAULTS["rules"])).split(",") if r.strip()]
    return [theory.load_rule(r) for r in names + list(a.rule)]


def _hyper(a):
    import theory

    eta = theory.parse_schedule(a.eta_schedule, a.eta)
    eta_v = a.eta_v if a.eta_v_schedule is None else theory.parse_schedule(a.eta_v_schedule, a.eta if a.eta_v is None else a.eta_v)
    eta_F = theory.parse_schedule(a.eta_F_schedule, a.eta_F) if a.eta_F_schedule else a.eta_F
    return theory.HyperParams(eta=eta, eta_v=eta_v, sigma=a.sigma, sigma_F=a.sigma_F, weight_decay=a.weight_decay,
                              train_second_layer=not a.freeze_second_layer, g=a.g, batch=a.batch, eta_F=eta_F,
                              kappa_F=a.kappa_F, mirror_norm=a.mirror_norm, t_pre=a.t_pre)


def _variants(rule, a):
    """The rule with the command line's --presynaptic / --error where it has those options."""
    import theory

    opts = {k: getattr(a, k) for k in ("presynaptic", "error") if k in rule.options() and getattr(a, k) is not None}
    return theory.make_rule(rule, **opts)


def _out(a) -> Path:
    import theory

    return theory.checks.writable_folder(a.out, where="--out")


def cmd_compare(a) -> int:
    """Simulate and integrate every rule; each rule's data and the summary are written as soon as it is done."""
    import torch

    from ._compare import Comparison, compare
    from ._init import Initialisation
    _headless()
    from ._plots import plot_angles, plot_directions, plot_eg

    out = _out(a)
    rules = [_variants(r, a) for r in _rules(a)]
    init = Initialisation(a.K, a.M, a.D, seed=a.init_seed)
    t = _times(a.t_max, a.n_times)
    hyper = _hyper(a)
    start = time.perf_counter()

    def save(cmp):
        cmp.save(out)
        (out / "summary.txt").write_text(cmp.summary() + f"\n\n{cmp.params['status']} after {time.perf_counter() - start:.1f} s\n")

    cmp = compare(init, rules, t, hyper, replicas=a.replicas, independent_init=a.independent_init, device=a.device,
                  dtype=None if a.dtype is None else getattr(torch, a.dtype), seed=a.seed, n_test=a.n_test,
                  engine=a.engine, progress=not a.no_progress, throw=False, on_rule=save)
    save(cmp)
    loaded = Comparison.load(out)  # the figures are drawn from the data on disk
    figs = [_save_fig(plot_eg(loaded), out / "eg.png"), _save_fig(plot_angles(loaded), out / "angles.png")]
    if a.K == 2:
        figs.append(_save_fig(plot_directions(loaded), out / "directions.png"))
    print((out / "summary.txt").read_text())
    print("wrote", ", ".join(str(p) for p in [out / "comparison.json", out / "summary.txt", *figs]))
    statuses = [r.status for r in cmp.results.values()] + [tr.status for trs in cmp.trajectories.values() for tr in trs]
    return _exit(cmp.params["status"] == "interrupted", statuses)


def cmd_ode(a) -> int:
    """Integrate every rule's ODE; each curve is written as soon as it is done."""
    import theory

    _headless()
    from ._plots import plot_ode_curves

    out = _out(a)
    state0 = theory.random_state(a.K, a.M, D=a.D, seed=a.init_seed)
    t = _times(a.t_max, max(a.n_times, 100))
    hyper = _hyper(a)
    rules = [_variants(r, a) for r in _rules(a)]
    trajs = {}
    for rule in rules:
        tr = theory.integrate(state0, rule, t, hyper, throw=False, progress=not a.no_progress)
        tr.save(out / f"ode_{rule.key}.npz")
        trajs[rule.key] = tr
        print(f"{rule.key}: {tr.message}; eg(t={tr.t[-1]:g}) = {tr.eg[-1]:.4g}")
        if tr.status == 1:
            break
    loaded = {name: theory.Trajectory.load(out / f"ode_{name}.npz") for name in trajs}
    print("wrote", _save_fig(plot_ode_curves(loaded), out / "learning_curves.png"))
    return _exit(any(tr.status == 1 for tr in trajs.values()), [tr.status for tr in trajs.values()])


_GRID_TYPES = dict(batch=int, train_second_layer=lambda s: {"true": True, "false": False}[s.strip().lower()],
                   g=str, presynaptic=str, error=str)


def _grid(specs) -> dict:
    """--grid NAME=v1,v2 / NAME=start:stop:num[:log] -> {name: values}."""
    import theory

    valid = set(theory.HyperParams.__dataclass_fields__) | {"presynaptic", "error"}
    grid = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ValueError(f"--grid {spec!r}: expected NAME=v1,v2,... or NAME=start:stop:num[:log]")
        if name not in valid:
            raise ValueError(f"--grid {spec!r}: {name!r} is not a sweepable parameter; expected one of {sorted(valid)}")
        if name in grid:
            raise ValueError(f"--grid: {name!r} given twice")
        conv = _GRID_TYPES.get(name, float)
        try:
            if ":" in values and conv is float:
                parts = values.split(":")
                if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "log"):
                    raise ValueError("start:stop:num[:log]")
                lo, hi, num = float(parts[0]), float(parts[1]), theory.checks.integer("num", float(parts[2]), min=1)
                vals = list(np.geomspace(lo, hi, num) if len(parts) == 4 else np.linspace(lo, hi, num))
            else:
                vals = [conv(v) for v in values.split(",") if v.strip()]
        except (ValueError, KeyError) as exc:
            raise ValueError(f"--grid {spec!r}: cannot read the values ({exc})") from None
        if not vals:
            raise ValueError(f"--grid {spec!r}: no values")
        grid[name] = vals
    return grid


def cmd_sweep(a) -> int:
    """A grid of ODE learning curves for every rule: sweep.csv (one row per point), sweep.json (parameters,
    provenance) and sweep.png (phase diagrams)."""
    import contextlib

    import theory

    _headless()
    from ._plots import plot_phase_diagrams

    out = _out(a)
    grid = _grid(a.grid)
    states = [theory.random_state(a.K, a.M, D=a.D, seed=a.init_seed + i)
              for i in range(theory.checks.integer("--states", a.states, min=1))]
    rules = [_variants(r, a) for r in _rules(a)]
    hyper = _hyper(a)
    t = _times(a.t_max, max(a.n_times, 100))
    with contextlib.ExitStack() as stack:
        executor = None
        if a.dask is not None:
            distributed = _optional_import("distributed", "--dask needs dask[distributed]: pip install 'dask[distributed]'")
            executor = stack.enter_context(distributed.Client(a.dask, timeout="10s")).get_executor()
        elif a.workers is not None:
            import concurrent.futures

            executor = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                theory.checks.integer("--workers", a.workers, min=1)))
        res = theory.sweep(states, grid=dict(grid, rule=rules), t=t, params=hyper, tags=dict(seed=[a.init_seed + i for i in range(len(states))]),
                           eg_target=a.eg_target, executor=executor, progress=not a.no_progress)
    res.save(out / "sweep.csv")
    print(f"{len(res)} points; status counts:", res.table["status"].value_counts().to_dict())
    fig = plot_phase_diagrams(theory.SweepResult.read_table(out / "sweep.csv"), list(grid))
    print("wrote", out / "sweep.csv", out / "sweep.json", _save_fig(fig, out / "sweep.png"))
    return _exit(bool(np.any(res.table["status"] == 1)), list(res.table["status"]))


def _optional_import(name, hint):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ValueError(hint) from None


def _exit(interrupted: bool, statuses) -> int:
    if interrupted:
        print("pepita-dynamics: interrupted; what was computed is written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if any(s < 0 for s in statuses):
        print("pepita-dynamics: a run diverged or failed (see the messages above); its results are written", file=sys.stderr)
        return EXIT_DIVERGED
    return EXIT_OK


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input, 3 a run diverged, 130 interrupted)."""
    a = build_parser().parse_args(argv)
    try:
        return {"compare": cmd_compare, "ode": cmd_ode, "sweep": cmd_sweep}[a.command](a)
    except (ValueError, TypeError) as exc:
        print(f"pepita-dynamics {a.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"pepita-dynamics {a.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
