"""The Dormand-Prince 8(5,3) pair (DOP853): its tableau, the starting step, and a compiled stepper.

Coefficients, error estimator and step-size control are scipy's (``solve_ivp(method="DOP853")``,
Hairer, Norsett & Wanner):

    err = |h| ||e5||^2 / sqrt(n (||e5||^2 + 0.01 ||e3||^2)),  e_j = (E_j . K) / scale,
    scale = atol + rtol max(|y|, |y_new|),

a step is accepted when err < 1 and the next step is h min(10, 0.9 err^(-1/8)) (never growing
right after a rejection; shrinking at most to 0.2 h on rejection).

:func:`dop853_segment` runs this method for one curve entirely in numba, on any compiled
right-hand side ``rhs(t, y, p, dy)`` passed as a first-class function (theory._codegen.rule), so a K = M = 2
learning curve costs milliseconds instead of scipy's per-step Python overhead. Output times are hit
exactly (the step is clipped to the next one). It is the compiled stepper of theory.solver.driver,
called a few output times at a time so that progress bars and Ctrl-C keep working; tests hold it
against the scipy path. The batched numpy stepper of theory.solver.driver uses the same tableau.
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

__all__ = ["DOP853", "initial_steps", "dop853_segment", "COEFFS", "SAFETY", "MIN_FACTOR", "MAX_FACTOR"]  # noqa: F822 (compiled on first use, module __getattr__)


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
_NX = _dop.N_STAGES_EXTENDED  # the stages plus the FSAL derivative plus dense output's three
#: (A, B, C, E3, E5, D) of the extended tableau, as :func:`dop853_segment` takes them
COEFFS = tuple(np.ascontiguousarray(x, dtype=float) for x in (_dop.A, DOP853.B, _dop.C, DOP853.E3, DOP853.E5, _dop.D))
EXPONENT = -1.0 / (DOP853.error_order + 1)
#: extra stages (their A rows and C nodes) and interpolation coefficients of DOP853's 7th-order dense output
DENSE_A, DENSE_C, DENSE_D = _dop.A, _dop.C, _dop.D


def _ahead(y, h, coef, Ks, upto, out):
    """out = y + h sum_{j<upto} coef[j] Ks[j]: j outer, q inner, so the same sums in the same order per q as one
    accumulator per q, but the inner loop runs along a row of Ks and vectorises."""
    n = y.size
    for q in range(n):
        out[q] = 0.0
    for j in range(upto):
        c = coef[j]
        for q in range(n):
            out[q] += c * Ks[j, q]
    for q in range(n):
        out[q] = y[q] + h * out[q]


if HAVE_NUMBA:
    _ahead = numba.njit(cache=True, inline="always", error_model="numpy")(_ahead)


def _stages(rhs, p, t, h, y, Ks, tmp, A, C, first, last):
    """Stages first..last-1 of the (extended) tableau: Ks[s] = rhs(t + C[s] h, y + h sum_{j<s} A[s, j] Ks[j])."""
    for st in range(first, last):
        _ahead(y, h, A[st], Ks, st, tmp)
        rhs(t + C[st] * h, tmp, p, Ks[st])


if HAVE_NUMBA:
    _stages = numba.njit(cache=True, inline="always", error_model="numpy")(_stages)


def _advance(rhs, Pm, Y, T, H, F, IOUT, STOP, NFEV, NSTEP, STATUS, Yout, t_out, lo, hi, rtol, atol, blowup, watch,
             max_steps, h_floor, A, B, C, E3, E5, DD):
    """Advance the points lo..hi-1 of a batch, each with its own step size and error control, until
    point i has its outputs up to index STOP[i] (exclusive) or stops.

    Per point i: state Y[i] at time T[i] with derivative F[i] and next step size H[i]; IOUT[i] is the
    number of output times already in Yout[i] (outputs a step passes beyond STOP[i] are kept there
    too: the stepping never depends on STOP). Steps are scipy's DOP853 steps (clipped only at the
    last output time) and the outputs its 7th-order dense output. NFEV, NSTEP count evaluations and
    accepted steps. STATUS[i] 0: running or done; -1: non-finite values; -2: step size below
    max(h_floor, 10 ulp(t)); -3: |y[watch]| exceeded blowup (theory.solver.divergence); -4: more than
    max_steps accepted steps. The points are independent: any split of lo..hi over threads gives the
    same results (nogil).
    """
    n = Y.shape[1]
    nt = t_out.size
    t_end = t_out[nt - 1]
    nd = DD.shape[0]
    Ks = np.empty((_NX, n))
    ynew = np.empty(n)
    tmp = np.empty(n)
    Fd = np.empty((3 + nd, n))
    for i in range(lo, hi):
        if STATUS[i] != 0:
            continue
        p = Pm[i]
        y = Y[i]
        f = F[i]
        t = T[i]
        h_abs = H[i]
        while IOUT[i] < STOP[i]:
            if NSTEP[i] >= max_steps:
                STATUS[i] = -4
                break
            min_step = max(h_floor, 10.0 * np.abs(np.nextafter(t, np.inf) - t))
            rejected = False
            accepted = False
            h = 0.0
            t_new = t
            while True:
                if h_abs < min_step:
                    STATUS[i] = -2
                    break
                t_new = t + h_abs
                if t_new > t_end:
                    t_new = t_end
                h = t_new - t
                h_abs = abs(h)
                for q in range(n):
                    Ks[0, q] = f[q]
                _stages(rhs, p, t, h, y, Ks, tmp, A, C, 1, _NS)
                _ahead(y, h, B, Ks, _NS, ynew)
                rhs(t_new, ynew, p, Ks[_NS])
                NFEV[i] += _NS
                e5 = 0.0
                e3 = 0.0
                for q in range(n):
                    sc = atol + max(abs(y[q]), abs(ynew[q])) * rtol
                    a5 = 0.0
                    a3 = 0.0
                    for j in range(_NS + 1):
                        a5 += E5[j] * Ks[j, q]
                        a3 += E3[j] * Ks[j, q]
                    e5 += (a5 / sc) ** 2
                    e3 += (a3 / sc) ** 2
                if not (np.isfinite(e5) and np.isfinite(e3)):
                    # a non-finite trial stage: shrink the step and retry (fails below the minimum step)
                    h_abs *= MIN_FACTOR
                    rejected = True
                    if h_abs < min_step:
                        STATUS[i] = -1
                        break
                    continue
                if e5 == 0.0 and e3 == 0.0:
                    err = 0.0
                else:
                    err = h_abs * e5 / np.sqrt((e5 + 0.01 * e3) * n)
                if err < 1.0:
                    factor = MAX_FACTOR if err == 0.0 else min(MAX_FACTOR, SAFETY * err**EXPONENT)
                    if rejected:
                        factor = min(1.0, factor)
                    h_abs *= factor
                    accepted = True
                    break
                h_abs *= max(MIN_FACTOR, SAFETY * err**EXPONENT)
                rejected = True
            if not accepted:
                break
            NSTEP[i] += 1
            bad = False
            for q in range(n):
                if not np.isfinite(ynew[q]):
                    bad = True
            if bad:
                STATUS[i] = -1
            else:
                big = 0.0
                for q in watch:
                    big = max(big, abs(ynew[q]))
                if big > blowup:
                    STATUS[i] = -3
            if STATUS[i] != 0:
                t = t_new
                for q in range(n):
                    y[q] = ynew[q]
                break
            if IOUT[i] < nt and t_out[IOUT[i]] <= t_new:
                # DOP853's dense output on [t, t_new]: three more stages, then a polynomial in x
                _stages(rhs, p, t, h, y, Ks, tmp, A, C, _NS + 1, _NX)
                NFEV[i] += _NX - _NS - 1
                for q in range(n):
                    dY = ynew[q] - y[q]
                    Fd[0, q] = dY
                    Fd[1, q] = h * f[q] - dY
                    Fd[2, q] = 2.0 * dY - h * (Ks[_NS, q] + f[q])
                    for m in range(nd):
                        acc = 0.0
                        for j in range(_NX):
                            acc += DD[m, j] * Ks[j, q]
                        Fd[3 + m, q] = h * acc
                while IOUT[i] < nt and t_out[IOUT[i]] <= t_new:
                    j_out = IOUT[i]
                    if t_out[j_out] == t_new:
                        for q in range(n):
                            Yout[i, j_out, q] = ynew[q]
                    else:
                        x = (t_out[j_out] - t) / h
                        for q in range(n):
                            acc = 0.0
                            for m in range(3 + nd):
                                acc += Fd[3 + nd - 1 - m, q]
                                acc *= x if m % 2 == 0 else 1.0 - x
                            Yout[i, j_out, q] = y[q] + acc
                    IOUT[i] += 1
            t = t_new
            for q in range(n):
                y[q] = ynew[q]
                f[q] = Ks[_NS, q]
        T[i] = t
        H[i] = h_abs


def _compile():
    """The compiled :func:`_advance` (loaded from numba's disk cache after the first time)."""
    from .._codegen.rule import RHS_TYPE

    _I1, _A1, _A2, _A3 = numba.int64[::1], numba.float64[::1], numba.float64[:, ::1], numba.float64[:, :, ::1]
    return numba.njit(
        numba.void(RHS_TYPE, _A2, _A2, _A1, _A1, _A2, _I1, _I1, _I1, _I1, _I1, _A3, _A1, numba.int64, numba.int64,
                   numba.float64, numba.float64, numba.float64, _I1, numba.int64, numba.float64,
                   _A2, _A1, _A1, _A1, _A1, _A2),
        cache=True, error_model="numpy", nogil=True)(_advance)


def __getattr__(name):
    # dop853_segment is compiled (or loaded from the cache) on first use, not when theory is imported
    if name == "dop853_segment":
        fn = _compile() if HAVE_NUMBA else None
        globals()["dop853_segment"] = fn
        return fn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
