"""simulate.plots: every public figure draws on a small Comparison (and on a Trajectory / SimulationResult
where it takes one), with short unique legend labels placed outside the data, angle curves without
wrap-around jumps, captions that say what the engine measured, and ``ax=`` drawing into the caller's axes."""

from __future__ import annotations

import dataclasses
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

import simulate
from simulate import plots

RULES = ("bp", "fa", "afa", "pepita")
T = np.concatenate([[0.0], np.geomspace(0.1, 5.0, 7)])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def cmp():
    init = simulate.Initialisation(2, 2, 60, seed=0)
    return simulate.compare(init, RULES, T, eta=1.0, replicas=2, device="cpu", n_test=100, progress=False)


@pytest.fixture(scope="module")
def reduced():
    init = simulate.Initialisation(2, 2, 60, seed=0)
    return simulate.compare(init, ("bp", "pepita"), T, eta=1.0, replicas=2, engine="reduced", progress=False)


def _figures(fig):
    """The figure and all its subfigures."""
    out = [fig]
    for sub in getattr(fig, "subfigs", []):
        out += _figures(sub)
    return out


def _legends(fig):
    legends = [leg for f in _figures(fig) for leg in f.legends]
    return legends + [ax.get_legend() for ax in fig.get_axes() if ax.get_legend() is not None]


def _legend_labels(fig):
    return [t.get_text() for leg in _legends(fig) for t in leg.get_texts() if t.get_text()]


def _texts(fig):
    """Every piece of text a reader sees: titles, axis labels, figure texts, legend entries."""
    out = [t.get_text() for f in _figures(fig) for t in f.texts] + _legend_labels(fig)
    for ax in fig.get_axes():
        out += [ax.get_title(loc) for loc in ("left", "center", "right")] + [ax.get_xlabel(), ax.get_ylabel()]
    return [t for t in out if t]


DRAW = {
    "learning_curves": lambda c: plots.learning_curves(c),
    "angles": lambda c: plots.angles(c),
    "directions": lambda c: plots.directions(c),
    "fig2": lambda c: plots.fig2(c),
}


@pytest.mark.parametrize("name", DRAW)
def test_each_figure_draws_on_a_comparison(cmp, name):
    fig = DRAW[name](cmp)
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert axes and all(ax.lines for ax in axes)
    fig.canvas.draw()


@pytest.mark.parametrize("name", DRAW)
def test_legend_labels_are_short_and_unique(cmp, name):
    labels = _legend_labels(DRAW[name](cmp))
    assert labels and len(labels) == len(set(labels)), labels
    for lab in labels:
        assert "[" not in lab and lab.count("(") <= 1, lab  # no rule label repeated inside another
        words = re.findall(r"[a-z]+", lab)
        assert all(words.count(r) <= 1 for r in RULES), lab
    if name in ("learning_curves", "angles", "fig2"):
        assert set(RULES) <= set(labels)  # colour is the rule, named once
        assert {"simulation", "ODE"} <= set(labels)  # style is the kind of curve


