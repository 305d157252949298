"""The ODE's flow under a parametrised protocol, with its forward sensitivities by the parameters.

For dy/dt = f(y, t; theta) (theory.Dynamics on each interval between breakpoints, the family's schedules
restricted there), :func:`flow` integrates y from y(0) to T and, on request, the tangents Z_j(t) = dy(t)/dtheta_j,

    dZ_j/dt = J_y(y, t) Z_j + df/dtheta_j,        Z_j(0) = 0,

by internal numerical differentiation (Bock): the tangents are carried through the same DOP853 steps as the
nominal state (scipy's coefficients, error control and step sizes; theory.solver.dop853), the step sizes chosen
by the nominal state alone. Every stage's J_y d is a directional difference of the very right-hand side the
integrator uses (the compiled kernel where one exists, called in a compiled loop over the directions),

    J_y d ~ (f(Y + eps d) - f(Y)) / eps      ("forward", eps = 1e-8 (1 + |Y|_inf) / |d|_inf),
    J_y d ~ (f(Y + eps d) - f(Y - eps d)) / (2 eps)   ("central", eps = 6e-6 (1 + |Y|_inf) / |d|_inf),

and df/dtheta_j the difference of f at theta_j + h_j (h_j = 1e-7 (1 + |theta_j|), forward; +-6e-6 (1 + |theta_j|),
central). Differentiating the stages of a Runge-Kutta method gives the same method applied to the variational
equation, so Z is the derivative of the discrete flow with these steps, up to the differences' error: ~1e-7
relative for "forward", ~1e-10 for "central" (tests/theory/control/test_control.py holds both against finite
differences of
whole integrations; the objective's own discretisation error is that of DOP853 at ``rtol``).

Cost: a step costs 12 (1 + m + c) evaluations, m the tangents carried and c the parameters forced on the
interval. On a piece of a piecewise protocol only its c = (number of controls) entries are forced; the tangents
of the earlier pieces span at most n = len(y) directions, so they are compressed at each piece's start to an
orthonormal basis of their span (QR) and carried as min(n, their number) directions: a gradient costs at most
(1 + n + 2c) integrations, whatever the number of pieces. The time-weighted integral of eg is integrated by the
stages' own quadrature (the Runge-Kutta weights b_s at the stage states, as for an augmented state), and the time
at which eg first reaches a target is located within its step by Brent's method on the step map, differentiated
by the implicit function theorem.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable

import numpy as np

from .._observables import generalisation_error
from .._state import unpack, vector_size
from ..solver.divergence import BLOWUP
from ..solver.dop853 import DOP853, MAX_FACTOR, MIN_FACTOR, SAFETY, initial_steps

try:
    import numba
except ImportError:  # pragma: no cover
    numba = None

__all__ = ["Problem", "Flow", "flow", "FlowDiverged"]

_A, _B, _C, _E3, _E5 = DOP853.A, DOP853.B, DOP853.C, DOP853.E3, DOP853.E5
_NS = len(_B)
_EXPONENT = -1.0 / (DOP853.error_order + 1)
#: the relative steps of the directional differences ("forward", "central")
STEP = {"forward": 1e-8, "central": 6e-6}
THETA_STEP = {"forward": 1e-7, "central": 6e-6}
_MAX_STEPS = 50_000
_H_FLOOR = 1e-12


class FlowDiverged(RuntimeError):
    """The ODE ran away under this protocol (non-finite values, an order parameter above BLOWUP, or a step
    below the floor): the objective is not defined there."""


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """What every flow of one optimisation shares: the base Dynamics (its layout, mirroring included, fixed),
    the base hyper-parameters, the initial flat state, the horizon T, the integrator's tolerances and the
    differences' kind."""

    dyn: object
    hyper: object
    y0: np.ndarray
    T: float
    rtol: float = 1e-8
    atol: float = 1e-10
    differences: str = "forward"

    @property
    def K(self) -> int:
        return self.dyn.K

    @property
    def M(self) -> int:
        return self.dyn.M

    @functools.cached_property
    def eg_index(self) -> np.ndarray:
        """The coordinates of y that eps_g depends on (Q, R, v)."""
        K, M = self.K, self.M
        off = K * K + K * M
        return np.concatenate([np.arange(off), off + K + np.arange(K)])

    @functools.cached_property
    def watch(self) -> np.ndarray:
        K, M = self.K, self.M
        off = K * K + K * M
        return np.concatenate([np.arange(K) * (K + 1), off + np.arange(2 * K)])

    def eg(self, Y) -> np.ndarray:
        """eps_g of flat states Y (..., n) (THEORY.md section 5)."""
        Y = np.asarray(Y, dtype=float)
        Q, R, S, v = unpack(Y, self.K, self.M)
        st = types.SimpleNamespace(Q=Q, R=R, T=self.dyn.T, v=v, v_star=self.dyn.v_star)
        return generalisation_error(st, self.dyn.g)

    def eg_grad(self, y) -> np.ndarray:
        """d eps_g / dy at one flat state (central differences, relative step 1e-6: error ~1e-11)."""
        return self.eg_grads(np.asarray(y, dtype=float)[None])[0]

    def eg_grads(self, Y) -> np.ndarray:
        """d eps_g / dy at flat states Y (k, n), in one batched evaluation."""
        Y = np.asarray(Y, dtype=float)
        k, n = Y.shape
        idx = self.eg_index
        d = idx.size
        h = 1e-6 * np.maximum(1.0, np.abs(Y[:, idx]))  # (k, d)
        Yp = np.repeat(Y[:, None, :], 2 * d, axis=1)  # (k, 2d, n)
        r = np.arange(d)
        Yp[:, r, idx] += h
        Yp[:, d + r, idx] -= h
        e = self.eg(Yp)  # (k, 2d)
        out = np.zeros((k, n))
        out[:, idx] = (e[:, :d] - e[:, d:]) / (2 * h)
        return out


