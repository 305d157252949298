"""The command line ``pepita-dynamics``.

    pepita-dynamics compare [--rules bp,fa,afa,pepita] [--rule file.py:NAME] [--g erf] [--D 500] [--eta 1] ...
        simulate every rule, integrate its ODE from the measured initial state, and write into
        --out: sim_<rule>.npz, ode_<rule>.npz, comparison.json (all parameters and agreement),
        summary.txt and the figures eg.png, angles.png, directions.png (K = 2).
    pepita-dynamics ode [--K 2] [--M 2] [--D 1000] [--eta 1] [--t-max 1000] ...
        integrate the ODEs of all rules from a default random initial condition (overlaps of random
        weights at dimension D) and write ode_<rule>.npz and learning_curves.png.
    pepita-dynamics fixed-points [--rules bp,afa] [--kind plateau|specialised|degenerate] [--eta 0.5] ...
            [--continue sigma_F=0.5:3]
        find each rule's fixed point (theory.symmetric_plateau, specialised_solution, degenerate_solution),
        its stability exponents and (for a saddle) the predicted plateau escape at --D; with --continue
        follow it in one hyper-parameter (theory.continuation) and locate its bifurcations. Writes
        fixed_points.json, and with --continue branch.csv and bifurcation.png.
    pepita-dynamics optimise --control eta=0.05:3 [--rules bp,pepita] [--objective eg_final] [--pieces 8] ...
        the optimal protocol of each rule (theory.optimal_protocol) against the best constant and power law:
        protocol_<rule>.json, schedule_<rule>_<control>.csv, curves.csv, optimise.png, summary.txt
        (simulate._cli_optimise).

A rule is a registered name (bp, fa, afa, pepita) or a rule of your own, given as
``path/to/file.py:NAME`` or ``module:NAME`` (NAME a theory.Rule subclass or instance, see
theory.load_rule), in --rules (comma-separated) or with --rule (repeatable).

Computing writes data first; the figures are then drawn from the data read back from disk.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import _cli_optimise
from ._cli_common import (
    COMPARE_DEFAULTS,
    EXIT_DIVERGED,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    _common,
    _draw,
    _exit,
    _headless,
    _HelpFormatter,
    _hyper,
    _jsonable,
    _optional_import,
    _out,
    _rules,
    _save_fig,
    _times,
    _variants,
)

__all__ = ["main", "build_parser", "COMPARE_DEFAULTS", "EXIT_OK", "EXIT_INPUT", "EXIT_DIVERGED", "EXIT_INTERRUPTED"]





def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pepita-dynamics", description=__doc__.split("\n\n")[0],
                                     formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser
    sub.add_parser = lambda *args, **kw: _add_parser(*args, **dict(dict(formatter_class=_HelpFormatter), **kw))
    pc = sub.add_parser("compare", help="simulations against ODEs, figures and summary")
    _common(pc, D=COMPARE_DEFAULTS["D"], t_max=COMPARE_DEFAULTS["t_max"])
    pc.add_argument("--replicas", type=int, default=COMPARE_DEFAULTS["replicas"], help="independent data streams")
    pc.add_argument("--independent-init", action="store_true", help="each replica draws its own initial student")
    pc.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    pc.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "float64"],
        help="default: the engine's (full float32, reduced float64)",
    )
    pc.add_argument(
        "--n-test",
        type=int,
        default=COMPARE_DEFAULTS["n_test"],
        help="sample of the empirical test error (default: the engine's; full 10000 held-out inputs; reduced "
        "0 when the activation's eps_g has a closed form, where it only re-estimates eg, else 1000)",
    )
    pc.add_argument("--engine", default="full", help="simulation engine (full, or a registered one such as reduced)")
    po = sub.add_parser("ode", help="ODE learning curves of all rules from a default initial condition")
    _common(po, D=1000, t_max=1000.0)
    ps = sub.add_parser("sweep", help="a grid of ODE learning curves: table (CSV) and phase diagrams")
    _common(ps, D=1000, t_max=1000.0)
    ps.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=VALUES",
        required=True,
        help="a grid axis: NAME=v1,v2,... or NAME=start:stop:num[:log] over a hyper-parameter (eta, eta_v, "
        "sigma, sigma_F, weight_decay, batch, train_second_layer, g, eta_F, kappa_F, mirror_norm, t_pre) or a rule "
        "option (presynaptic, "
        "error); repeatable",
    )
    ps.add_argument("--states", type=int, default=1, help="random initial conditions (seeds --init-seed, +1, ...)")
    ps.add_argument("--eg-target", type=float, default=None, help="add the time to reach this eg (column t_target)")
    ps.add_argument("--workers", type=int, default=None, help="run chunks of points in this many processes")
    ps.add_argument("--dask", default=None, metavar="ADDRESS", help="run chunks on a Dask scheduler (e.g. tcp://host:8786)")
    pf = sub.add_parser("fixed-points", help="fixed points, their stability and escape, continuation and bifurcations")
    _common(pf, D=1000, t_max=1e5)
    pf.add_argument("--kind", default="plateau", choices=["plateau", "specialised", "degenerate"],
                    help="plateau: the symmetric (unspecialised) saddle; specialised: w = w*, v = v* (K = M); "
                         "degenerate: sign-flipped units, w_k = s_k w*_k, v_k = s_k v*_k (K = M)")
    pf.add_argument("--signs", default=None, help="--kind degenerate: the signs s_k, comma-separated (default all -1)")
    pf.add_argument("--constants", default="identity", choices=["identity", "random"],
                    help="teacher constants T, U, P, v*, b: identity (T = I, U = 0, P = 1, v* = 1, b = 1) or random "
                         "(those of random weights at --D, seed --init-seed, as theory.random_state)")
    pf.add_argument("--continue", dest="continue_", default=None, metavar="PARAM=LO:HI",
                    help="continue each fixed point in PARAM (eta, eta_v, sigma, sigma_F, weight_decay) over [LO, HI]")
    pf.add_argument("--max-points", type=int, default=200, help="--continue: the most points in each direction")
    _cli_optimise.add_parser(sub)
    return parser






def cmd_compare(a) -> int:
    """Simulate and integrate every rule; each rule's data and the summary are written as soon as it is done."""
    import torch

    from ._compare import Comparison, compare
    from ._init import Initialisation
    _headless()
    from .plots import angles as plot_angles
    from .plots import directions as plot_directions
    from .plots import learning_curves as plot_eg

    out = _out(a)
    rules = [_variants(r, a) for r in _rules(a)]
    init = Initialisation(a.K, a.M, a.D, seed=a.init_seed)
    t = _times(a.t_max, a.n_times)
    hyper = _hyper(a)
    start = time.perf_counter()

    def save(cmp):
        cmp.save(out)
        (out / "summary.txt").write_text(
            cmp.summary() + f"\n\n{cmp.params['status']} after {time.perf_counter() - start:.1f} s\n"
        )

    cmp = compare(init, rules, t, hyper, replicas=a.replicas, independent_init=a.independent_init, device=a.device,
                  dtype=None if a.dtype is None else getattr(torch, a.dtype), seed=a.seed, n_test=a.n_test,
                  engine=a.engine, progress=not a.no_progress, throw=False, on_rule=save)
    save(cmp)

    def figures():
        loaded = Comparison.load(out)  # the figures are drawn from the data on disk
        figs = [_save_fig(plot_eg(loaded), out / "eg.png"), _save_fig(plot_angles(loaded), out / "angles.png")]
        if a.K == 2:
            figs.append(_save_fig(plot_directions(loaded), out / "directions.png"))
        return figs

    figs = _draw(figures, "the figures")
    print((out / "summary.txt").read_text())
    print("wrote", ", ".join(str(p) for p in [out / "comparison.json", out / "summary.txt", *(figs or [])]))
    statuses = [r.status for r in cmp.results.values()] + [tr.status for trs in cmp.trajectories.values() for tr in trs]
    return _exit(cmp.params["status"] == "interrupted", statuses + ([] if figs is not None else [-1]))


