"""Simulations against the ODEs, from the same measured initial condition (THEORY.md section 6).

For each rule, :func:`compare` runs the simulation, then integrates the ODE with
:func:`theory.integrate` from the simulation's *measured* initial order parameters (one ODE per
replica when the replicas start from different weights), at the simulation's recording times.

Agreement measures (per rule):

- relative deviation of the generalisation error, (mean_r eg_sim(t) - eg_ode(t)) / eg_ode(t),
  and its z-score against the replicas' standard error;
- the plateau split t_split of the ODE's eg (:func:`theory.plateau_split`: the escape from the
  plateau, or the last time). Deviations are summarised separately for t <= t_split ("before")
  and t > t_split ("after"), because finite-D fluctuations trigger the escape early and dominate
  after it;
- angle differences in degrees, mean_r angle_sim(t) - angle_ode(t), for every named angle.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

import theory
from theory import HyperParams, Trajectory, _internal, make_rule, plateau_split

from ._init import Initialisation
from ._result import SimulationResult
from ._run import run

__all__ = ["compare", "Comparison", "Agreement", "plateau_split", "ode_rule_for", "PEPITA_ODE_RULE", "rule_key"]

#: The ODE integrated for pepita simulations: "pepita" (exact, numerical expectations) or "afa"
#: (its first-order approximation). One-line switch.
PEPITA_ODE_RULE = "pepita"


_SUMMARY_ANGLES = ("teacher", "degenerate_min", "feedback", "end_to_end")


def ode_rule_for(rule) -> tuple[theory.Rule, str | None]:
    """The rule whose ODE is compared with a simulation of ``rule``, and a note when it differs."""
    if rule.name != "pepita" or PEPITA_ODE_RULE == "pepita":
        return rule, None
    ode = make_rule("afa", presynaptic=rule.presynaptic)
    return ode, f"ODE of {ode.label} (first-order approximation of pepita) used: PEPITA_ODE_RULE = 'afa'"


def rule_key(rule) -> str:
    """A file-safe name of a rule and its variant: bp, fa, afa, afa-clean, pepita, pepita-clean-errmod, ..."""
    return rule.key


@dataclasses.dataclass(frozen=True, eq=False)
class Agreement:
    """How one rule's simulation agrees with its ODE (see the module docstring)."""

    t_split: float
    rel_dev: np.ndarray  # (n,) relative deviation of the replica-mean eg
    z: np.ndarray  # (n,) (mean eg_sim - eg_ode) / sem
    angle_diff: dict[str, np.ndarray]  # name -> (n,) degrees
    before: dict[str, float]  # summaries over t <= t_split
    after: dict[str, float]  # summaries over t > t_split

    def as_dict(self) -> dict[str, Any]:
        return dict(t_split=self.t_split, before=self.before, after=self.after)


