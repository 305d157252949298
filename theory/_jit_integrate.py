"""A compiled DOP853 integrator for the closed-form right-hand side of one learning curve.

Same method, error norm and step-size control as scipy's DOP853 (Hairer, Norsett & Wanner;
coefficients taken from scipy), run entirely in numba together with the compiled right-hand
side of :mod:`theory._closed_jit`, so a K = M = 2 learning curve costs milliseconds instead of
scipy's per-step Python overhead. Output times are hit exactly (the step is clipped to the next
one) instead of interpolated. :func:`theory.integrate` calls it segment by segment (a few output
times at a time) so that progress bars and Ctrl-C keep working; tests hold it against the
scipy path.
"""

from __future__ import annotations

import numpy as np

from ._batched import DOP853, MAX_FACTOR, MIN_FACTOR, SAFETY
from ._closed_jit import HAVE_NUMBA, closed_form_rhs_flat

__all__ = ["dop853_segment", "COEFFS"]

# the tableau of theory._batched (scipy's DOP853 coefficients), as contiguous arrays for numba
_NS = len(DOP853.B)
COEFFS = tuple(np.ascontiguousarray(x) for x in (DOP853.A, DOP853.B, DOP853.C, DOP853.E3, DOP853.E5))
EXPONENT = -1.0 / (DOP853.error_order + 1)


def _make(rhs):
    def segment(y0, t0, h0, t_out, rtol, atol, blowup, max_steps, A, B, C, E3, E5, args):
        """Integrate from (t0, y0) through the times t_out; returns (Y, n_done, t, y, h, nfev, status).

        status 0: all of t_out reached; -1: non-finite values; -2: step size too small;
        -3: |state| exceeded blowup; -4: max_steps exceeded.
        """
        (K_, M_, T, U, P, vs, ck, b, eta, eta_v, sigma, sigma_F, kappa, mod, trv) = args
        n = y0.size
        Y = np.empty((t_out.size, n))
        Ks = np.empty((_NS + 1, n))
        y = y0.copy()
        t = t0
        h_abs = h0
        f = rhs(y, K_, M_, T, U, P, vs, ck, b, eta, eta_v, sigma, sigma_F, kappa, mod, trv)
        nfev = 1
        steps = 0
        i = 0
        while i < t_out.size and t_out[i] <= t:
            Y[i] = y
            i += 1
        while i < t_out.size:
            if steps >= max_steps:
                return Y, i, t, y, h_abs, nfev, -4
            target = t_out[i]
            min_step = 10.0 * np.abs(np.nextafter(t, np.inf) - t)
            rejected = False
            while True:
                if h_abs < min_step:
                    return Y, i, t, y, h_abs, nfev, -2
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
                    Ks[s] = rhs(y + h * dy, K_, M_, T, U, P, vs, ck, b, eta, eta_v, sigma, sigma_F, kappa, mod, trv)
                acc = np.zeros(n)
                for j in range(_NS):
                    acc += B[j] * Ks[j]
                y_new = y + h * acc
                f_new = rhs(y_new, K_, M_, T, U, P, vs, ck, b, eta, eta_v, sigma, sigma_F, kappa, mod, trv)
                nfev += _NS
                Ks[_NS] = f_new
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
                        return Y, i, t, y, h_abs, nfev, -1
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
                    return Y, i, t, y, h_abs, nfev, -1
                big = max(big, abs(y[q]))
            if big > blowup:
                return Y, i, t, y, h_abs, nfev, -3
            while i < t_out.size and t_out[i] <= t:
                Y[i] = y
                i += 1
        return Y, i, t, y, h_abs, nfev, 0

    return segment


if HAVE_NUMBA:
    import numba

    dop853_segment = numba.njit(cache=True, error_model="numpy")(_make(closed_form_rhs_flat))
else:  # pragma: no cover
    dop853_segment = None

