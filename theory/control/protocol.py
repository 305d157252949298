"""Optimal training protocols: :func:`optimal_protocol` and its result, :class:`OptimalProtocol`.

The ODE makes a learning curve a differentiable function of the protocol. ``optimal_protocol`` parametrises each
control (eta, eta_v, sigma_F, eta_F) as piecewise constant on ``pieces`` pieces of [0, T], within its bounds, and
minimises the objective (theory.control.objectives) by scipy's L-BFGS-B (or SLSQP) with the gradient from the
forward sensitivities of the flow (theory.control.sensitivities). It first finds the baselines with the same
objective (theory.control.baselines: the best constant, then the best power law) and starts from the better of
the best constant and the best power law averaged over the pieces, so the optimum is never worse than the best
constant within the optimiser's tolerance.

Accuracy: the flows are DOP853 at ``rtol`` (default 1e-8, as theory.integrate), the gradients those of the
discrete flow to ~1e-7 ("forward" differences) or ~1e-10 ("central"). Rules without closed forms (pepita) are
optimised on a coarser quadrature than theory.integrate's (:data:`OPTIMISE_QUADRATURE`, GaussHermite(12) for
K + M <= 4: its eps_g differs from the default rule's by ~0.3 % on K = M = 2 pepita learning curves, measured
to t = 100), and every reported objective (the optimum's and the baselines') is then evaluated again with the
quadrature theory.integrate would choose; ``record["surrogate"]`` holds both values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import _checks as checks
from .._hyper import HyperParams, resolve
from .._schedules import Constant, Schedule
from .._state import OrderParams
from .baselines import Interrupted, PhaseResult, best_constant, best_power_law, minimise
from .families import CONTROLS, SCHEDULED, PiecewiseFamily
from .families import piece_times as _piece_times
from .objectives import make_objective
from .sensitivities import FlowDiverged, Problem, flow

__all__ = ["OptimalProtocol", "Protocol", "optimal_protocol", "integrate_protocol", "OPTIMISE_QUADRATURE",
           "METHODS", "inert_controls"]

METHODS = ("L-BFGS-B", "SLSQP")
#: the scaled objective a diverging protocol scores above the best one seen (the line search then backs off)
PENALTY = 10.0


def OPTIMISE_QUADRATURE(K: int, M: int):
    """The quadrature the optimisation of a numerical view runs on (module docstring): GaussHermite(12) for
    K + M <= 4, else None (theory.integrate's default rule)."""
    from ..expectations.numerical import GaussHermite

    return GaussHermite(12) if K + M <= 4 else None


# ------------------------------------------------------------------------------------------------ results
@dataclasses.dataclass(frozen=True, eq=False)
class Protocol:
    """One protocol of the comparison: its ``name`` ("optimal", "constant", "power_law"), its ``schedules`` (one
    theory schedule per control), its objective ``value`` (the accurate evaluation) and ``surrogate_value`` (on
    the optimisation's quadrature; equal for closed forms), the family and theta it came from."""

    name: str
    schedules: dict
    value: float
    surrogate_value: float
    family: Any = dataclasses.field(repr=False, default=None)
    theta: Any = dataclasses.field(repr=False, default=None)

    def describe(self) -> str:
        return ", ".join(f"{k}={s.describe() if isinstance(s, Schedule) else s}" for k, s in self.schedules.items())


@dataclasses.dataclass(frozen=True, eq=False)
class OptimalProtocol:
    """What :func:`optimal_protocol` returns.

    schedules : the optimal schedule of each control (theory.Piecewise, theory.Interpolated for shape="linear",
        or theory.Constant where every piece has the same value). params : the HyperParams of the run with those
        schedules, ready for
        theory.integrate, theory.sweep and simulate.run (not with a sigma_F control: HyperParams takes no
        sigma_F schedule; :meth:`integrate` then runs the pieces one after the other).
    value : the objective of the optimal protocol (units: eps_g, or steps / D for time_to_target).
    baselines : {"constant": Protocol, "power_law": Protocol} with the same objective (empty when not asked).
    optimal : the optimal Protocol (schedules, value, surrogate value). gains : baseline value / optimal value.
    trajectory : the theory.Trajectory of the optimal protocol on [0, T].
    record : the optimiser's record: "history" (a pandas DataFrame, one row per evaluation: phase, J, the scaled
        objective F, |grad F|, seconds), "phases" (scipy's nit, nfev, status, message per search), "surrogate",
        "elapsed" (s), "nfev" (right-hand side evaluations), the options.
    status : 0 converged (scipy's success), 2 stopped by maxiter, 1 interrupted (Ctrl-C: the best protocol
        evaluated so far is kept), with a ``message``.
    """

    rule: Any
    state0: OrderParams
    T: float
    controls: dict
    objective: Any
    hyper: HyperParams
    optimal: Protocol
    baselines: dict
    trajectory: Any
    record: dict
    status: int
    message: str
    piece_times: tuple
    integrate_options: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def schedules(self) -> dict:
        return self.optimal.schedules

    @property
    def value(self) -> float:
        return self.optimal.value

    @property
    def params(self) -> HyperParams:
        return protocol_params(self.hyper, self.schedules, where="OptimalProtocol.params")

    @property
    def gains(self) -> dict:
        """{baseline: its value / the optimal value} (> 1: the optimum is better)."""
        return {k: b.value / self.value for k, b in self.baselines.items()}

    def protocols(self) -> dict:
        """{"optimal": ..., "constant": ..., "power_law": ...}."""
        return {"optimal": self.optimal, **self.baselines}

    def integrate(self, t=None, which: str = "optimal", **options):
        """The theory.Trajectory of the optimal protocol (``which="optimal"``) or of a baseline on t (default:
        401 times on [0, T]); ``options`` as theory.integrate's (quadrature, rtol, ...)."""
        protocols = self.protocols()
        if which not in protocols:
            raise ValueError(f"OptimalProtocol.integrate: which must be one of {tuple(protocols)}, got {which!r}")
        t = np.linspace(0.0, self.T, 401) if t is None else t
        return integrate_protocol(self.state0, self.rule, self.hyper, protocols[which].schedules, t,
                                  **{**self.integrate_options, **options})

    def curves(self, t=None):
        """A pandas DataFrame, one row per (protocol, t): eg and each control's value."""
        import pandas as pd

        t = np.linspace(0.0, self.T, 401) if t is None else np.asarray(t, dtype=float)
        rows = []
        for name, prot in self.protocols().items():
            traj = self.trajectory if name == "optimal" and np.array_equal(self.trajectory.t, t) else \
                self.integrate(t, which=name)
            frame = {"protocol": name, "t": traj.t, "eg": traj.eg}
            for k, s in prot.schedules.items():
                frame[k] = np.asarray(s(traj.t), dtype=float) * np.ones_like(traj.t)
            rows.append(pd.DataFrame(frame))
        return pd.concat(rows, ignore_index=True)

    def plot(self, t=None):
        """eps_g(t) of the optimal protocol and the baselines, and each control's schedule
        (:func:`theory.plots.protocols` of :meth:`curves`). Returns the Figure."""
        from ..plots import protocols

        return protocols(self.curves(t))

    def to_dict(self) -> dict:
        """The result as plain JSON-able values (schedules as {kind, parameters})."""
        def sched(s):
            return {"kind": s.kind, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in s.params().items()}}

        def prot(p):
            return {"schedules": {k: sched(s) for k, s in p.schedules.items()}, "value": p.value,
                    "surrogate_value": p.surrogate_value}

        rec = {k: v for k, v in self.record.items() if k != "history"}
        return {"rule": self.rule.label, "T": self.T, "objective": self.objective.describe(),
                "units": self.objective.units, "controls": {k: list(v) for k, v in self.controls.items()},
                "piece_times": list(self.piece_times), "optimal": prot(self.optimal),
                "baselines": {k: prot(b) for k, b in self.baselines.items()}, "gains": self.gains,
                "status": self.status, "message": self.message, "record": rec}

    def save(self, path) -> Path:
        """Write :meth:`to_dict` as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default))
        return path

    def summary(self) -> str:
        lines = [f"optimal protocol of {self.rule.label} on [0, {self.T:g}], objective {self.objective.describe()} "
                 f"({self.objective.units}); status {self.status}: {self.message}",
                 f"  optimal    {self.value:.6g}   {self.optimal.describe()}"]
        for k, b in self.baselines.items():
            lines.append(f"  {k:<10} {b.value:.6g}   (x{b.value / self.value:.3g})   {b.describe()}")
        lines.append(f"  {self.record['nfev']} right-hand side evaluations, {self.record['elapsed']:.3g} s")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"OptimalProtocol(rule={self.rule.label}, T={self.T:g}, objective={self.objective.describe()}, "
                f"value={self.value:.6g}, gains={ {k: round(v, 4) for k, v in self.gains.items()} }, "
                f"status={self.status})")


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def protocol_params(hyper: HyperParams, schedules: dict, *, where: str) -> HyperParams:
    """``hyper`` with the schedules of a protocol (eta_v following eta unless hyper sets its own)."""
    if "sigma_F" in schedules and not isinstance(schedules["sigma_F"], Constant):
        raise ValueError(f"{where}: HyperParams takes no sigma_F schedule (sigma_F is a number); integrate a sigma_F "
                         "protocol with OptimalProtocol.integrate (its pieces one after the other)")
    changes = {k: s for k, s in schedules.items() if k in SCHEDULED}
    if "sigma_F" in schedules:
        changes["sigma_F"] = schedules["sigma_F"].value
    return hyper.replace(**changes) if changes else hyper


def integrate_protocol(state0, rule, hyper: HyperParams, schedules: dict, t, **options):
    """theory.integrate of a protocol: in one run where HyperParams holds every schedule, else (a sigma_F
    schedule) piece by piece, each piece from the state the previous one ended in."""
    from .._state import pack
    from ..results.trajectory import Trajectory
    from ..solver.integrate import integrate

    t = np.asarray(t, dtype=float)
    sf = schedules.get("sigma_F")
    if sf is None or isinstance(sf, Constant):
        return integrate(state0, rule, t, protocol_params(hyper, schedules, where="integrate_protocol"), **options)
    others = {k: s for k, s in schedules.items() if k != "sigma_F"}
    base = protocol_params(hyper, others, where="integrate_protocol")
    mirror = base.mirroring
    edges = [t[0]] + [b for b in sf.breakpoints() if t[0] < b < t[-1]] + [t[-1]]
    state, ts, ys, nfev, last = state0, [], [], 0, None
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        inner = t[(t > a) & (t < b)]
        tt = np.concatenate([[a], inner, [b]])
        last = integrate(state, rule, tt, base.replace(sigma_F=float(sf(0.5 * (a + b)))), **options)
        keep = slice(0 if i == 0 else 1, None)
        ts.append(last.t[keep])
        mir = (last.U_t, last.P_t) if mirror and last.U_t is not None else (None, None)
        ys.append(pack(last.Q, last.R, last.S, last.v, *mir)[keep])
        nfev += last.nfev
        state = last.state(-1)
    tcat, ycat = np.concatenate(ts), np.concatenate(ys)
    sel = np.isin(tcat, t)
    params = dict(last.params, sigma_F_schedule=sf.describe())
    return Trajectory.from_flat(tcat[sel], ycat[sel], state0, params=params, status=last.status, message=last.message,
                                nfev=nfev)


# ------------------------------------------------------------------------------------------------ checks
def _controls(controls, where):
    if not isinstance(controls, dict) or not controls:
        raise ValueError(f"{where}: controls must be a non-empty dict {{name: (lo, hi)}} of the hyper-parameters "
                         f"that vary in time, among {CONTROLS}; got {checks.describe(controls)}")
    out = {}
    for name, bounds in controls.items():
        if name not in CONTROLS:
            raise ValueError(f"{where}: unknown control {name!r}; the controls are the hyper-parameters that may vary "
                             f"in time: {CONTROLS}")
        try:
            lo, hi = bounds
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: the bounds of control {name!r} must be a pair (lo, hi), got {bounds!r}"
            ) from None
        lo = checks.number(f"the lower bound of {name}", lo, where=where)
        hi = checks.number(f"the upper bound of {name}", hi, where=where)
        if lo > hi:
            raise ValueError(f"{where}: the bounds of control {name!r} are reversed: lo = {lo:g} > hi = {hi:g}; "
                             "give (lo, hi)")
        if lo == hi:
            raise ValueError(f"{where}: the bounds of control {name!r} are equal ({lo:g}): a fixed value is not a "
                             f"control; set {name}={lo:g} instead")
        if lo < 0:
            raise ValueError(f"{where}: the lower bound of control {name!r} must be >= 0 (a schedule's values are "
                             f"rates and scales >= 0), got {lo:g}")
        out[name] = (lo, hi)
    return {k: out[k] for k in CONTROLS if k in out}


def inert_controls(dyn, y0, names, t: float = 0.0) -> list[str]:
    """The controls among ``names`` that cannot change eps_g (derived, not declared): the right-hand side's
    derivative by the control (Ridders, theory.ode.derivatives) and the state Jacobian's pattern at y0 leave no
    path from the control to Q, R or v. An entry counts as non-zero above 100 times its error estimate and 1e-12
    of its matrix's largest entry."""
    from ..ode.derivatives import dynamics_jacobian

    js = dynamics_jacobian(dyn, y0, t, wrt="state")
    jt = dynamics_jacobian(dyn, y0, t, wrt=tuple(names))

    def pattern(J):
        m = np.abs(J.matrix)
        return m > np.maximum(100.0 * J.error, 1e-12 * max(float(m.max(initial=0.0)), 1e-300))

    A = pattern(js)  # A[i, j]: f_i depends on y_j
    B = pattern(jt)
    n = A.shape[0]
    eg_rows = np.zeros(n, dtype=bool)
    K, M = dyn.K, dyn.M
    off = K * K + K * M
    eg_rows[:off] = True
    eg_rows[off + K: off + 2 * K] = True
    out = []
    for c, name in enumerate(names):
        reached = B[:, c].copy()
        while True:  # the components the control moves, directly or through the state
            nxt = reached | np.any(A[:, reached], axis=1)
            if np.array_equal(nxt, reached):
                break
            reached = nxt
        if not np.any(reached & eg_rows):
            out.append(name)
    return out


