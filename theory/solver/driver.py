"""The one ODE driver loop, with pluggable steppers.

:func:`drive` integrates B independent initial-value problems dy_i/dt = f_i(y_i) from t[0] to
t[-1] and records each at every output time in ``t``. It owns everything that is not stepping:
the output buffer, the divergence checks at output times (``diagnose``, normally the policy of
theory.solver.divergence), status codes and messages, Ctrl-C, and the progress bar. A stepper owns the
stepping and reports, per call of :meth:`Stepper.advance`, the outputs it produced and the points
that failed:

- :class:`ScipyStepper`: any scipy ``OdeSolver`` ("DOP853", "RK45", "Radau", ...), one point;
- :class:`CompiledStepper`: the compiled DOP853 of theory.solver.dop853 on a compiled right-hand side,
  any number of points (a single curve, or every point of a sweep), each with its own time, step
  size and error control, a few output times per call, optionally spread over threads;
- :class:`BatchedStepper`: the same DOP853 in numpy, for right-hand sides that exist only in
  Python (the numerical expectations of rules without closed forms): all active points advance in
  one vectorised step (every stage is ONE call of the batched right-hand side). Points that stop
  leave the active set, which is compacted.

Both take exactly the steps scipy's DOP853 would take for each point, and fill the output times
with DOP853's 7th-order dense output.

Status codes, as in scipy's solve_ivp: 0 finished, 1 interrupted (Ctrl-C; what was recorded is
kept), -1 diverged (the message says when and why), -2 solver failure: a step size below
``H_FLOOR`` times the integration interval, or more than ``max_steps`` (default ``MAX_STEPS``)
accepted steps for one point; both stop a stiff or runaway run (a learning rate far too large)
within seconds instead of letting it crawl. A point's failure never stops the others.

A right-hand side that is non-finite (NaN or inf, e.g. from a rule's update) is a divergence
(-1), never an exception: at the initial state it stops the point at once; during a step, a
non-finite trial stage is rejected and the step shrunk, and the point stops when the step falls
below the smallest step. The message says when and which derivatives (``rhs_check``, normally
:meth:`theory.solver.divergence.StateCheck.derivative`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable

import numpy as np

from .._codegen.rule import function_pointer
from . import divergence as _divergence
from . import dop853 as _dop853  # its kernel is looked up at call time, _dop853.dop853_segment (tests replace it)
from .dop853 import DENSE_A, DENSE_C, DENSE_D, DOP853, MAX_FACTOR, MIN_FACTOR, SAFETY, _combine, initial_steps

__all__ = ["BatchSolution", "drive", "drive_segments", "solve_batched", "Stepper", "ScipyStepper", "CompiledStepper",
           "BatchedStepper"]

#: output times per call of the compiled stepper: Ctrl-C and the progress bar act between calls
SEGMENT = 8
#: blocks of points per thread in one call of the compiled stepper (threads take them as they free up)
BLOCKS_PER_THREAD = 8
#: accepted steps of one point before a stepper gives up ("too many steps"); a K = M = 2 learning curve to
#: t = 1000 takes ~300, to t = 1e6 under 1/t annealing ~700
MAX_STEPS = 50_000
#: the smallest step, relative to the integration interval (below it: "step size too small")
H_FLOOR = 1e-12


def _too_many(t, max_steps) -> str:
    return (f"solver failure at t = {t:.6g}: too many steps ({max_steps} accepted; the ODE is stiff or running away, "
            "e.g. a learning rate far too large; raise max_steps to go on)")


def _too_small(t, floor) -> str:
    return f"solver failure at t = {t:.6g}: step size too small (below {floor:.3g}, {H_FLOOR:g} of the interval)"


def _diverged(t, why) -> str:
    return f"diverged at t = {t:.6g} (steps/D): {why}"


@dataclasses.dataclass(frozen=True, eq=False)
class BatchSolution:
    """What :func:`drive` returns.

    y : (B, len(t), n) states at the output times, NaN after a point stopped.
    n_recorded : (B,) number of output times reached by each point.
    status : (B,) see the module docstring. message : list of B strings. nfev : (B,) right-hand-side
    evaluations spent on each point. n_steps : (B,) accepted steps. n_calls : right-hand-side calls.
    """

    t: np.ndarray
    y: np.ndarray
    n_recorded: np.ndarray
    status: np.ndarray
    message: list
    nfev: np.ndarray
    n_steps: np.ndarray
    n_calls: int


@dataclasses.dataclass
class Advance:
    """What one call of :meth:`Stepper.advance` produced.

    outputs : list of (points (k,), output indices (k,), states (k, n)), in increasing time per point.
    failures : list of (point, status, message).
    """

    outputs: list = dataclasses.field(default_factory=list)
    failures: list = dataclasses.field(default_factory=list)


class Stepper(abc.ABC):
    """Advances the active points of a batch (see the module docstring)."""

    @abc.abstractmethod
    def start(self, y0: np.ndarray, points: np.ndarray, t: np.ndarray, step_check: Callable,
              rhs_check: Callable | None = None) -> None:
        """Begin at (t[0], y0) for the given points; step_check(y, points) -> [None | why] after each step;
        rhs_check(dy) -> [None | why] names the non-finite derivatives of the rows of dy (default: by index)."""

    @abc.abstractmethod
    def advance(self) -> Advance:
        """Do some work (a step, or a segment of steps) on the active points."""

    @abc.abstractmethod
    def drop(self, points: np.ndarray) -> None:
        """Stop advancing these points (finished, diverged or failed)."""

    @abc.abstractmethod
    def now(self) -> float:
        """The earliest current time of the active points (for the progress bar)."""

    def counts(self, B: int):
        """(nfev (B,), n_steps (B,), n_calls)."""
        return self.nfev, self.n_steps, self.n_calls


def _records(y0: np.ndarray, nt: int):
    """The outputs of a run of the rows of y0 (B, n) over nt times, before it starts: Y (B, nt, n) NaN but
    for the initial states, one recorded time each, status 0 and message "finished"."""
    Bn, n = y0.shape
    Y = np.full((Bn, nt, n), np.nan)
    Y[:, 0] = y0
    return Y, np.ones(Bn, dtype=np.int64), np.zeros(Bn, dtype=int), ["finished"] * Bn


def drive(stepper: Stepper, y0: np.ndarray, t: np.ndarray, *,
          diagnose: Callable[[np.ndarray, np.ndarray, bool], list] | None = None, rhs_check: Callable | None = None,
          progress: bool = False, desc: str = "ODE") -> BatchSolution:
    """Integrate every row of y0 (B, n) through the output times t with ``stepper``.

    diagnose(y, idx, at_output) returns, for each row of y (points idx), None when the state is
    healthy or a string saying why it diverged; at_output tells that y sits on an output time
    (where more expensive checks, e.g. positive semi-definiteness, may run). rhs_check(dy) says,
    per row of derivatives dy, None or which are non-finite (default: ``diagnose.derivative`` when
    it has one, theory.solver.divergence.StateCheck). Ctrl-C stops the run: points not finished get
    status 1 and keep what was recorded.
    """
    y0 = np.asarray(y0, dtype=float)
    if y0.ndim != 2:
        raise ValueError(f"drive: y0 must be (B, n), got shape {y0.shape}")
    t = np.asarray(t, dtype=float)
    Bn, n = y0.shape
    nt = t.size
    Y, n_rec, status, message = _records(y0, nt)
    check = diagnose or (lambda y, idx, at_output: [None] * len(y))
    rhs_check = rhs_check or getattr(diagnose, "derivative", None) or _divergence.nonfinite_derivative
    for j, w in enumerate(check(y0, np.arange(Bn), True)):
        if w is not None:
            status[j], message[j] = -1, _diverged(t[0], w)
    live = np.nonzero(status == 0)[0]
    if nt == 1 or live.size == 0:
        return BatchSolution(t, Y, n_rec, status, message, np.zeros(Bn, np.int64), np.zeros(Bn, np.int64), 0)

    bar = None
    if progress:
        from .._progress import time_bar

        bar = time_bar(float(t[-1] - t[0]), desc)  # t with 4 significant digits and its unit
    active = np.zeros(Bn, dtype=bool)
    active[live] = True
    try:
        stepper.start(y0[live], live, t, lambda y, idx: check(y, idx, False), rhs_check)
        while active.any():
            stop = _take(stepper.advance(), check, t, Y, n_rec, status, message, active)
            if stop:
                stepper.drop(np.asarray(stop))
            if bar is not None and active.any():
                bar.n = float(stepper.now() - t[0])
                bar.refresh()
    except KeyboardInterrupt:
        for p in np.nonzero(active)[0]:
            status[p], message[p] = 1, f"interrupted at t = {t[n_rec[p] - 1]:.6g} (last recorded time)"
    finally:
        if bar is not None:
            bar.close()
    nfev, n_steps, n_calls = stepper.counts(Bn)
    return BatchSolution(t, Y, n_rec, status, message, nfev, n_steps, n_calls)


def _take(adv: Advance, check, t, Y, n_rec, status, message, active) -> list:
    """Record what one call of a stepper produced: its outputs, checked at the output times (a diverged
    one stops its point), then its failures; updates Y, n_rec, status, message and active in place and
    returns the points that stopped (finished, diverged or failed)."""
    nt = t.size
    stop = []
    for pts, idx, ys in adv.outputs:  # before the failures: what a point produced before it stopped is kept
        keep = active[pts]
        pts, idx, ys = pts[keep], idx[keep], ys[keep]
        if pts.size == 0:
            continue
        # a point's outputs come in time order; those after its first diverged one are dropped
        first_bad: dict = {}
        for r, w in enumerate(check(ys, pts, True)):
            if w is not None and int(pts[r]) not in first_bad:
                first_bad[int(pts[r])] = (r, w)
        ok = np.ones(pts.size, dtype=bool)
        if first_bad:
            cut = np.full(Y.shape[0], pts.size)
            for p, (r, _) in first_bad.items():
                cut[p] = r
            ok = np.arange(pts.size) < cut[pts]
        Y[pts[ok], idx[ok]] = ys[ok]
        np.maximum.at(n_rec, pts[ok], idx[ok] + 1)
        for p, (r, w) in first_bad.items():
            status[p], message[p], active[p] = -1, _diverged(t[idx[r]], w), False
            stop.append(p)
        for p in np.unique(pts[ok][n_rec[pts[ok]] == nt]):
            if active[p]:
                active[p] = False
                stop.append(p)
    for p, code, msg in adv.failures:
        if active[p]:
            status[p], message[p], active[p] = code, msg, False
            stop.append(p)
    return stop


# ====================================================================== steppers
def _nonfinite_rows(f, points, t0, rhs_check) -> list:
    """Failures (point, -1, message) of the rows of f (derivatives at the initial states) that are not finite."""
    rows = np.nonzero(~np.all(np.isfinite(f), axis=-1))[0]
    return [(points[r], -1, _diverged(t0, rhs_check(f[r][None])[0])) for r in rows]


def _shrunk_away(rhs_check, dy, h) -> str:
    """Why a point stopped whose trial steps kept giving non-finite values down to the smallest step h;
    dy: derivatives of those trial steps (non-finite where they were), or None."""
    what = rhs_check(np.where(np.isfinite(dy), 0.0, np.nan)[None])[0] if dy is not None else None
    what = what or "the right-hand side became non-finite"
    return f"{what}, next to this state: every trial step down to the smallest ({h:.3g}) met non-finite values"


class ScipyStepper(Stepper):
    """One point, stepped by a scipy ``OdeSolver`` class on ``fun(t, y) -> dy/dt``."""

    def __init__(self, solver_cls, fun: Callable[[np.ndarray], np.ndarray], *, rtol: float, atol: float,
                 max_steps: int = MAX_STEPS):
        self.solver_cls, self.fun, self.rtol, self.atol, self.max_steps = solver_cls, fun, rtol, atol, max_steps

    def start(self, y0, points, t, step_check, rhs_check=None):
        if len(points) != 1:
            raise ValueError("ScipyStepper integrates one point")
        self.point, self.t, self.check, self.i = int(points[0]), t, step_check, 1
        self.rhs_check = rhs_check or _divergence.nonfinite_derivative
        self.nfev, self.n_steps, self.n_calls = np.zeros(1, np.int64), np.zeros(1, np.int64), 0
        self.pending = None

        def f(t_, y):
            with np.errstate(all="ignore"):
                dy = self.fun(t_, y)
            if not np.all(np.isfinite(dy)):
                raise _NonFinite(t_, y, dy)
            return dy

        self.floor = H_FLOOR * (t[-1] - t[0])
        try:
            self.solver = self.solver_cls(f, t[0], y0[0], t[-1], rtol=self.rtol, atol=self.atol)
        except _NonFinite as exc:  # at the initial state (or the starting step's probe): reported by advance
            self.solver, self.pending = None, self._failure(exc)

    def _failure(self, exc):
        why = self.check(np.asarray(exc.y, float)[None], np.array([self.point]))[0]
        return self.point, -1, _diverged(exc.t, why or self.rhs_check(np.asarray(exc.dy, float)[None])[0])

    def advance(self):
        sv, p, t = self.solver, self.point, self.t
        adv = Advance()
        if sv is None:
            adv.failures.append(self.pending)
            return adv
        try:
            with np.errstate(all="ignore"):
                msg = sv.step()
        except _NonFinite as exc:
            adv.failures.append(self._failure(exc))
            return adv
        finally:
            self.nfev[0] = sv.nfev
        if sv.status == "failed":
            adv.failures.append((p, -2, f"solver failure at t = {sv.t:.6g}: {msg}"))
            return adv
        self.n_steps[0] += 1
        if sv.status == "running" and sv.step_size is not None and sv.step_size < self.floor:
            adv.failures.append((p, -2, _too_small(sv.t, self.floor)))
            return adv
        if self.n_steps[0] > self.max_steps:
            adv.failures.append((p, -2, _too_many(sv.t, self.max_steps)))
            return adv
        why = self.check(sv.y[None], np.array([p]))[0]
        if why is not None:
            adv.failures.append((p, -1, _diverged(sv.t, why)))
            return adv
        first = self.i
        while self.i < t.size and t[self.i] <= sv.t:
            self.i += 1
        if self.i > first:
            dense = sv.dense_output()
            ys = np.stack([dense(t[j]) for j in range(first, self.i)])
            adv.outputs.append((np.full(self.i - first, p), np.arange(first, self.i), ys))
        return adv

    def drop(self, points):
        pass

    def now(self):
        return float(self.t[0] if self.solver is None else self.solver.t)

    def counts(self, B):
        nfev = np.zeros(B, np.int64)
        steps = np.zeros(B, np.int64)
        nfev[self.point], steps[self.point] = self.nfev[0], self.n_steps[0]
        return nfev, steps, int(self.nfev[0])


class _NonFinite(Exception):
    def __init__(self, t, y, dy):
        super().__init__("non-finite right-hand side")
        self.t, self.y, self.dy = t, y, dy


#: CompiledStepper's status of a point whose right-hand side is non-finite at its initial state (not stepped)
_NONFINITE_START = -5


class CompiledStepper(Stepper):
    """B points stepped by the compiled DOP853 of theory.solver.dop853 on a compiled ``rhs(t, y, p, dy)``.

    ``p`` holds the parameter row of each point (B, len(p)), or one row for all. Each point has its
    own time, step size and error control, exactly scipy's DOP853 steps with its dense output at the
    output times (the one stepper of single curves and of sweeps). A call of :meth:`advance` brings
    every point ``SEGMENT`` output times further in compiled calls over blocks of points
    (``BLOCKS_PER_THREAD`` per thread of ``pool``, a ThreadPoolExecutor whose threads take the blocks as they
    free up; the compiled code releases the GIL and the points are independent, so results depend neither on
    the thread count nor on the blocks); Ctrl-C and the progress
    bar act between calls. ``watch`` are the indices of y that the divergence policy bounds
    (|Q_kk|, |S_k|, |v_k|): checked after every step against theory.solver.divergence.BLOWUP.
    """

    def __init__(self, rhs, p: np.ndarray, watch: np.ndarray, *, rtol: float, atol: float, max_steps: int = MAX_STEPS,
                 pool=None, segment: int = SEGMENT):
        self.py_rhs, self.rhs, self.rtol, self.atol = rhs, function_pointer(rhs), rtol, atol
        self.p = np.ascontiguousarray(np.atleast_2d(np.asarray(p, dtype=float)))
        self.watch = np.ascontiguousarray(watch, dtype=np.int64)
        self.max_steps, self.pool, self.segment = int(max_steps), pool, int(segment)

    def _rows(self, tt, yy, idx):
        out = np.empty_like(yy)
        for r, i in enumerate(idx):
            self.py_rhs(float(tt[r]), np.ascontiguousarray(yy[r]), self.p[i if len(self.p) > 1 else 0], out[r])
        return out

    def start(self, y0, points, t, step_check, rhs_check=None):
        self.points, self.t = np.asarray(points), t
        self.rhs_check = rhs_check or _divergence.nonfinite_derivative
        b = len(self.points)
        if len(self.p) not in (1, b):
            raise ValueError(f"CompiledStepper: {len(self.p)} parameter rows for {b} points")
        if len(self.p) == 1 and b > 1:
            self.p = np.ascontiguousarray(np.repeat(self.p, b, axis=0))
        self.y = np.array(y0, dtype=float, order="C")
        self.tc = np.full(b, float(t[0]))
        idx = np.arange(b)
        self.f = self._rows(self.tc, self.y, idx)
        with np.errstate(all="ignore"):
            self.h = initial_steps(lambda tt, yy: self._rows(tt, yy, idx), self.tc, self.y, self.f, self.rtol,
                                   self.atol, t[-1] - t[0], DOP853.error_order)
        self.h = np.ascontiguousarray(self.h, dtype=float)
        self.floor = H_FLOOR * (t[-1] - t[0])
        self.iout = np.ones(b, np.int64)  # output times computed (in self.Y)
        self.sent = np.ones(b, np.int64)  # output times reported to the driver
        self.code = np.zeros(b, np.int64)
        self.code[~np.all(np.isfinite(self.f), axis=-1)] = _NONFINITE_START  # the kernel skips them
        self.alive = np.ones(b, dtype=bool)
        self.Y = np.empty((b, t.size, self.y.shape[1]))
        self.nfev_, self.steps_ = np.full(b, 2, np.int64), np.zeros(b, np.int64)

    def _call(self, stop, lo, hi):
        try:
            _dop853.dop853_segment(self.rhs, self.p, self.y, self.tc, self.h, self.f, self.iout, stop, self.nfev_,
                                   self.steps_, self.code, self.Y, self.t, lo, hi, self.rtol, self.atol,
                                   float(_divergence.BLOWUP), self.watch, self.max_steps, self.floor, *_dop853.COEFFS)
        except SystemError as exc:  # Ctrl-C while numba's dispatcher returns: the interrupt, wrapped
            if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise

    def advance(self):
        b, nt = len(self.points), self.t.size
        stop = np.where(self.alive, np.minimum(self.sent + self.segment, nt), self.sent).astype(np.int64)
        workers = 1 if self.pool is None else self.pool._max_workers
        if workers == 1 or b < 2 * workers:
            self._call(stop, 0, b)
        else:
            # more blocks than threads, taken as threads free up: points differ in work (a plateau, a runaway),
            # so equal halves left one thread idle (1,000 bp curves on 2 threads: 1.3x, not 2x, over one)
            cuts = np.unique(np.linspace(0, b, BLOCKS_PER_THREAD * workers + 1).astype(int))
            for fu in [self.pool.submit(self._call, stop, lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:])]:
                fu.result()
        adv = Advance()
        got = np.minimum(self.iout, stop)
        rows = np.nonzero(self.alive & (got > self.sent))[0]
        if rows.size:
            counts = got[rows] - self.sent[rows]
            which = np.repeat(rows, counts)
            idx = np.concatenate([np.arange(self.sent[r], got[r]) for r in rows])
            adv.outputs.append((self.points[which], idx, self.Y[which, idx]))
            self.sent[rows] = got[rows]
        for r in np.nonzero(self.alive & (self.code != 0))[0]:
            code, tc = int(self.code[r]), float(self.tc[r])
            why = None
            if code == -1:
                why = self._nonfinite(r)
            elif code == _NONFINITE_START:
                why = self.rhs_check(self.f[r][None])[0]
            elif code == -3:
                why = f"order parameters exploded (max |Q_kk|, |v_k|, |S_k| > {_divergence.BLOWUP:g})"
            if why is not None:
                adv.failures.append((self.points[r], -1, _diverged(tc, why)))
            else:
                msg = _too_small(tc, self.floor) if code == -2 else _too_many(tc, self.max_steps)
                adv.failures.append((self.points[r], -2, msg))
        return adv

    def _nonfinite(self, r) -> str | None:
        """Why point r stopped with the kernel's status -1 (non-finite values): the state, or the right-hand
        side at it, or only the trial steps from it (down to the smallest step)."""
        y = self.y[r]
        if not np.all(np.isfinite(y)):
            return "non-finite order parameters"
        with np.errstate(all="ignore"):
            dy = self._rows(self.tc[r : r + 1], y[None], [r])[0]
            why = self.rhs_check(dy[None])[0]
            if why is not None:
                return why
            # the trial stages met the non-finite values (the kernel keeps none): probe along dy to name them
            for s in self.floor * 10.0 ** np.arange(0, 13):
                probe = self._rows(self.tc[r : r + 1] + s, (y + s * dy)[None], [r])[0]
                if not np.all(np.isfinite(probe)):
                    return _shrunk_away(self.rhs_check, probe, self.floor)
        return _shrunk_away(self.rhs_check, None, self.floor)

    def drop(self, points):
        self.alive &= ~np.isin(self.points, points)
        # the kernel skips them
        self.code[~self.alive] = np.where(self.code[~self.alive] == 0, 1, self.code[~self.alive])

    def now(self):
        live = self.tc[self.alive]
        return float(live.min()) if live.size else float(self.t[-1])

    def counts(self, B):
        nfev = np.zeros(B, np.int64)
        steps = np.zeros(B, np.int64)
        nfev[self.points], steps[self.points] = self.nfev_, self.steps_
        return nfev, steps, int(self.nfev_.sum())


class BatchedStepper(Stepper):
    """All active points in one vectorised DOP853 step (see the module docstring).

    subset(idx) returns the batched right-hand side of the points ``idx`` (an integer array): a
    function mapping their states (len(idx), n) to derivatives (len(idx), n); with
    ``time_dependent`` it also receives their times (len(idx),) as a second argument. It is called
    again only when the set of active points changes.
    """

    def __init__(self, subset: Callable[[np.ndarray], Callable], *, rtol: float, atol: float,
                 time_dependent: bool = False, max_steps: int = MAX_STEPS):
        self.subset, self.rtol, self.atol, self.time_dependent = subset, rtol, atol, time_dependent
        self.max_steps = int(max_steps)

    def _call(self, f, tt, yy, points):
        self.n_calls += 1
        self.nfev[points] += 1
        with np.errstate(all="ignore"):
            return f(yy, tt) if self.time_dependent else f(yy)

    def start(self, y0, points, t, step_check, rhs_check=None):
        B = int(points.max()) + 1
        self.nfev, self.n_steps, self.n_calls = np.zeros(B, np.int64), np.zeros(B, np.int64), 0
        self.t, self.check = t, step_check
        self.rhs_check = rhs_check or _divergence.nonfinite_derivative
        self.act = np.asarray(points)
        self.y = np.array(y0, dtype=float)
        self.tc = np.full(self.act.size, t[0])
        self.iout = np.ones(self.act.size, dtype=np.int64)
        self.rej = np.zeros(self.act.size, dtype=bool)
        self.nonfin = np.zeros(self.act.size, dtype=bool)  # the last trial step gave non-finite values
        self.bad_dy = np.zeros(self.y.shape)  # NaN where the last non-finite trial step's stages were
        self.fun = self.subset(self.act)
        self.f = self._call(self.fun, self.tc, self.y, self.act)
        self.pending = _nonfinite_rows(self.f, self.act, t[0], self.rhs_check)  # reported by the first advance
        self.h = initial_steps(lambda tt, yy: self._call(self.fun, tt, yy, self.act), self.tc, self.y, self.f,
                               self.rtol, self.atol, t[-1] - t[0], DOP853.error_order)
        self.floor = H_FLOOR * (t[-1] - t[0])

    def counts(self, B):
        nfev = np.zeros(B, np.int64)
        steps = np.zeros(B, np.int64)
        nfev[: self.nfev.size], steps[: self.n_steps.size] = self.nfev, self.n_steps
        return nfev, steps, self.n_calls

    def now(self):
        return float(self.tc.min())

    def drop(self, points):
        keep = ~np.isin(self.act, points)
        if keep.all():
            return
        for name in ("act", "y", "f", "tc", "h", "rej", "nonfin", "bad_dy", "iout"):
            setattr(self, name, getattr(self, name)[keep])
        if self.act.size:
            self.fun = self.subset(self.act)

    def advance(self):
        """One DOP853 step of every active point: trial step, error control, the accepted points move on, the
        points that stop, then the output times passed (dense output)."""
        adv = Advance()
        if self.pending:  # non-finite right-hand sides at the initial states: stop those points first
            adv.failures, self.pending = self.pending, []
            return adv
        t_end = self.t[-1]
        tc = self.tc
        clipped = tc + self.h >= t_end
        hs = np.where(clipped, t_end - tc, self.h)
        min_step = np.maximum(self.floor, 10 * np.abs(np.nextafter(tc, np.inf) - tc))
        small = (hs < min_step) & ~(clipped & (hs > 0))
        Kst, y_new, f_new = self._trial(hs, clipped)
        ok = self._control(Kst, y_new, hs, small)
        nonfin_before = self._note_nonfinite(Kst, ok)
        t_old, y_old, f_old = self.tc, self.y, self.f
        self._accept(ok, clipped, hs, y_new, f_new)
        stop = self._stops(adv, ok, small, min_step, nonfin_before)
        t = self.t
        cross = ok & ~stop & (self.tc >= t[np.minimum(self.iout, t.size - 1)])
        if cross.any():
            sel = np.nonzero(cross)[0]
            F = self._interpolant(sel, Kst, hs, t_old, y_old, f_old)
            self._dense_outputs(adv, sel, F, hs, t_old, y_old)
        return adv

    def _trial(self, hs, clipped):
        """One DOP853 trial step of size hs from every active point: the stages Kst (s + 1, b, n), the trial
        states and their derivatives (the last stage; at t[-1] exactly for steps clipped to it)."""
        tab, act, y, tc = DOP853, self.act, self.y, self.tc
        b, n = y.shape
        s = len(tab.B)
        Kst = np.empty((s + 1, b, n))
        Kst[0] = self.f
        for i in range(1, s):
            dy = _combine(tab.A[i], Kst, i) * hs[:, None]
            Kst[i] = self._call(self.fun, tc + tab.C[i] * hs, y + dy, act)
        y_new = y + hs[:, None] * _combine(tab.B, Kst, s)
        f_new = self._call(self.fun, np.where(clipped, self.t[-1], tc + hs), y_new, act)
        Kst[s] = f_new
        return Kst, y_new, f_new

    def _control(self, Kst, y_new, hs, small):
        """DOP853's error control: which trial steps are accepted (error below 1 in units of the tolerance, finite,
        not below the smallest step); sets the next step sizes and which points were rejected."""
        tab, y, rtol, atol = DOP853, self.y, self.rtol, self.atol
        n = y.shape[1]
        s = len(tab.B)
        exponent = -1.0 / (tab.error_order + 1)
        with np.errstate(all="ignore"):
            sc = atol + np.maximum(np.abs(y), np.abs(y_new)) * rtol
            e5 = _combine(tab.E5, Kst, s + 1) / sc
            e3 = _combine(tab.E3, Kst, s + 1) / sc
            e5n, e3n = (e5 * e5).sum(-1), (e3 * e3).sum(-1)
            err = np.abs(hs) * e5n / np.sqrt((e5n + 0.01 * e3n) * n)
            err = np.where((e5n == 0) & (e3n == 0), 0.0, err)
            ok = (err < 1) & np.all(np.isfinite(y_new), axis=-1) & ~small
            fac = np.where(err == 0, MAX_FACTOR, np.minimum(MAX_FACTOR, SAFETY * err**exponent))
            fac = np.where(self.rej, np.minimum(1.0, fac), fac)
            fac_rej = np.maximum(MIN_FACTOR, np.where(np.isfinite(err), SAFETY * err**exponent, MIN_FACTOR))
        self.h = np.where(ok, hs * fac, hs * fac_rej)
        self.rej = ~ok
        return ok

    def _note_nonfinite(self, Kst, ok):
        """Remember the rejected trial steps that met non-finite stages (and where); returns the previous flags."""
        before = self.nonfin
        self.nonfin = ~ok & ~np.all(np.isfinite(Kst), axis=(0, 2))
        if self.nonfin.any():
            self.bad_dy[self.nonfin] = np.where(np.all(np.isfinite(Kst[:, self.nonfin]), axis=0), 0.0, np.nan)
        return before

    def _accept(self, ok, clipped, hs, y_new, f_new):
        """The accepted points move on to their trial states."""
        tc = self.tc
        self.tc = np.where(ok, np.where(clipped, self.t[-1], tc + hs), tc)
        self.y = np.where(ok[:, None], y_new, self.y)
        self.f = np.where(ok[:, None], f_new, self.f)
        self.n_steps[self.act] += ok

    def _stops(self, adv, ok, small, min_step, nonfin_before):
        """The points that stop after this step, their failures added to adv: a step below the smallest (a
        divergence when non-finite trial stages shrank it), too many steps, or a diverged accepted state."""
        act, tc, y = self.act, self.tc, self.y
        stop = np.zeros(len(act), dtype=bool)
        for j in np.nonzero(small)[0]:
            if nonfin_before[j]:  # shrunk because of non-finite trial stages: a divergence, not a solver failure
                why = _shrunk_away(self.rhs_check, self.bad_dy[j], min_step[j])
                adv.failures.append((act[j], -1, _diverged(tc[j], why)))
                continue
            adv.failures.append((act[j], -2, f"step size too small at t = {tc[j]:.6g} (steps/D)"))
        stop |= small
        many = ok & (self.n_steps[act] > self.max_steps)
        for j in np.nonzero(many & ~stop)[0]:
            adv.failures.append((act[j], -2, _too_many(tc[j], self.max_steps)))
        stop |= many
        if ok.any():
            idx = np.nonzero(ok)[0]
            for j, w in zip(idx, self.check(y[idx], act[idx])):
                if w is not None:
                    adv.failures.append((act[j], -1, _diverged(tc[j], w)))
                    stop[j] = True
        return stop

    def _interpolant(self, sel, Kst, hs, t_old, y_old, f_old):
        """The coefficients F of DOP853's 7th-order dense output over the steps just taken by the points sel
        (3 extra stages)."""
        s = len(DOP853.B)
        n = self.y.shape[1]
        act = self.act
        hh = hs[sel][:, None]
        Kx = np.concatenate([Kst[:, sel], np.empty((3, sel.size, n))])
        fsub = self.subset(act[sel])
        for i in range(s + 1, s + 4):
            dy = _combine(DENSE_A[i], Kx, i) * hh
            Kx[i] = self._call(fsub, t_old[sel] + DENSE_C[i] * hs[sel], y_old[sel] + dy, act[sel])
        dY = self.y[sel] - y_old[sel]
        F = [dY, hh * f_old[sel] - dY, 2 * dY - hh * (self.f[sel] + f_old[sel])]
        F += [hh * _combine(DENSE_D[m], Kx, s + 4) for m in range(DENSE_D.shape[0])]
        return F

    def _dense_outputs(self, adv, sel, F, hs, t_old, y_old):
        """The output times the points sel passed, from the dense output F, added to adv."""
        t, tc, y, iout, act = self.t, self.tc, self.y, self.iout, self.act
        nt, n = t.size, y.shape[1]
        while True:
            pending = (iout[sel] < nt) & (t[np.minimum(iout[sel], nt - 1)] <= tc[sel])
            if not pending.any():
                break
            rows = np.nonzero(pending)[0]
            jj = sel[rows]
            x = ((t[iout[jj]] - t_old[jj]) / hs[jj])[:, None]
            yo = np.zeros((rows.size, n))
            for m, Fm in enumerate(reversed(F)):
                yo += Fm[rows]
                yo *= x if m % 2 == 0 else (1 - x)
            yo += y_old[jj]
            yo = np.where(t[iout[jj]][:, None] == tc[jj][:, None], y[jj], yo)
            adv.outputs.append((act[jj], iout[jj].copy(), yo))
            iout[jj] += 1


def solve_batched(subset, y0, t, *, rtol: float = 1e-8, atol: float = 1e-10, diagnose=None, progress: bool = False,
                  desc: str = "sweep", time_dependent: bool = False) -> BatchSolution:
    """Integrate the B independent ODEs of ``subset`` (see :class:`BatchedStepper`) from the rows of y0
    through the output times t; ``diagnose`` as in :func:`drive`."""
    y0 = np.asarray(y0, dtype=float)
    if y0.ndim != 2:
        raise ValueError(f"solve_batched: y0 must be (B, n), got shape {y0.shape}")
    return drive(BatchedStepper(subset, rtol=rtol, atol=atol, time_dependent=time_dependent), y0, t, diagnose=diagnose,
                 progress=progress, desc=desc)


def drive_segments(stepper_on: Callable[[float, float, np.ndarray], Stepper], y0: np.ndarray, t: np.ndarray,
                   breaks=(), *, diagnose=None, progress: bool = False, desc: str = "ODE") -> BatchSolution:
    """:func:`drive`, stopping and restarting at the times ``breaks`` (where the right-hand side is not
    smooth, e.g. a learning-rate schedule jumps): stepper_on(a, b, points) gives the stepper of [a, b]
    for the points (rows of y0) still running.

    No adaptive step straddles a break; each interval starts with a fresh step-size estimate. Without
    breaks inside (t[0], t[-1]) this is exactly :func:`drive`.
    """
    t = np.asarray(t, dtype=float)
    inner = sorted({float(b) for b in breaks if t[0] < b < t[-1]})
    if not inner:
        return drive(stepper_on(t[0], t[-1], np.arange(len(y0))), y0, t, diagnose=diagnose, progress=progress,
                     desc=desc)
    y0 = np.asarray(y0, dtype=float)
    Bn, n = y0.shape
    nt = t.size
    Y, n_rec, status, message = _records(y0, nt)
    nfev, n_steps, n_calls = np.zeros(Bn, np.int64), np.zeros(Bn, np.int64), 0
    check = diagnose or (lambda y, idx, at_output: [None] * len(y))
    rhs_check = getattr(diagnose, "derivative", None)
    alive = np.arange(Bn)
    y_cur = y0.copy()
    edges = [float(t[0])] + inner + [float(t[-1])]
    for a, b in zip(edges[:-1], edges[1:]):
        outs = np.nonzero((t > a) & (t <= b))[0]
        seg_t = np.concatenate([[a], t[outs]])
        if seg_t[-1] < b:
            seg_t = np.append(seg_t, b)  # the break itself: where the next interval starts
        sol = drive(stepper_on(a, b, alive), y_cur[alive], seg_t, progress=progress, desc=f"{desc} [{a:g}, {b:g}]",
                    rhs_check=rhs_check,
                    diagnose=lambda y, idx, at_output, alive=alive: check(y, alive[idx], at_output))
        nfev[alive] += sol.nfev
        n_steps[alive] += sol.n_steps
        n_calls += sol.n_calls
        for j, p in enumerate(alive):
            m = min(int(sol.n_recorded[j]) - 1, outs.size)
            if m > 0:
                Y[p, outs[:m]] = sol.y[j, 1 : 1 + m]
                n_rec[p] = outs[m - 1] + 1
            if sol.status[j] != 0:
                status[p], message[p] = sol.status[j], sol.message[j]
            else:
                y_cur[p] = sol.y[j, seg_t.size - 1]
        if np.any(sol.status == 1):  # Ctrl-C: stop everything
            for p in alive[sol.status == 0]:
                status[p], message[p] = 1, f"interrupted at t = {t[n_rec[p] - 1]:.6g} (last recorded time)"
            break
        alive = alive[sol.status == 0]
        if alive.size == 0:
            break
    return BatchSolution(t, Y, n_rec, status, message, nfev, n_steps, n_calls)
