"""Integration of the order-parameter ODEs with error control (THEORY.md section 4)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.integrate

from .. import _checks as checks
from .._hyper import HyperParams, record
from .._provenance import provenance
from .._state import OrderParams
from ..expectations.numerical import (
    AccuracyWarning,
    accuracy_note,
    accuracy_target,
    error_at,
    select_at,
)
from ..ode.dynamics import make_dynamics
from ..results.trajectory import DivergenceError, Trajectory
from ..rules._base import Rule
from .divergence import state_check
from .driver import MAX_STEPS, CompiledStepper, ScipyStepper, drive_segments

__all__ = ["integrate", "default_times", "watched_indices"]


def default_times(t_max: float = 1000.0, n: int = 200, t_min: float = 1e-2) -> np.ndarray:
    """0 followed by n log-spaced times from t_min to t_max (steps / D)."""
    where = "default_times"
    t_max = checks.number("t_max", t_max, where=where)
    t_min = checks.number("t_min", t_min, where=where)
    n = checks.integer("n", n, where=where, min=1)
    if not 0 < t_min < t_max:
        raise ValueError(f"default_times: needs 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
    checks.memory(f"{n} times", 8.0 * n, where=where)
    return np.concatenate([[0.0], np.geomspace(t_min, t_max, n)])


def watched_indices(K: int, M: int) -> np.ndarray:
    """Indices of Q_kk, S_k and v_k in the flat state (Q, R, S, v): what the divergence policy bounds."""
    off = K * K + K * M
    return np.concatenate([np.arange(K) * (K + 1), off + np.arange(2 * K)]).astype(np.int64)


def integrate(
    state0: OrderParams,
    rule: str | Rule,
    t=None,
    params: HyperParams | None = None,
    *,
    quadrature=None,
    expectation_tol=None,
    method: str = "DOP853",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    throw: bool = True,
    progress: bool = False,
    max_steps: int = MAX_STEPS,
    **options,
) -> Trajectory:
    """Integrate the order-parameter ODE of ``rule`` from ``state0``.

    Parameters
    ----------
    state0 : initial :class:`OrderParams` (constants T, U, P, v_star, b are kept fixed; U and P evolve
        under feedback mirroring, eta_F > 0).
    rule : a registered rule's name ("bp", "fa", "afa", "pepita", or your own) or a :class:`Rule`.
    t : increasing output times in steps / D; integration starts at t[0] from state0.
        Default: 0 then 200 log-spaced times from 1e-2 to 1e3.
    params : a :class:`HyperParams`; its fields may also be given as keyword arguments (eta,
        eta_v, sigma, sigma_F, weight_decay, train_second_layer, g, batch, and the mirroring's eta_F,
        kappa_F, mirror_norm, t_pre), which override it.
    **options : those fields, and the rule's options (presynaptic="modulated" or "clean" for afa
        and pepita, error="first" or "modulated" for pepita). Anything else is an error.
    quadrature : the numerical expectation engine's rule (see :mod:`theory.expectations.numerical`), used by
        rules without closed forms (pepita, user rules) and by activations other than erf.
    expectation_tol : the numerical view's accuracy (largest absolute error of any ODE term relative to
        the largest). Without ``quadrature``, the rule is chosen at state0 from an embedded pair
        (theory.expectations.numerical.select_quadrature) and the estimate re-checked at the last recorded state; where
        it is above the tolerance there, the rule is refined from that state and the run repeated once.
        ``traj.params["quadrature"]``, ``["expectation_tol"]`` and ``["expectation_error"]`` (the largest
        estimate) record them. None (default): theory.expectations.numerical.DEFAULT_EXPECTATION_TOL = 1e-5, climbing
        only to rules with at most DEFAULT_COST_FACTOR = 4 times the default rule's nodes; where none of them
        meets it (tanh, QMC for d >= 5) the finest of them runs (QMC: the default, as 4x the points only halve
        its error) and a :class:`theory.AccuracyWarning` says what it achieves. An explicit tolerance climbs the
        whole ladder. With ``quadrature`` given, its estimate is recorded and nothing is chosen.
    method, rtol, atol : a scipy OdeSolver ("DOP853", "RK45", "Radau", ...) and its tolerances.
        DOP853 on a rule with compiled closed forms runs the compiled stepper.
    throw : on divergence or solver failure, raise :class:`DivergenceError` (default) carrying
        the partial trajectory; with False, return it with ``status`` < 0 and a ``message``.
    progress : show a tqdm progress bar over time.
    max_steps : accepted steps before the run stops with status -2 ("too many steps"): a stiff or
        runaway run (a learning rate far too large) stops in seconds. Steps below 1e-12 of the
        interval stop it too ("step size too small").

    Ctrl-C stops the integration and returns what was computed, with status 1.
    """
    if isinstance(state0, OrderParams):
        check_size(state0.K, state0.M, where="integrate")
    tol, max_cost = accuracy_target(expectation_tol, "integrate")
    dyn = make_dynamics(state0, rule, params, quadrature=quadrature, where="integrate",
                        extra=checks.parameters(integrate), expectation_tol=tol, max_cost=max_cost, **options)
    t = default_times() if t is None else checks.times(t, where="integrate")
    rtol, atol = checks.tolerances(rtol, atol, where="integrate")
    max_steps = checks.integer("max_steps", max_steps, where="integrate", min=1)
    throw = checks.boolean("throw", throw, where="integrate")
    n = state0.to_vector(dyn.mirror).size
    checks.memory(f"{t.size} output times", t.size * (n + 3 * dyn.K * dyn.M + 16) * 8 * 3, where="integrate")
    check_work(dyn, t, where="integrate")
    solver_cls = _solver_class(method)

    def run(dyn):
        return _run(dyn, state0, t, method, solver_cls, rtol=rtol, atol=atol, max_steps=max_steps, progress=progress)

    traj = run(dyn)
    if not dyn.closed_form:
        traj = _accuracy_control(dyn, traj, run, refine=quadrature is None, tol=tol, max_cost=max_cost)
    if traj.status < 0 and throw:
        raise DivergenceError(f"integrate: {traj.message}; last recorded time {traj.t[-1]:.6g}", traj)
    return traj


def check_size(K: int, M: int, *, where: str) -> None:
    """The operations of one right-hand side evaluation, K^2 (K + M)^2 (the quartic integrals; a numerical view's
    nodes are sized where its quadrature is chosen), within checks.work's limit: checked before anything is built."""
    checks.work(f"K = {K}, M = {M}: operations of one right-hand side evaluation", K * K * (K + M) ** 2, "rhs",
                where=where)