# ------------------------------------------------------------------------------------------------ the optimiser
class _Evaluator:
    """The scaled objective F(x) and its gradient for scipy (x: theta scaled to [0, 1]), with the record of every
    evaluation, the best point of the current phase, the progress bar and the penalty of diverging protocols."""

    def __init__(self, problem, objective, bar):
        self.pb, self.obj, self.bar = problem, objective, bar
        self.history, self.phase, self.family = [], "", None
        self.best = None
        self.best_F_all = math.inf
        self.nfev = 0
        self._cache = None

    def start(self, family, phase=None):
        self.family = family
        self.phase = phase or type(family).__name__
        self.best = None
        self._cache = None

    def _flow(self, theta, sens):
        fl = flow(self.pb, self.family, theta, sensitivities=sens, weight=self.obj.weight, target=self.obj.target)
        self.nfev += fl.nfev
        return fl

    def _record(self, theta, J, F, gnorm, t0):
        self.history.append(dict(phase=self.phase, J=J, F=F, grad_norm=gnorm, seconds=time.perf_counter() - t0))
        if self.best is None or F < self.best[1]:
            self.best = (np.array(theta), F, J)
        self.best_F_all = min(self.best_F_all, F)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"{self.phase} {self.obj.name} {self.best[2]:.4g}")

    def __call__(self, x):
        x = np.asarray(x, dtype=float)
        if self._cache is not None and np.array_equal(self._cache[0], x):
            return self._cache[1], self._cache[2]
        t0 = time.perf_counter()
        theta = self.family.from_unit(x)
        lo, hi = self.family.parameter_bounds().T
        try:
            fl = self._flow(theta, True)
            J = self.obj.value(fl, self.pb)
            F, dF = self.obj.scaled(J, self.obj.gradient(fl, self.pb))
            dF = dF * (hi - lo)
        except FlowDiverged:
            J = math.inf
            F = (self.best_F_all if math.isfinite(self.best_F_all) else 0.0) + PENALTY
            dF = np.zeros_like(x)
        self._record(theta, J, F, float(np.linalg.norm(dF)), t0)
        self._cache = (x.copy(), F, dF)
        return F, dF

    def value(self, theta):
        """J of theta (no gradient), recorded."""
        t0 = time.perf_counter()
        try:
            J = self.obj.value(self._flow(np.asarray(theta, dtype=float), False), self.pb)
            F = self.obj.scaled(J)[0]
        except FlowDiverged:
            J, F = math.inf, (self.best_F_all if math.isfinite(self.best_F_all) else 0.0) + PENALTY
        self._record(theta, J, F, float("nan"), t0)
        return J

    def best_result(self, name, family) -> PhaseResult:
        if self.best is None:
            raise KeyboardInterrupt
        theta, F, J = self.best
        return PhaseResult(name=name, family=family, theta=theta, J=J, F=F)