# ----------------------------------------------------------------------------------------- right-hand sides
def _jvp_rows(rhs, p, t, y, W, f0, delta, central, out):
    """out[j] = J_y(y) W[j] by a directional difference of rhs(t, ., p) (module docstring); rows of W that are 0
    give 0 without an evaluation."""
    n = y.size
    tmp = np.empty(n)
    buf = np.empty(n)
    buf2 = np.empty(n)
    ynorm = 1.0
    for q in range(n):
        ynorm = max(ynorm, abs(y[q]))
    for j in range(W.shape[0]):
        dn = 0.0
        for q in range(n):
            dn = max(dn, abs(W[j, q]))
        if dn == 0.0:
            for q in range(n):
                out[j, q] = 0.0
            continue
        eps = delta * ynorm / dn
        for q in range(n):
            tmp[q] = y[q] + eps * W[j, q]
        rhs(t, tmp, p, buf)
        if central:
            for q in range(n):
                tmp[q] = y[q] - eps * W[j, q]
            rhs(t, tmp, p, buf2)
            for q in range(n):
                out[j, q] = (buf[q] - buf2[q]) / (2.0 * eps)
        else:
            for q in range(n):
                out[j, q] = (buf[q] - f0[q]) / eps


def _tangent_rows(rhs, p, Pf, frows, inv_h, t, Y, W, F, delta, central, out):
    """out = J_y(Y) W + the forcing df/dtheta_i added to rows frows[i] (f at the parameter rows Pf: theta_i + h_i,
    and theta_i - h_i after it for central differences; inv_h[i] = 1 / (the difference's width))."""
    _jvp_rows(rhs, p, t, Y, W, F, delta, central, out)
    n = Y.size
    buf = np.empty(n)
    buf2 = np.empty(n)
    for i in range(frows.size):
        r = frows[i]
        if central:
            rhs(t, Y, Pf[2 * i], buf)
            rhs(t, Y, Pf[2 * i + 1], buf2)
            for q in range(n):
                out[r, q] += (buf[q] - buf2[q]) * inv_h[i]
        else:
            rhs(t, Y, Pf[i], buf)
            for q in range(n):
                out[r, q] += (buf[q] - F[q]) * inv_h[i]


