"""Figures of simulations and ODEs: learning curves, alignment angles, directions, and Figure 2 of the PEPITA paper.

The functions, and what each draws::

    plots.learning_curves(data, *, ax=None)       eps_g(t): simulation mean +- sem (band), ODE (dashed), test-set eg
    plots.angles(data, names=ANGLES, *, ax=None)  alignment angles (THEORY.md section 5), one panel per angle
    plots.directions(cmp, *, ax=None)             K = 2: directions in the plane of v, the feedback, v* and s v*
    plots.fig2(cmp, *, angles=("teacher", "feedback"), directions=None)
                                                  Figure 2 of the ICLR 2024 PEPITA paper (Srinivasan and others)
    plots.phase_diagrams(table, over)             summaries of a sweep table over one or two of its parameters
    plots.protocols(curves)                       an optimal protocol against its baselines (OptimalProtocol.curves)
    plots.plot_result(data, what="eg")            what Trajectory.plot and SimulationResult.plot draw

Drawing needs no simulation, so the figures live in ``theory.plots``; ``simulate.plots`` is the same
functions under the name the documentation and the command line use. ``Comparison.plot``,
``Trajectory.plot``, ``SimulationResult.plot`` and ``SweepResult.plot`` call them.

``data`` is a :class:`simulate.Comparison`, a :class:`simulate.SimulationResult`, a
:class:`theory.Trajectory`, or a mapping name -> SimulationResult / Trajectory. Every function only
reads what it is given (computed, or loaded with ``Comparison.load``), draws into new axes or into the
axes passed as ``ax=`` (one Axes, or a sequence with one per panel), and returns the Figure it drew on.
Nothing here simulates or integrates.

Colour is the rule; a solid line with a band is the simulation (mean +- sem over the replicas), a
dashed line its ODE. Legend labels are the rule's key (``bp``, ``pepita``, ``pepita-clean``: options
appear only where they differ from the defaults) and "simulation" / "ODE". On a figure these functions
create, the legend sits below the axes, outside the data; in axes passed by the caller it goes where it
covers the fewest points (``loc="best"``), or nowhere with ``legend=False``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt  # the backend is the caller's: inline in notebooks, Agg in the command line
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .results.summaries import plateau_split
from .rules._base import rule_from_params

__all__ = ["ANGLES", "ANGLE_TITLES", "CELL_MARKS", "angles", "directions", "fig2", "learning_curves", "phase_diagrams",
           "plot_result", "protocols", "PROTOCOL_STYLES"]

#: Panel titles of the alignment angles (THEORY.md section 5), by the names of ``alignment_angles``.
ANGLE_TITLES = {
    "teacher": r"angle$(v, v^*)$",
    "degenerate_min": r"min$_{s \neq 1}$ angle$(v, s\,v^*)$",
    "feedback": r"angle(feedback, $v$)",
    "end_to_end": r"angle$(F, (W_2 W_1)^\top)$",
}
#: The angles :func:`angles` draws by default, in this order.
ANGLES = ("teacher", "degenerate_min", "feedback", "end_to_end")

_ENGINES = {"full": "full weights", "reduced": "exact order-parameter sampler"}
_ANGLE_LIM = (-8.0, 188.0)  # a margin around [0, 180]: a curve at 0 degrees (bp's feedback is v itself) stays visible
_GREY = "0.45"


# --------------------------------------------------------------------------- what is drawn: one series per rule
@dataclasses.dataclass(frozen=True)
class _Series:
    """One named curve family: a simulation and/or an ODE (t, eg, angles), and how the ODE is labelled."""

    name: str
    sim: Any = None  # SimulationResult or None
    ode_t: np.ndarray | None = None
    ode_eg: np.ndarray | None = None
    ode_angles: Any = None  # callable () -> dict name -> (n,) degrees, or None
    ode_of: str | None = None  # the ODE's rule where it differs from the simulated one (shown in its label)
    t_split: float | None = None  # the ODE's plateau escape, when it lies inside the window


def _is_comparison(obj) -> bool:
    return all(hasattr(obj, a) for a in ("results", "trajectories", "ode_rules", "notes"))


def _is_simulation(obj) -> bool:
    return hasattr(obj, "eg_test") and hasattr(obj, "sem")


def _rule_name(label: str) -> str:
    """'[afa, pre=modulated]' -> 'afa': the rule of an ODE label, without its options."""
    return label.strip("[]").split(",")[0].strip()


def _trajectory_series(name, tr) -> _Series:
    return _Series(name=name, ode_t=np.asarray(tr.t), ode_eg=np.asarray(tr.eg), ode_angles=lambda: tr.angles)


def _series(data) -> list[_Series]:
    """The curve families of a Comparison, a SimulationResult, a Trajectory, or a mapping name -> either."""
    if _is_comparison(data):
        out = []
        for key in data.rules:
            res, t_ode, eg_ode = data.results[key], data.ode_t(key), data.ode_eg(key)
            split = plateau_split(t_ode, eg_ode)
            differs = data.notes.get(key) is not None
            out.append(_Series(name=key, sim=res, ode_t=t_ode, ode_eg=eg_ode,
                               ode_angles=functools.cache(lambda k=key: data.ode_angles(k)),
                               ode_of=_rule_name(data.ode_rules[key]) if differs else None,
                               t_split=split if split < res.t[-1] else None))
        return out
    if isinstance(data, Mapping):
        out = []
        for name, obj in data.items():
            if _is_comparison(obj) or isinstance(obj, Mapping):
                raise TypeError("plots: a mapping's values are SimulationResults or Trajectories, "
                                f"got {type(obj).__name__}")
            out += [dataclasses.replace(s, name=str(name)) for s in _series(obj)]
        return out
    if _is_simulation(data):
        return [_Series(name=_key_of(data.params), sim=data)]
    if hasattr(data, "eg") and hasattr(data, "t"):
        return [_trajectory_series(_key_of(data.params), data)]
    raise TypeError("plots: expected a Comparison, SimulationResult, Trajectory or a mapping of them, "
                    f"got {type(data).__name__}")


def _key_of(params) -> str:
    rule = rule_from_params(params)
    return rule.key if rule is not None else str(params.get("rule", "?"))


def _params_of(data) -> dict:
    if isinstance(data, Mapping):
        first = next(iter(data.values()), None)
        return dict(first.params) if first is not None else {}
    return dict(data.params)


# --------------------------------------------------------------------------- helpers
def _colors(names):
    cyc = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {k: cyc[i % len(cyc)] for i, k in enumerate(names)}


def _axes(ax, n: int, figsize) -> tuple[Figure | SubFigure, list[Axes], bool]:
    """(figure, n axes, whether this call made them): the caller's ax (one Axes or a sequence) or a new row."""
    if ax is None:
        fig, grid = plt.subplots(1, n, figsize=figsize, squeeze=False, layout="constrained")
        return fig, list(grid[0]), True
    axs = [ax] if isinstance(ax, Axes) else list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axs) != n or not all(isinstance(a, Axes) for a in axs):
        raise ValueError(f"plots: ax must be {n} matplotlib Axes (one per panel), got {len(axs)}")
    return axs[0].get_figure(root=False), axs, False