def _bar(progress, desc):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=desc, unit=" eval", leave=True)


def optimal_protocol(
    state0: OrderParams,
    rule,
    T: float,
    controls: dict,
    objective: str = "eg_final",
    params: HyperParams | None = None,
    *,
    pieces: int = 10,
    spacing: str = "linear",
    shape: str | None = None,
    piece_times=None,
    target=None,
    weight=None,
    baselines: bool = True,
    method: str = "L-BFGS-B",
    maxiter: int = 50,
    baseline_maxiter: int = 20,
    quadrature=None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    differences: str = "forward",
    progress: bool = False,
    n_out: int = 401,
    **options,
) -> OptimalProtocol:
    """The protocol that minimises ``objective`` on [0, T] under ``rule`` from ``state0`` (module docstring).

    Parameters
    ----------
    state0, rule, params, **options : as theory.integrate (HyperParams fields and rule options as keywords).
        The controls' values in params are the starting point (clipped to the bounds); eta may be left out
        when it is a control.
    T : the horizon (steps / D), > 0.
    controls : {name: (lo, hi)}, name among eta, eta_v, sigma_F, eta_F, 0 <= lo < hi. A control that cannot
        change the error (sigma_F or eta_F for bp, eta_v with a frozen second layer; derived from the Jacobians
        at state0, :func:`inert_controls`) is an error.
    objective : "eg_final" (eps_g(T)), "eg_integral" (int w eps_g dt; ``weight``: None for the mean, a number q
        for w ~ t^q, or a callable w(t)) or "time_to_target" (the first time eps_g reaches ``target``).
    pieces, spacing, piece_times : the pieces of the protocol: ``pieces`` equal ("linear") or log-spaced ("log",
        the first piece [0, T/100]) pieces, or the inner boundaries ``piece_times`` (increasing, in (0, T)).
    shape : "linear" (continuous, linear on each piece: theory.Interpolated; the default) or "constant"
        (piecewise constant: theory.Piecewise; the default with a sigma_F control, whose pieces the ODE holds
        fixed).
    baselines : find the best constant and the best power law (theory.control.baselines), and start from them.
    method, maxiter, baseline_maxiter : scipy.optimize.minimize's method ("L-BFGS-B" or "SLSQP") and iterations
        of the optimum and of each baseline's polish.
    quadrature : the optimisation's quadrature for rules without closed forms (default
        :data:`OPTIMISE_QUADRATURE`); the reported values use theory.integrate's default accuracy control.
    rtol, atol : the flows' DOP853 tolerances. differences : "forward" or "central" (the tangents' differences,
        theory.control.sensitivities). progress : a tqdm bar over evaluations. n_out : output times of the
        trajectory.

    Ctrl-C stops the search and returns the best protocol evaluated so far (status 1).
    """
    where = "optimal_protocol"
    t_start = time.perf_counter()
    method = checks.choice("method", method, METHODS, where=where)
    maxiter = checks.integer("maxiter", maxiter, where=where, min=0)
    baseline_maxiter = checks.integer("baseline_maxiter", baseline_maxiter, where=where, min=0)
    n_out = checks.integer("n_out", n_out, where=where, min=2)
    baselines = checks.boolean("baselines", baselines, where=where)
    progress = checks.boolean("progress", progress, where=where)
    setup = _setup(state0, rule, T, controls, objective, params, pieces=pieces, spacing=spacing, shape=shape,
                   piece_times=piece_times, target=target, weight=weight, quadrature=quadrature, rtol=rtol,
                   atol=atol, differences=differences, options=options, where=where)

    ev = _Evaluator(setup.problem, setup.objective, _bar(progress, f"optimal protocol {setup.rule.label}"))
    phases, status, message = _search(setup, ev, baselines=baselines, method=method, maxiter=maxiter,
                                      baseline_maxiter=baseline_maxiter)
    prots, surrogate = _protocols(setup, phases, where)
    integrate_options = dict(rtol=rtol, atol=atol) | ({"quadrature": quadrature} if quadrature is not None else {})
    traj = integrate_protocol(state0, setup.rule, setup.hyper, prots["optimal"].schedules,
                              np.linspace(0.0, setup.T, n_out), **integrate_options)
    import pandas as pd

    record = dict(
        history=pd.DataFrame(ev.history, columns=["phase", "J", "F", "grad_norm", "seconds"]),
        phases={k: dict(nit=p.nit, nfev=p.nfev, status=p.status, message=p.message) for k, p in phases.items()},
        surrogate=surrogate, elapsed=time.perf_counter() - t_start, nfev=ev.nfev, evaluations=len(ev.history),
        method=method, maxiter=maxiter, baseline_maxiter=baseline_maxiter, rtol=rtol, atol=atol,
        differences=differences, pieces=len(setup.times) + 1, spacing=spacing if piece_times is None else "given",
        shape=setup.family.shape)
    return OptimalProtocol(rule=setup.rule, state0=state0, T=setup.T, controls=dict(setup.controls),
                           objective=setup.objective, hyper=setup.hyper, optimal=prots["optimal"],
                           baselines={k: prots[k] for k in ("constant", "power_law") if k in prots},
                           trajectory=traj, record=record, status=status, message=message, piece_times=setup.times,
                           integrate_options=integrate_options)


