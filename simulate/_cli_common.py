"""What the subcommands of the command line share: the common options, the hyper-parameters and rules they name,
the output folder, figures drawn after the data are written, JSON values and the exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

#: Defaults of ``compare``: every rule learns visibly (bp and fa escape the plateau, afa and
#: pepita leave the initial error) and the whole job takes under 2 minutes on a 2-core CPU.
COMPARE_DEFAULTS = dict(
    rules="bp,fa,afa,pepita", D=500, K=2, M=2, eta=1.0, t_max=200.0, replicas=8, n_times=50, n_test=None
)


def _common(p, *, D, t_max):
    p.add_argument("--rules", default=None, help="comma-separated rules: names (bp, fa, afa, pepita) or file.py:NAME / "
                   f"module:NAME (default {COMPARE_DEFAULTS['rules']}, unless --rule is given)")
    p.add_argument("--rule", action="append", default=[], metavar="RULE",
                   help="a rule to add (name, path/to/file.py:NAME or module:NAME); repeatable")
    p.add_argument("--g", default="erf", help="activation of teacher and student (erf, relu, tanh, linear)")
    p.add_argument(
        "--presynaptic", default=None, choices=["modulated", "clean", "forward"], help="afa/pepita presynaptic input"
    )
    p.add_argument("--error", default=None, choices=["first", "modulated"], help="pepita's last-layer error")
    p.add_argument("--K", type=int, default=COMPARE_DEFAULTS["K"], help="student hidden units")
    p.add_argument("--M", type=int, default=COMPARE_DEFAULTS["M"], help="teacher hidden units")
    p.add_argument("--D", type=int, default=D, help="input dimension")
    p.add_argument("--eta", type=float, default=COMPARE_DEFAULTS["eta"], help="first-layer learning rate")
    p.add_argument("--eta-v", type=float, default=None, help="second-layer learning rate (default eta)")
    p.add_argument(
        "--eta-schedule",
        default=None,
        help="learning-rate schedule from --eta: constant, power:t0=10,p=1, step:every=50,factor=0.5,until=500, "
        "piecewise:50=0.5,100=0.25 or table:path.csv (t, eta)",
    )
    p.add_argument("--eta-v-schedule", default=None, help="second-layer schedule (same forms; default: eta's)")
    p.add_argument("--batch", type=int, default=1, help="mini-batch: samples averaged per step (t stays steps / D)")
    p.add_argument("--sigma", type=float, default=0.0, help="output noise std")
    p.add_argument("--sigma-F", type=float, default=1.0, help="scale (and sign) of the top-down projection F")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay kappa")
    p.add_argument("--freeze-second-layer", action="store_true", help="do not train v")
    p.add_argument("--eta-F", type=float, default=None, help="feedback mirroring rate of f (default 0: F fixed)")
    p.add_argument(
        "--eta-F-schedule",
        default=None,
        help="mirroring schedule from --eta-F (the forms of --eta-schedule, "
        "or windows:every=20,duration=5,until=500: mirroring during 5 of every 20 time units)",
    )
    p.add_argument("--kappa-F", type=float, default=0.0, help="mirroring decay of f")
    p.add_argument("--mirror-norm", action="store_true", help="keep |f|^2 / D at its initial value while mirroring")
    p.add_argument("--t-pre", type=float, default=0.0, help="pre-mirroring time: the rule learns from t_pre on")
    p.add_argument("--t-max", type=float, default=t_max, help="final time (steps / D)")
    p.add_argument(
        "--n-times", type=int, default=COMPARE_DEFAULTS["n_times"], help="number of log-spaced recording times"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the data streams (compare; the initial weights: --init-seed)"
    )
    p.add_argument("--init-seed", type=int, default=0, help="seed of the initial weights")
    p.add_argument("--out", default="./out", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each option's default appended, "(default: X)", where it has one worth showing (not
    None, False or empty) and its help does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = not (action.default is None or action.default is False or action.default is argparse.SUPPRESS
                     or (isinstance(action.default, (list, str)) and not action.default))
        if "default" not in text and action.option_strings and shown:
            text += " (default: %(default)s)"
        return text


#: exit codes: 0 finished, 2 bad input, 3 a run diverged or failed (its results are written), 130 interrupted
EXIT_OK, EXIT_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 130


def _headless():
    """The command line writes figures to files: matplotlib's Agg backend, whatever the environment says."""
    import matplotlib

    matplotlib.use("Agg")


def _times(t_max, n):
    import theory

    t_max = theory._internal.checks.number("--t-max", t_max)
    n = theory._internal.checks.integer("--n-times", n, min=1)
    if not t_max > 0.05:
        raise ValueError(f"--t-max must be > 0.05, got {t_max}")
    theory._internal.checks.memory(f"--n-times {n}", 8.0 * n * 200)
    return np.concatenate([[0.0], np.geomspace(0.05, t_max, n)])