def cmd_ode(a) -> int:
    """Integrate every rule's ODE; each curve is written as soon as it is done."""
    import theory

    _headless()
    from .plots import learning_curves as plot_ode_curves

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
    figs = _draw(
        lambda: _save_fig(
            plot_ode_curves({name: theory.Trajectory.load(out / f"ode_{name}.npz") for name in trajs}),
            out / "learning_curves.png",
        ),
        "learning_curves.png",
    )
    print("wrote", ", ".join(str(p) for p in [*(out / f"ode_{name}.npz" for name in trajs), *(figs or [])]))
    return _exit(any(tr.status == 1 for tr in trajs.values()),
                 [tr.status for tr in trajs.values()] + ([] if figs is not None else [-1]))


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
                lo, hi, num = (
                    float(parts[0]),
                    float(parts[1]),
                    theory._internal.checks.integer("num", float(parts[2]), min=1),
                )
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
    from .plots import phase_diagrams as plot_phase_diagrams

    out = _out(a)
    grid = _grid(a.grid)
    states = [theory.random_state(a.K, a.M, D=a.D, seed=a.init_seed + i)
              for i in range(theory._internal.checks.integer("--states", a.states, min=1))]
    rules = [_variants(r, a) for r in _rules(a)]
    hyper = _hyper(a, grid)
    t = _times(a.t_max, max(a.n_times, 100))
    with contextlib.ExitStack() as stack:
        executor = None
        if a.dask is not None:
            distributed = _optional_import(
                "distributed", "--dask needs dask[distributed]: pip install 'dask[distributed]'"
            )
            executor = stack.enter_context(distributed.Client(a.dask, timeout="10s")).get_executor()
        elif a.workers is not None:
            import concurrent.futures

            executor = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                theory._internal.checks.integer("--workers", a.workers, min=1)))
        res = theory.sweep(
            states,
            grid=dict(grid, rule=rules),
            t=t,
            params=hyper,
            tags=dict(seed=[a.init_seed + i for i in range(len(states))]),
            eg_target=a.eg_target,
            executor=executor,
            progress=not a.no_progress,
        )
    res.save(out / "sweep.csv")
    print(f"{len(res)} points; status counts:", res.table["status"].value_counts().to_dict())
    figs = _draw(lambda: _save_fig(plot_phase_diagrams(theory.SweepResult.read_table(out / "sweep.csv"), list(grid)),
                                   out / "sweep.png"), "sweep.png")
    print("wrote", out / "sweep.csv", out / "sweep.json", *(figs or []))
    return _exit(bool(np.any(res.table["status"] == 1)), list(res.table["status"]) + ([] if figs is not None else [-1]))