def _step_kernel(rhs, p, Pf, frows, inv_h, delta, central, sens, t, h, y, f0, W, dK0, A, B, C, Ks, Ys, Ws, dKs,
                 y_new, W_new):
    """One DOP853 step of size h from (t, y), y' = f0, with the tangents W (m, n) (y'(W) = dK0): the stages Ks
    (13, n; the last f(t + h, y_new)), the stage states Ys (12, n) and tangents Ws (12, m, n) and dKs, y_new and
    W_new. The compiled twin of :meth:`_Stepper.step`."""
    n = y.size
    m = W.shape[0]
    ns = B.size
    for q in range(n):
        Ks[0, q] = f0[q]
        Ys[0, q] = y[q]
    if sens:
        for r in range(m):
            for q in range(n):
                Ws[0, r, q] = W[r, q]
                dKs[0, r, q] = dK0[r, q]
    for s in range(1, ns):
        for q in range(n):
            acc = 0.0
            for j in range(s):
                acc += A[s, j] * Ks[j, q]
            Ys[s, q] = y[q] + h * acc
        ts = t + C[s] * h
        rhs(ts, Ys[s], p, Ks[s])
        if sens:
            for r in range(m):
                for q in range(n):
                    acc = 0.0
                    for j in range(s):
                        acc += A[s, j] * dKs[j, r, q]
                    Ws[s, r, q] = W[r, q] + h * acc
            _tangent_rows(rhs, p, Pf, frows, inv_h, ts, Ys[s], Ws[s], Ks[s], delta, central, dKs[s])
    for q in range(n):
        acc = 0.0
        for j in range(ns):
            acc += B[j] * Ks[j, q]
        y_new[q] = y[q] + h * acc
    rhs(t + h, y_new, p, Ks[ns])
    if sens:
        for r in range(m):
            for q in range(n):
                acc = 0.0
                for j in range(ns):
                    acc += B[j] * dKs[j, r, q]
                W_new[r, q] = W[r, q] + h * acc


if numba is not None:
    _jvp_rows = numba.njit(cache=True, inline="always", error_model="numpy")(_jvp_rows)
    _tangent_rows = numba.njit(cache=True, error_model="numpy", nogil=True)(_tangent_rows)


@functools.lru_cache(maxsize=1)
def _compiled_step():
    """:func:`_step_kernel` compiled (numba's disk cache after the first time), on first use."""
    from .._codegen.rule import RHS_TYPE

    I1, A1, A2, A3 = numba.int64[::1], numba.float64[::1], numba.float64[:, ::1], numba.float64[:, :, ::1]
    f64, b1 = numba.float64, numba.boolean
    sig = numba.void(
        RHS_TYPE, A1, A2, I1, A1, f64, b1, b1, f64, f64, A1, A1, A2, A2, A2, A1, A1, A2, A2, A3, A3, A1, A2
    )
    return numba.njit(sig, cache=True, error_model="numpy", nogil=True)(_step_kernel)


@functools.lru_cache(maxsize=64)
def _pointer(fn):
    from .._codegen.rule import function_pointer

    return function_pointer(fn)


