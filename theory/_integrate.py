"""Integration of the order-parameter ODEs with error control (THEORY.md section 4)."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import numpy as np
import scipy.integrate

from ._activations import Activation, activation
from ._closed import assemble, closed_form_terms
from ._closed_jit import HAVE_NUMBA, closed_form_rhs_flat
from ._rules import Rule, make_rule
from ._state import OrderParams, pack, unpack
from ._trajectory import DivergenceError, Trajectory

__all__ = ["integrate", "Dynamics", "rhs", "default_times"]

#: |Q_kk|, |v_k| or |S_k| above this counts as divergence.
BLOWUP = 1e8


def default_times(t_max: float = 1000.0, n: int = 200, t_min: float = 1e-2) -> np.ndarray:
    """0 followed by n log-spaced times from t_min to t_max (steps / D)."""
    return np.concatenate([[0.0], np.geomspace(t_min, t_max, n)])


def _check_nonneg(name, x):
    x = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"integrate: {name} must be finite, got {x}")
    if np.any(x < 0):
        raise ValueError(f"integrate: {name} must be >= 0, got {x}")
    return x if x.ndim else float(x)


@dataclasses.dataclass(frozen=True, eq=False)
class Dynamics:
    """The ODE of one rule at fixed hyper-parameters, around a state's constants (T, U, P, v_star, b).

    ``rhs(y)`` maps flat dynamic order parameters y (..., n) to dy/dt (..., n); eta, eta_v and
    weight_decay may be arrays broadcasting against the batch dimensions of y (used by sweeps).
    Constants may also carry batch dimensions.
    """

    rule: Rule
    K: int
    M: int
    T: Any
    U: Any
    P: Any
    v_star: Any
    b: Any
    eta: Any
    eta_v: Any
    sigma: float = 0.0
    sigma_F: float = 1.0
    weight_decay: Any = 0.0
    train_second_layer: bool = True
    g: Activation = dataclasses.field(default_factory=lambda: activation("erf"))
    quadrature: Any = None
    use_jit: bool = True

    @property
    def closed_form(self) -> bool:
        return self.g.closed_forms and self.rule.name != "pepita" and self.quadrature in (None, "closed")

    def terms(self, Q, R, S, v):
        """(X, DD, EH): the expectations E[delta_k xi_u], E[delta_k delta_l], E[e_out h_k]."""
        args = (self.rule, Q, R, self.T, S, self.U, self.P, v, self.v_star, self.b)
        if self.closed_form:
            return closed_form_terms(*args, sigma=self.sigma, sigma_F=self.sigma_F)
        from ._numerical import numerical_terms

        return numerical_terms(*args, sigma=self.sigma, sigma_F=self.sigma_F, g=self.g, quadrature=self.quadrature)

    def derivatives(self, Q, R, S, v):
        """(dQ, dR, dS, dv) at the given dynamic order parameters."""
        X, DD, EH = self.terms(Q, R, S, v)
        return assemble(
            X, DD, EH, Q, R, S, v, eta=self.eta, eta_v=self.eta_v,
            weight_decay=self.weight_decay, train_second_layer=self.train_second_layer,
        )

    def rhs(self, y):
        if self._jit_args is not None and np.ndim(y) == 1:
            return closed_form_rhs_flat(np.ascontiguousarray(y, dtype=np.float64), *self._jit_args)
        Q, R, S, v = unpack(y, self.K, self.M)
        return pack(*self.derivatives(Q, R, S, v))

    @functools.cached_property
    def _jit_args(self):
        """Arguments of the compiled single-state right-hand side, or None where it does not apply."""
        if not (HAVE_NUMBA and self.closed_form and self.use_jit):
            return None
        scalars = [np.ndim(x) == 0 for x in (self.eta, self.eta_v, self.weight_decay, self.P)]
        consts = [np.ndim(self.T) == 2, np.ndim(self.U) == 1, np.ndim(self.v_star) == 1]
        if not all(scalars + consts):
            return None
        b = np.zeros(self.K) if self.b is None else np.ascontiguousarray(self.b, dtype=float)
        c_kind = {"bp": 0, "fa": 1, "afa": 2}[self.rule.name]
        return (
            self.K, self.M, np.ascontiguousarray(self.T, dtype=float), np.ascontiguousarray(self.U, dtype=float),
            float(self.P), np.ascontiguousarray(self.v_star, dtype=float), c_kind, b, float(self.eta),
            float(self.eta_v), float(self.sigma), float(self.sigma_F), float(self.weight_decay), self.rule.modulated,
            bool(self.train_second_layer),
        )


def make_dynamics(state0: OrderParams, rule, *, eta, eta_v=None, sigma=0.0, sigma_F=1.0, weight_decay=0.0,
                  train_second_layer=True, presynaptic=None, error=None, g="erf", quadrature=None) -> Dynamics:
    """Validate the parameters of a run and build its :class:`Dynamics`."""
    if not isinstance(state0, OrderParams):
        raise TypeError(f"integrate: state0 must be a theory.OrderParams, got {type(state0).__name__}")
    rule = make_rule(rule, presynaptic=presynaptic, error=error)
    eta = _check_nonneg("eta (learning rate)", eta)
    eta_v = eta if eta_v is None else _check_nonneg("eta_v (second-layer learning rate)", eta_v)
    sigma = _check_nonneg("sigma (output noise)", sigma)
    weight_decay = _check_nonneg("weight_decay", weight_decay)
    if not np.isfinite(sigma_F):
        raise ValueError(f"integrate: sigma_F must be finite, got {sigma_F}")
    if rule.name == "fa" and state0.b is None:
        raise ValueError("integrate: rule 'fa' needs the feedback vector b; build the state with OrderParams(..., b=...)")
    return Dynamics(
        rule=rule, K=state0.K, M=state0.M, T=state0.T, U=state0.U, P=state0.P, v_star=state0.v_star, b=state0.b,
        eta=eta, eta_v=eta_v, sigma=float(sigma), sigma_F=float(sigma_F), weight_decay=weight_decay,
        train_second_layer=bool(train_second_layer), g=activation(g), quadrature=quadrature,
    )


def run_params(rule: Rule, g, *, eta, eta_v, sigma, sigma_F, weight_decay, train_second_layer) -> dict[str, Any]:
    """The rule and hyper-parameters every result records (Trajectory, SimulationResult, sweep rows).

    One definition so that every result carries the same keys in the same order.
    """
    return dict(
        rule=rule.name, rule_label=rule.label, presynaptic=rule.presynaptic, error=rule.error,
        eta=eta, eta_v=eta_v, sigma=sigma, sigma_F=sigma_F, weight_decay=weight_decay,
        train_second_layer=train_second_layer, activation=activation(g).name,
    )


def rhs(state: OrderParams, rule, **params) -> dict[str, np.ndarray]:
    """The ODE's right-hand side at one state: {"Q": dQ/dt, "R": dR/dt, "S": dS/dt, "v": dv/dt}.

    Takes the same keyword parameters as :func:`integrate`.
    """
    dyn = make_dynamics(state, rule, **params)
    return dict(zip(("Q", "R", "S", "v"), dyn.derivatives(state.Q, state.R, state.S, state.v)))


class _NonFinite(Exception):
    def __init__(self, t, y):
        self.t, self.y = t, y


_SEGMENT = 8  # output times per compiled call: Ctrl-C and the progress bar act between segments


def _integrate_compiled(dyn, y0, t, rtol, atol, out, bar):
    """Compiled DOP853 through the output times t[1:], appending to ``out``; (status, message, fail_t, nfev)."""
    from ._batched import DOP853, initial_steps
    from ._jit_integrate import COEFFS, dop853_segment

    args = dyn._jit_args
    K, M = dyn.K, dyn.M
    f0 = dyn.rhs(y0)
    h = float(initial_steps(lambda y: dyn.rhs(y[0])[None], y0[None], f0[None], rtol, atol, t[-1] - t[0], DOP853.error_order)[0])
    y, t_cur, nfev = y0, float(t[0]), 2
    i = 1
    try:
        while i < t.size:
            seg = np.ascontiguousarray(t[i : i + _SEGMENT])
            Y, done, t_cur, y, h, n_f, code = dop853_segment(y, t_cur, h, seg, rtol, atol, BLOWUP, 10**7, *COEFFS, args)
            nfev += n_f
            for k in range(done):
                why = _diagnose(Y[k], K, M, dyn_omega(dyn))
                if why is not None:
                    return -1, f"diverged at t = {seg[k]:.6g} (steps/D): {why}", seg[k], nfev
                out.append(Y[k].copy())
            i += done
            if bar is not None:
                bar.n = float(t_cur - t[0])
                bar.refresh()
            if code != 0:
                why = {-1: "non-finite order parameters", -3: f"order parameters exploded (max |entry| > {BLOWUP:g})"}.get(code)
                if why is not None:
                    return -1, f"diverged at t = {t_cur:.6g} (steps/D): {why}", t_cur, nfev
                what = "step size too small" if code == -2 else "too many steps"
                return -2, f"solver failure at t = {t_cur:.6g}: {what}", t_cur, nfev
    except KeyboardInterrupt:
        return 1, f"interrupted at t = {t_cur:.6g}", None, nfev
    return 0, "finished", None, nfev


def dyn_omega(dyn):
    from ._state import field_covariance

    return lambda Q, R, S: field_covariance(Q, R, dyn.T, S, dyn.U, dyn.P)


def _diagnose(y, K, M, omega_of: Callable | None = None) -> str | None:
    if not np.all(np.isfinite(y)):
        return "non-finite order parameters"
    Q, R, S, v = unpack(y, K, M)
    big = max(np.abs(np.diagonal(Q)).max(), np.abs(v).max(initial=0.0), np.abs(S).max(initial=0.0))
    if big > BLOWUP:
        return f"order parameters exploded (max |Q_kk|, |v_k|, |S_k| = {big:.3g} > {BLOWUP:g})"
    if omega_of is not None:
        om = omega_of(Q, R, S)
        scale = max(1.0, float(np.abs(np.diag(om)).max()))
        lo = float(np.linalg.eigvalsh(om).min())
        if lo < -1e-7 * scale:
            return f"Omega is no longer positive semi-definite (smallest eigenvalue {lo:.3g})"
    return None


def integrate(
    state0: OrderParams,
    rule: str | Rule,
    t=None,
    *,
    eta: float,
    eta_v: float | None = None,
    sigma: float = 0.0,
    sigma_F: float = 1.0,
    weight_decay: float = 0.0,
    train_second_layer: bool = True,
    presynaptic: str | None = None,
    error: str | None = None,
    g: str | Activation = "erf",
    quadrature=None,
    method: str = "DOP853",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    throw: bool = True,
    progress: bool = False,
) -> Trajectory:
    """Integrate the order-parameter ODE of ``rule`` from ``state0``.

    Parameters
    ----------
    state0 : initial :class:`OrderParams` (constants T, U, P, v_star, b are kept fixed).
    rule : "bp", "fa", "afa" or "pepita" (or a :class:`Rule`).
    t : increasing output times in steps / D; integration starts at t[0] from state0.
        Default: 0 then 200 log-spaced times from 1e-2 to 1e3.
    eta, eta_v : first- and second-layer learning rates (eta_v defaults to eta).
    sigma : output-noise standard deviation. sigma_F : scale of the top-down projection F
        (negative flips its sign). weight_decay : kappa. train_second_layer : False freezes v.
    presynaptic : "modulated" or "clean" (afa, pepita; default "modulated").
    error : pepita's last-layer error, "first" (default) or "modulated".
    g : activation; erf uses closed forms for bp, fa and afa, everything else the numerical
        expectation engine (``quadrature`` selects and tunes it, see :mod:`theory._numerical`).
    method, rtol, atol : a scipy OdeSolver ("DOP853", "RK45", "Radau", ...) and its tolerances.
    throw : on divergence or solver failure, raise :class:`DivergenceError` (default) carrying
        the partial trajectory; with False, return it with ``status`` < 0 and a ``message``.
    progress : show a tqdm progress bar over time.

    Ctrl-C stops the integration and returns what was computed, with status 1.
    """
    dyn = make_dynamics(
        state0, rule, eta=eta, eta_v=eta_v, sigma=sigma, sigma_F=sigma_F, weight_decay=weight_decay,
        train_second_layer=train_second_layer, presynaptic=presynaptic, error=error, g=g, quadrature=quadrature,
    )
    t = default_times() if t is None else np.asarray(t, dtype=float).ravel()
    if t.size < 1 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0) or t[0] < 0:
        raise ValueError("integrate: t must be a non-empty, finite, strictly increasing array of times >= 0")
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"integrate: rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    solver_cls = scipy.integrate._ivp.ivp.METHODS.get(method) if isinstance(method, str) else method
    if solver_cls is None:
        raise ValueError(f"integrate: unknown method {method!r}; expected one of {sorted(scipy.integrate._ivp.ivp.METHODS)}")

    params = dict(
        **run_params(dyn.rule, dyn.g, eta=dyn.eta, eta_v=dyn.eta_v, sigma=dyn.sigma, sigma_F=dyn.sigma_F,
                     weight_decay=dyn.weight_decay, train_second_layer=dyn.train_second_layer),
        quadrature=repr(quadrature), method=getattr(method, "__name__", method), rtol=rtol, atol=atol, K=dyn.K, M=dyn.M,
    )
    K, M = dyn.K, dyn.M
    from ._state import field_covariance

    omega_of = lambda Q, R, S: field_covariance(Q, R, dyn.T, S, dyn.U, dyn.P)  # noqa: E731

    y0 = state0.to_vector()
    out = [y0]
    status, message = 0, "finished"
    nfev = 0
    fail_t = None

    def fun(t_, y):
        dy = dyn.rhs(y)
        if not np.all(np.isfinite(dy)):
            raise _NonFinite(t_, y)
        return dy

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=float(t[-1] - t[0]), desc=f"ODE {dyn.rule.label}", unit="t", leave=False)
    use_compiled = t.size > 1 and dyn._jit_args is not None and method == "DOP853"
    if use_compiled:
        status, message, fail_t, nfev = _integrate_compiled(dyn, y0, t, rtol, atol, out, bar)
    elif t.size > 1:
        solver = solver_cls(fun, t[0], y0, t[-1], rtol=rtol, atol=atol)
        i = 1
        try:
            with np.errstate(all="ignore"):
                while i < t.size:
                    msg = solver.step()
                    if solver.status == "failed":
                        status, message, fail_t = -2, f"solver failure at t = {solver.t:.6g}: {msg}", solver.t
                        break
                    why = _diagnose(solver.y, K, M)
                    if why is not None:
                        status, message, fail_t = -1, f"diverged at t = {solver.t:.6g} (steps/D): {why}", solver.t
                        break
                    if i < t.size and t[i] <= solver.t:
                        dense = solver.dense_output()
                        while i < t.size and t[i] <= solver.t:
                            y = dense(t[i])
                            why = _diagnose(y, K, M, omega_of)
                            if why is not None:
                                status, message, fail_t = -1, f"diverged at t = {t[i]:.6g} (steps/D): {why}", t[i]
                                break
                            out.append(y)
                            i += 1
                        if status:
                            break
                    if bar is not None:
                        bar.n = float(solver.t - t[0])
                        bar.refresh()
        except _NonFinite as exc:
            why = _diagnose(exc.y, K, M) or "non-finite right-hand side"
            status, message, fail_t = -1, f"diverged at t = {exc.t:.6g} (steps/D): {why}", exc.t
        except KeyboardInterrupt:
            status, message = 1, f"interrupted at t = {solver.t:.6g}"
        nfev = solver.nfev
    if bar is not None:
        bar.close()
    Y = np.stack(out)
    Q, R, S, v = unpack(Y, K, M)
    Q = 0.5 * (Q + np.swapaxes(Q, -1, -2))
    traj = Trajectory(t=t[: len(out)], Q=Q, R=R, S=S, v=v, state0=state0, params=params, status=status, message=message, nfev=nfev)
    if status < 0 and throw:
        raise DivergenceError(f"integrate: {message}; last recorded time {traj.t[-1]:.6g}" , traj)
    return traj