def _agreement(res: SimulationResult, ode_t, ode_eg, ode_angles) -> Agreement:
    t = res.t
    n = min(len(t), len(ode_t))
    t, eg_sim, sem = t[:n], res.mean("eg")[:n], res.sem("eg")[:n]
    eg_ode = ode_eg[:n]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (eg_sim - eg_ode) / eg_ode
        z = (eg_sim - eg_ode) / sem
    diffs = {k: res.mean(k)[:n] - ode_angles[k][:n] for k in ode_angles if k in res.angles}
    t_split = plateau_split(t, eg_ode)

    def summary(mask):
        if not mask.any():
            return dict(n_times=0)
        out = dict(
            n_times=int(mask.sum()),
            median_abs_rel_dev=float(np.nanmedian(np.abs(rel[mask]))),
            max_abs_rel_dev=float(np.nanmax(np.abs(rel[mask]))),
            max_abs_z=float(np.nanmax(np.abs(z[mask]))) if np.isfinite(z[mask]).any() else float("nan"),
        )
        for k, d in diffs.items():
            if np.isfinite(d[mask]).any():
                out[f"max_abs_angle_diff:{k}"] = float(np.nanmax(np.abs(d[mask])))
        return out

    return Agreement(
        t_split=t_split, rel_dev=rel, z=z, angle_diff=diffs, before=summary(t <= t_split), after=summary(t > t_split)
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Comparison:
    """Simulations and ODEs of several rules, with their agreement.

    results[key]: :class:`SimulationResult`; trajectories[key]: list of :class:`theory.Trajectory`
    (one, or one per replica with independent initial weights); ode_rules[key]: label of the ODE
    rule; notes[key]: why the ODE differs from the simulated rule (or None); agreement[key].
    Keys are :func:`rule_key` names, in the order the rules were given.
    """

    results: dict[str, SimulationResult]
    trajectories: dict[str, list[Trajectory]]
    ode_rules: dict[str, str]
    notes: dict[str, str | None]
    params: dict[str, Any]

    @property
    def rules(self) -> list[str]:
        return list(self.results)

    def ode_eg(self, key) -> np.ndarray:
        """The ODE's eg (mean over replicas' ODEs when their initial conditions differ)."""
        return np.mean([tr.eg for tr in _aligned(self.trajectories[key])], axis=0)

    def ode_angles(self, key) -> dict[str, np.ndarray]:
        trs = _aligned(self.trajectories[key])
        rule = theory.rule_from_params(self.results[key].params)  # angles defined by the simulated rule's feedback
        per = [theory.alignment_angles(tr, rule, tr.params.get("sigma_F", 1.0)) for tr in trs]
        return {k: np.nanmean([p[k] for p in per], axis=0) for k in per[0]}

    def ode_t(self, key) -> np.ndarray:
        return _aligned(self.trajectories[key])[0].t

    @property
    def agreement(self) -> dict[str, Agreement]:
        return {k: _agreement(self.results[k], self.ode_t(k), self.ode_eg(k), self.ode_angles(k)) for k in self.results}

    def plot(self, **kw):
        """The PEPITA paper's Fig. 2 for this comparison (:func:`simulate.plots.fig2`): eps_g with the
        simulations' bands, the alignment angles and the directions; keywords as fig2. Returns the Figure."""
        from . import plots

        return plots.fig2(self, **kw)

    def summary(self) -> str:
        """A short text report of the agreement of every rule."""
        p = self.params
        lines = [
            f"Simulation vs ODE: K={p['K']}, M={p['M']}, D={p['D']}, g={p['g']}, B={p.get('batch', 1)}, "
            f"eta={_rate(p, 'eta')}, eta_v={_rate(p, 'eta_v')}, "
            f"sigma={p['sigma']}, sigma_F={p['sigma_F']}, weight_decay={p['weight_decay']}, replicas={p['replicas']}"
            f"{' (independent initial weights)' if p['independent_init'] else ''}, engine={p['engine']}, "
            f"device={p['device']}, dtype={p['dtype']}, seed={p['seed']}, init seed={p['init_seed']}",
            "eg: replica mean (+- sem) of the closed form of the measured order parameters; ODE from the measured "
            "t=0 state.",
            "before/after: t <= t_split or t > t_split, t_split = escape from the ODE's plateau "
            "(flattest log-log point at t >= 1, then eg halved). Deviations after the escape are dominated by "
            "finite-D fluctuations of the escape time.",
            "",
        ]
        for key, ag in self.agreement.items():
            res = self.results[key]
            eg_ode = self.ode_eg(key)
            n = min(len(res.t), len(eg_ode))
            odes = self.trajectories[key]
            ode_status = odes[0].message if len(odes) == 1 else "; ".join(sorted({tr.message for tr in odes}))
            lines.append(f"[{key}] simulated {res.params['rule_label']}, ODE {self.ode_rules[key]}; simulation: "
                         f"{res.message}; ODE: {ode_status}")
            if self.notes[key]:
                lines.append(f"  note: {self.notes[key]}")
            lines.append(
                f"  final t={res.t[n - 1]:g}: eg sim {res.mean('eg')[n - 1]:.4g} +- {res.sem('eg')[n - 1]:.2g} "
                f"({_test_set(res, n - 1)}), ODE {eg_ode[n - 1]:.4g}; t_split = {ag.t_split:g}"
            )
            for name, part in (("before", ag.before), ("after", ag.after)):
                if part.get("n_times", 0) == 0:
                    lines.append(f"  {name}: no recorded times")
                    continue
                angs = ", ".join(f"{k.split(':', 1)[1]} {v:.2f}" for k, v in part.items()
                                 if k.split(":", 1)[-1] in _SUMMARY_ANGLES and k.startswith("max_abs_angle_diff:"))
                lines.append(
                    f"  {name} ({part['n_times']} times): |rel dev eg| median {part['median_abs_rel_dev']:.3g}, "
                    f"max {part['max_abs_rel_dev']:.3g}; max |z| {part['max_abs_z']:.3g}; max |angle diff| deg: {angs}"
                )
        return "\n".join(lines)

    # ------------------------------------------------------------------ persistence
    def to_xarray(self):
        """An ``xarray.DataTree``: the root holds the parameters, the ODE rules and notes (attributes);
        node ``<key>/simulation`` the rule's SimulationResult.to_xarray(), ``<key>/ode/<i>`` its ODE
        trajectories' Trajectory.to_xarray() (one, or one per replica with independent initial weights)."""
        lab = theory.labelled
        xr = lab.xarray()
        nodes = {"/": xr.Dataset(attrs=lab.to_attrs("Comparison", params=self.params, rules=self.rules,
                                                     ode_rules=self.ode_rules, notes=self.notes))}
        for key in self.rules:
            nodes[f"/{key}/simulation"] = self.results[key].to_xarray()
            for i, tr in enumerate(self.trajectories[key]):
                nodes[f"/{key}/ode/{i}"] = tr.to_xarray()
        return xr.DataTree.from_dict(nodes)

    @classmethod
    def from_xarray(cls, tree) -> Comparison:
        """The comparison a DataTree of :meth:`to_xarray` holds (theory.LoadError otherwise)."""
        meta = theory.labelled.from_attrs(tree.to_dataset(), "Comparison")
        try:
            results = {k: SimulationResult.from_xarray(tree[f"{k}/simulation"].to_dataset()) for k in meta["rules"]}
            trajs = {
                k: [
                    Trajectory.from_xarray(tree[f"{k}/ode/{i}"].to_dataset())
                    for i in range(len(tree[f"{k}/ode"].children))
                ]
                for k in meta["rules"]
            }
        except KeyError as exc:
            raise theory.LoadError(f"Comparison.from_xarray: missing node {exc}") from None
        return cls(results=results, trajectories=trajs, ode_rules=meta["ode_rules"], notes=meta["notes"],
                   params=meta["params"])

    def save(self, folder) -> Path:
        """Write sim_<key>.npz, ode_<key>[_r<i>].npz and comparison.json (parameters, agreement) to ``folder``;
        or, for a path ending in .nc, one netCDF-4 file of :meth:`to_xarray` (needs xarray, h5netcdf)."""
        folder = Path(folder)
        if folder.suffix == ".nc":
            return theory.labelled.write_netcdf(self.to_xarray(), folder)
        folder.mkdir(parents=True, exist_ok=True)
        for key in self.results:
            self.results[key].save(folder / f"sim_{key}.npz")
            trs = self.trajectories[key]
            for i, tr in enumerate(trs):
                tr.save(folder / (f"ode_{key}.npz" if len(trs) == 1 else f"ode_{key}_r{i}.npz"))
        meta = dict(
            kind="Comparison",
            format=_internal.io.FORMAT,
            params=self.params,
            rules=self.rules,
            ode_rules=self.ode_rules,
            notes=self.notes,
            n_trajectories={k: len(v) for k, v in self.trajectories.items()},
            agreement={k: a.as_dict() for k, a in self.agreement.items()},
            units={"t": "steps / D", "angles": "degrees"},
        )
        (folder / "comparison.json").write_text(json.dumps(meta, indent=1, default=str))
        return folder

    @classmethod
    def load(cls, folder) -> Comparison:
        """Read a saved comparison (a folder, or a .nc file); :class:`theory.LoadError` when it is not
        one, or is damaged."""
        folder = Path(folder)
        if folder.suffix == ".nc":
            return cls.from_xarray(theory.labelled.read_netcdf(folder, "Comparison", tree=True))
        what = f"Comparison.load: {str(folder)!r}"
        path = folder / "comparison.json"
        if not path.is_file():
            raise theory.LoadError(f"{what}: no comparison.json in it")
        try:
            meta = json.loads(path.read_text())
            if meta.get("kind", "Comparison") != "Comparison":
                raise theory.LoadError(f"{what}: comparison.json holds a {meta['kind']}, not a Comparison")
            rules, n_traj = list(meta["rules"]), dict(meta["n_trajectories"])
            ode_rules, notes, params = meta["ode_rules"], meta["notes"], meta["params"]
        except theory.LoadError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise theory.LoadError(f"{what}: damaged comparison.json ({type(exc).__name__}: {exc})") from None
        results, trajs = {}, {}
        for key in rules:
            results[key] = SimulationResult.load(folder / f"sim_{key}.npz")
            n = int(n_traj.get(key, 0))
            if n < 1:
                raise theory.LoadError(f"{what}: no ODE recorded for {key!r}")
            names = [f"ode_{key}.npz"] if n == 1 else [f"ode_{key}_r{i}.npz" for i in range(n)]
            trajs[key] = [Trajectory.load(folder / nm) for nm in names]
        return cls(results=results, trajectories=trajs, ode_rules=ode_rules, notes=notes, params=params)


def _rate(p, name) -> str:
    """A learning rate as recorded: its value, or its schedule."""
    sched = p.get(f"{name}_schedule", "constant")
    return f"{p[name]}" if sched == "constant" else sched


def _test_set(res: SimulationResult, i: int) -> str:
    col = res.eg_test[:, i]
    return f"test set {np.mean(col):.4g}" if np.isfinite(col).all() else "no test set"


def _aligned(trs: list[Trajectory]) -> list[Trajectory]:
    """Trajectories cut to their common length (a diverged ODE stops early)."""
    n = min(len(tr) for tr in trs)
    if all(len(tr) == n for tr in trs):
        return trs
    return [dataclasses.replace(tr, t=tr.t[:n], Q=tr.Q[:n], R=tr.R[:n], S=tr.S[:n], v=tr.v[:n]) for tr in trs]


def compare(
    init: Initialisation,
    rules=theory.RULES,
    t=None,
    params: HyperParams | None = None,
    *,
    replicas: int = 8,
    independent_init: bool = False,
    device=None,
    dtype=None,
    seed: int = 0,
    n_test: int | None = None,
    engine: str = "full",
    progress: bool = True,
    throw: bool = True,
    quadrature=None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    on_rule=None,
    **options,
) -> Comparison:
    """Simulate each rule and integrate its ODE from the simulation's measured initial state.

    rules : names (registered rules, or "file.py:NAME" / "module:NAME", see
        :func:`theory.load_rule`) or :class:`theory.Rule` objects. t : recording times (steps / D);
        default 0 and 60 log-spaced times from 0.05 to 100.
    params, **options : a :class:`theory.HyperParams` and its fields as keyword arguments, shared
        by all rules; and rule options (presynaptic, error, ...), each applied to the rules given
        by name that have it. An option no rule has, or any other keyword, is an error.
    The other options are those of :func:`simulate.run` and :func:`theory.integrate` (quadrature,
    rtol, atol of the ODE). dtype None: the engine's default (float32 "full", float64 "reduced").
    All rules see the same initial weights and the same data-stream seed. A simulation or ODE
    that diverges raises (throw=True) or is kept with its status (throw=False). Ctrl-C stops the
    whole comparison at once: the rules done and the one running (what it recorded) are returned,
    with params["status"] == "interrupted". ``on_rule(comparison)`` is called after each rule with
    the comparison so far (the command line saves it there, so that nothing is lost).
    """
    where = "compare"
    hyper_opts, rule_opts = _internal.split_options(options, where=where, extra=_internal.checks.parameters(compare))
    made = _rules(rules, rule_opts, where)
    try:
        hyper = _internal.hyper_params(params, hyper_opts)
    except ValueError as exc:
        raise ValueError(f"compare: {exc}") from None
    if t is None:
        t = np.concatenate([[0.0], np.geomspace(0.05, 100.0, 60)])
    sim = dict(replicas=replicas, independent_init=independent_init, device=device, dtype=dtype, seed=seed,
               n_test=n_test, engine=engine, progress=progress, throw=throw)
    ode_opts = dict(quadrature=quadrature, rtol=rtol, atol=atol, throw=throw, progress=progress)
    parts = _Parts()
    for rule in made:
        try:
            res = run(init, rule, t, hyper, **sim)
            ode_rule, note = ode_rule_for(rule)
            ode, stopped = _odes(res, ode_rule, hyper, ode_opts)
        except KeyboardInterrupt:
            parts.status = "interrupted"
            break
        if res.status == 1 or stopped:
            parts.status = "interrupted"
        parts.add(rule_key(rule), res, ode, ode_rule.label, note)
        if on_rule is not None:
            on_rule(parts.comparison(t, rtol, atol))
        if parts.status == "interrupted":
            break  # Ctrl-C stops everything: the rules not started are left out
    if not parts.results:
        raise KeyboardInterrupt
    return parts.comparison(t, rtol, atol)


def _rules(rules, rule_opts: dict, where: str) -> list[theory.Rule]:
    """The rules of a comparison, each rule given by name with the options it has; distinct keys."""
    if isinstance(rules, (str, theory.Rule)):
        rules = [rules]
    rules = list(rules)
    if len(rules) == 0:
        raise ValueError(f"{where}: rules must name at least one rule")
    made, used = [], set()
    for r in rules:
        if isinstance(r, theory.Rule):
            made.append(r)
            continue
        base = theory.load_rule(r)
        mine = {k: v for k, v in rule_opts.items() if k in base.options()}
        used |= set(mine)
        made.append(make_rule(base, **mine))
    unused = sorted(k for k in set(rule_opts) - used if rule_opts[k] is not None)
    if unused:
        raise ValueError(f"{where}: option(s) {unused} apply to none of the rules {[r.label for r in made]}")
    keys = [rule_key(r) for r in made]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{where}: rules must be distinct, got {keys}")
    return made


def _odes(res: SimulationResult, ode_rule, hyper, ode_opts: dict) -> tuple[list[Trajectory], bool]:
    """The ODEs of ``ode_rule`` from a simulation's measured initial states (one per replica when they differ),
    at its recording times; and whether Ctrl-C stopped them (an interrupted ODE returns what it computed)."""
    starts = [res.initial_state(r) for r in range(res.replicas)] if res.independent_init else [res.initial_state(0)]
    ode = []
    for s0 in starts:
        ode.append(theory.integrate(s0, ode_rule, res.t, hyper, **ode_opts))
        if ode[-1].status == 1:
            return ode, True
    return ode, False


#: the parameters of a comparison taken from its first simulation
_SHARED_PARAMS = ("K", "M", "D", "init_seed", "w_std", "v_std", "v_star", "replicas", "independent_init", "device",
                  "dtype", "seed", "n_test", "engine", "eta", "eta_v", "sigma", "sigma_F", "weight_decay",
                  "train_second_layer", "batch", "eta_schedule", "eta_v_schedule", "eta_F", "eta_F_schedule", "kappa_F",
                  "mirror_norm", "t_pre")


@dataclasses.dataclass
class _Parts:
    """A comparison as it is built, rule by rule."""

    results: dict = dataclasses.field(default_factory=dict)
    trajectories: dict = dataclasses.field(default_factory=dict)
    ode_rules: dict = dataclasses.field(default_factory=dict)
    notes: dict = dataclasses.field(default_factory=dict)
    status: str = "finished"

    def add(self, key, res, ode, ode_rule, note):
        self.results[key], self.trajectories[key], self.ode_rules[key], self.notes[key] = res, ode, ode_rule, note

    def comparison(self, t, rtol, atol) -> Comparison:
        first = next(iter(self.results.values())).params
        params = {k: first[k] for k in _SHARED_PARAMS if k in first}
        params.update(g=first["activation"], rules=list(self.results), rtol=rtol, atol=atol, status=self.status,
                      t=[float(x) for x in np.asarray(t, float).ravel()], units=first["units"],
                      provenance=first["provenance"])
        return Comparison(results=dict(self.results), trajectories=dict(self.trajectories),
                          ode_rules=dict(self.ode_rules), notes=dict(self.notes), params=params)