class _Interval:
    """The right-hand side on one interval and its stepping, nominal and tangent (module docstring): the compiled
    kernel when the view has one (f at the perturbed parameters: other rows p of the same kernel), else the view's
    numpy right-hand side (J_y W batched over W's rows)."""

    def __init__(self, problem, seg, forcing_segs, force_rows, inv_h):
        self.pb, self.seg = problem, seg
        self.central = problem.differences == "central"
        self.delta = STEP[problem.differences]
        self.force_rows = np.ascontiguousarray(force_rows, dtype=np.int64)
        self.inv_h = np.ascontiguousarray(inv_h, dtype=float)
        comp = seg.compiled() if numba is not None else None
        self.nfev = 0
        if comp is not None:
            self.fn, self.p = comp
            self.ptr = _pointer(self.fn)
            rows = [sg.compiled() for pair in forcing_segs for sg in pair]
            if any(r is None or r[0] is not self.fn for r in rows):
                raise RuntimeError("flow: the perturbed parameters changed the compiled view")
            lp = self.p.size
            self.Pf = np.ascontiguousarray(np.array([r[1] for r in rows]).reshape(len(rows), lp)) if rows \
                else np.zeros((0, lp))
        else:
            self.fn = None
            self.forcing = [[sg for sg in pair] for pair in forcing_segs]

    # ------------------------------------------------------------------ evaluations
    def f(self, t, y):
        self.nfev += 1
        if self.fn is not None:
            out = np.empty(y.size)
            self.fn(float(t), y, self.p, out)
            return out
        return np.asarray(self.seg.rhs(y, t), dtype=float)

    def _count(self, W):
        k = 2 if self.central else 1
        return int(np.count_nonzero(np.any(W != 0, axis=1))) * k + self.force_rows.size * k

    def tangent(self, t, Y, W, F):
        """J_y(Y) W + the forcing of the parameters acting here (rows force_rows)."""
        self.nfev += self._count(W)
        if self.fn is not None:
            out = np.empty(W.shape)
            _tangent_rows(self.ptr, self.p, self.Pf, self.force_rows, self.inv_h, float(t), Y, np.ascontiguousarray(W),
                          F, self.delta, self.central, out)
            return out
        out = np.zeros(W.shape)
        dn = np.max(np.abs(W), axis=1) if W.size else np.zeros(0)
        live = dn > 0
        if np.any(live):
            eps = (self.delta * max(1.0, float(np.max(np.abs(Y)))) / dn[live])[:, None]
            Wl = W[live]
            up = np.asarray(self.seg.rhs(Y + eps * Wl, t), dtype=float)
            if self.central:
                out[live] = (up - np.asarray(self.seg.rhs(Y - eps * Wl, t), dtype=float)) / (2 * eps)
            else:
                out[live] = (up - F) / eps
        for r, pair, ih in zip(self.force_rows, self.forcing, self.inv_h):
            lo = pair[1].rhs(Y, t) if self.central else F
            out[r] += (np.asarray(pair[0].rhs(Y, t), dtype=float) - lo) * ih
        return out

    def step(self, t, y, h, f0, W=None, dK0=None):
        """One DOP853 step of size h from (t, y), y' = f0, tangents W with W' = dK0: (y_new, Ks (13, n), W_new,
        stage states (12, n), stage tangents (12, m, n))."""
        n = y.size
        sens = W is not None
        m = W.shape[0] if sens else 0
        Ks = np.empty((_NS + 1, n))
        Ys = np.empty((_NS, n))
        Ws = np.empty((_NS, m, n))
        dKs = np.empty((_NS, m, n))
        y_new = np.empty(n)
        W_new = np.empty((m, n))
        if self.fn is not None:
            Wc = np.ascontiguousarray(W) if sens else np.zeros((0, n))
            dKc = np.ascontiguousarray(dK0) if sens else np.zeros((0, n))
            _compiled_step()(self.ptr, self.p, self.Pf, self.force_rows, self.inv_h, self.delta, self.central, sens,
                             float(t), float(h), y, f0, Wc, dKc, _A, _B, _C, Ks, Ys, Ws, dKs, y_new, W_new)
            self.nfev += _NS + (_NS - 1) * (self._count(Wc) if sens else 0)
            return y_new, Ks, (W_new if sens else None), Ys, (Ws if sens else None)
        Ks[0], Ys[0] = f0, y
        if sens:
            Ws[0], dKs[0] = W, dK0
        for s in range(1, _NS):
            a = _A[s, :s]
            Ys[s] = y + h * (a @ Ks[:s])
            ts = t + _C[s] * h
            Ks[s] = self.f(ts, Ys[s])
            if sens:
                Ws[s] = W + h * np.tensordot(a, dKs[:s], axes=1)
                dKs[s] = self.tangent(ts, Ys[s], Ws[s], Ks[s])
        y_new = y + h * (_B @ Ks[:_NS])
        Ks[_NS] = self.f(t + h, y_new)
        W_new = W + h * np.tensordot(_B, dKs, axes=1) if sens else None
        return y_new, Ks, W_new, Ys, (Ws if sens else None)

    def error(self, h, y, y_new, Ks):
        """scipy's DOP853 error norm of the step (theory.solver.dop853)."""
        pb = self.pb
        scale = pb.atol + np.maximum(np.abs(y), np.abs(y_new)) * pb.rtol
        e5 = np.sum(((_E5 @ Ks) / scale) ** 2)
        e3 = np.sum(((_E3 @ Ks) / scale) ** 2)
        if e5 == 0.0 and e3 == 0.0:
            return 0.0
        return abs(h) * e5 / np.sqrt((e5 + 0.01 * e3) * y.size)


# ----------------------------------------------------------------------------------------------- the flow
@dataclasses.dataclass
class Flow:
    """What :func:`flow` returns.

    t, y, eg : the accepted steps' end times (0 first), states (k, n) and eps_g there. Z : (p, n) the tangents
    dy(t_end)/dtheta at the last time (None without sensitivities). integral, d_integral : the weighted integral
    of eps_g over [0, t_end] and its gradient (p,) (with a weight). crossing, d_crossing : the first time eps_g
    reaches the target and its gradient (with a target; None when not reached by T). nfev, steps : right-hand
    side evaluations and accepted steps.
    """

    t: np.ndarray
    y: np.ndarray
    eg: np.ndarray
    Z: np.ndarray | None = None
    integral: float | None = None
    d_integral: np.ndarray | None = None
    crossing: float | None = None
    d_crossing: np.ndarray | None = None
    nfev: int = 0
    steps: int = 0