def test_lines_carry_their_own_unique_labels(cmp):
    """For a legend of the caller's own: every labelled line in an axes is 'rule simulation' or 'rule ODE', once."""
    fig = plots.learning_curves(cmp, legend=False)
    (ax,) = fig.get_axes()
    labels = [ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")]
    assert len(labels) == len(set(labels)) == 2 * len(RULES)
    assert set(labels) == {f"{r} {kind}" for r in RULES for kind in ("simulation", "ODE")}


def test_ode_of_another_rule_is_named_once(monkeypatch):
    import simulate._compare as sc

    monkeypatch.setattr(sc, "PEPITA_ODE_RULE", "afa")
    init = simulate.Initialisation(2, 2, 40, seed=0)
    c = simulate.compare(init, ["pepita"], T[:4], eta=1.0, replicas=2, device="cpu", n_test=0, progress=False)
    labels = _legend_labels(plots.learning_curves(c))
    assert "pepita (ODE: afa)" in labels, labels


@pytest.mark.parametrize("name", ["learning_curves", "angles", "fig2"])
def test_legend_lies_outside_the_data(cmp, name):
    fig = DRAW[name](cmp)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for leg in _legends(fig):
        box = leg.get_window_extent(renderer)
        for ax in fig.get_axes():
            assert not box.overlaps(ax.get_window_extent(renderer)), (name, leg, ax.get_title())


def _max_jump(line):
    y = np.asarray(line.get_ydata(), float)
    d = np.abs(np.diff(y))
    return float(np.nanmax(d)) if np.isfinite(d).any() else 0.0


def test_no_angle_segment_jumps_more_than_180_degrees(cmp):
    for fig in (plots.angles(cmp), plots.directions(cmp), plots.fig2(cmp)):
        for ax in fig.get_axes():
            for line in ax.lines:
                assert _max_jump(line) <= 180.0, (ax.get_title(), line.get_label())


def test_a_direction_that_turns_wraps_at_the_edges(cmp):
    """v turning twice round the circle: its curve leaves through +-180 and comes back through -+180, never
    crossing the panel; the points drawn keep their values."""
    res, tr = cmp.results["bp"], cmp.trajectories["bp"][0]
    theta = np.radians(np.linspace(0.0, 720.0, len(res.t)))
    circle = np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    turned = dataclasses.replace(
        cmp, results={"bp": dataclasses.replace(res, v=np.broadcast_to(circle, res.v.shape).copy())},
        trajectories={"bp": [dataclasses.replace(tr, v=circle[: len(tr.t)].copy())]})
    fig = plots.directions(turned)
    (ax,) = fig.get_axes()
    moving = [ln for ln in ax.lines if len(ln.get_ydata()) > 2]
    assert moving
    for line in moving:
        y = np.asarray(line.get_ydata(), float)
        assert np.isnan(y).sum() >= 2  # two wraps, two breaks
        assert _max_jump(line) <= 180.0
        assert np.nanmax(y) == pytest.approx(180.0) and np.nanmin(y) == pytest.approx(-180.0)


def test_bp_feedback_angle_at_zero_is_visible(cmp):
    fig = plots.angles(cmp, ["feedback"])
    (ax,) = fig.get_axes()
    bp = [ln for ln in ax.lines if ln.get_label().startswith("bp")]
    assert bp and all(np.allclose(ln.get_ydata(), 0.0, atol=1e-3) for ln in bp)
    lo, hi = ax.get_ylim()
    assert lo < -2.0 and hi > 182.0  # a margin: the line is not drawn on the axis spine


def test_captions_follow_the_engine(cmp, reduced):
    full = " ".join(_texts(plots.learning_curves(cmp)))
    assert "test-set eg" in full and "full weights" in full
    for fig in (plots.learning_curves(reduced), plots.fig2(reduced)):
        text = " ".join(_texts(fig))
        assert "test" not in text.lower(), text
        assert "order-parameter sampler" in text


def test_ax_draws_into_the_given_axes(cmp):
    fig, (a, b) = plt.subplots(1, 2)
    assert plots.learning_curves(cmp, ax=b) is fig
    assert b.lines and not a.lines and len(fig.get_axes()) == 2
    assert b.get_legend() is not None and not fig.legends  # inside the caller's axes, not on their figure

    fig, axs = plt.subplots(2, 2)
    assert plots.angles(cmp, ax=axs) is fig
    assert all(ax.lines for ax in axs.ravel()) and len(fig.get_axes()) == 4

    fig, axs = plt.subplots(1, len(RULES))
    assert plots.directions(cmp, ax=axs, legend=False) is fig
    assert all(ax.lines for ax in axs) and all(ax.get_legend() is None for ax in axs)

    with pytest.raises(ValueError, match="4 matplotlib Axes"):
        plots.angles(cmp, ax=axs[:3])


def test_trajectories_and_simulations_alone(cmp):
    res, trs = cmp.results["fa"], {k: cmp.trajectories[k][0] for k in ("bp", "pepita")}
    fig = plots.learning_curves(trs)
    (ax,) = fig.get_axes()
    assert [ln.get_label() for ln in ax.lines] == ["bp ODE", "pepita ODE"]
    assert _legend_labels(fig) == ["bp", "pepita"]
    fig = plots.learning_curves(res)
    assert "fa" in _legend_labels(fig) and "simulation" in _legend_labels(fig)
    assert len(plots.angles(trs["pepita"], ["teacher", "feedback"]).get_axes()) == 2
    assert len(plots.angles(res).get_axes()) == 4


def test_fig2_panels(cmp):
    fig = plots.fig2(cmp)
    titles = [ax.get_title() for ax in fig.get_axes()]
    assert titles[1:3] == [plots.ANGLE_TITLES["teacher"], plots.ANGLE_TITLES["feedback"]]
    assert sum("directions" in t for t in titles) == len(RULES)
    assert len(plots.fig2(cmp, directions=False).get_axes()) == 3


def test_comparison_plot_draws_fig2(cmp):
    fig = cmp.plot(directions=False)
    assert isinstance(fig, Figure) and len(fig.get_axes()) == 3


def test_phase_diagrams():
    grid = [(r, e, s) for r in ("bp", "afa") for e in (0.5, 1.0, 2.0) for s in (0.5, 1.0)]
    table = pd.DataFrame(grid, columns=["rule", "eta", "sigma_F"])
    table["eg_final"] = 0.01 * table["eta"] + table["sigma_F"] * 1e-3
    table["plateau_length"] = 10.0 / table["eta"]
    fig = plots.phase_diagrams(table, ["eta", "sigma_F"])
    assert len([ax for ax in fig.get_axes() if ax.get_title()]) == 4
    fig = plots.phase_diagrams(table[table["sigma_F"] == 1.0], ["eta", "sigma_F"])
    assert all(ax.lines for ax in fig.get_axes())


def test_bad_input():
    with pytest.raises(TypeError, match="Comparison"):
        plots.learning_curves(42)
    with pytest.raises(ValueError, match="K = 2"):
        plots.directions(simulate.compare(simulate.Initialisation(3, 2, 30, seed=0), ["bp"], T[:3], eta=1.0,
                                          replicas=1, device="cpu", n_test=0, progress=False))


def _marked_table():
    """A 2 x 3 grid per rule; bp's (eta 0.5, sigma_F 0.5) diverged, (1.0, 0.5) censored, (2.0, 1.0) no plateau."""
    grid = [(r, e, s) for r in ("bp", "afa") for e in (0.5, 1.0, 2.0) for s in (0.5, 1.0)]
    table = pd.DataFrame(grid, columns=["rule", "eta", "sigma_F"])
    table["eg_final"] = 0.01 * table["eta"] + table["sigma_F"] * 1e-3
    table["plateau_length"] = 10.0 / table["eta"]
    table["status"], table["plateau_status"] = 0, "escaped"
    table.loc[0, ["status", "eg_final", "plateau_length", "plateau_status"]] = (-1, np.nan, np.nan, "diverged")
    table.loc[2, "plateau_status"] = "censored"
    table.loc[5, ["plateau_length", "plateau_status"]] = (np.nan, "none")
    return table


def _hatches(ax):
    return [p.get_hatch() for p in ax.patches if p.get_hatch()]


def test_phase_diagrams_mark_cells_without_a_value():
    """Diverged cells hatched in every panel, censored and plateau-less ones in the plateau panel, with a legend
    that explains them; an unmarked table (every point escaped) draws no hatch and no legend."""
    fig = plots.phase_diagrams(_marked_table(), ["eta", "sigma_F"])
    bp_eg, bp_pl, afa_eg, afa_pl = [ax for ax in fig.get_axes() if ax.get_title()]
    marks = plots.CELL_MARKS
    assert _hatches(bp_eg) == [marks["stopped"][0]]
    assert sorted(_hatches(bp_pl)) == sorted(marks[m][0] for m in ("stopped", "censored", "none"))
    assert not _hatches(afa_eg) and not _hatches(afa_pl)
    assert set(_legend_labels(fig)) == {lab for _, lab in marks.values()}
    clean = _marked_table().assign(status=0, plateau_status="escaped", plateau_length=1.0, eg_final=0.1)
    fig = plots.phase_diagrams(clean, ["eta", "sigma_F"])
    assert not any(_hatches(ax) for ax in fig.get_axes()) and not _legend_labels(fig)


def test_phase_diagram_curve_marks_bounds_and_missing_values():
    table = _marked_table()
    fig = plots.phase_diagrams(table[table["sigma_F"] == 0.5], ["eta", "sigma_F"])
    bp_pl = [ax for ax in fig.get_axes() if ax.get_title() == "bp: plateau_length"][0]
    markers = {ln.get_marker(): ln.get_xdata() for ln in bp_pl.lines}
    assert list(markers["^"]) == [1.0] and list(markers["x"]) == [0.5]  # censored at eta=1, no value at 0.5
    assert len(_legend_labels(fig)) == 2


def test_plot_methods(cmp):
    """Trajectory.plot, SimulationResult.plot (eg or angles) and SweepResult.plot return the figures of
    theory.plots; simulate.plots is the same functions."""
    import theory
    import theory.plots

    assert plots.fig2 is theory.plots.fig2
    res, tr = cmp.results["bp"], cmp.trajectories["bp"][0]
    for obj in (res, tr):
        fig = obj.plot()
        assert isinstance(fig, Figure) and fig.get_axes()[0].get_yscale() == "log"
        assert len(obj.plot("angles", names=("teacher",)).get_axes()) == 1
        with pytest.raises(ValueError, match="what must be one of"):
            obj.plot("loss")
    sw = theory.sweep(theory.random_state(2, 2, D=100, seed=0), "bp", T, eta=[0.5, 1.0], progress=False)
    fig = sw.plot()
    assert [ax.get_title() for ax in fig.get_axes()] == ["bp: log10 eg_final", "bp: plateau_length"]
    assert fig.get_axes()[0].get_xlabel() == "eta"
    with pytest.raises(ValueError, match="no parameter that varies"):
        sw.plot(over=["sigma"])
    with pytest.raises(ValueError, match="not columns"):
        sw.plot(values=["nope"])