def _save_fig(fig, path):
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _draw(make, what) -> list:
    """[the figure files ``make()`` writes], or [] with a message on stderr when drawing fails: the data are written
    first, and a figure that cannot be drawn (from diverged data, say) changes neither them nor the exit code of a
    diverged run; a run that finished but whose figures failed exits 3 (failed, results written)."""
    try:
        out = make()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - reported, the data are on disk
        print(f"pepita-dynamics: could not draw {what}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    return out if isinstance(out, list) else [out]


def _rules(a) -> list:
    """The rules of the command line: --rules (comma-separated) then every --rule, loaded and registered."""

    names = [r.strip() for r in (a.rules or ("" if a.rule else COMPARE_DEFAULTS["rules"])).split(",") if r.strip()]
    return [_load_rule(r) for r in names + list(a.rule)]


def _load_rule(spec):
    """theory.load_rule, with an error in the rule's own file (a syntax error, a failing import, an exception while
    it runs) reported as bad input: the file, the line and the error, not a traceback."""
    import traceback

    import theory

    try:
        return theory.load_rule(spec)
    except (ValueError, TypeError, KeyboardInterrupt):
        raise
    except SyntaxError as exc:
        raise ValueError(f"rule {spec!r}: {exc.filename}, line {exc.lineno}: SyntaxError: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - any error of the user's module is reported, with where it happened
        where = spec.rsplit(":", 1)[0]
        frames = traceback.extract_tb(exc.__traceback__)
        own = [f for f in frames if Path(f.filename).name == Path(where).name or where.replace(".", "/") in f.filename]
        frame = (own or frames)[-1]
        raise ValueError(f"rule {spec!r}: {frame.filename}, line {frame.lineno}: {type(exc).__name__}: {exc}") from None


#: the command line's option of each HyperParams field (errors name the option the user typed)
_OPTIONS = dict(eta="--eta", eta_v="--eta-v", sigma="--sigma", sigma_F="--sigma-F", weight_decay="--weight-decay",
                batch="--batch", g="--g", activation="--g", eta_F="--eta-F", kappa_F="--kappa-F", t_pre="--t-pre",
                mirror_norm="--mirror-norm")


def _hyper(a, grid=()):
    """The HyperParams of the command line, each value checked under its option's name. --kappa-F, --mirror-norm
    and --eta-F-schedule act only under feedback mirroring: without --eta-F (or an eta_F --grid axis) they are
    refused rather than silently ignored."""
    import theory

    checks = theory._internal.checks
    for attr, lo in (("eta", 0.0), ("eta_v", 0.0), ("sigma", 0.0), ("sigma_F", None), ("weight_decay", 0.0),
                     ("eta_F", 0.0), ("kappa_F", 0.0), ("t_pre", 0.0)):
        if getattr(a, attr) is not None:
            checks.number(_OPTIONS[attr], getattr(a, attr), **({} if lo is None else dict(min=lo)))
    checks.integer("--batch", a.batch, min=1)
    if a.eta_F is None and "eta_F" not in grid:
        inert = [opt for opt, on in (("--kappa-F", a.kappa_F != 0.0), ("--mirror-norm", a.mirror_norm),
                                     ("--eta-F-schedule", a.eta_F_schedule is not None)) if on]
        if inert:
            raise ValueError(
                f"{' and '.join(inert)} {'has' if len(inert) == 1 else 'have'} no effect without feedback "
                "mirroring: give --eta-F (the mirroring rate, > 0), or --eta-F 0 to keep it off explicitly"
            )
    eta_F0 = 0.0 if a.eta_F is None else a.eta_F

    def schedule(option, spec, value):
        try:
            return theory.parse_schedule(spec, value)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{option} {spec!r}: {exc}" if option not in str(exc) else str(exc)) from None

    eta = schedule("--eta-schedule", a.eta_schedule, a.eta)
    eta_v = a.eta_v if a.eta_v_schedule is None else schedule("--eta-v-schedule", a.eta_v_schedule,
                                                              a.eta if a.eta_v is None else a.eta_v)
    eta_F = schedule("--eta-F-schedule", a.eta_F_schedule, eta_F0) if a.eta_F_schedule else eta_F0
    try:
        return theory.HyperParams(eta=eta, eta_v=eta_v, sigma=a.sigma, sigma_F=a.sigma_F, weight_decay=a.weight_decay,
                                  train_second_layer=not a.freeze_second_layer, g=a.g, batch=a.batch, eta_F=eta_F,
                                  kappa_F=a.kappa_F, mirror_norm=a.mirror_norm, t_pre=a.t_pre)
    except (ValueError, TypeError) as exc:
        field = next((f for f in _OPTIONS if str(exc).startswith(f + " ") or str(exc).startswith(f + ":")), None)
        if field is None:
            raise
        raise type(exc)(f"{_OPTIONS[field]}: {exc}") from None


def _variants(rule, a):
    """The rule with the command line's --presynaptic / --error where it has those options."""
    import theory

    opts = {k: getattr(a, k) for k in ("presynaptic", "error") if k in rule.options() and getattr(a, k) is not None}
    return theory.make_rule(rule, **opts)


def _out(a) -> Path:
    import theory

    return theory._internal.checks.writable_folder(a.out, where="--out")


def _jsonable(obj):
    """Plain JSON types: complex numbers as [re, im], arrays as lists, anything else as its repr."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (complex, np.complexfloating)):
        return [float(obj.real), float(obj.imag)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return repr(obj)


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
        print(
            "pepita-dynamics: a run diverged or failed (see the messages above); its results are written",
            file=sys.stderr,
        )
        return EXIT_DIVERGED
    return EXIT_OK