def _entries_of(axs):
    """The labelled artists of the axes, one per label (replicas and repeated lines share theirs)."""
    out = {}
    for ax in axs:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            out.setdefault(lab, h)
    return [(h, lab) for lab, h in out.items()]


def _rule_entries(series, col, data_kinds=True):
    """The legend of the curve families: a colour swatch per rule, then one entry per line style drawn."""
    entries = [(Patch(color=col[s.name]), s.name if s.ode_of is None else f"{s.name} (ODE: {s.ode_of})")
               for s in series]
    sims, odes = any(s.sim is not None for s in series), any(s.ode_eg is not None for s in series)
    if data_kinds and sims:
        entries.append(((Patch(color=_GREY, alpha=0.25, lw=0), Line2D([], [], color=_GREY, lw=1.5)), "simulation"))
    if data_kinds and sims and odes:
        entries.append((Line2D([], [], color=_GREY, ls="--", lw=1.2), "ODE"))
    return entries


def _legend(where, entries, own: bool, ax=None):
    """One legend: below the panels of a figure made here (outside the data), else at loc="best" in ax.

    Entries are laid out row by row, as many per row as the figure's width holds."""
    if not entries:
        return None
    handles, labels = [h for h, _ in entries], [lab for _, lab in entries]
    if not own:
        return ax.legend(handles, labels, loc="best", fontsize=7, handler_map={tuple: HandlerTuple(ndivide=1)})
    width = where.get_figure(root=True).get_figwidth() if isinstance(where, SubFigure) else where.get_figwidth()
    per_entry = max(1.45, 0.062 * max(len(lab) for lab in labels) + 0.6)  # inches, at fontsize 8
    ncols = max(1, min(len(entries), int(width / per_entry)))
    rows = -(-len(entries) // ncols)
    blank = Line2D([], [], alpha=0)
    handles += [blank] * (rows * ncols - len(entries))
    labels += [""] * (rows * ncols - len(entries))
    order = [i * ncols + j for j in range(ncols) for i in range(rows)]  # matplotlib fills columns first
    return where.legend([handles[k] for k in order], [labels[k] for k in order], loc="outside lower center",
                        ncols=ncols, fontsize=8, frameon=False, handler_map={tuple: HandlerTuple(ndivide=1)})


def _unique(entries):
    return list({lab: (h, lab) for h, lab in entries}.values())


def _test_entry():
    return Line2D([], [], ls="none", marker=".", color=_GREY), "test-set eg"


def _escape_entry():
    return Line2D([], [], ls=":", color=_GREY, lw=0.8), "plateau escape (ODE)"


def _band(ax, t, mean, sem, color, label):
    pos = t > 0
    ax.plot(t[pos], mean[pos], "-", color=color, lw=1.5, label=label)
    if np.isfinite(sem[pos]).any():
        ax.fill_between(t[pos], (mean - sem)[pos], (mean + sem)[pos], color=color, alpha=0.25, lw=0)


def _ode_style(series) -> str:
    """Dashed beside simulations, solid when only ODEs are drawn."""
    return "--" if any(s.sim is not None for s in series) else "-"


def _ode_label(s: _Series) -> str:
    return f"{s.name} ODE" if s.ode_of is None else f"{s.name} ODE ({s.ode_of})"


def _has_test(res) -> bool:
    return res is not None and bool(np.isfinite(np.asarray(res.eg_test, float)).any())


def _rate(p, name="eta") -> str:
    sched = p.get(f"{name}_schedule", "constant")
    return f"{p.get(name)}" if sched in (None, "constant") else str(sched)


def _title(p: dict, sims: list) -> str:
    """Parameters on the first line; on the second, what the simulation is (engine, replicas), when there is one."""
    head = [f"{k}={p[k]}" for k in ("K", "M", "D") if k in p]
    if "eta" in p:
        head.append(rf"$\eta$={_rate(p)}")
    if p.get("batch", 1) != 1:
        head.append(f"B={p['batch']}")
    if "sigma_F" in p:
        head.append(rf"$\sigma_F$={p['sigma_F']}")
    title = ", ".join(head)
    if sims:
        engine = sims[0].params.get("engine", p.get("engine", "full"))
        reps = sims[0].replicas
        title += f"\nsimulation ({_ENGINES.get(engine, engine)}): mean ± sem of {reps} replica{'s' * (reps != 1)}"
    return title


def _break_wraps(t, deg):
    """A direction in (-180, 180] with every wrap-around cut: at a jump of more than 180 degrees the curve runs
    to the edge it crosses, stops (NaN) and comes back in from the opposite edge, instead of a vertical line."""
    t, deg = np.asarray(t, float), np.asarray(deg, float)
    if t.size < 2:
        return t, deg
    ts, ys = [t[:1]], [deg[:1]]
    for i in range(1, t.size):
        y0, y1, t0, t1 = deg[i - 1], deg[i], t[i - 1], t[i]
        if np.isfinite(y0) and np.isfinite(y1) and abs(y1 - y0) > 180.0:
            edge = 180.0 if y1 < y0 else -180.0  # the edge the curve leaves through
            y1u = y1 + 2 * edge  # y1 continued past that edge
            f = (edge - y0) / (y1u - y0)
            tc = t0 * (t1 / t0) ** f if t0 > 0 and t1 > 0 else t0 + f * (t1 - t0)  # log time axis: interpolate in log t
            ts.append(np.array([tc, tc, tc]))
            ys.append(np.array([edge, np.nan, -edge]))
        ts.append(t[i:i + 1])
        ys.append(deg[i:i + 1])
    return np.concatenate(ts), np.concatenate(ys)


def _log_time(ax):
    ax.set_xscale("log")
    ax.set_xlabel("t = steps / D")


# --------------------------------------------------------------------------- learning curves
def learning_curves(data, *, ax: Axes | None = None, test: bool = True, escape: bool = True,
                    legend: bool = True) -> Figure:
    """eps_g(t) on log axes for every rule: simulation mean +- sem (band), ODE (dashed).

    data : a Comparison, SimulationResult, Trajectory, or a mapping name -> SimulationResult / Trajectory.
    test : also the test-set eg (dots) where it was measured (the reduced sampler measures none).
    escape : a dotted vertical line at the ODE's plateau escape (:func:`theory.plateau_split`; Comparison only).
    ax : the Axes to draw into (default: a new figure). legend : draw the legend.
    Returns the Figure drawn on.
    """
    fig, (ax,), own = _axes(ax, 1, (6.4, 4.8))
    series = _series(data)
    col = _colors([s.name for s in series])
    extra = []
    for s in series:
        c = col[s.name]
        if s.sim is not None:
            res = s.sim
            _band(ax, res.t, res.mean("eg"), res.sem("eg"), c, f"{s.name} simulation")
            if test and _has_test(res):
                pos = res.t > 0
                ax.plot(res.t[pos], res.mean("eg_test")[pos], ".", color=c, ms=3, alpha=0.6)
                extra.append(_test_entry())
        if s.ode_eg is not None:
            pos = s.ode_t > 0
            ax.plot(s.ode_t[pos], s.ode_eg[pos], _ode_style(series), color=c, lw=1.2, alpha=0.9, label=_ode_label(s))
        if escape and s.t_split is not None:
            ax.axvline(s.t_split, color=c, ls=":", lw=0.8)
            extra.append(_escape_entry())
    _log_time(ax)
    ax.set_yscale("log")
    ax.set_ylabel(r"$\epsilon_g$" if any(s.sim is not None for s in series) else r"$\epsilon_g$ (ODE)")
    ax.set_title(_title(_params_of(data), [s.sim for s in series if s.sim is not None]), fontsize=8)
    if legend:
        _legend(fig, _rule_entries(series, col) + _unique(extra), own, ax=ax)
    return fig


# --------------------------------------------------------------------------- alignment angles
def _angle_panel(ax, series, col, name):
    for s in series:
        if s.sim is not None and name in s.sim.angles:
            _band(ax, s.sim.t, s.sim.mean(name), s.sim.sem(name), col[s.name], f"{s.name} simulation")
        ang = s.ode_angles().get(name) if s.ode_angles is not None else None
        if ang is not None:
            pos = s.ode_t > 0
            ax.plot(s.ode_t[pos], np.asarray(ang)[pos], _ode_style(series), color=col[s.name], lw=1.2,
                    label=_ode_label(s))
    _log_time(ax)
    ax.set_ylim(*_ANGLE_LIM)
    ax.set_yticks([0, 45, 90, 135, 180])
    ax.set_title(ANGLE_TITLES.get(name, name), fontsize=9)


def _present(series, names):
    have = set()
    for s in series:
        if s.sim is not None:
            have |= set(s.sim.angles)
        if s.ode_angles is not None:
            have |= set(s.ode_angles())
    return [n for n in names if n in have]


def angles(data, names: Sequence[str] = ANGLES, *, ax=None, legend: bool = True) -> Figure:
    """Alignment angles (degrees, THEORY.md section 5) against time, one panel per angle name.

    data : as :func:`learning_curves`. names : angles of :func:`theory.alignment_angles`; those the data
    lack are left out. ax : one Axes per drawn angle (default: a new row of panels).
    Returns the Figure drawn on.
    """
    series = _series(data)
    names = _present(series, names)
    if not names:
        raise ValueError("plots.angles: none of the requested angles is recorded")
    fig, axs, own = _axes(ax, len(names), (3.3 * len(names), 3.6))
    col = _colors([s.name for s in series])
    for a, name in zip(axs, names):
        _angle_panel(a, series, col, name)
    axs[0].set_ylabel("degrees")
    if legend:
        _legend(fig, _rule_entries(series, col), own, ax=axs[0])
    return fig


# --------------------------------------------------------------------------- directions in the plane (K = 2)
def _direction(vec):
    """Angle in the plane (degrees, in (-180, 180]) of 2-vectors along the last axis."""
    vec = np.asarray(vec, dtype=float)
    return np.degrees(np.arctan2(vec[..., 1], vec[..., 0]))


def _feedback_vectors(obj, rule, sigma_F):
    """The rule's feedback vector on obj's (v, S, b), shaped like obj.v; None when the rule has none
    or its feedback is v itself (bp: nothing more to draw)."""
    if rule is None:
        return None
    fb = rule.feedback_of(obj, sigma_F)
    if fb is None:
        return None
    fb = np.broadcast_to(np.asarray(fb, float), np.shape(obj.v))
    return None if np.array_equal(fb, np.asarray(obj.v, float)) else fb


def _direction_line(ax, t, vec, *args, **kw):
    tt, yy = _break_wraps(t, _direction(vec))
    ax.plot(tt, yy, *args, **kw)


def directions(cmp, *, ax=None, legend: bool = True) -> Figure:
    """K = M = 2: directions in the plane of v, of the feedback, of v* and of the degenerate solutions s v*.

    One panel per rule with K = 2; thin lines are replicas, thick dashed lines the ODE. A direction is an
    angle in (-180, 180]: where it wraps around, its curve leaves through one edge and comes back through
    the other. ax : one Axes per rule. Returns the Figure drawn on.
    """
    keys = [k for k in cmp.rules if cmp.results[k].K == 2]
    if not keys:
        raise ValueError("plots.directions: needs K = 2")
    fig, axs, own = _axes(ax, len(keys), (3.4 * len(keys), 3.6))
    for a, key in zip(axs, keys):
        res = cmp.results[key]
        rule, sF = rule_from_params(res.params), res.params["sigma_F"]
        pos = res.t > 0
        t = res.t[pos]
        fb = _feedback_vectors(res, rule, sF)
        for r in range(res.replicas):
            first = r == 0  # one legend entry for all replicas
            _direction_line(a, t, res.v[r, pos], "-", color="C0", lw=0.6, alpha=0.5,
                            label="v (simulation)" if first else "_replica")
            if fb is not None:
                _direction_line(a, t, fb[r, pos], "-", color="C1", lw=0.6, alpha=0.5,
                                label="feedback (simulation)" if first else "_replica")
        tr = cmp.trajectories[key][0]
        tpos = tr.t > 0
        _direction_line(a, tr.t[tpos], tr.v[tpos], "--", color="C0", lw=2, label="v (ODE)")
        fbo = _feedback_vectors(tr, rule, sF)
        if fbo is not None:
            _direction_line(a, tr.t[tpos], fbo[tpos], "--", color="C1", lw=2, label="feedback (ODE)")
        vs = np.asarray(res.constants(0)["v_star"], float)
        if vs.shape == (2,):
            a.axhline(_direction(vs), color="k", lw=1.5, label="$v^*$")
            for s in ((1, -1), (-1, 1), (-1, -1)):
                a.axhline(_direction(np.asarray(s) * vs), color="grey", lw=1, ls=":",
                          label=r"$s\,v^*$ (degenerate)" if s == (1, -1) else "_degenerate")
        _log_time(a)
        a.set_ylim(-180, 180)
        a.set_yticks([-180, -90, 0, 90, 180])
        a.set_title(f"{key}: directions in the plane", fontsize=9)
    axs[0].set_ylabel("direction (degrees)")
    if legend:
        _legend(fig, _entries_of(axs), own, ax=axs[0])
    return fig


_directions = directions  # fig2's keyword ``directions`` hides the function there


# --------------------------------------------------------------------------- Fig. 2 of the PEPITA paper
def fig2(cmp, *, angles: Sequence[str] = ("teacher", "feedback"), directions: bool | None = None,
         test: bool = True, figsize=None) -> Figure:
    """The panels of Figure 2 of the ICLR 2024 PEPITA paper (Srinivasan and others) for a Comparison, in one figure.

    Top row: the learning curves (:func:`learning_curves`) and the alignment angles ``angles``
    (:func:`angles`), with one legend for the rules below them. Bottom row (``directions``; default:
    when K = 2): the directions of v and of each rule's feedback in the plane (:func:`directions`), with
    their own legend. This is what ``Comparison.plot()`` draws. Returns the new Figure.
    """
    names = _present(_series(cmp), angles)
    with_dirs = (all(cmp.results[k].K == 2 for k in cmp.rules)) if directions is None else directions
    n_dirs = sum(cmp.results[k].K == 2 for k in cmp.rules) if with_dirs else 0
    width = max(4.0 + 3.3 * len(names), 3.4 * n_dirs)
    fig = plt.figure(figsize=figsize or (width, 8.4 if n_dirs else 4.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1.15, 1)) if n_dirs else (fig, None)
    axs = top.subplots(1, 1 + len(names), squeeze=False, width_ratios=[1.35] + [1] * len(names))[0]
    series = _series(cmp)
    learning_curves(cmp, ax=axs[0], test=test, legend=False)
    col = _colors([s.name for s in series])
    for a, name in zip(axs[1:], names):
        _angle_panel(a, series, col, name)
    if names:
        axs[1].set_ylabel("degrees")
    extra = [_test_entry()] if test and any(_has_test(s.sim) for s in series) else []
    extra += [_escape_entry()] if any(s.t_split is not None for s in series) else []
    _legend(top, _rule_entries(series, col) + extra, True)
    if n_dirs:
        dax = bottom.subplots(1, n_dirs, squeeze=False, sharey=True)[0]
        _directions(cmp, ax=list(dax), legend=False)
        _legend(bottom, _entries_of(dax), True)
    return fig


def plot_result(data, what: str = "eg", **kw) -> Figure:
    """What ``Trajectory.plot`` and ``SimulationResult.plot`` draw: ``what="eg"`` the learning curve
    (:func:`learning_curves`), ``"angles"`` the alignment angles (:func:`angles`); keywords go to that function."""
    draw = {"eg": learning_curves, "angles": angles}
    if what not in draw:
        raise ValueError(f"plot: what must be one of {sorted(draw)}, got {what!r}")
    return draw[what](data, **kw)


# --------------------------------------------------------------------------- optimal protocols
#: Line styles of the protocols an optimal-protocol figure compares.
PROTOCOL_STYLES = {"optimal": "-", "constant": "--", "power_law": ":"}


def protocols(curves) -> Figure:
    """The optimal protocol against its baselines: one column per rule, eps_g(t) (log scale) on top and each
    control's schedule below, a line style per protocol (solid: optimal, dashed: best constant, dotted: best
    power law). ``curves``: the long table of :meth:`theory.OptimalProtocol.curves` (columns protocol, t, eg
    and the controls; with a ``rule`` column, one column of panels per rule). Returns the new Figure."""
    missing = [c for c in ("protocol", "t", "eg") if c not in curves]
    if missing:
        raise ValueError(f"plots.protocols: the table lacks columns {missing} (expected OptimalProtocol.curves())")
    controls = [c for c in ("eta", "eta_v", "sigma_F", "eta_F") if c in curves]
    rules = list(dict.fromkeys(curves["rule"])) if "rule" in curves else [None]
    fig, axes = plt.subplots(1 + len(controls), len(rules), figsize=(4.2 * len(rules) + 1.2, 2.6 * (1 + len(controls))),
                             squeeze=False, sharex="col", layout="constrained")
    for j, rule in enumerate(rules):
        part_of_rule = curves if rule is None else curves[curves["rule"] == rule]
        for name, part in part_of_rule.groupby("protocol", sort=False):
            style = PROTOCOL_STYLES.get(name, "-")
            axes[0, j].semilogy(part["t"], part["eg"], style, label=name)
            for i, c in enumerate(controls):
                axes[i + 1, j].plot(part["t"], part[c], style, label=name)
        if rule is not None:
            axes[0, j].set_title(str(rule))
        axes[0, j].set_ylabel(r"$\epsilon_g$")
        for i, c in enumerate(controls):
            axes[i + 1, j].set_ylabel(c)
        axes[-1, j].set_xlabel("t (steps / D)")
    _legend(fig, _entries_of(axes[0, :1]), True)
    return fig


# --------------------------------------------------------------------------- sweeps
#: How phase diagrams mark cells whose value is missing or only a bound (hatch, legend label).
CELL_MARKS = {
    "stopped": ("xxx", "diverged / stopped early (no value)"),
    "censored": ("///", "still on the plateau at the end (length is a lower bound)"),
    "none": ("...", "no plateau detected (no value)"),
}


def _cell_flags(rows, col: str) -> dict[str, bool]:
    """Which CELL_MARKS apply to the sweep points of one cell (rows of the table) for summary column col."""
    stopped = bool((rows["status"] != 0).any()) if "status" in rows else False
    plateau_col = col.startswith("plateau_") and "plateau_status" in rows
    st = rows["plateau_status"].astype(str) if plateau_col else None
    return {"stopped": stopped,
            "censored": bool(plateau_col and (st == "censored").any()),
            "none": bool(plateau_col and not stopped and (st == "none").all())}


def _tick_labels(values):
    return [f"{v:.3g}" if isinstance(v, float) else str(v) for v in values]


def _heat_map(fig, ax, sub, z, col, x, y, label) -> set[str]:
    """One 2-D phase diagram: the median of z per (y, x) cell, cells hatched by CELL_MARKS; the marks used."""
    cells = sub.assign(z=z).groupby([y, x])
    piv = cells["z"].median().unstack(x)
    mesh = ax.pcolormesh(np.arange(piv.shape[1] + 1), np.arange(piv.shape[0] + 1), piv.to_numpy(), shading="flat")
    used = set()
    for (yv, xv), rows in cells:
        for mark, on in _cell_flags(rows, col).items():
            if on:
                used.add(mark)
                ax.add_patch(Rectangle((piv.columns.get_loc(xv), piv.index.get_loc(yv)), 1, 1, fill=False, lw=0,
                                       hatch=CELL_MARKS[mark][0], edgecolor="0.2"))
    ax.set_xticks(np.arange(piv.shape[1]) + 0.5, _tick_labels(piv.columns), rotation=45, fontsize=7)
    ax.set_yticks(np.arange(piv.shape[0]) + 0.5, _tick_labels(piv.index), fontsize=7)
    ax.set(xlabel=x, ylabel=y)
    fig.colorbar(mesh, ax=ax, label=label)
    return used


def _curve(ax, sub, z, col, x, label) -> set[str]:
    """One 1-D phase diagram: the median of z against x; censored medians as open triangles (lower bounds),
    values of x with a stopped point as crosses on the lower edge."""
    groups = sub.assign(z=z).groupby(x)
    med = groups["z"].median()
    flags = {xv: _cell_flags(rows, col) for xv, rows in groups}
    cens = [xv for xv, f in flags.items() if f["censored"]]
    ax.plot(med.index, med.to_numpy(), "-", color="C0")
    ax.plot(med.drop(index=cens), "o", color="C0")
    used = set()
    if cens:
        used.add("censored")
        ax.plot(cens, med[cens].to_numpy(), ls="none", marker="^", mfc="white", color="C0", ms=7)
    stop = [xv for xv, f in flags.items() if f["stopped"] or f["none"]]
    if stop:
        used.update(m for m in ("stopped", "none") if any(flags[xv][m] for xv in stop))
        ax.plot(stop, np.zeros(len(stop)), ls="none", marker="x", color="C3", clip_on=False,
                transform=ax.get_xaxis_transform())
    ax.set(xlabel=x, ylabel=label)
    return used


def _mark_entries(used, one_d: bool):
    """Legend entries of the marks used: hatches on heat maps; on curves, triangles and crosses."""
    if not one_d:
        return [(Patch(facecolor="white", edgecolor="0.2", hatch=CELL_MARKS[m][0]), CELL_MARKS[m][1])
                for m in CELL_MARKS if m in used]
    out = []
    if "censored" in used:
        out.append((Line2D([], [], ls="none", marker="^", mfc="white", color="C0"), CELL_MARKS["censored"][1]))
    if used & {"stopped", "none"}:
        out.append((Line2D([], [], ls="none", marker="x", color="C3"), "no value: diverged, stopped or no plateau"))
    return out


def phase_diagrams(table, over: Sequence[str], values: Sequence[str] = ("eg_final", "plateau_length")) -> Figure:
    """Phase diagrams of a sweep table (a DataFrame, :attr:`theory.SweepResult.table`): one row of panels per
    rule, one panel per summary in ``values``.

    over : the swept parameters; the first two that vary give a heat map (median over the other
    parameters), one gives a curve. Returns the new Figure.

    Cells without a value or with only a bound are marked, with a legend below the panels
    (:data:`CELL_MARKS`): a cell with a point that diverged or stopped early (its status is not 0; eg_final is
    then NaN), a plateau length that is a lower bound (``plateau_status`` "censored": still on the plateau at
    the end), no plateau at all ("none"). On a curve, censored medians are open triangles and values with no
    number crosses on the lower edge.
    """
    rules = list(dict.fromkeys(table["rule"]))
    over = [a for a in over if a in table.columns and table[a].nunique() > 1][:2] or list(over)[:1]
    fig, grid = plt.subplots(len(rules), len(values), figsize=(4.2 * len(values), 3.4 * len(rules)), squeeze=False,
                             layout="constrained")
    used: set[str] = set()
    for row, rule in zip(grid, rules):
        sub = table[table["rule"] == rule]
        for ax, col in zip(row, values):
            vals = sub[col].astype(float)
            z = np.log10(vals.where(vals > 0)) if col.startswith("eg") else vals
            label = f"log10 {col}" if col.startswith("eg") else col
            if len(over) == 2:
                used |= _heat_map(fig, ax, sub, z, col, over[0], over[1], label)
            else:
                used |= _curve(ax, sub, z, col, over[0], label)
            ax.set_title(f"{rule}: {label}", fontsize=9)
    _legend(fig, _mark_entries(used, len(over) != 2), True)
    return fig