@dataclasses.dataclass(frozen=True, eq=False)
class _Setup:
    """One optimisation, checked: the rule and base hyper-parameters, the controls and their starting values, the
    optimised family, the flows' Problem (the optimisation's quadrature) and the objective."""

    rule: Any
    hyper: HyperParams
    T: float
    controls: dict
    initial: list
    times: tuple
    family: PiecewiseFamily
    problem: Problem
    objective: Any
    state0: OrderParams
    quadrature: Any  # the optimisation's quadrature (None: closed forms or theory.integrate's default)

    @property
    def names(self) -> tuple:
        return tuple(self.controls)

    @property
    def bounds(self) -> tuple:
        return tuple(self.controls[k] for k in self.controls)


def _setup(state0, rule, T, controls, objective, params, *, pieces, spacing, shape, piece_times, target, weight,
           quadrature, rtol, atol, differences, options, where) -> _Setup:
    """Check the request and build the flows' Problem: the pieces, the rule and hyper-parameters (the controls'
    starting values clipped to their bounds), the Dynamics (mirroring when eta_F is a control), the controls that
    cannot change the error refused, the objective."""
    if not isinstance(state0, OrderParams):
        raise TypeError(f"{where}: state0 must be a theory.OrderParams, got {type(state0).__name__}")
    T = checks.number("T", T, where=where)
    if T <= 0:
        raise ValueError(f"{where}: T (the horizon, steps / D) must be > 0, got {T:g}")
    ctrl = _controls(controls, where)
    names = tuple(ctrl)
    bounds = tuple(ctrl[k] for k in names)
    differences = checks.choice("differences", differences, ("forward", "central"), where=where)
    spacing = checks.choice("spacing", spacing, ("linear", "log"), where=where)
    shape = ("constant" if "sigma_F" in ctrl else "linear") if shape is None else \
        checks.choice("shape", shape, ("constant", "linear"), where=where)
    if shape == "linear" and "sigma_F" in ctrl:
        raise ValueError(f"{where}: a sigma_F protocol is piecewise constant (the ODE's pieces hold sigma_F fixed): "
                         "use shape='constant'")
    rtol, atol = checks.tolerances(rtol, atol, where=where)
    times = _pieces(T, pieces, spacing, piece_times, where)
    if "eta" in names and params is None and "eta" not in options:
        options = dict(options, eta=0.5 * (bounds[names.index("eta")][0] + bounds[names.index("eta")][1]))
    rule_, hyper = resolve(rule, params, options, where=where, extra=checks.parameters(optimal_protocol))
    for k in names:
        if k in options and isinstance(options[k], Schedule) and not isinstance(options[k], Constant):
            raise ValueError(f"{where}: {k} is a control: give its bounds in controls, not a schedule")
    initial = []
    for k, (lo, hi) in zip(names, bounds):
        v = getattr(hyper, k)
        v = float(np.asarray(v(0.0))) if not isinstance(v, float) else v
        initial.append(float(np.clip(v, lo, hi)))

    from ..ode.dynamics import make_dynamics

    pw = PiecewiseFamily(names, bounds, T, times, shape)
    mid = pw.from_constants([0.5 * (lo + hi) if k == "eta_F" and lo == 0 else v
                             for k, (lo, hi), v in zip(names, bounds, initial)])
    dyn = make_dynamics(state0, rule_, pw.hyper(hyper, mid), where=where)
    mirror = dyn.mirror or "eta_F" in names
    quad_opt = quadrature
    if not dyn.closed_form and quad_opt is None:
        quad_opt = OPTIMISE_QUADRATURE(state0.K, state0.M)
    dyn = dataclasses.replace(dyn, quadrature=quad_opt, mirror=mirror)
    y0 = state0.to_vector(mirror)
    a = hyper.t_pre if hyper.t_pre < T else 0.0  # the first interval where the rule learns
    b = min([x for x in times if x > a] + [T])
    inert = inert_controls(dataclasses.replace(dyn, hyper=pw.segment_hyper(hyper, mid, a, b)), y0, names, t=a)
    if inert:
        raise ValueError(f"{where}: control{'s' if len(inert) > 1 else ''} {', '.join(map(repr, inert))} "
                         f"{'have' if len(inert) > 1 else 'has'} no effect on the error under rule {rule_.label!r} "
                         "with these parameters (derived: its derivative does not reach Q, R or v); remove "
                         f"{'them' if len(inert) > 1 else 'it'} from controls")
    problem = Problem(dyn, hyper, y0, T, rtol=rtol, atol=atol, differences=differences)
    obj = make_objective(objective, T, float(problem.eg(y0)), target=target, weight=weight, where=where)
    return _Setup(rule=rule_, hyper=hyper, T=T, controls=ctrl, initial=initial, times=times, family=pw,
                  problem=problem, objective=obj, state0=state0, quadrature=None if dyn.closed_form else quad_opt)


