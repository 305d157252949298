"""Fixed points of the order-parameter ODEs, their stability and the plateau escape (THEORY.md section 4).

A fixed point of dy/dt = f(y; theta) (:meth:`theory.Dynamics.rhs`) is a state with f = 0. It is found by
Newton's method with the derived Jacobian (:func:`theory.ode.derivatives.dynamics_jacobian`): scipy's
``root(method="hybr")`` (MINPACK's Powell dogleg), then ``"lm"`` if the residual is not yet below ``tol``, in
the *free* coordinates of the ODE:

    x = (Q_kl for k <= l, R_km, S_k, v_k [, U_m, P with mirroring])      ("independent" coordinates)

less v when the second layer is frozen (train_second_layer=False: v is then a constant, not a variable; its
rows of f vanish identically and would add spurious zero eigenvalues). The stability exponents are the
eigenvalues of the square Jacobian J = df/dx in these coordinates (scipy.linalg.eig, right and left
eigenvectors), sorted by decreasing real part. A direction is unstable when Re(lambda) > ``marginal_tol``,
marginal when |Re(lambda)| <= ``marginal_tol`` (default 1e-7 times the largest |lambda|, well above the
Jacobian's error: its Ridders estimate is ~1e-10 of its largest entry for the closed forms); ``stable`` means
every exponent has Re(lambda) < -marginal_tol (linear, asymptotic stability).

Finders: :func:`symmetric_plateau` (the unspecialised saddle, first in the subspace invariant under permutations
of the hidden units, then in the full space), :func:`specialised_solution` and :func:`degenerate_solution` (the
student computes the teacher's function, with sign-flipped units for the degenerate ones), and
:func:`fixed_point` from any state or from a Trajectory's plateau or end (e.g. afa's attractor from random
weights, where one unit's feedback S_k has died: a marginal manifold, n_marginal > 0).

Accuracy. The residual ``max |dx/dt|`` at the returned state is at most ``tol`` (1e-10 by default) of the
right-hand side the integrator uses. For a closed form that is the exact ODE; for a numerical view (pepita, tanh,
user rules, numerical relu) it is the quadrature's ODE, whose fixed point differs from the exact one by about
J^-1 (f_quadrature - f_exact): ``FixedPoint.accuracy`` estimates it by one Newton correction with the next finer
rule of the quadrature's family (theory.expectations.numerical._finer), i.e. max |J^-1 f_finer(x*)| (measured: pepita
erf at
its symmetric plateau ~1e-8, see tests/theory/analysis/test_fixed_points.py).

A failed solve (no convergence, a state outside the region where Omega is positive semi-definite, a
non-finite right-hand side) raises :class:`FixedPointError` naming the reason, with the last iterate in
``.result``; with ``throw=False`` the :class:`FixedPoint` is returned with ``success`` False and ``message``.

Plateau escape (:meth:`FixedPoint.escape`). Near a saddle x*, x(t) - x* = sum_i c_i exp(lambda_i t) r_i with
c_i = l_i^H (x0 - x*) / (l_i^H r_i) (l, r: left and right eigenvectors). The stable parts decay; the unstable
one with the largest rate lambda_u grows until it leaves the linear region. The predicted escape time is the
matched sum

    t_escape = ln(a / |c_u|) / lambda_u  +  t_manifold(a)

of the linear phase (from amplitude |c_u| to a small amplitude a, default 1e-4 in units of the unit-norm r_u)
and the time the unstable manifold, integrated from x* + a sign(c_u) r_u with :func:`theory.integrate`, takes
to bring eps_g to the escape level (default: half the fixed point's eps_g, as theory.plateau_split). With several
unstable directions the escaping one is the one that grows to O(1) first, min_i ln(1 / |c_i|) / lambda_i (ranked at
amplitude 1, not a: a slow mode whose |c_i| already exceeds a would otherwise win with a large negative linear time,
as afa's nearly marginal v_1 - v_2 mode did from a D^-1/2 perturbation). For random
initial weights at dimension D the unstable projection at the plateau is c_u ~ D^-1/2, so
t_escape = const + ln D / (2 lambda_u): ``Escape.per_ln_D``.

Measured (K = M = 2, T = I, U = 0, v_star = 1, eta = 0.5; tests/theory/analysis/test_fixed_points.py):

- bp erf, v frozen at 1: plateau Q = 0.367720, C = 0.325386, R = 0.414394 (all R_km equal), eps_g = 0.0146448,
  exponents 0.0316182 (escape: R_ii - R_ik), -5.15e-4, -1.92e-3, -3.83e-3, -0.290, ..., equal to Saad & Solla's
  reduced equations to 1e-9; the predicted escape from x* + D^-1/2 d matches the integrated one to 1e-5
  relative (D = 1e8 .. 1e16), slope 1 / (2 lambda_u) = 15.81 per ln D. From a symmetric start far from the
  plateau the slope is 16.6 .. 16.0 at D = 1e3 .. 1e13 (the approach's slow mode, -5.2e-4, is slower than the
  escape); from random_state(D) the prediction made at the trajectory's flattest plateau state is 9 %, 7 %,
  4.6 %, 3 % early at D = 1e3, 1e4, 1e5, 1e6. Against the exact finite-D sampler (simulate.run_reduced, median
  of 128 / 64 / 32 replicas): from x* + D^-1/2 r_u the prediction 85.98, 107.90, 133.35 at D = 500, 2000, 1e4 is
  within the medians' 95 % intervals (85.36 [84.73, 86.02], 107.56 [107.30, 107.92], 133.58 [133.28, 133.83]); from
  perturbed weights (every mode excited) the medians 100.32, 123.10, 148.53, 185.10 at D = 500 .. 1e5 agree with the
  ODE from the same start (100.69, 123.18, 149.06, 185.76) and the prediction is late by 1.4, 0.9, 0.4, 0.2 (the
  stable components' nonlinear effect); slope of the medians against ln D 15.97.
- bp erf, v trained: plateau eps_g = 0.0137622, escape exponent 0.0294894; fa (b = 1): 0.0140845, 0.0334618.
- afa erf, sigma_F = 1: plateau eps_g = 0.0118609, S_k = 0.0150, exponents 4.978e-4 and 6.0e-7 (v_1 - v_2);
  pepita: eps_g = 0.011859, exponents 4.849e-4, 1.88e-5, accuracy (distance to the exact ODE's fixed point)
  ~2e-9 with the default quadrature.
- specialised and degenerate solutions (e = 0) at random_state(2, 2, D=500, seed=0)'s constants: bp stable (all
  sign patterns, exponents -0.00411, -0.00427, ...: symmetry images); fa with its random b: only the pattern
  aligned with b is stable (here s = (-1, -1); s = (1, 1): 9 unstable, (-1, 1): 4); afa: saddles for every s (5
  unstable, 0.00408, 0.00203, ...), the flip (w_k, v_k, S_k) -> -(w_k, v_k, S_k) being a symmetry of afa. With
  T = I, U = (0.02, -0.03) a physical perturbation of the weights grows at 0.0034 against the second exponent
  0.00335 (the first, 0.00672, is not excited physically: at a singular Omega some directions of the linearisation
  leave the positive semi-definite states). afa from random_state(D=500, seed=0), sigma_F = 1, integrated to
  t = 1e5, ends at a marginal fixed point (3 zero exponents) with eps_g = 0.00178, v = (-1.043, 0.766), S_2 = 0:
  8.7 degrees from the degenerate solution s = (-1, +1).
- relu, v frozen: bp and fa plateau eps_g = 0.0951829, escape exponent 0.0983; afa (sigma_F = 0.5) 0.0761725,
  pepita 0.0762846 (KinkAware default quadrature: accuracy estimate 5e-5, Jacobian error 2e-7). With v trained,
  relu's rescaling (w, v) -> (c w, v / c), which keeps the student's function, makes the plateau drift slowly:
  no isolated symmetric fixed point is found.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.integrate
import scipy.linalg
import scipy.optimize

from .. import _checks as checks
from .._hyper import record
from .._observables import alignment_angles, generalisation_error
from .._state import OrderParams
from ..ode.derivatives import Jacobian, _independent, dynamics_jacobian, state_labels
from ..ode.dynamics import Dynamics, make_dynamics
from ..results.trajectory import Trajectory

__all__ = ["FixedPoint", "FixedPointError", "Escape", "fixed_point", "symmetric_plateau", "specialised_solution",
           "degenerate_solution", "teacher_constants"]

TOL = 1e-10          # default: largest |dx/dt| at a fixed point
MARGINAL = 1e-7      # default marginal tolerance, relative to the largest |eigenvalue|


class _LeftDomain(Exception):
    pass


class _Budget(Exception):
    pass


_MAX_EVALS = 20000  # right-hand side evaluations of symmetric_plateau's integration in the subspace


class FixedPointError(RuntimeError):
    """The fixed-point solve failed; ``result`` is the :class:`FixedPoint` of the last iterate (success False),
    or None when there is none."""

    def __init__(self, message: str, result: FixedPoint | None = None):
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------------------------- coordinates
@dataclasses.dataclass(frozen=True, eq=False)
class _Coordinates:
    """The free coordinates x of a Dynamics: y (packed) = E_full x_full, x_full = x0_full with x at ``free``."""

    dyn: Dynamics
    template: OrderParams
    E: np.ndarray          # (n_packed, n_independent)
    rows: np.ndarray       # packed index of each independent coordinate
    free: np.ndarray       # indices (into the independent coordinates) that evolve
    labels: tuple          # labels of the free coordinates
    x_full0: np.ndarray    # the independent coordinates of the template (the frozen ones are kept)

    @classmethod
    def of(cls, dyn: Dynamics, state: OrderParams) -> _Coordinates:
        E, rows, _ = _independent(dyn.K, dyn.M, dyn.mirror)
        labels = state_labels(dyn.K, dyn.M, dyn.mirror, "independent")
        frozen = set()
        if not dyn.hyper.train_second_layer:
            frozen = {i for i, lab in enumerate(labels) if lab.startswith("v[")}
        free = np.array([i for i in range(len(labels)) if i not in frozen], dtype=int)
        y = state.to_vector(mirror=dyn.mirror)
        return cls(dyn=dyn, template=state, E=E, rows=rows, free=free, labels=tuple(labels[i] for i in free),
                   x_full0=y[rows])

    def x_of(self, state: OrderParams) -> np.ndarray:
        return state.to_vector(mirror=self.dyn.mirror)[self.rows][self.free]

    def y_of(self, x: np.ndarray) -> np.ndarray:
        full = self.x_full0.copy()
        full[self.free] = x
        return self.E @ full

    def state_of(self, x: np.ndarray, validate: bool = True) -> OrderParams:
        return self.template.from_vector(self.y_of(x), validate=validate)

    def f(self, x: np.ndarray, dyn: Dynamics | None = None) -> np.ndarray:
        dyn = self.dyn if dyn is None else dyn
        return np.asarray(dyn.rhs(self.y_of(x)), dtype=float)[self.rows][self.free]

    def jac(self, x: np.ndarray, dyn: Dynamics | None = None, wrt="state") -> Jacobian:
        dyn = self.dyn if dyn is None else dyn
        J = dynamics_jacobian(dyn, self.y_of(x), wrt=wrt, coordinates="independent")
        if wrt == "state":
            sel = np.ix_(self.free, self.free)
            return dataclasses.replace(J, matrix=J.matrix[sel], error=J.error[sel], rows=self.labels,
                                       columns=self.labels, rhs=J.rhs[self.free])
        return dataclasses.replace(J, matrix=J.matrix[self.free], error=J.error[self.free], rows=self.labels,
                                   rhs=J.rhs[self.free])

    def valid(self, x: np.ndarray) -> str | None:
        """None when x is a state (finite, Omega positive semi-definite), else why not."""
        if not np.all(np.isfinite(x)):
            return "non-finite order parameters"
        try:
            self.state_of(x)
        except ValueError as exc:
            return str(exc)
        return None


# --------------------------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True, eq=False)
class Escape:
    """The predicted plateau escape from one initial state (theory.analysis.fixed_points explains the prediction).

    ``time``: the predicted time (steps / D, counted from state0) at which eps_g reaches ``level``.
    ``linear_time``: the linear phase, ``ln(amplitude / abs(projection)) / rate``.
    ``manifold_time``: the time along the unstable manifold from the amplitude to the level.
    ``rate``: the escaping exponent, the real part of lambda_u.
    ``projection``: c_u, the component of state0 minus the fixed point along the unit unstable eigenvector.
    ``mode``: its index in FixedPoint.eigenvalues.
    ``per_ln_D``: ``1 / (2 rate)``, the growth of the escape time with ln D for random initial conditions
    (whose unstable component is of order D^-1/2).
    """

    time: float
    linear_time: float
    manifold_time: float
    rate: float
    projection: float
    amplitude: float
    level: float
    mode: int

    @property
    def per_ln_D(self) -> float:
        return 0.5 / self.rate


@dataclasses.dataclass(frozen=True, eq=False)
class FixedPoint:
    """A fixed point of a rule's ODE with its linear stability (theory.analysis.fixed_points explains the method).

    ``state``: the :class:`OrderParams` at the fixed point. ``residual``: ``max abs(dx/dt)`` there.
    ``jacobian``: the :class:`theory.Jacobian` in the free coordinates, labelled by ``coordinates``
    (Q[k,l] for k <= l, R, S, v unless the second layer is frozen, U and P with mirroring).
    ``eigenvalues`` (n,), ``eigenvectors`` (n, n) (right, unit columns) and ``left_eigenvectors`` (n, n), sorted by
    decreasing real part. ``n_unstable`` and ``n_marginal``: the exponents with real part above ``marginal_tol``,
    and within ``marginal_tol`` of 0. ``stable``: none unstable and none marginal (asymptotic linear stability).
    ``eg`` and ``angles``: eps_g and the alignment angles (degrees) at the state. ``params``: the rule and the
    hyper-parameters (as a Trajectory records them) and the solver's settings. ``success``, ``message``, ``nfev``,
    ``njev``: the solve. ``accuracy``: for a numerical view, the estimated max-norm distance to the fixed point of
    the exact ODE, else None. ``info``: what a finder adds (the symmetric-subspace solve, the signs).
    """

    state: OrderParams
    residual: float
    jacobian: Jacobian
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    left_eigenvectors: np.ndarray
    marginal_tol: float
    params: dict
    success: bool
    message: str
    dynamics: Dynamics = dataclasses.field(repr=False)
    nfev: int = 0
    njev: int = 0
    accuracy: float | None = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def coordinates(self) -> tuple:
        return self.jacobian.columns

    @property
    def rule(self):
        return self.dynamics.rule

    @property
    def hyper(self):
        return self.dynamics.hyper

    @property
    def n_unstable(self) -> int:
        return int(np.sum(self.eigenvalues.real > self.marginal_tol))

    @property
    def n_marginal(self) -> int:
        return int(np.sum(np.abs(self.eigenvalues.real) <= self.marginal_tol))

    @property
    def stable(self) -> bool:
        return self.n_unstable == 0 and self.n_marginal == 0

    @property
    def eg(self) -> float:
        return float(generalisation_error(self.state, self.hyper.g))

    @property
    def angles(self) -> dict[str, float]:
        return {k: float(v) for k, v in alignment_angles(self.state, self.rule, self.hyper.sigma_F).items()}

    @property
    def x(self) -> np.ndarray:
        """The fixed point in its free coordinates."""
        return _Coordinates.of(self.dynamics, self.state).x_of(self.state)

    def flat_jacobian(self) -> Jacobian:
        """The Jacobian in the packed coordinates of ``OrderParams.to_vector`` (Q stored twice), as
        :func:`theory.jacobian` gives it: its antisymmetric Q directions add spurious zero eigenvalues, which the
        free coordinates of ``jacobian`` do not have."""
        return dynamics_jacobian(self.dynamics, self.state.to_vector(mirror=self.dynamics.mirror), coordinates="packed")

    def perturbed(self, direction, size: float) -> OrderParams:
        """The state ``x_fp + size * d``: ``direction`` d is an eigenvector's index (its real part, unit norm) or a
        vector in the free coordinates."""
        co = _Coordinates.of(self.dynamics, self.state)
        if isinstance(direction, (int, np.integer)):
            d = np.real(self.eigenvectors[:, int(direction)])
            d = d / np.linalg.norm(d)
        else:
            d = np.asarray(direction, dtype=float)
            if d.shape != self.eigenvalues.shape:
                raise ValueError(f"FixedPoint.perturbed: direction must be an eigenvector index or a vector of shape "
                                 f"{self.eigenvalues.shape} (coordinates {self.coordinates}), got shape {d.shape}")
        return co.state_of(self.x + size * d)

    def projections(self, state0: OrderParams) -> np.ndarray:
        """The components c_i of ``state0 - x_fp`` along the unit right eigenvectors r_i, from the left ones l_i:
        ``c_i = l_i^H (x0 - x_fp) / (l_i^H r_i)``."""
        co = _Coordinates.of(self.dynamics, self.state)
        _check_compatible(state0, self.state, "FixedPoint.projections")
        d = co.x_of(state0) - self.x
        L, Rv = self.left_eigenvectors, self.eigenvectors
        return (L.conj().T @ d) / np.einsum("ij,ij->j", L.conj(), Rv)

    def escape(self, state0: OrderParams, *, level: float | None = None, amplitude: float = 1e-4,
               t_max: float = 1e6) -> Escape:
        """The predicted :class:`Escape` from this saddle, starting at ``state0`` (near the fixed point).

        Needs an unstable direction. ``level``: the eps_g that counts as escaped (default: half the fixed point's).
        ``amplitude``: where the linear phase hands over to the unstable manifold. ``t_max``: the longest
        integration along the manifold."""
        where = "FixedPoint.escape"
        if not isinstance(state0, OrderParams):
            raise TypeError(f"{where}: state0 must be a theory.OrderParams, got {type(state0).__name__}")
        amplitude = checks.number("amplitude", amplitude, where=where, min=0.0)
        if amplitude <= 0:
            raise ValueError(f"{where}: amplitude must be > 0, got {amplitude}")
        level = 0.5 * self.eg if level is None else checks.number("level", level, where=where, min=0.0)
        unstable = np.flatnonzero(self.eigenvalues.real > self.marginal_tol)
        if unstable.size == 0:
            raise ValueError(f"{where}: this fixed point has no unstable direction (eigenvalues "
                             f"{np.round(self.eigenvalues[:3], 6)} ...): there is no escape")
        c = self.projections(state0)
        rates = self.eigenvalues.real[unstable]
        with np.errstate(divide="ignore"):
            lin = np.log(amplitude / np.abs(c[unstable])) / rates
            # the escaping mode is the one that grows to O(1) first: ranked at amplitude 1 (not at ``amplitude``,
            # where a slow mode whose |c_i| already exceeds it would have a large negative linear time)
            reach = np.log(max(1.0, 2.0 * float(np.max(np.abs(c[unstable])))) / np.abs(c[unstable])) / rates
        j = int(np.argmin(reach))
        mode = int(unstable[j])
        cu = complex(c[mode])
        if cu == 0:
            raise ValueError(f"{where}: state0 has no component along the unstable direction {mode}: it never escapes "
                             "(in the linear theory)")
        r = self.eigenvectors[:, mode]
        phase = cu / abs(cu)
        d = np.real(phase * r)
        d = d / np.linalg.norm(d)
        start = self.perturbed(d, amplitude)
        t_man = _crossing(start, self, level, t_max)
        return Escape(time=float(lin[j] + t_man), linear_time=float(lin[j]), manifold_time=float(t_man),
                      rate=float(rates[j]),
                      projection=float(np.real(cu) if abs(cu.imag) < 1e-12 * abs(cu) else abs(cu)),
                      amplitude=amplitude, level=float(level), mode=mode)

    def escape_time(self, state0: OrderParams, **options) -> float:
        """The predicted escape time from state0: :meth:`escape` (same options) ``.time``."""
        return self.escape(state0, **options).time

    def summary(self) -> dict[str, Any]:
        """A flat record: the rule, residual, eg, n_unstable, n_marginal, stable and the leading eigenvalues."""
        return dict(rule=self.rule.label, residual=self.residual, eg=self.eg, n_unstable=self.n_unstable,
                    n_marginal=self.n_marginal, stable=self.stable, leading=self.eigenvalues[:3].tolist(),
                    success=self.success)

    def __repr__(self) -> str:
        lead = ", ".join(f"{z.real:.4g}" + (f"{z.imag:+.3g}j" if z.imag else "") for z in self.eigenvalues[:2])
        return (f"FixedPoint(rule={self.rule.label}, K={self.state.K}, M={self.state.M}, eg={self.eg:.6g}, "
                f"residual={self.residual:.2g}, unstable={self.n_unstable}, marginal={self.n_marginal}, "
                f"leading=[{lead}], success={self.success})")


def _check_compatible(state0: OrderParams, state: OrderParams, where: str):
    if (state0.K, state0.M) != (state.K, state.M):
        raise ValueError(f"{where}: state0 has K={state0.K}, M={state0.M}, the fixed point K={state.K}, M={state.M}")


def _crossing(start: OrderParams, fp: FixedPoint, level: float, t_max: float) -> float:
    """First time eps_g <= level on the trajectory from ``start`` (the unstable manifold), by integrate."""
    from ..results.summaries import crossing_time
    from ..solver.integrate import integrate

    if float(generalisation_error(start, fp.hyper.g)) <= level:
        return 0.0
    t = np.concatenate([[0.0], np.geomspace(1e-2, t_max, 4000)])
    dyn = fp.dynamics
    traj = integrate(start, dyn.rule, t, dyn.hyper, quadrature=dyn.quadrature, throw=False, rtol=1e-10, atol=1e-12)
    tc = crossing_time(traj.t, traj.eg, level)
    if not np.isfinite(tc):
        raise ValueError(f"FixedPoint.escape: along the unstable manifold eps_g does not reach level={level:.4g} "
                         f"by t={traj.t[-1]:.4g} (min eps_g {np.min(traj.eg):.4g}); pass a higher level")
    return float(tc)


# --------------------------------------------------------------------------------------------- the solve
def _eigen(J: np.ndarray):
    w, vl, vr = scipy.linalg.eig(J, left=True, right=True)
    order = np.lexsort((-w.imag, -w.real))
    w, vl, vr = w[order], vl[:, order], vr[:, order]
    vr = vr / np.linalg.norm(vr, axis=0)
    return w, vr, vl


def _solve(co: _Coordinates, x0: np.ndarray, *, tol: float, method: str, max_iter: int):
    """scipy root finding on f(x) = 0 with the derived Jacobian: ``method`` then "lm". Returns (x, nfev, njev, msg)."""
    counts = {"f": 0, "j": 0}
    big = 1e8

    def fun(x):
        counts["f"] += 1
        if co.valid(x) is not None:
            return np.full(x.size, big)
        f = co.f(x)
        return f if np.all(np.isfinite(f)) else np.full(x.size, big)

    def jac(x):
        counts["j"] += 1
        if co.valid(x) is not None:
            return np.eye(x.size)
        return co.jac(x).matrix

    best, best_res, msgs = x0, _resid(fun(x0)), []
    for m in dict.fromkeys((method, "lm")):
        opts = dict(xtol=1e-15, maxfev=max_iter * (x0.size + 1)) if m == "hybr" else \
            dict(xtol=1e-15, ftol=1e-15, maxiter=max_iter * (x0.size + 1))
        try:
            sol = scipy.optimize.root(fun, best, jac=jac, method=m, options=opts)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            msgs.append(f"{m}: {type(exc).__name__}: {exc}")
            continue
        res = _resid(fun(sol.x))
        msgs.append(f"{m}: {sol.message.strip()} (residual {res:.2g})")
        if res < best_res:
            best, best_res = sol.x, res
        if best_res <= tol:
            break
    return best, counts["f"], counts["j"], "; ".join(msgs) or "the guess is a fixed point"


def _resid(f) -> float:
    return float(np.max(np.abs(f))) if np.size(f) else 0.0


def _guess_state(guess, dyn_maker, where: str, point):
    """The OrderParams to start from: the guess itself, or a Trajectory's plateau / end / time."""
    if isinstance(guess, OrderParams):
        return guess
    if not isinstance(guess, Trajectory):
        raise TypeError(f"{where}: guess must be a theory.OrderParams or a theory.Trajectory, "
                        f"got {type(guess).__name__}")
    if len(guess.t) == 0:
        raise ValueError(f"{where}: guess is an empty Trajectory")
    if point == "end":
        return guess.state(len(guess.t) - 1)
    if point != "plateau":
        tp = checks.number("point", point, where=where)
        return guess.state(int(np.argmin(np.abs(guess.t - tp))))
    return guess.state(plateau_index(guess, dyn_maker(guess.state0)))


def plateau_index(traj: Trajectory, dyn: Dynamics) -> int:
    """The flattest recorded state of a trajectory's plateau: the smallest max |dy/dt| within the plateau of
    theory.plateau (its longest flat run of eps_g), else over the times t >= 1 before eps_g falls to a tenth of
    its value at the flattest point of ln eg against ln t (theory.plateau_split's plateau; among the times where
    eps_g is above 1e-4 of its largest value, not at a converged end)."""
    from ..results.summaries import PLATEAU_DEFAULTS, plateau, unspecialised_spread

    t, eg = np.asarray(traj.t), np.asarray(traj.eg)
    length, start, end, _, _ = plateau(t, eg, float(unspecialised_spread(traj.specialisation[-1])), **PLATEAU_DEFAULTS)
    if length > 0:
        idx = np.flatnonzero((t >= start) & (t <= end))
    else:
        ok = np.flatnonzero((t >= 1.0) & np.isfinite(eg) & (eg > 0))
        if ok.size:  # not the converged end, where ln eg flattens at the rounding floor
            ok = ok[eg[ok] >= 1e-4 * np.max(eg[ok])]
        if ok.size < 3:
            ok = np.arange(len(t))
        slope = np.gradient(np.log(np.maximum(eg[ok], 1e-300)), np.log(np.maximum(t[ok], 1e-300)))
        ip = ok[int(np.argmin(np.abs(slope)))]
        idx = np.array([i for i in ok if i >= ip and eg[i] >= 0.1 * eg[ip]] or [ip])
    norms = []
    for i in idx:
        y = traj.state(int(i)).to_vector(mirror=dyn.mirror)
        f = np.asarray(dyn.rhs(y), dtype=float)
        norms.append(np.max(np.abs(f)) if np.all(np.isfinite(f)) else np.inf)
    return int(idx[int(np.argmin(norms))])


def fixed_point(guess, rule, params=None, *, quadrature=None, tol: float = TOL, method: str = "hybr",
                max_iter: int = 100, marginal_tol: float | None = None, point="plateau", accuracy: bool = True,
                throw: bool = True, **options) -> FixedPoint:
    """A fixed point of ``rule``'s ODE near ``guess``, with its linear stability: a :class:`FixedPoint`.

    Newton's method with the derived Jacobian (scipy.optimize.root) in the ODE's free coordinates; the stability
    exponents are the eigenvalues of that Jacobian. theory.analysis.fixed_points states the method and its accuracy.

    ``guess``: an :class:`OrderParams` (its constants T, U, P, v_star, b are kept), or a :class:`Trajectory`,
    whose state at ``point`` is the guess: "plateau" (the default: the flattest state of its plateau), "end", or
    a time. ``rule``, ``params`` and the keyword options: as for :func:`theory.integrate` (a rule's name or a
    Rule, a HyperParams, its fields and the rule's options as keywords); the rates must be constant.
    ``quadrature``: the numerical view's rule (pepita, tanh, user rules), as for integrate.
    ``tol``: the largest ``abs(dx/dt)`` accepted (1e-10). ``method``: scipy.optimize.root's first method
    ("hybr"; "lm" follows when it falls short). ``max_iter``: the iterations of each, in units of the number of
    coordinates. ``marginal_tol``: the real part of an exponent at or below which it counts as marginal (default
    1e-7 of the largest eigenvalue's modulus). ``accuracy``: for a numerical view, estimate the distance to the
    exact ODE's fixed point (one evaluation with a finer quadrature). ``throw``: raise :class:`FixedPointError`
    on failure (default), or return the result with ``success`` False and the reason in ``message``.
    """
    where = "fixed_point"
    tol = checks.number("tol", tol, where=where, min=0.0)
    max_iter = checks.integer("max_iter", max_iter, where=where, min=1)
    throw = checks.boolean("throw", throw, where=where)
    accuracy = checks.boolean("accuracy", accuracy, where=where)
    checks.choice("method", method, ("hybr", "lm"), where=where)
    if marginal_tol is not None:
        marginal_tol = checks.number("marginal_tol", marginal_tol, where=where, min=0.0)

    def maker(state):
        return make_dynamics(state, rule, params, quadrature=quadrature, where=where,
                             extra=checks.parameters(fixed_point), **options)

    state0 = _guess_state(guess, maker, where, point)
    dyn = maker(state0)
    _check_constant(dyn, where)
    co = _Coordinates.of(dyn, state0)
    x, nfev, njev, msg = _solve(co, co.x_of(state0), tol=tol, method=method, max_iter=max_iter)
    return _result(co, x, tol=tol, marginal_tol=marginal_tol, nfev=nfev, njev=njev, message=msg, throw=throw,
                   accuracy=accuracy, where=where, extra=dict(tol=tol, method=method))


def _check_constant(dyn: Dynamics, where: str):
    hp = dyn.hyper
    for name in ("eta", "eta_v", "eta_F"):
        if not isinstance(getattr(hp, name), float):
            raise ValueError(f"{where}: {name} is a schedule; a fixed point needs constant hyper-parameters "
                             f"(pass {name}=<number>)")
    if hp.t_pre > 0:
        raise ValueError(f"{where}: t_pre={hp.t_pre} makes the ODE time dependent; a fixed point needs t_pre=0")


def _result(co: _Coordinates, x, *, tol, marginal_tol, nfev, njev, message, throw, accuracy, where, extra,
            info=None) -> FixedPoint:
    dyn = co.dyn
    why = co.valid(x)
    if why is not None:
        msg = f"{where}: the solve left the order parameters' domain ({why}); try a closer guess. Solver: {message}"
        if throw:
            raise FixedPointError(msg)
        x = co.x_of(co.template)
    state = co.state_of(x)
    f = co.f(x)
    residual = _resid(f)
    J = co.jac(x)
    if not np.all(np.isfinite(J.matrix)):
        raise FixedPointError(f"{where}: the Jacobian is not finite at the solution (residual {residual:.3g})")
    w, vr, vl = _eigen(J.matrix)
    mtol = MARGINAL * max(float(np.max(np.abs(w))) if w.size else 0.0, 1e-300) if marginal_tol is None else marginal_tol
    success = why is None and residual <= tol
    if why is None and not success:
        message = (f"{where}: no fixed point found: residual max |dx/dt| = {residual:.3g} > tol = {tol:g} "
                   f"(largest at {co.labels[int(np.argmax(np.abs(f)))]}); solver: {message}")
    elif why is not None:
        message = f"{where}: the solve left the order parameters' domain ({why}); solver: {message}"
    acc = None
    if success and accuracy and not dyn.closed_form:
        acc = _accuracy(co, x, J.matrix)
    params = dict(**record(dyn.rule, dyn.hyper), quadrature=repr(dyn.quadrature), K=dyn.K, M=dyn.M, **extra)
    fp = FixedPoint(state=state, residual=residual, jacobian=J, eigenvalues=w, eigenvectors=vr, left_eigenvectors=vl,
                    marginal_tol=float(mtol), params=params, success=success, message=message if not success else
                    f"converged: {message}", dynamics=dyn, nfev=nfev, njev=njev, accuracy=acc, info=dict(info or {}))
    if not success and throw:
        raise FixedPointError(message, fp)
    return fp


def _accuracy(co: _Coordinates, x, J) -> float | None:
    """max |J^-1 f_finer(x*)|: the Newton correction towards the finer quadrature's fixed point."""
    from ..expectations.numerical import _finer, quadrature_rule

    dyn = co.dyn
    d = dyn.K + dyn.M + int(dyn.hyper.sigma != 0)
    quad = quadrature_rule(dyn.quadrature, d, dyn.g)
    fine, _ = _finer(quad, dyn.g)
    if fine is None:
        return None
    f = co.f(x, dataclasses.replace(dyn, quadrature=fine))
    try:
        dx = np.linalg.lstsq(J, f, rcond=1e-12)[0]
    except np.linalg.LinAlgError:
        return None
    return float(np.max(np.abs(dx)))


# --------------------------------------------------------------------------------------------- finders
def teacher_constants(K: int = 2, M: int | None = None, *, v_star=1.0, U=None, P: float = 1.0, b=None,
                      T=None) -> OrderParams:
    """A template state holding the constants that the finders use.

    T (default the identity: orthogonal teachers of unit norm), U (default 0: f orthogonal to the teacher),
    P = 1, v_star (default 1) and b (default ones: the FA feedback). Its dynamic part is Q = I, R = 0, S = 0,
    v = 1."""
    where = "teacher_constants"
    K = checks.integer("K", K, where=where, min=1)
    M = K if M is None else checks.integer("M", M, where=where, min=1)
    T = np.eye(M) if T is None else np.asarray(T, dtype=float)
    vs = np.broadcast_to(np.asarray(v_star, dtype=float), (M,)).copy()
    return OrderParams(Q=np.eye(K), R=np.zeros((K, M)), T=T, v=np.ones(K), v_star=vs,
                       S=np.zeros(K), U=np.zeros(M) if U is None else U, P=P,
                       b=np.ones(K) if b is None else b)


def _student_symmetry(dyn: Dynamics, co: _Coordinates) -> np.ndarray:
    """An orthonormal basis (n, r) of the free coordinates invariant under every permutation of the student's
    units, and of the teacher's when its constants allow (T, v_star and U invariant): the unspecialised subspace,
    where every hidden unit is the same. The invariant subspace of a group is the common fixed space of its
    generators: a transposition and a cycle of the units (of the student, then of the teacher)."""
    K, M = dyn.K, dyn.M
    labels = list(co.labels)
    index = {lab: i for i, lab in enumerate(labels)}
    T, vs, U = np.asarray(dyn.T), np.asarray(dyn.v_star), np.asarray(dyn.U)
    if dyn.b is not None and not np.allclose(dyn.b, dyn.b[0]):
        raise ValueError("symmetric_plateau: the FA feedback b is not the same for every unit: no symmetric subspace")

    def generators(n):
        if n < 2:
            return []
        return [tuple([1, 0] + list(range(2, n))), tuple(list(range(1, n)) + [0])]

    def teacher_symmetric(pm):
        pm = list(pm)
        return np.allclose(T[np.ix_(pm, pm)], T) and np.allclose(vs[pm], vs) and np.allclose(U[pm], U)

    ident_k, ident_m = tuple(range(K)), tuple(range(M))
    gens = [(g, ident_m) for g in generators(K)] + [(ident_k, g) for g in generators(M) if teacher_symmetric(g)]
    n = len(labels)
    if not gens:
        return np.eye(n)
    rows = []
    for pk, pm in gens:
        A = np.zeros((n, n))
        for i, lab in enumerate(labels):
            A[index[_image(lab, pk, pm)], i] = 1.0
        rows.append(A - np.eye(n))
    _, sv, Vt = np.linalg.svd(np.vstack(rows))
    rank = int(np.sum(sv > 1e-10))
    return Vt[rank:].T


def _image(label: str, pk, pm) -> str:
    name, idx = label.split("[") if "[" in label else (label, "")
    idx = [int(i) for i in idx.rstrip("]").split(",")] if idx else []
    if name == "Q":
        k, l = sorted((pk[idx[0]], pk[idx[1]]))
        return f"Q[{k},{l}]"
    if name == "R":
        return f"R[{pk[idx[0]]},{pm[idx[1]]}]"
    if name in ("S", "v"):
        return f"{name}[{pk[idx[0]]}]"
    if name == "U":
        return f"U[{pm[idx[0]]}]"
    return label


def symmetric_plateau(rule, params=None, *, constants: OrderParams | None = None, K: int | None = None,
                      M: int | None = None, q0: float = 0.5, r0: float = 0.0, s0: float = 0.05, v0=None,
                      t_max: float = 1e4, guess: OrderParams | None = None, quadrature=None, tol: float = TOL,
                      marginal_tol: float | None = None, homotopy: bool = True,
                      throw: bool = True, **options) -> FixedPoint:
    """The symmetric (unspecialised) plateau, where every student unit is the same: a :class:`FixedPoint`.

    First in the symmetric subspace (the states invariant under permutations of the student's units, and of the
    teacher's when T, v_star and U allow): the ODE projected on it is integrated from the symmetric state
    Q = q0 I, R = r0, S = s0 (afa and pepita need S != 0: their feedback is sigma_F S), v = v0 (default: the
    mean of v_star) to its attractor there (up to ``t_max``), and Newton's method converges in the subspace.
    Then :func:`fixed_point` polishes it in the full space and reports the stability there; the subspace's own
    exponents are in ``info["subspace_eigenvalues"]``. ``constants`` (default :func:`teacher_constants`) gives T,
    U, P, v_star, b; or K and M with those defaults. ``guess``: a state to start Newton's method from instead of
    integrating (projected on the subspace), e.g. afa's plateau for pepita, its first-order expansion, which is
    much cheaper than integrating pepita's ODE. The other options are :func:`fixed_point`'s.

    ``homotopy``: where that fails at sigma_F > 1 (from the default start the symmetric subspace's flow can run away
    at large feedback, e.g. afa at sigma_F >= 2, although the plateau exists), find the plateau at sigma_F = 1 and
    follow it by :func:`theory.continuation` in sigma_F to the requested value (``info["homotopy"]`` then says so).
    """
    where = "symmetric_plateau"
    if constants is None:
        constants = teacher_constants(2 if K is None else K, M)
    elif not isinstance(constants, OrderParams):
        raise TypeError(f"{where}: constants must be a theory.OrderParams, got {type(constants).__name__}")
    elif (K is not None and K != constants.K) or (M is not None and M != constants.M):
        raise ValueError(f"{where}: K={K}, M={M} disagree with constants (K={constants.K}, M={constants.M}); "
                         "give one or the other")
    Kc, Mc = constants.K, constants.M
    q0 = checks.number("q0", q0, where=where, min=0.0)
    r0 = checks.number("r0", r0, where=where)
    s0 = checks.number("s0", s0, where=where)
    t_max = checks.number("t_max", t_max, where=where, min=0.0)
    v0 = float(np.mean(constants.v_star)) if v0 is None else checks.number("v0", v0, where=where)
    start = constants.replace(Q=q0 * np.eye(Kc), R=np.full((Kc, Mc), r0), S=np.full(Kc, s0), v=np.full(Kc, v0))
    dyn = make_dynamics(start, rule, params, quadrature=quadrature, where=where,
                        extra=checks.parameters(symmetric_plateau), **options)
    _check_constant(dyn, where)
    kw = dict(t_max=t_max, tol=tol, marginal_tol=marginal_tol, where=where)
    sigma_F = float(dyn.hyper.sigma_F)
    try:
        if not homotopy or sigma_F <= 1.0 or guess is not None:
            return _plateau(dyn, start, guess, throw=throw, **kw)
        try:
            return _plateau(dyn, start, guess, throw=True, **kw)
        except FixedPointError as direct:
            return _plateau_by_homotopy(dyn, start, direct, throw=throw, **kw)
    except FixedPointError as exc:
        r = exc.result
        raise (_drift_error(dyn, None if r is None else r.state, str(exc), r) or exc) from None


#: How the free coordinates move under the rescaling w_k -> c w_k, v_k -> v_k / c, at c = 1 (d/dc of the state).
_RESCALING = {"Q": 2.0, "R": 1.0, "S": 1.0, "v": -1.0}


def _rescaling_drift(dyn: Dynamics, state: OrderParams) -> float:
    """|cos| of the angle between dx/dt at state and the generator of the rescaling w_k -> c w_k, v_k -> v_k / c
    (nan when either vanishes). Near 1: the flow runs along the family of states the rescaling connects."""
    co = _Coordinates.of(dyn, state)
    x = co.x_of(state)
    with np.errstate(all="ignore"):
        f = co.f(x)
    gen = np.array([_RESCALING.get(lab[0], 0.0) for lab in co.labels]) * x
    norm = float(np.linalg.norm(f) * np.linalg.norm(gen))
    return abs(float(f @ gen)) / norm if norm > 0 and np.isfinite(norm) else float("nan")


def _drift_error(dyn: Dynamics, state: OrderParams | None, message: str,
                 result: FixedPoint | None = None) -> FixedPointError | None:
    """The failure ``message`` with its reason when the flow at ``state`` drifts along the rescaling of a trained
    second layer; None when it does not (or there is no state to look at).

    For a positively homogeneous activation (relu: g(c z) = c g(z)) the network with w_k -> c w_k, v_k -> v_k / c
    computes the same function, so the unspecialised plateau is a family of states along which the finite-rate
    terms of the ODE push (Q grows, v shrinks): there is no isolated fixed point to find. Recognised from the
    flow itself (dx/dt nearly parallel to the rescaling's generator), not from the activation's name."""
    if state is None or not dyn.hyper.train_second_layer:
        return None
    cos = _rescaling_drift(dyn, state)
    if not cos > 0.99:
        return None
    q, v = float(np.mean(np.diag(state.Q))), float(np.mean(np.abs(state.v)))
    return FixedPointError(
        f"{message}. No isolated plateau fixed point: the flow drifts along the rescaling w_k -> c w_k, v_k -> v_k / c "
        f"(|cos| = {cos:.4f} between dx/dt and its generator; there mean Q_kk = {q:.4g}, mean |v_k| = "
        f"{v:.4g}), which leaves the network's function unchanged for a positively homogeneous activation such as "
        f"{dyn.hyper.g.name}: its plateau is a slowly drifting family of states. Freeze the second layer "
        "(train_second_layer=False) for a plateau that is a fixed point", result)


def _plateau_by_homotopy(dyn: Dynamics, start: OrderParams, direct: FixedPointError, *, throw: bool,
                         t_max, tol, marginal_tol, where) -> FixedPoint:
    """The symmetric plateau at dyn's sigma_F > 1, followed from sigma_F = 1 by continuation."""
    from .continuation import continuation  # continuation builds on this module

    sigma_F = float(dyn.hyper.sigma_F)
    low = dataclasses.replace(dyn, hyper=dataclasses.replace(dyn.hyper, sigma_F=1.0))
    try:
        base = _plateau(low, start, None, throw=True, t_max=t_max, tol=tol, marginal_tol=marginal_tol, where=where)
        branch = continuation(base, "sigma_F", (1.0, sigma_F), direction="up", tol=tol)
    except (FixedPointError, ValueError) as exc:
        raise FixedPointError(f"{direct}; and by continuation from sigma_F = 1: {exc}", direct.result) from None
    i = int(np.argmin(np.abs(branch.values - sigma_F)))
    if throw and abs(branch.values[i] - sigma_F) > 1e-9 * max(1.0, sigma_F):
        raise FixedPointError(f"{direct}; and continuation from sigma_F = 1 stopped at sigma_F = "
                              f"{branch.values.max():.6g} ({branch.message})", direct.result)
    co = _Coordinates.of(dyn, branch.states[i])
    x, nfev, njev, msg = _solve(co, co.x_of(branch.states[i]), tol=tol, method="hybr", max_iter=100)
    info = dict(homotopy=f"continued in sigma_F from 1 ({len(branch)} points; {branch.message})",
                subspace_dimension=None, symmetric_time=None)
    return _result(co, x, tol=tol, marginal_tol=marginal_tol, nfev=nfev, njev=njev, message=msg, throw=throw,
                   accuracy=True, where=where, extra=dict(tol=tol, finder=where), info=info)


def _plateau(dyn: Dynamics, start: OrderParams, guess, *, t_max, tol, marginal_tol, throw, where) -> FixedPoint:
    """symmetric_plateau at the resolved dynamics: the symmetric subspace's attractor, then Newton."""
    co = _Coordinates.of(dyn, start)
    B = _student_symmetry(dyn, co)
    x_start = co.x_of(start)

    def g(p):
        x = B @ p
        why = co.valid(x)
        if why is not None:
            raise _LeftDomain(why)
        with np.errstate(all="ignore"):
            f = B.T @ co.f(x)
        if not np.all(np.isfinite(f)):
            raise _LeftDomain("non-finite right-hand side")
        return f

    def settled(_t, p):
        return _resid(g(p)) - 1e-8

    settled.terminal = True
    p0 = B.T @ x_start
    if guess is not None:
        if not isinstance(guess, OrderParams):
            raise TypeError(f"{where}: guess must be a theory.OrderParams, got {type(guess).__name__}")
        _check_compatible(guess, start, where)
        p0 = B.T @ co.x_of(guess)
        t_end = 0.0
        p = p0
    else:
        last = {"t": 0.0, "p": p0, "n": 0}

        def rate(t_, p_):
            last["n"] += 1
            if last["n"] > _MAX_EVALS:
                raise _Budget
            out = g(p_)
            last["t"], last["p"] = t_, p_
            return out

        try:
            sol = scipy.integrate.solve_ivp(rate, (0.0, t_max), p0, method="LSODA", rtol=1e-10, atol=1e-13,
                                            events=settled)
            p, t_end = sol.y[:, -1], float(sol.t[-1])
            if co.valid(B @ p) is not None or not np.all(np.isfinite(p)):
                raise _LeftDomain(f"at t = {t_end:.4g}: {sol.message}")
        except _LeftDomain as exc:
            raise FixedPointError(f"{where}: the ODE in the symmetric subspace left the domain ({exc}): no symmetric "
                                  "attractor from this start (try other q0, r0, s0, v0, or smaller rates)") from None
        except _Budget:  # a slow (e.g. near a fold) or stiff approach: Newton's method goes on from there
            p, t_end = np.array(last["p"]), float(last["t"])
        if dyn.hyper.train_second_layer and _resid(g(p)) > 1e-8:  # not settled: drifting along the rescaling?
            drift = _drift_error(dyn, co.state_of(B @ p, validate=False),
                                 f"{where}: the ODE in the symmetric subspace did not settle by t = {t_end:.4g}")
            if drift is not None:
                raise drift
    def g_root(p):
        try:
            return g(p)
        except _LeftDomain:
            return np.full(p.size, 1e8)

    def dg_root(p):
        try:
            return B.T @ co.jac(B @ p).matrix @ B if co.valid(B @ p) is None else np.eye(p.size)
        except ValueError:  # the right-hand side is not finite around p (far out): no derivative, a plain step
            return np.eye(p.size)

    ps, best = p, _resid(g_root(p))
    for m in ("hybr", "lm"):
        sub = scipy.optimize.root(g_root, ps, jac=dg_root, method=m, options=dict(xtol=1e-15))
        res = _resid(g_root(sub.x))
        if res < best and co.valid(B @ sub.x) is None:
            ps, best = sub.x, res
        if best <= tol:
            break
    try:
        Jsub = B.T @ co.jac(B @ ps).matrix @ B
    except ValueError as exc:
        raise FixedPointError(f"{where}: no fixed point found in the symmetric subspace (best residual {best:.3g}; "
                              f"{exc})", None) from None
    info = dict(subspace_dimension=B.shape[1], subspace_residual=_resid(g_root(ps)),
                subspace_eigenvalues=np.sort_complex(np.linalg.eigvals(Jsub))[::-1], subspace_basis=B,
                symmetric_time=t_end)
    guess = co.state_of(B @ ps)
    co2 = _Coordinates.of(dyn, guess)
    x, nfev, njev, msg = _solve(co2, co2.x_of(guess), tol=tol, method="hybr", max_iter=100)
    return _result(co2, x, tol=tol, marginal_tol=marginal_tol, nfev=nfev, njev=njev, message=msg, throw=throw,
                   accuracy=True, where=where, extra=dict(tol=tol, finder=where), info=info)


def degenerate_solution(rule, params=None, *, signs=None, permutation=None, constants: OrderParams | None = None,
                        quadrature=None, tol: float = TOL, marginal_tol: float | None = None, throw: bool = True,
                        **options) -> FixedPoint:
    """A degenerate solution (K = M): the student computes the teacher's function with sign-flipped units.

    The weights are ``w_k = s_k w_star[pi(k)]`` and ``v_k = s_k v_star[pi(k)]`` (g odd), with ``signs`` s
    (default -1 for every unit: v anti-aligned with v_star) and ``permutation`` pi (default the identity). The
    state is ``Q = s T[pi, pi] s``, ``R = s T[pi, :]``, ``S = s U[pi]``. It is exact at sigma = 0 without weight
    decay (e = 0 there, for every rule); otherwise Newton's method starts from it. ``constants`` (default
    :func:`teacher_constants`) gives T, U, P, v_star, b. The other options are :func:`fixed_point`'s.
    Such a state sits on the boundary of the positive semi-definite states (Omega is singular): its Jacobian is
    the derivative of the view's continuation across it (exact for the erf closed forms).
    """
    where = "degenerate_solution"
    if constants is None:
        constants = teacher_constants(2)
    elif not isinstance(constants, OrderParams):
        raise TypeError(f"{where}: constants must be a theory.OrderParams, got {type(constants).__name__}")
    K, M = constants.K, constants.M
    if K != M:
        raise ValueError(f"{where}: needs K == M (a student unit per teacher unit), got K={K}, M={M}")
    s = -np.ones(K) if signs is None else np.asarray(signs, dtype=float)
    if s.shape != (K,) or not np.all(np.isin(s, (-1.0, 1.0))):
        raise ValueError(f"{where}: signs must be {K} values in {{+1, -1}}, got {signs!r}")
    pi = np.arange(K) if permutation is None else np.asarray(permutation)
    if sorted(pi.tolist()) != list(range(K)):
        raise ValueError(f"{where}: permutation must be a permutation of 0..{K - 1}, got {permutation!r}")
    T, U = constants.T, constants.U
    R = s[:, None] * T[pi, :]
    Q = s[:, None] * T[np.ix_(pi, pi)] * s[None, :]
    guess = constants.replace(Q=Q, R=R, S=s * U[pi], v=s * constants.v_star[pi])
    fp = fixed_point(guess, rule, params, quadrature=quadrature, tol=tol, marginal_tol=marginal_tol, throw=throw,
                     **options)
    fp.info.update(signs=s.tolist(), permutation=pi.tolist(), finder=where)
    return fp


def specialised_solution(rule, params=None, *, permutation=None, constants: OrderParams | None = None, **options):
    """The specialised solution ``w_k = w_star[pi(k)]``, ``v = v_star`` (K = M): :func:`degenerate_solution` with
    every sign +1."""
    K = 2 if constants is None else constants.K
    fp = degenerate_solution(rule, params, signs=np.ones(K), permutation=permutation, constants=constants, **options)
    fp.info["finder"] = "specialised_solution"
    return fp