def _edges(problem: Problem, family, theta) -> np.ndarray:
    pts = set(family.breakpoints()) | set(family.hyper(problem.hyper, theta).breakpoints())
    inner = sorted(x for x in pts if 0.0 < x < problem.T)
    return np.array([0.0] + inner + [problem.T])


def flow(problem: Problem, family, theta, *, sensitivities: bool = True, weight: Callable | None = None,
         target: float | None = None) -> Flow:
    """Integrate the ODE from problem.y0 over [0, T] under ``family``'s protocol ``theta`` (module docstring).

    weight : w(t), to integrate int w(t) eps_g(t) dt (and its gradient). target : stop where eps_g first
    reaches it (its time and gradient in ``crossing``, ``d_crossing``). Raises :class:`FlowDiverged` when the
    ODE runs away.
    """
    theta = np.asarray(theta, dtype=float)
    pb = problem
    central = pb.differences == "central"
    y = np.array(pb.y0, dtype=float)
    n, p = y.size, theta.size
    if n != vector_size(pb.K, pb.M, pb.dyn.mirror):
        raise ValueError(f"flow: the initial state has {n} entries, expected {vector_size(pb.K, pb.M, pb.dyn.mirror)}")
    seg_of = lambda hp: dataclasses.replace(pb.dyn, hyper=hp)  # noqa: E731  (the layout, mirroring, stays)
    edges = _edges(pb, family, theta)
    ts, ys, egs = [0.0], [y.copy()], [float(pb.eg(y))]
    Zfull = np.zeros((p, n)) if sensitivities else None
    integral = 0.0 if weight is not None else None
    d_integral = np.zeros(p) if (weight is not None and sensitivities) else None
    nfev = steps = 0
    h_abs = None
    t = 0.0
    floor = _H_FLOOR * pb.T
    for a, b in zip(edges[:-1], edges[1:]):
        seg = seg_of(family.segment_hyper(pb.hyper, theta, a, b))
        W = dK0 = None
        inactive = active = np.zeros(0, int)
        Rm = np.zeros((0, 0))
        forcing, force_rows, inv_h = [], np.zeros(0, int), np.zeros(0)
        if sensitivities:
            active = family.active(a, b)
            live = np.any(Zfull != 0, axis=1)
            live[active] = False
            inactive = np.nonzero(live)[0]
            Qm = np.zeros((n, 0))
            if inactive.size:
                Qm, Rm = np.linalg.qr(Zfull[inactive].T)  # (n, r), (r, k): the span of the earlier pieces' tangents
            r = Qm.shape[1]
            W = np.ascontiguousarray(np.concatenate([Qm.T, Zfull[active]], axis=0))
            force_rows = r + np.arange(active.size)
            widths = THETA_STEP[pb.differences] * (1.0 + np.abs(theta[active]))
            for j, hj in zip(active, widths):
                up, down = theta.copy(), theta.copy()
                up[j] += hj
                down[j] -= hj
                pts = (up, down) if central else (up,)
                forcing.append([seg_of(family.segment_hyper(pb.hyper, q, a, b)) for q in pts])
            inv_h = 1.0 / (widths * (2.0 if central else 1.0))
        iv = _Interval(pb, seg, forcing, force_rows, inv_h)
        f0 = iv.f(t, y)
        if not np.all(np.isfinite(f0)):
            raise FlowDiverged(f"the right-hand side is not finite at t = {t:.6g}")
        if sensitivities:
            dK0 = iv.tangent(t, y, W, f0)
        if h_abs is None:
            with np.errstate(all="ignore"):
                h_abs = float(initial_steps(lambda tt, yy: iv.f(tt[0], yy[0])[None], np.array([t]), y[None], f0[None],
                                            pb.rtol, pb.atol, b - a, DOP853.error_order)[0])
        d_int = np.zeros(W.shape[0]) if d_integral is not None else None
        n_steps = 0
        while t < b:
            rejected = False
            while True:
                if h_abs < floor:
                    raise FlowDiverged(f"step size too small at t = {t:.6g}")
                t_new = min(t + h_abs, b)
                h = h_abs = t_new - t
                y_new, Ks, W_new, Ys, Ws = iv.step(t, y, h, f0, W, dK0)
                err = iv.error(h, y, y_new, Ks)
                if not np.isfinite(err):
                    h_abs *= MIN_FACTOR
                    rejected = True
                    continue
                if err < 1.0:
                    factor = MAX_FACTOR if err == 0.0 else min(MAX_FACTOR, SAFETY * err**_EXPONENT)
                    if rejected:
                        factor = min(1.0, factor)
                    break
                h_abs *= max(MIN_FACTOR, SAFETY * err**_EXPONENT)
                rejected = True
            n_steps += 1
            if n_steps > _MAX_STEPS:
                raise FlowDiverged(f"too many steps ({_MAX_STEPS}) on [{a:g}, {b:g}]")
            if not np.all(np.isfinite(y_new)) or np.max(np.abs(y_new[pb.watch])) > BLOWUP:
                raise FlowDiverged(f"the order parameters ran away at t = {t_new:.6g}")
            if weight is not None:  # the stages' quadrature of int w eps_g (an augmented state's Runge-Kutta step)
                use = np.nonzero(_B != 0.0)[0]
                wts = h * _B[use] * np.array([float(weight(t + _C[s] * h)) for s in use])
                integral += float(wts @ pb.eg(Ys[use]))
                if d_int is not None:
                    G = pb.eg_grads(Ys[use])  # (stages, n)
                    d_int += np.einsum("s,smn,sn->m", wts, Ws[use], G)
            e_new = float(pb.eg(y_new))
            if target is not None and e_new <= target:
                tc, yc, Wc, dtdc = _locate(pb, iv, t, y, h, f0, W, dK0, target)
                ts.append(tc)
                ys.append(yc)
                egs.append(float(pb.eg(yc)))
                d_cross = None
                if sensitivities:
                    d_cross = np.zeros(p)
                    _scatter(d_cross, dtdc, inactive, Rm, active)
                    Zfull = _rebuild(Zfull, Wc, inactive, Rm, active)
                return Flow(np.array(ts), np.array(ys), np.array(egs), Zfull, None, None, tc, d_cross,
                            nfev + iv.nfev, steps + n_steps)
            t, y, f0 = t_new, y_new, Ks[_NS].copy()
            if sensitivities:
                W = W_new
                dK0 = iv.tangent(t, y, W, f0)
            ts.append(t)
            ys.append(y.copy())
            egs.append(e_new)
            h_abs *= factor
        if sensitivities:
            Zfull = _rebuild(Zfull, W, inactive, Rm, active)
            if d_int is not None:
                _scatter(d_integral, d_int, inactive, Rm, active)
        nfev += iv.nfev
        steps += n_steps
    return Flow(np.array(ts), np.array(ys), np.array(egs), Zfull, integral, d_integral, None, None, nfev, steps)