def _pieces(T, pieces, spacing, piece_times, where) -> tuple:
    """The inner boundaries of the pieces: ``piece_times`` checked, or ``pieces`` pieces spaced by ``spacing``."""
    if piece_times is None:
        return _piece_times(T, checks.integer("pieces", pieces, where=where, min=1), spacing)
    times = checks.times(piece_times, where=where) if len(piece_times) else np.zeros(0)
    if times.size and not (times[0] > 0 and times[-1] < T):
        raise ValueError(f"{where}: piece_times must lie strictly inside (0, T) = (0, {T:g}), got {list(times)}")
    return tuple(float(x) for x in times)


def _search(setup: _Setup, ev: _Evaluator, *, baselines, method, maxiter, baseline_maxiter):
    """The searches: the baselines (best constant, best power law) when asked, then the optimum from the better
    of their projections. Ctrl-C keeps the best protocol evaluated so far. Returns (phases, status, message)."""
    pw, names, bounds, T = setup.family, setup.names, setup.bounds, setup.T
    phases: dict[str, PhaseResult] = {}
    interrupted = False
    try:
        try:
            if baselines:
                ev.phase = "constant"
                phases["constant"] = best_constant(ev, names, bounds, T, setup.initial, method=method,
                                                   maxiter=baseline_maxiter)
                phases["power_law"] = best_power_law(ev, names, bounds, T, phases["constant"], method=method,
                                                     maxiter=baseline_maxiter)
            starts = [pw.from_constants(phases["constant"].theta if baselines else setup.initial)]
            if baselines:
                starts.append(pw.project(phases["power_law"].family, phases["power_law"].theta))
            ev.start(pw, "optimal")
            vals = [ev.value(s) for s in starts]
            x0 = starts[int(np.argmin(vals))]
            phases["optimal"] = minimise(ev, pw, x0, name="optimal", method=method, maxiter=maxiter)
        except Interrupted as exc:
            interrupted = True
            phases[exc.best.name] = exc.best
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if ev.bar is not None:
            ev.bar.close()
    if not interrupted:
        res = phases["optimal"]
        if res.status == 0:
            return phases, 0, res.message
        return phases, 2, f"stopped: {res.message}"
    if "optimal" not in phases:
        src = phases.get("power_law") or phases.get("constant")
        if src is None:
            raise KeyboardInterrupt
        phases["optimal"] = PhaseResult("optimal", pw, pw.project(src.family, src.theta), math.nan, math.nan)
    return phases, 1, "interrupted (Ctrl-C): the best protocol evaluated so far"


