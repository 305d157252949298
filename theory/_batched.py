"""A batched adaptive Runge-Kutta integrator: many independent ODEs advanced in one vectorised step.

Each of the B points of a batch solves its own initial-value problem

    dy_i/dt = f_i(y_i),   y_i(t_0) = y0_i,   i = 1..B,

with the explicit Dormand-Prince 8(5,3) pair (DOP853, Hairer, Norsett & Wanner; coefficients and
error estimator as in scipy's ``solve_ivp(method="DOP853")``). All active points take one step
together: every stage is ONE call of the batched right-hand side on the (b, n) array of active
states. Each point keeps its own time, step size and error control:

    err_i = |h_i| ||e5_i||^2 / sqrt(n (||e5_i||^2 + 0.01 ||e3_i||^2)),  e_j = (E_j . K)_i / scale_i,
    scale_i = atol + rtol max(|y_i|, |y_i_new|),

a step is accepted when err_i < 1 and the next step is h_i min(10, 0.9 err_i^(-1/8)) (never growing
right after a rejection; shrinking at most to 0.2 h_i on rejection). The initial step follows
scipy's ``select_initial_step``. Output times in a step are filled by DOP853's 7th-order dense
output (3 extra stages, for the points concerned only), so each point takes exactly the steps
scipy's DOP853 would take. Points that finish, diverge or fail leave
the active set, which is compacted, so they cost nothing afterwards. A point's failure never
stops the others.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from scipy.integrate._ivp import dop853_coefficients as _dop

__all__ = ["BatchSolution", "solve_batched", "initial_steps", "DOP853"]


@dataclasses.dataclass(frozen=True)
class _Tableau:
    """An explicit embedded Runge-Kutta pair with a 3rd/5th-order error estimator (DOP853)."""

    A: np.ndarray  # (s, s) strictly lower triangular
    B: np.ndarray  # (s,)
    C: np.ndarray  # (s,)
    E3: np.ndarray  # (s + 1,) acting on the stages and the FSAL derivative
    E5: np.ndarray  # (s + 1,)
    error_order: int

    def __post_init__(self):
        s = len(self.B)
        if self.A.shape != (s, s) or self.C.shape != (s,) or self.E3.shape != (s + 1,) or self.E5.shape != (s + 1,):
            raise ValueError("Tableau: inconsistent shapes")
        if np.any(np.triu(self.A) != 0):
            raise ValueError("Tableau: A must be strictly lower triangular (explicit method)")
        if not np.allclose(self.A.sum(1), self.C, atol=1e-12):
            raise ValueError("Tableau: rows of A must sum to C")
        if not np.isclose(self.B.sum(), 1.0, atol=1e-12):
            raise ValueError("Tableau: B must sum to 1")


DOP853 = _Tableau(
    A=np.array(_dop.A[: _dop.N_STAGES, : _dop.N_STAGES], dtype=float),
    B=np.array(_dop.B, dtype=float),
    C=np.array(_dop.C[: _dop.N_STAGES], dtype=float),
    E3=np.array(_dop.E3, dtype=float),
    E5=np.array(_dop.E5, dtype=float),
    error_order=7,
)

SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0


@dataclasses.dataclass(frozen=True, eq=False)
class BatchSolution:
    """What :func:`solve_batched` returns.

    y : (B, len(t), n) states at the output times, NaN after a point stopped.
    n_recorded : (B,) number of output times reached by each point.
    status : (B,) 0 finished, 1 interrupted, -1 diverged (``diagnose`` said why), -2 step size too small.
    message : list of B strings. nfev : (B,) right-hand-side evaluations spent on each point.
    n_steps : (B,) accepted steps. n_calls : batched right-hand-side calls (all points together).
    """

    t: np.ndarray
    y: np.ndarray
    n_recorded: np.ndarray
    status: np.ndarray
    message: list
    nfev: np.ndarray
    n_steps: np.ndarray
    n_calls: int


def _combine(coef, Kst, upto):
    """sum_j coef[j] Kst[j] over the nonzero coefficients j < upto (cheaper than tensordot here)."""
    acc = None
    for j in range(upto):
        c = coef[j]
        if c != 0.0:
            acc = c * Kst[j] if acc is None else acc + c * Kst[j]
    return np.zeros_like(Kst[0]) if acc is None else acc


def _rms(x):
    return np.sqrt(np.mean(x * x, axis=-1))


def initial_steps(fun, y, f, rtol, atol, interval, error_order):
    """Starting step of each row of y (B, n), as scipy's ``select_initial_step`` (Hairer, Norsett & Wanner).

    fun maps states (B, n) to derivatives, f = fun(y); costs one more evaluation of fun.
    """
    scale = atol + np.abs(y) * rtol
    d0, d1 = _rms(y / scale), _rms(f / scale)
    h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.where(d1 > 0, d1, 1.0))
    h0 = np.minimum(h0, interval)
    f1 = fun(y + h0[:, None] * f)
    with np.errstate(all="ignore"):
        d2 = _rms((f1 - f) / scale) / h0
        h1 = np.where((d1 <= 1e-15) & (d2 <= 1e-15), np.maximum(1e-6, h0 * 1e-3),
                      (0.01 / np.maximum(d1, d2)) ** (1.0 / (error_order + 1)))
    h = np.minimum(np.minimum(100 * h0, h1), interval)
    return np.where(np.isfinite(h) & (h > 0), h, 1e-6)


def solve_batched(
    subset: Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]],
    y0: np.ndarray,
    t: np.ndarray,
    *,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    diagnose: Callable[[np.ndarray, np.ndarray, bool], list] | None = None,
    progress: bool = False,
    desc: str = "sweep",
) -> BatchSolution:
    """Integrate B independent ODEs from t[0] to t[-1], recording each at every time in ``t``.

    subset(idx) returns the batched right-hand side of the points ``idx`` (an integer array):
    a function mapping their states (len(idx), n) to derivatives (len(idx), n). It is called
    again only when the set of active points changes.
    diagnose(y, idx, at_output) returns, for each row of y (points idx), None when the state is
    healthy or a string saying why it diverged; at_output tells that y sits on an output time
    (where more expensive checks, e.g. positive semi-definiteness, may run).
    Ctrl-C stops the run: points not finished get status 1 and keep what was recorded.
    """
    tab = DOP853
    y0 = np.asarray(y0, dtype=float)
    if y0.ndim != 2:
        raise ValueError(f"solve_batched: y0 must be (B, n), got shape {y0.shape}")
    t = np.asarray(t, dtype=float)
    Bn, n = y0.shape
    nt = t.size
    Y = np.full((Bn, nt, n), np.nan)
    status = np.zeros(Bn, dtype=int)
    message = ["finished"] * Bn
    nfev = np.zeros(Bn, dtype=np.int64)
    n_steps = np.zeros(Bn, dtype=np.int64)
    n_rec = np.zeros(Bn, dtype=np.int64)
    n_calls = 0

    Y[:, 0] = y0
    n_rec[:] = 1
    act = np.arange(Bn)
    if diagnose is not None:
        why = diagnose(y0, act, True)
        for j, w in enumerate(why):
            if w is not None:
                status[j], message[j] = -1, f"diverged at t = {t[0]:.6g} (steps/D): {w}"
    if nt == 1:
        return BatchSolution(t, Y, n_rec, status, message, nfev, n_steps, n_calls)

    act = act[status[act] == 0]
    y = y0[act].copy()
    tc = np.full(act.size, t[0])
    iout = np.ones(act.size, dtype=np.int64)
    rej = np.zeros(act.size, dtype=bool)
    fun = subset(act)
    s = len(tab.B)
    exponent = -1.0 / (tab.error_order + 1)

    def call(f, yy):
        nonlocal n_calls
        n_calls += 1
        nfev[act] += 1
        with np.errstate(all="ignore"):
            return f(yy)

    f = call(fun, y)
    interval = t[-1] - t[0]
    h = initial_steps(lambda yy: call(fun, yy), y, f, rtol, atol, interval, tab.error_order)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=float(interval), desc=desc, unit="t", leave=False)

    Kst = np.empty((s + 1, act.size, n))
    t_end = t[-1]
    try:
        while act.size:
            b = act.size
            if Kst.shape[1] != b:
                Kst = np.empty((s + 1, b, n))
            clipped = tc + h >= t_end
            hs = np.where(clipped, t_end - tc, h)
            min_step = 10 * np.abs(np.nextafter(tc, np.inf) - tc)
            small = hs < min_step
            Kst[0] = f
            for i in range(1, s):
                dy = _combine(tab.A[i], Kst, i) * hs[:, None]
                Kst[i] = call(fun, y + dy)
            y_new = y + hs[:, None] * _combine(tab.B, Kst, s)
            f_new = call(fun, y_new)
            Kst[s] = f_new
            with np.errstate(all="ignore"):
                sc = atol + np.maximum(np.abs(y), np.abs(y_new)) * rtol
                e5 = _combine(tab.E5, Kst, s + 1) / sc
                e3 = _combine(tab.E3, Kst, s + 1) / sc
                e5n, e3n = (e5 * e5).sum(-1), (e3 * e3).sum(-1)
                err = np.abs(hs) * e5n / np.sqrt((e5n + 0.01 * e3n) * n)
                err = np.where((e5n == 0) & (e3n == 0), 0.0, err)
                ok = (err < 1) & np.all(np.isfinite(y_new), axis=-1) & ~small
                fac = np.where(err == 0, MAX_FACTOR, np.minimum(MAX_FACTOR, SAFETY * err**exponent))
                fac = np.where(rej, np.minimum(1.0, fac), fac)
                fac_rej = np.maximum(MIN_FACTOR, np.where(np.isfinite(err), SAFETY * err**exponent, MIN_FACTOR))
            h = np.where(ok, hs * fac, hs * fac_rej)
            rej = ~ok
            # accepted points move on
            t_old, y_old, f_old = tc, y, f
            tc = np.where(ok, np.where(clipped, t_end, tc + hs), tc)
            y = np.where(ok[:, None], y_new, y)
            f = np.where(ok[:, None], f_new, f)
            n_steps[act] += ok
            stop = np.zeros(b, dtype=bool)
            if small.any():
                for j in np.nonzero(small)[0]:
                    status[act[j]] = -2
                    message[act[j]] = f"step size too small at t = {tc[j]:.6g} (steps/D)"
                stop |= small
            if diagnose is not None and ok.any():
                idx = np.nonzero(ok)[0]
                why = diagnose(y[idx], act[idx], False)
                for j, w in zip(idx, why):
                    if w is not None:
                        status[act[j]], message[act[j]] = -1, f"diverged at t = {tc[j]:.6g} (steps/D): {w}"
                        stop[j] = True
            cross = ok & ~stop & (tc >= t[np.minimum(iout, nt - 1)])
            if cross.any():
                # DOP853 dense output (7th order, 3 extra stages) on the points that passed output times
                sel = np.nonzero(cross)[0]
                hh = hs[sel][:, None]
                Kx = np.concatenate([Kst[:, sel], np.empty((3, sel.size, n))])
                fsub = subset(act[sel])
                for i in range(s + 1, s + 4):
                    dy = _combine(_dop.A[i], Kx, i) * hh
                    with np.errstate(all="ignore"):
                        Kx[i] = fsub(y_old[sel] + dy)
                    n_calls += 1
                    nfev[act[sel]] += 1
                dY = y[sel] - y_old[sel]
                F = [dY, hh * f_old[sel] - dY, 2 * dY - hh * (f[sel] + f_old[sel])]
                F += [hh * _combine(_dop.D[m], Kx, s + 4) for m in range(_dop.D.shape[0])]
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
                    if diagnose is not None:
                        why = diagnose(yo, act[jj], True)
                        bad = np.array([w is not None for w in why])
                        for r, w in zip(rows[bad], np.asarray(why, dtype=object)[bad]):
                            j = sel[r]
                            status[act[j]], message[act[j]] = -1, f"diverged at t = {t[iout[j]]:.6g} (steps/D): {w}"
                            stop[j] = True
                            iout[j] = nt  # no more outputs for this point
                        rows, jj, yo = rows[~bad], jj[~bad], yo[~bad]
                    Y[act[jj], iout[jj]] = yo
                    n_rec[act[jj]] = iout[jj] + 1
                    iout[jj] += 1
                stop |= ok & (iout >= nt)
            if stop.any():
                keep = ~stop
                act, y, f, tc, h, rej, iout = act[keep], y[keep], f[keep], tc[keep], h[keep], rej[keep], iout[keep]
                if act.size:
                    fun = subset(act)
            if bar is not None and act.size:
                bar.n = float(tc.min() - t[0])
                bar.refresh()
    except KeyboardInterrupt:
        for j in act:
            status[j], message[j] = 1, f"interrupted at t = {t[n_rec[j] - 1]:.6g} (last recorded time)"
    finally:
        if bar is not None:
            bar.close()
    return BatchSolution(t, Y, n_rec, status, message, nfev, n_steps, n_calls)