def _rebuild(Zfull, W, inactive, Rm, active):
    """The full tangents (p, n) from the carried ones: the compressed rows Rm^T W[:r], the active rows W[r:]."""
    Z = Zfull.copy()
    r = Rm.shape[0]
    if inactive.size:
        Z[inactive] = Rm.T @ W[:r]
    Z[active] = W[r:]
    return Z


def _scatter(out, g, inactive, Rm, active):
    """Add a gradient in the carried coordinates (m,) to the full one (p,)."""
    r = Rm.shape[0]
    if inactive.size:
        out[inactive] += Rm.T @ g[:r]
    out[active] += g[r:]


def _locate(pb, iv, t, y, h, f0, W, dK0, target):
    """(t*, y(t*), W(t*), dt*/d carried): the time within the step [t, t + h] where eps_g of the step map
    reaches the target (Brent's method on the step size), its tangents, and dt*/d(carried parameters) by the
    implicit function theorem on eps_g(Phi(h*, theta)) = target."""
    import scipy.optimize

    def phi(hh):
        return float(pb.eg(iv.step(t, y, hh, f0)[0])) - target

    hs = 0.0 if phi(0.0) <= 0.0 else scipy.optimize.brentq(phi, 0.0, h, xtol=1e-13 * max(1.0, t),
                                                            rtol=4 * np.finfo(float).eps)
    yc, _, Wc, _, _ = iv.step(t, y, hs, f0, W, dK0)
    if W is None:
        return t + hs, yc, None, None
    g = pb.eg_grad(yc)
    dh = 1e-6 * h
    lo, hi = max(hs - dh, 0.0), hs + dh
    dydh = (iv.step(t, y, hi, f0)[0] - iv.step(t, y, lo, f0)[0]) / (hi - lo)
    rate = float(g @ dydh)
    if not rate < 0.0:  # a tangential crossing: the time is not differentiable there; the step's slope instead
        rate = min(float(g @ f0), -1e-300)
    return t + hs, yc, Wc, -(Wc @ g) / rate
