"""An interactive explorer of the learning ODEs for notebooks (ipywidgets).

    from theory.explorer import explore
    explore()                         # sliders for eta, sigma_F, sigma, K, M and a rule menu

Every change of a control integrates the rule's ODE again (:func:`theory.integrate`: the compiled closed
forms where the rule has them, the compiled quadrature otherwise) from the initial state of random
weights at dimension D and seed (:func:`theory.random_state`; one state per K, M, D, seed, the same as
``simulate.Initialisation``) and redraws three panels: eps_g(t) on log axes, angle(v, v*) and
angle(feedback, v) in degrees (THEORY.md section 5). A run that diverges is drawn up to where it stopped,
with the reason in the status line; a combination the package refuses (a rule option that does not apply,
K = 0, ...) leaves the curves as they were and says why; the sigma_F slider is greyed out for a rule on which
it has no effect (derived from the rule's right-hand side, as theory.optimal_protocol derives inert controls:
bp and fa). Time is in steps / D.

The explorer is a plain object: ``explorer.controls`` holds the widgets by name, ``explorer.set(eta=0.3)``
changes controls from code (one redraw), ``explorer.trajectory`` is the last integrated
:class:`theory.Trajectory` and ``explorer.figure`` the matplotlib Figure. It needs ``ipywidgets``
(``pip install ipywidgets``); headless use (tests, scripts) drives the same callbacks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ._init import random_state
from .plots import _ANGLE_LIM, ANGLE_TITLES
from .results.trajectory import DivergenceError
from .rules._base import RULES
from .rules._facts import rule_facts
from .solver.integrate import default_times, integrate

__all__ = ["Explorer", "explore"]

#: The angles drawn beside the learning curve, by the names of :func:`theory.alignment_angles`.
EXPLORER_ANGLES = ("teacher", "feedback")
#: Slider ranges: (min, max) of the log-scaled controls, and of K and M.
RANGES = dict(eta=(1e-3, 1e1), sigma_F=(1e-2, 1e1), sigma=(0.0, 1.0), K=(1, 6), M=(1, 6))


def _widgets():
    try:
        import ipywidgets
    except ImportError:
        raise ImportError("theory.explorer needs ipywidgets: pip install ipywidgets") from None
    return ipywidgets


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


class Explorer:
    """Sliders for eta, sigma_F, sigma, K, M and a rule menu, and the figure they redraw (module docstring).

    rules : the rule menu (names or Rule instances' names as registered); D, seed : the initial state of
    random weights; t_max, n_times : the time grid (log-spaced, steps / D); g : the activation;
    expectation_tol : the accuracy of numerical expectations (rules without closed forms, such as pepita; 1e-3 by
    default, about 6x cheaper than integrate's 1e-5 and invisible in the curves: eps_g(1000) of K = M = 2 pepita
    moves by 5e-5 relative). The initial control values are eta, sigma_F, sigma, K, M and rule.
    """

    def __init__(self, rules: Sequence[str] = RULES, *, eta: float = 0.5, sigma_F: float = 1.0, sigma: float = 0.0,
                 K: int = 2, M: int = 2, rule: str | None = None, D: int = 500, seed: int = 0,
                 t_max: float = 1000.0, n_times: int = 150, g: str = "erf", expectation_tol: float = 1e-3):
        w = _widgets()
        import matplotlib.pyplot as plt

        rules = list(rules)
        if not rules:
            raise ValueError("explore: rules must name at least one rule")
        rule = rules[0] if rule is None else rule
        if rule not in rules:
            raise ValueError(f"explore: rule {rule!r} is not in the menu {rules}")
        self.D, self.seed, self.g, self.expectation_tol = D, seed, g, expectation_tol
        self.t = default_times(t_max, n_times)
        random_state(K, M, D=D, seed=seed)  # D and seed checked here, once, with their names
        def log_slider(name, value):
            lo, hi = RANGES[name]
            return w.FloatLogSlider(value=value, min=math.log10(lo), max=math.log10(hi), step=0.05, base=10,
                                    description=name, continuous_update=False, readout_format=".3g")

        self.controls = {
            "rule": w.Dropdown(options=rules, value=rule, description="rule"),
            "eta": log_slider("eta", eta),
            "sigma_F": log_slider("sigma_F", sigma_F),
            "sigma": w.FloatSlider(value=sigma, min=RANGES["sigma"][0], max=RANGES["sigma"][1], step=0.01,
                                   description="sigma", continuous_update=False, readout_format=".2f"),
            "K": w.IntSlider(value=K, min=RANGES["K"][0], max=RANGES["K"][1], description="K", continuous_update=False),
            "M": w.IntSlider(value=M, min=RANGES["M"][0], max=RANGES["M"][1], description="M", continuous_update=False),
        }
        self.status = w.HTML()
        self.output = w.Output()
        with plt.ioff():
            self.figure, axs = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
        self.axes = dict(zip(("eg", *EXPLORER_ANGLES), axs))
        self._lines = {name: ax.plot([], [], lw=1.6)[0] for name, ax in self.axes.items()}
        self._notes = {name: self.axes[name].text(0.5, 0.5, "", transform=self.axes[name].transAxes, ha="center",
                                                  color="0.4") for name in EXPLORER_ANGLES}  # why a panel is empty
        self._style_axes()
        self.trajectory = None
        self._holding = False
        self._sigma_F_used: dict = {}
        for c in self.controls.values():
            c.observe(self._changed, names="value")
        self.widget = w.VBox([w.HBox([self.controls["rule"], self.controls["K"], self.controls["M"]]),
                              w.HBox([self.controls["eta"], self.controls["sigma_F"], self.controls["sigma"]]),
                              self.status, self.output])
        self.redraw()

    # ------------------------------------------------------------------ state of the controls
    @property
    def values(self) -> dict:
        """The controls' current values by name."""
        return {k: c.value for k, c in self.controls.items()}

    def set(self, **values) -> None:
        """Change controls from code (names as in :attr:`controls`), then redraw once."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise ValueError(f"Explorer.set: unknown controls {unknown}; expected {sorted(self.controls)}")
        self._holding = True
        try:
            for k, v in values.items():
                self.controls[k].value = v
        finally:
            self._holding = False
        self.redraw()

    def _changed(self, _change) -> None:
        if not self._holding:
            self.redraw()

    # ------------------------------------------------------------------ drawing
    def _style_axes(self) -> None:
        ax = self.axes["eg"]
        ax.set(xscale="log", yscale="log", xlabel="t (steps / D)", ylabel=r"$\epsilon_g$", title="learning curve")
        for name in EXPLORER_ANGLES:
            a = self.axes[name]
            a.set(xscale="log", xlabel="t (steps / D)", ylabel="degrees", ylim=_ANGLE_LIM, title=ANGLE_TITLES[name])

    def _integrate(self):
        v = self.values
        state = random_state(v["K"], v["M"], D=self.D, seed=self.seed)
        kw = dict(eta=v["eta"], sigma=v["sigma"], sigma_F=v["sigma_F"], g=self.g)
        if not rule_facts(v["rule"], v["K"], v["M"]).closed_form:  # numerical expectations: an explorer's accuracy
            kw["expectation_tol"] = self.expectation_tol
        self.controls["sigma_F"].disabled = not self._uses_sigma_F(state, v["rule"], kw)
        try:
            return integrate(state, v["rule"], self.t, **kw), None
        except DivergenceError as exc:
            return exc.trajectory, str(exc)

    def _uses_sigma_F(self, state, rule, kw) -> bool:
        """Whether sigma_F can change eps_g under this rule (derived from its right-hand side's derivatives,
        theory.control's inert-control test, once per rule, K, M): the slider is greyed out where it cannot."""
        key = (rule, state.K, state.M)
        if key not in self._sigma_F_used:
            from .control.protocol import inert_controls
            from .ode.dynamics import make_dynamics

            dyn = make_dynamics(state, rule, None, **kw)
            self._sigma_F_used[key] = not inert_controls(dyn, state.to_vector(dyn.mirror), ["sigma_F"])
        return self._sigma_F_used[key]

    def redraw(self) -> None:
        """Integrate with the current controls and redraw the panels (what every control change calls)."""
        try:
            tr, diverged = self._integrate()
        except (ValueError, TypeError) as exc:  # a refused combination: keep the last curves, say why
            self.status.value = f"<b>not drawn</b>: {exc}"
            return
        self.trajectory = tr
        t = np.asarray(tr.t)
        keep = t > 0
        self._lines["eg"].set_data(t[keep], np.asarray(tr.eg)[keep])
        for name in EXPLORER_ANGLES:
            deg = tr.angles.get(name)
            deg = np.asarray(deg)[keep] if deg is not None else np.full(keep.sum(), np.nan)
            self._lines[name].set_data(t[keep], deg)
            self._notes[name].set_text("" if np.any(np.isfinite(deg)) else
                                       "not defined for these K, M" if deg.size else "nothing recorded")
        for ax in self.axes.values():
            ax.relim()
            ax.autoscale_view(scalex=False, scaley=ax is self.axes["eg"])
            if keep.any():
                ax.set_xlim(t[keep][0], t[-1])
        v = self.values
        unused = " (sigma_F has no effect on this rule)" if self.controls["sigma_F"].disabled else ""
        self.status.value = (f"{v['rule']}, K = {v['K']}, M = {v['M']}, D = {self.D}, seed = {self.seed}{unused}: "
                             + (f"<b>diverged</b>: {diverged}" if diverged else
                                f"eps_g(t = {t[-1]:g}) = {float(tr.eg[-1]):.4g}"))
        if _in_kernel():  # in a notebook: show the new figure in the explorer's output area
            from IPython.display import display

            self.output.clear_output(wait=True)
            with self.output:
                display(self.figure)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def explore(rules: Sequence[str] = RULES, **options) -> Explorer:
    """An :class:`Explorer` (module docstring); in a notebook, its widget shows as the cell's output."""
    return Explorer(rules, **options)