def _protocols(setup: _Setup, phases: dict, where: str):
    """Each phase's Protocol with its objective; a surrogate optimisation (a numerical view on the coarser
    quadrature) is evaluated again as theory.integrate would run it (its default accuracy control: the rule chosen
    at the initial state, refined at the final one). Returns (protocols, the surrogate record or None)."""
    problem, obj = setup.problem, setup.objective
    surrogate = setup.quadrature is not None
    finals = {}

    def evaluate(pb, ph):
        try:
            fl = flow(pb, ph.family, ph.theta, sensitivities=False, weight=obj.weight, target=obj.target)
        except FlowDiverged:
            return math.inf
        return obj.value(fl, pb)

    def accurate(name, ph):
        pb = _accurate_problem(setup, ph, where)
        finals[name] = repr(pb.dyn.quadrature)
        return evaluate(pb, ph)

    prots = {}
    for k, ph in phases.items():
        sv = ph.J if math.isfinite(ph.J) else evaluate(problem, ph)
        v = accurate(k, ph) if surrogate else sv
        prots[k] = Protocol(name=k, schedules=ph.family.schedules(ph.theta), value=float(v), surrogate_value=float(sv),
                            family=ph.family, theta=np.asarray(ph.theta))
    if not surrogate:
        return prots, None
    return prots, {"quadrature": repr(setup.quadrature), "final_quadrature": finals.get("optimal"),
                   **{k: {"surrogate": p.surrogate_value, "accurate": p.value, "quadrature": finals[k]}
                      for k, p in prots.items()}}


