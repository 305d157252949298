"""Figures of a :class:`Comparison` in the style of Fig. 2 of the ICLR 2024 PEPITA paper.

Every function only reads a Comparison (computed or loaded with ``Comparison.load``) and
returns a matplotlib Figure; nothing here simulates or integrates.
"""

from __future__ import annotations

import matplotlib.pyplot as plt  # the backend is the caller's: inline in notebooks, Agg in the command line
import numpy as np

import theory

__all__ = ["plot_eg", "plot_angles", "plot_directions", "plot_ode_curves", "plot_phase_diagrams", "ANGLE_TITLES"]

ANGLE_TITLES = {
    "teacher": "angle(v, v*)",
    "degenerate_min": "min angle(v, s v*), s != 1",
    "feedback": "angle(feedback, v)",
    "end_to_end": "angle(F, (W2 W1)^T)",
}


def _colors(keys):
    cyc = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {k: cyc[i % len(cyc)] for i, k in enumerate(keys)}


def _band(ax, t, mean, sem, color, label):
    pos = t > 0
    ax.plot(t[pos], mean[pos], "-", color=color, lw=1.5, label=label)
    if np.isfinite(sem).any():
        ax.fill_between(t[pos], (mean - sem)[pos], (mean + sem)[pos], color=color, alpha=0.25, lw=0)