def check_work(dyn, t, *, where: str) -> None:
    """A run's size before it starts: the operations of one right-hand side evaluation (the quartic integrals,
    K^2 (K + M)^2), the output times, the restarts at the schedules'
    breakpoints inside the horizon (checks.work); and t_pre before the last time (checks.learns_within)."""
    check_size(dyn.K, dyn.M, where=where)
    checks.work("t: output times", np.size(t), "times", where=where)
    inside = [b for b in dyn.hyper.breakpoints() if t[0] < b < t[-1]]
    checks.work("the schedules' breakpoints inside the horizon (each restarts the integrator)", len(inside),
                "breakpoints", where=where)
    checks.learns_within(float(dyn.hyper.t_pre), float(t[-1]), where=where)


def _solver_class(method):
    """The scipy OdeSolver class of ``method`` (a name of scipy's solve_ivp METHODS, or the class itself)."""
    methods = scipy.integrate._ivp.ivp.METHODS
    solver_cls = methods.get(method) if isinstance(method, str) else method
    if not isinstance(method, str) and not (isinstance(method, type) and issubclass(method, scipy.integrate.OdeSolver)):
        raise TypeError(f"integrate: method must be a name, one of {sorted(methods)}, or a scipy.integrate.OdeSolver "
                        f"subclass, got {checks.describe(method)}")
    if solver_cls is None:
        raise ValueError(f"integrate: unknown method {method!r}; expected one of {sorted(methods)}")
    return solver_cls