def _continue_spec(spec, hyper):
    """--continue PARAM=LO:HI -> (param, lo, hi), checked against the hyper-parameters before any computation."""
    from theory._internal import HYPER_DIFFERENTIABLE

    name, sep, rng = spec.partition("=")
    name = name.strip().replace("-", "_")
    valid = [n for n in HYPER_DIFFERENTIABLE if n not in ("eta_F", "kappa_F")]
    if not sep or name not in valid:
        raise ValueError(f"--continue {spec!r}: expected PARAM=LO:HI with PARAM one of {valid}")
    try:
        lo, hi = (float(v) for v in rng.split(":"))
    except ValueError:
        raise ValueError(f"--continue {spec!r}: expected PARAM=LO:HI (two numbers)") from None
    lo, hi = min(lo, hi), max(lo, hi)
    p0 = getattr(hyper, name)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi and lo <= p0 <= hi):
        raise ValueError(f"--continue {spec!r}: needs LO < HI around the current {name} = {p0:g}")
    if name == "eta_v" and not hyper.train_second_layer:
        raise ValueError("--continue eta_v: the second layer is frozen (--freeze-second-layer)")
    return name, lo, hi




def _escape_record(fp, D, seed, t_max):
    """The predicted escape from the saddle ``fp`` at dimension D: from x* + D^-1/2 d, d a random unit vector of the
    free coordinates (seed), with its Q, R and S components only (v as at the fixed point)."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal(fp.eigenvalues.size)
    d[[i for i, lab in enumerate(fp.coordinates) if lab.startswith("v[")]] = 0.0
    d /= np.linalg.norm(d)
    scale = D ** -0.5
    for _ in range(30):  # the plateau may sit near the edge of the positive semi-definite states
        try:
            s0 = fp.perturbed(d, scale)
            break
        except ValueError:
            scale *= 0.5
    else:
        return dict(error="no valid perturbed state")
    try:
        esc = fp.escape(s0, t_max=t_max)
    except ValueError as exc:
        return dict(rate=float(fp.eigenvalues[0].real), per_ln_D=0.5 / float(fp.eigenvalues[0].real), error=str(exc))
    return dict(D=int(D), perturbation=float(scale), time=esc.time, linear_time=esc.linear_time,
                manifold_time=esc.manifold_time, rate=esc.rate, per_ln_D=esc.per_ln_D, projection=esc.projection,
                level=esc.level, mode=esc.mode)


def _find(rule, kind, hyper, constants, signs, a):
    import theory

    opts = dict(constants=constants, throw=False)
    if kind == "plateau":
        guess = None
        if rule.name == "pepita":  # afa is pepita's first-order expansion: its plateau is a cheap, close guess
            try:
                guess = theory.symmetric_plateau("afa", hyper, constants=constants).state
            except theory.FixedPointError:
                guess = None  # pepita's own symmetric-subspace integration then
        return theory.symmetric_plateau(rule, hyper, guess=guess, **opts)
    if kind == "specialised":
        return theory.specialised_solution(rule, hyper, **opts)
    return theory.degenerate_solution(rule, hyper, signs=signs, **opts)


def _branch_from_disk(table, record):
    """A theory.Branch rebuilt from branch.csv rows and fixed_points.json's branch record (no states): what
    bifurcation.png is drawn from."""
    import theory

    par = record["parameter"]
    coords = tuple(record["coordinates"])
    bifs = [theory.Bifurcation(kind=b["kind"], parameter=par, value=b["value"], state=None,
                               eigenvalue=complex(*b["eigenvalue"]), index=b["index"], eg=b["eg"])
            for b in record["bifurcations"]]
    n = len(table)
    return (
        theory.Branch(
            parameter=par,
            values=table[par].to_numpy(),
            x=table[list(coords)].to_numpy(),
            states=[],
            eigenvalues=table["leading"].to_numpy()[:, None],
            n_unstable=table["n_unstable"].to_numpy(),
            stable=table["stable"].to_numpy(dtype=bool),
            eg=table["eg"].to_numpy(),
            s=table["s"].to_numpy(),
            residual=table["residual"].to_numpy(),
            coordinates=coords,
            bifurcations=bifs,
            message=record["message"],
            params=dict(rule=record["rule"], rule_label=record["label"]),
        )
        if n
        else None
    )


def cmd_fixed_points(a) -> int:
    """Each rule's fixed point of --kind with its stability (and escape, for a saddle), optionally continued in one
    hyper-parameter: fixed_points.json, branch.csv, bifurcation.png (drawn from the files read back)."""
    import json

    import pandas as pd

    import theory

    _headless()
    out = _out(a)
    hyper = _hyper(a)
    rules = [_variants(r, a) for r in _rules(a)]
    spec = _continue_spec(a.continue_, hyper) if a.continue_ else None
    if a.kind != "plateau" and a.K != a.M:
        raise ValueError(f"--kind {a.kind}: needs --K == --M (a student unit per teacher unit), got K={a.K}, M={a.M}")
    signs = None
    if a.signs is not None:
        if a.kind != "degenerate":
            raise ValueError("--signs: only with --kind degenerate")
        try:
            signs = [float(s) for s in a.signs.split(",")]
        except ValueError:
            raise ValueError(f"--signs {a.signs!r}: expected comma-separated +1 / -1") from None
        if len(signs) != a.K or not all(s in (1.0, -1.0) for s in signs):
            raise ValueError(f"--signs {a.signs!r}: expected {a.K} values, each +1 or -1")
    D = theory._internal.checks.integer("--D", a.D, min=1)
    t_max = theory._internal.checks.number("--t-max", a.t_max, min=0.0)
    if a.constants == "identity":
        constants = theory.teacher_constants(a.K, a.M)
    else:
        constants = theory.random_state(a.K, a.M, D=D, seed=a.init_seed)
    records, tables, failed = [], [], False
    for rule in rules:
        start = time.perf_counter()
        try:
            fp = _find(rule, a.kind, hyper, constants, signs, a)
        except theory.FixedPointError as exc:
            fp = exc.result
            if fp is None:
                records.append(dict(rule=rule.key, kind=a.kind, success=False, message=str(exc)))
                print(f"{rule.key} {a.kind}: failed: {exc}")
                failed = True
                continue
        rec = dict(fp.summary(), rule=rule.key, label=rule.label, kind=a.kind, message=fp.message,
                   eigenvalues=fp.eigenvalues,
                   coordinates=list(fp.coordinates), x=fp.x, accuracy=fp.accuracy, angles=fp.angles,
                   state=dict(Q=fp.state.Q, R=fp.state.R, S=fp.state.S, v=fp.state.v, T=fp.state.T, U=fp.state.U,
                              P=fp.state.P, v_star=fp.state.v_star),
                   params=fp.params, info={k: v for k, v in fp.info.items() if k != "subspace_basis"})
        line = (f"{rule.key} {a.kind}: eg = {fp.eg:.6g}, residual = {fp.residual:.2g}, unstable = {fp.n_unstable}, "
                f"marginal = {fp.n_marginal}, leading exponent = {fp.eigenvalues[0].real:.6g}")
        if not fp.success:
            failed = True
            line += f" (not converged: {fp.message})"
        elif fp.n_unstable > 0:
            esc = _escape_record(fp, D, a.init_seed, t_max)
            rec["escape"] = esc
            if "time" in esc:
                line += (f"; escape rate {esc['rate']:.4g}, {esc['per_ln_D']:.4g} per ln D, predicted escape time "
                         f"{esc['time']:.4g} from a D^-1/2 perturbation at D = {D}")
        if spec is not None and fp.success:
            name, lo, hi = spec
            br = theory.continuation(fp, name, (lo, hi), max_points=a.max_points)
            tab = br.table()
            tab.insert(0, "rule", rule.key)
            tables.append(tab)
            rec["branch"] = dict(parameter=name, span=[lo, hi], points=len(br), message=br.message, rule=rule.key,
                                 label=rule.label, coordinates=list(br.coordinates),
                                 bifurcations=[dict(kind=b.kind, value=b.value, eg=b.eg, eigenvalue=b.eigenvalue,
                                                    index=b.index) for b in br.bifurcations])
            line += (f"\n  branch in {name}: {len(br)} points over [{br.values.min():.4g}, {br.values.max():.4g}], "
                     f"bifurcations: " + (", ".join(f"{b.kind} at {name} = {b.value:.6g}" for b in br.bifurcations)
                                         or "none"))
        rec["wall_s"] = time.perf_counter() - start
        records.append(rec)
        print(line)
    doc = dict(command="fixed-points", kind=a.kind, constants=a.constants, D=D, continuation=a.continue_,
               provenance=theory.provenance("cpu"), fixed_points=records)
    (out / "fixed_points.json").write_text(json.dumps(_jsonable(doc), indent=1))
    written = [out / "fixed_points.json"]
    if tables:
        pd.concat(tables, ignore_index=True).to_csv(out / "branch.csv", index=False)
        written.append(out / "branch.csv")
        table = pd.read_csv(out / "branch.csv")  # the figure is drawn from the data on disk
        saved = json.loads((out / "fixed_points.json").read_text())["fixed_points"]
        branches = [_branch_from_disk(table[table["rule"] == r["rule"]].reset_index(drop=True), r["branch"])
                    for r in saved if "branch" in r]
        ax = theory.plot_bifurcation([b for b in branches if b is not None])
        written.append(_save_fig(ax.figure, out / "bifurcation.png"))
    print("wrote", ", ".join(str(p) for p in written))
    return EXIT_DIVERGED if failed else EXIT_OK




def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input, 3 a run diverged, 130 interrupted)."""
    a = build_parser().parse_args(argv)
    try:
        import theory

        for name in ("K", "M", "D", "replicas"):
            if getattr(a, name, None) is not None:
                theory._internal.checks.integer(f"--{name}", getattr(a, name), min=1)
        commands = {"compare": cmd_compare, "ode": cmd_ode, "sweep": cmd_sweep, "fixed-points": cmd_fixed_points,
                    "optimise": _cli_optimise.cmd_optimise}
        return commands[a.command](a)
    except (ValueError, TypeError) as exc:
        print(f"pepita-dynamics {a.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"pepita-dynamics {a.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
