"""The Dormand-Prince 8(5,3) pair (DOP853): its tableau, the starting step, and a compiled stepper.

Coefficients, error estimator and step-size control are scipy's (``solve_ivp(method="DOP853")``,
Hairer, Norsett & Wanner):

    err = |h| ||e5||^2 / sqrt(n (||e5||^2 + 0.01 ||e3||^2)),  e_j = (E_j . K) / scale,
    scale = atol + rtol max(|y|, |y_new|),

a step is accepted when err < 1 and the next step is h min(10, 0.9 err^(-1/8)) (never growing
right after a rejection; shrinking at most to 0.2 h on rejection).

:func:`dop853_segment` runs this method for one curve entirely in numba, on any compiled
right-hand side ``rhs(t, y, p, dy)`` passed as a first-class function (theory._compiled), so a K = M = 2
learning curve costs milliseconds instead of scipy's per-step Python overhead. Output times are hit
exactly (the step is clipped to the next one). It is the compiled stepper of theory._driver,
called a few output times at a time so that progress bars and Ctrl-C keep working; tests hold it
against the scipy path. The batched numpy stepper of theory._driver uses the same tableau.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.integrate._ivp import dop853_coefficients as _dop

try:
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    numba = None
    HAVE_NUMBA = False

__all__ = ["DOP853", "initial_steps", "dop853_segment", "COEFFS", "SAFETY", "MIN_FACTOR", "MAX_FACTOR"]


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


def initial_steps(fun, t0, y, f, rtol, atol, interval, error_order):
    """Starting step of each row of y (B, n), as scipy's ``select_initial_step`` (Hairer, Norsett & Wanner).

    fun(t, y) maps times (B,) and states (B, n) to derivatives, f = fun(t0, y); costs one more
    evaluation of fun.
    """
    scale = atol + np.abs(y) * rtol
    d0, d1 = _rms(y / scale), _rms(f / scale)
    h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.where(d1 > 0, d1, 1.0))
    h0 = np.minimum(h0, interval)
    f1 = fun(t0 + h0, y + h0[:, None] * f)
    with np.errstate(all="ignore"):
        d2 = _rms((f1 - f) / scale) / h0
        h1 = np.where((d1 <= 1e-15) & (d2 <= 1e-15), np.maximum(1e-6, h0 * 1e-3),
                      (0.01 / np.maximum(d1, d2)) ** (1.0 / (error_order + 1)))
    h = np.minimum(np.minimum(100 * h0, h1), interval)
    return np.where(np.isfinite(h) & (h > 0), h, 1e-6)



# the tableau as contiguous arrays for numba
_NS = len(DOP853.B)
COEFFS = tuple(np.ascontiguousarray(x) for x in (DOP853.A, DOP853.B, DOP853.C, DOP853.E3, DOP853.E5))
EXPONENT = -1.0 / (DOP853.error_order + 1)
#: extra stages (their A rows and C nodes) and interpolation coefficients of DOP853's 7th-order dense output
DENSE_A, DENSE_C, DENSE_D = _dop.A, _dop.C, _dop.D


def _segment(rhs, p, y0, t0, h0, t_out, rtol, atol, blowup, watch, max_steps, h_floor, A, B, C, E3, E5):
    """Integrate dy/dt = rhs(t, y, p) from (t0, y0) through the times t_out; returns
    (Y, n_done, t, y, h, nfev, status, steps).

    status 0: all of t_out reached; -1: non-finite values; -2: step size below max(h_floor, 10 ulp(t));
    -3: |y[watch]| exceeded blowup (theory._divergence); -4: more than max_steps accepted steps.
    """
    n = y0.size
    Y = np.empty((t_out.size, n))
    Ks = np.empty((_NS + 1, n))
    y = y0.copy()
    t = t0
    h_abs = h0
    f = np.empty(n)
    rhs(t, y, p, f)
    nfev = 1
    steps = 0
    i = 0
    while i < t_out.size and t_out[i] <= t:
        Y[i] = y
        i += 1
    while i < t_out.size:
        if steps >= max_steps:
            return Y, i, t, y, h_abs, nfev, -4, steps
        target = t_out[i]
        min_step = max(h_floor, 10.0 * np.abs(np.nextafter(t, np.inf) - t))
        rejected = False
        while True:
            if h_abs < min_step:
                return Y, i, t, y, h_abs, nfev, -2, steps
            h = h_abs
            t_new = t + h
            hit = False
            if t_new >= target:
                t_new = target
                hit = True
            h = t_new - t
            Ks[0] = f
            for s in range(1, _NS):
                dy = np.zeros(n)
                for j in range(s):
                    dy += A[s, j] * Ks[j]
                rhs(t + C[s] * h, y + h * dy, p, Ks[s])
            acc = np.zeros(n)
            for j in range(_NS):
                acc += B[j] * Ks[j]
            y_new = y + h * acc
            rhs(t_new, y_new, p, Ks[_NS])
            f_new = Ks[_NS].copy()
            nfev += _NS
            e5 = 0.0
            e3 = 0.0
            for q in range(n):
                sc = atol + max(abs(y[q]), abs(y_new[q])) * rtol
                a5 = 0.0
                a3 = 0.0
                for j in range(_NS + 1):
                    a5 += E5[j] * Ks[j, q]
                    a3 += E3[j] * Ks[j, q]
                e5 += (a5 / sc) ** 2
                e3 += (a3 / sc) ** 2
            if not (np.isfinite(e5) and np.isfinite(e3)):
                # non-finite trial stage: shrink the step and retry, fail below the minimum step
                h_abs *= MIN_FACTOR
                rejected = True
                if h_abs < min_step:
                    return Y, i, t, y, h_abs, nfev, -1, steps
                continue
            if e5 == 0.0 and e3 == 0.0:
                err = 0.0
            else:
                err = h * e5 / np.sqrt((e5 + 0.01 * e3) * n)
            if err < 1.0:
                factor = MAX_FACTOR if err == 0.0 else min(MAX_FACTOR, SAFETY * err**EXPONENT)
                if rejected:
                    factor = min(1.0, factor)
                if not hit:
                    h_abs *= factor
                else:
                    # a clipped step says little about the natural step: keep the larger one
                    h_abs = max(h_abs, h * factor)
                break
            h_abs *= max(MIN_FACTOR, SAFETY * err**EXPONENT)
            rejected = True
        steps += 1
        t = t_new
        y = y_new
        f = f_new
        big = 0.0
        for q in range(n):
            if not np.isfinite(y[q]):
                return Y, i, t, y, h_abs, nfev, -1, steps
        for q in watch:
            big = max(big, abs(y[q]))
        if big > blowup:
            return Y, i, t, y, h_abs, nfev, -3, steps
        while i < t_out.size and t_out[i] <= t:
            Y[i] = y
            i += 1
    return Y, i, t, y, h_abs, nfev, 0, steps


if HAVE_NUMBA:
    from ._compiled import RHS_TYPE

    _A1, _A2 = numba.float64[::1], numba.float64[:, ::1]
    dop853_segment = numba.njit(
        numba.types.Tuple((_A2, numba.int64, numba.float64, _A1, numba.float64, numba.int64, numba.int64, numba.int64))(
            RHS_TYPE, _A1, _A1, numba.float64, numba.float64, _A1, numba.float64, numba.float64, numba.float64,
            numba.int64[::1], numba.int64, numba.float64, _A2, _A1, _A1, _A1, _A1),
        cache=True, error_model="numpy")(_segment)
else:  # pragma: no cover
    dop853_segment = None