def _run(dyn, state0, t, method, solver_cls, *, rtol, atol, max_steps, progress) -> Trajectory:
    """One run of the driver over t from state0 (restarted at the schedules' breakpoints): the compiled stepper
    where DOP853 meets a compiled right-hand side, else the scipy solver."""
    K, M = dyn.K, dyn.M
    params = dict(**record(dyn.rule, dyn.hyper), quadrature=repr(dyn.quadrature),
                  method=getattr(method, "__name__", method), rtol=rtol, atol=atol, max_steps=max_steps, K=K, M=M,
                  units={"t": "steps / D", "angles": "degrees"}, provenance=provenance(), **(state0.origin or {}))

    def stepper_on(a, b, _points):
        seg = dyn.on(a, b)  # a learning-rate schedule's smooth piece on [a, b]
        compiled = seg.compiled() if method == "DOP853" else None
        if compiled is not None:
            return CompiledStepper(*compiled, watched_indices(K, M), rtol=rtol, atol=atol, max_steps=max_steps)
        fun = (lambda t_, y: seg.rhs(y, t_)) if seg.time_dependent else (lambda t_, y: seg.rhs(y))
        return ScipyStepper(solver_cls, fun, rtol=rtol, atol=atol, max_steps=max_steps)

    sol = drive_segments(stepper_on, state0.to_vector(dyn.mirror)[None], t, dyn.hyper.breakpoints(),
                         diagnose=state_check(K, M, dyn.T, dyn.U, dyn.P, rtol=rtol, atol=atol), progress=progress,
                         desc=f"ODE {dyn.rule.label}")
    n = int(sol.n_recorded[0])
    return Trajectory.from_flat(t[:n], sol.y[0, :n], state0, params=params, status=int(sol.status[0]),
                                message=sol.message[0], nfev=int(sol.nfev[0]))


def _accuracy_control(dyn, traj, run, *, refine, tol, max_cost) -> Trajectory:
    """A numerical view's accuracy: the estimate at the last recorded state; above tol (and ``refine``: no quadrature
    given), the rule refined there and the run repeated once. Records the estimate in traj.params and warns
    (theory.AccuracyWarning, at integrate's caller) when it is above tol."""
    est = _final_estimate(dyn, traj)
    finer = refined_at_end(dyn, traj, est, tol=tol, max_cost=max_cost) if refine else None
    if finer is not None:
        dyn = finer
        traj = run(dyn)
        est = _final_estimate(dyn, traj)
    traj.params["expectation_tol"] = float(tol)
    traj.params["expectation_error"] = est
    note = accuracy_note(est, tol)
    if note is not None:
        warnings.warn(AccuracyWarning(f"integrate: rule {dyn.rule.label}, g={dyn.g.name}: {note}"), stacklevel=3)
    return traj


def refined_at_end(dyn, traj, est, *, tol, max_cost):
    """The accuracy control's one refinement: where a finished run's estimate ``est`` (:func:`_final_estimate`) is
    above tol, the Dynamics with the rule chosen at its last recorded state (the state moved where the rule is
    coarse); None when no refinement is due or the ladder gives nothing finer."""
    if traj.status < 0 or est is None or est <= tol:
        return None
    return _refine_at_end(dyn, traj, tol, max_cost)


def _refine_at_end(dyn, traj, tol, max_cost):
    """The Dynamics with the ladder's rule chosen at the last recorded state (from dyn.quadrature upwards), or
    None when the ladder gives nothing finer."""
    quad, _ = select_at(dyn.rule, traj.state(len(traj.t) - 1), dyn.hyper, tol=tol, start=dyn.quadrature,
                        max_cost=max_cost)
    if quad == dyn.quadrature:
        return None
    return dataclasses.replace(dyn, quadrature=quad, expectation_error=None)


def _final_estimate(dyn, traj):
    """The largest of the expectation error estimates at state0 (dyn.expectation_error) and at the last
    recorded state (theory.expectations.numerical.expectation_error, same rule)."""
    est = [dyn.expectation_error]
    s = traj.state(len(traj.t) - 1)
    if len(traj.t) > 1 and np.all(np.isfinite(s.to_vector(dyn.mirror))):
        est.append(error_at(dyn.rule, s, dyn.hyper, dyn.quadrature))
    est = [e for e in est if e is not None]
    return max(est) if est else None