def _accurate_problem(setup: _Setup, ph, where: str) -> Problem:
    """The flows' Problem of one protocol on the quadrature theory.integrate's accuracy control ends on: the rule
    chosen at the initial state, then refined once where the estimate at the final state is above the target."""
    from ..expectations.numerical import accuracy_target
    from ..ode.dynamics import make_dynamics
    from ..results.trajectory import Trajectory
    from ..solver.integrate import _final_estimate, refined_at_end

    pb = setup.problem
    tol, max_cost = accuracy_target(None, where)
    dyn = make_dynamics(setup.state0, setup.rule, ph.family.hyper(setup.hyper, ph.theta), where=where,
                        expectation_tol=tol, max_cost=max_cost)
    acc = dataclasses.replace(pb, dyn=dataclasses.replace(dyn, mirror=pb.dyn.mirror))
    try:
        fl = flow(acc, ph.family, ph.theta, sensitivities=False)
    except FlowDiverged:
        return acc
    end = Trajectory.from_flat(fl.t[[0, -1]], fl.y[[0, -1]], setup.state0, params={}, status=0, message="", nfev=0)
    finer = refined_at_end(acc.dyn, end, _final_estimate(acc.dyn, end), tol=tol, max_cost=max_cost)
    return acc if finer is None else dataclasses.replace(pb, dyn=finer)