def plot_eg(cmp, *, show_test: bool = True, show_split: bool = True):
    """eps_g(t) on log axes: simulation mean +- sem (band) and ODE (dashed) for every rule."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    col = _colors(cmp.rules)
    agreement = cmp.agreement
    for key in cmp.rules:
        res, c = cmp.results[key], col[key]
        _band(ax, res.t, res.mean("eg"), res.sem("eg"), c, f"{key} sim")
        if show_test:
            pos = res.t > 0
            ax.plot(res.t[pos], res.mean("eg_test")[pos], ".", color=c, ms=3, alpha=0.6)
        t_ode, eg_ode = cmp.ode_t(key), cmp.ode_eg(key)
        pos = t_ode > 0
        ax.plot(t_ode[pos], eg_ode[pos], "--", color=c, lw=1.2, alpha=0.9, label=f"{key} ODE ({cmp.ode_rules[key]})")
        if show_split and agreement[key].t_split < res.t[-1]:
            ax.axvline(agreement[key].t_split, color=c, ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t = steps / D")
    ax.set_ylabel(r"$\epsilon_g$")
    p = cmp.params
    sched = p.get("eta_schedule", "constant")
    eta = f"eta={p['eta']}" if sched == "constant" else f"eta: {sched}"
    batch = f", B={p['batch']}" if p.get("batch", 1) != 1 else ""
    ax.set_title(f"K={p['K']}, M={p['M']}, D={p['D']}, {eta}{batch}, sigma_F={p['sigma_F']}, {p['replicas']} replicas",
                 fontsize=8)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.text(0.5, 0.005, "solid + band: simulation mean +- sem; dots: test-set eg; dashed: ODE; dotted: plateau escape (ODE)",
             ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def plot_angles(cmp, names=("teacher", "degenerate_min", "feedback", "end_to_end")):
    """Alignment angles (degrees) against time: simulation mean +- sem and ODE, one panel per angle."""
    names = [n for n in names if any(n in cmp.results[k].angles for k in cmp.rules)]
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.4), squeeze=False)
    col = _colors(cmp.rules)
    for ax, name in zip(axes[0], names):
        for key in cmp.rules:
            res = cmp.results[key]
            if name not in res.angles:
                continue
            _band(ax, res.t, res.mean(name), res.sem(name), col[key], f"{key} sim")
            ang = cmp.ode_angles(key).get(name)
            if ang is not None:
                t = cmp.ode_t(key)
                ax.plot(t[t > 0], ang[t > 0], "--", color=col[key], lw=1.2, label=f"{key} ODE")
        ax.set_xscale("log")
        ax.set_ylim(0, 180)
        ax.set_yticks([0, 45, 90, 135, 180])
        ax.set_xlabel("t = steps / D")
        ax.set_title(ANGLE_TITLES.get(name, name), fontsize=9)
    axes[0][0].set_ylabel("degrees")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    return fig


def _direction(vec):
    """Angle in the plane (degrees, in (-180, 180]) of 2-vectors along the last axis."""
    vec = np.asarray(vec, dtype=float)
    return np.degrees(np.arctan2(vec[..., 1], vec[..., 0]))


def _feedback_vectors(obj, rule, sigma_F):
    """The rule's feedback vector on obj's (v, S, b), shaped like obj.v; None when the rule has none
    or its feedback is v itself (bp: nothing more to draw), or its class is not registered here."""
    if rule is None:
        return None
    fb = rule.feedback_of(obj, sigma_F)
    if fb is None:
        return None
    fb = np.broadcast_to(np.asarray(fb, float), np.shape(obj.v))
    return None if np.array_equal(fb, np.asarray(obj.v, float)) else fb


def plot_directions(cmp):
    """K = M = 2: directions in the plane of v, the feedback, v* and the degenerate solutions s v*.

    One panel per rule; thin lines are replicas, thick dashed lines the ODE.
    """
    keys = [k for k in cmp.rules if cmp.results[k].K == 2]
    if not keys:
        raise ValueError("plot_directions: needs K = 2")
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.6), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys):
        res = cmp.results[key]
        rule, sF = theory.rule_from_params(res.params), res.params["sigma_F"]
        pos = res.t > 0
        t = res.t[pos]
        fb = _feedback_vectors(res, rule, sF)
        for r in range(res.replicas):
            ax.plot(t, _direction(res.v[r, pos]), "-", color="C0", lw=0.6, alpha=0.5, label="v (sim)" if r == 0 else None)
            if fb is not None:
                ax.plot(t, _direction(fb[r, pos]), "-", color="C1", lw=0.6, alpha=0.5,
                        label="feedback (sim)" if r == 0 else None)
        tr = cmp.trajectories[key][0]
        tpos = tr.t > 0
        ax.plot(tr.t[tpos], _direction(tr.v[tpos]), "--", color="C0", lw=2, label="v (ODE)")
        fbo = _feedback_vectors(tr, rule, sF)
        if fbo is not None:
            ax.plot(tr.t[tpos], _direction(fbo[tpos]), "--", color="C1", lw=2, label="feedback (ODE)")
        vs = np.asarray(res.constants(0)["v_star"], float)
        if vs.shape == (2,):
            ax.axhline(_direction(vs), color="k", lw=1.5, label="v*")
            for s in ((1, -1), (-1, 1), (-1, -1)):
                ax.axhline(_direction(np.asarray(s) * vs), color="grey", lw=1, ls=":", label="s v* (degenerate)" if s == (1, -1) else None)
        ax.set_xscale("log")
        ax.set_ylim(-180, 180)
        ax.set_yticks([-180, -90, 0, 90, 180])
        ax.set_xlabel("t = steps / D")
        ax.set_title(f"{key}: directions in the plane", fontsize=9)
    axes[0][0].set_ylabel("direction (degrees)")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


def plot_phase_diagrams(table, axes, values=("eg_final", "plateau_length")):
    """Phase diagrams of a sweep table (a DataFrame): one row of panels per rule, one panel per summary.

    Two grid axes: a heat map over them (median over the other parameters); one axis: a curve."""
    rules = list(dict.fromkeys(table["rule"]))
    axes = [a for a in axes if a in table.columns and table[a].nunique() > 1][:2] or list(axes)[:1]
    fig, grid = plt.subplots(len(rules), len(values), figsize=(4.2 * len(values), 3.4 * len(rules)), squeeze=False)
    for row, rule in zip(grid, rules):
        sub = table[table["rule"] == rule]
        for ax, col in zip(row, values):
            vals = sub[col].astype(float)
            z = np.log10(vals.where(vals > 0)) if col.startswith("eg") else vals
            label = f"log10 {col}" if col.startswith("eg") else col
            if len(axes) == 2:
                x, y = axes
                piv = sub.assign(z=z).groupby([y, x])["z"].median().unstack(x)
                mesh = ax.pcolormesh(np.arange(piv.shape[1] + 1), np.arange(piv.shape[0] + 1), piv.to_numpy(), shading="flat")
                ax.set_xticks(np.arange(piv.shape[1]) + 0.5, [f"{v:.3g}" if isinstance(v, float) else str(v) for v in piv.columns],
                              rotation=45, fontsize=7)
                ax.set_yticks(np.arange(piv.shape[0]) + 0.5, [f"{v:.3g}" if isinstance(v, float) else str(v) for v in piv.index],
                              fontsize=7)
                ax.set(xlabel=x, ylabel=y)
                fig.colorbar(mesh, ax=ax, label=label)
            else:
                x = axes[0]
                med = sub.assign(z=z).groupby(x)["z"].median()
                ax.plot(med.index, med.to_numpy(), "o-")
                ax.set(xlabel=x, ylabel=label)
            ax.set_title(f"{rule}: {label}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_ode_curves(trajectories: dict):
    """Learning curves eps_g(t) of several ODE trajectories (name -> theory.Trajectory), log axes."""
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    for name, tr in trajectories.items():
        pos = tr.t > 0
        ax.plot(tr.t[pos], tr.eg[pos], label=f"{name} ({tr.params.get('rule_label', name)})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t = steps / D")
    ax.set_ylabel(r"$\epsilon_g$ (ODE)")
    first = next(iter(trajectories.values())).params if trajectories else {}
    sched = first.get("eta_schedule", "constant")
    eta = f"eta={first.get('eta')}" if sched == "constant" else f"eta: {sched}"
    ax.set_title(eta + (f", B={first['batch']}" if first.get("batch", 1) != 1 else ""), fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
