"""Summaries of learning curves: the plateau, crossing (target and escape) times, and the plateau split.

One home for the definitions used by sweeps (theory.sweep), comparisons (simulate.compare) and
finite-size studies (simulate.finite_size_study). Times are in steps / D.

Crossing time (``crossing_time``; sweep's t_target, the finite-size study's plateau escape time):
the first time eg(t) <= level, with ln eg interpolated linearly in t between the two recorded
times around the crossing; t[0] when eg starts at or below the level; NaN when it never gets there
within the recorded times (censored).

Plateau (``plateau``; the symmetric, unspecialised plateau of committee machines), on the output grid:

    s(t) = d ln eg / d ln t          (finite differences over the output times t > 0)
    onset = first output time with s < -slope_tol  (learning has started)
    flat  = output times after the onset with |s| <= slope_tol

A maximal run of consecutive flat times is a plateau when either it is followed by learning
(it ends before the last output time and its last eg >= (1 + margin) eg_final: escaped), or it
lasts to the end while the student is still unspecialised there: every hidden unit is equally
correlated with all teacher units (the symmetric phase), i.e. max_k (max_n |r_kn| - min_n |r_kn|)
< spec_tol with r_kn = R_kn / sqrt(Q_kk T_nn) (not escaped; its length is then a lower bound;
never for M = 1, which has no symmetry to break). The reported plateau is the longest such run:
(length = end - start, start, end, median eg, escaped); length 0 and NaN times when there is none.
Defaults slope_tol = 0.1, margin = 0.1, spec_tol = 0.2; the grid must resolve the plateau (the
default log-spaced times do).

Plateau split (``plateau_split``; where a comparison separates "before" from "after"): the
plateau is the flattest point of ln eg against ln t within the first flat stretch (|s| <= slope_tol)
at t >= 1 (after the initial transient; the flattest point overall when nothing is flat), with value
eg_p; the split is the first time after it at which eg < eg_p / 2 (the escape), or the last time when
the curve does not escape in the window. Anchored on the first stretch, the split does not depend on
the horizon: a converged floor after the escape, flatter than the plateau, cannot move it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PLATEAU_DEFAULTS", "plateau", "crossing_time", "plateau_split", "unspecialised_spread"]

#: Parameters of the plateau definition (see the module docstring).
PLATEAU_DEFAULTS = dict(slope_tol=0.1, margin=0.1, spec_tol=0.2)


def crossing_time(t, eg, level):
    """First time eg <= level (module docstring): a float for eg (n,), an array ``(R_,)`` for eg ``(R_, n)``."""
    t = np.asarray(t, dtype=float)
    eg = np.asarray(eg, dtype=float)
    if eg.shape[-1] != t.shape[0]:
        raise ValueError(f"crossing_time: eg has {eg.shape[-1]} times, t has {t.shape[0]}")
    if not (np.isfinite(level) and level > 0):
        raise ValueError(f"crossing_time: the level (threshold) must be finite and > 0, got {level!r}")
    rows = np.atleast_2d(eg)
    out = np.full(rows.shape[0], np.nan)
    for r, curve in enumerate(rows):
        hit = np.nonzero(curve <= level)[0]
        if hit.size == 0:
            continue
        i = hit[0]
        if i == 0:
            out[r] = t[0]
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            l0, l1 = np.log(curve[i - 1]), np.log(curve[i])
        if not np.isfinite(l0) or not np.isfinite(l1) or l1 == l0:
            out[r] = t[i]
            continue
        out[r] = t[i - 1] + (t[i] - t[i - 1]) * (np.log(level) - l0) / (l1 - l0)
    return float(out[0]) if eg.ndim == 1 else out


def unspecialised_spread(specialisation):
    """max_k (max_n |r_kn| - min_n |r_kn|) of r = specialisation (..., K, M): 0 in the symmetric phase."""
    sp = np.abs(np.asarray(specialisation, dtype=float))
    return (sp.max(-1) - sp.min(-1)).max(-1)


def plateau(t, eg, spread_end, *, slope_tol=0.1, margin=0.1, spec_tol=0.2):
    """(length, start, end, median eg, escaped) of the plateau of one curve (module docstring)."""
    none = (0.0, np.nan, np.nan, np.nan, False)
    t, eg = np.asarray(t, dtype=float), np.asarray(eg, dtype=float)
    keep = (t > 0) & np.isfinite(eg) & (eg > 0)
    t, eg = t[keep], eg[keep]
    if t.size < 3:
        return none
    s = np.gradient(np.log(eg), np.log(t))
    down = np.nonzero(s < -slope_tol)[0]
    if down.size == 0:
        return none
    flat = np.abs(s) <= slope_tol
    flat[: down[0]] = False
    eg_final = eg[-1]
    best = none
    i = 0
    n = t.size
    while i < n:
        if not flat[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and flat[j + 1]:
            j += 1
        if j < n - 1:
            ok, escaped = eg[j] >= (1 + margin) * eg_final, True
        else:
            ok, escaped = bool(spread_end < spec_tol), False
        if ok and t[j] - t[i] > best[0]:
            best = (float(t[j] - t[i]), float(t[i]), float(t[j]), float(np.median(eg[i : j + 1])), escaped)
        i = j + 1
    return best


def plateau_split(t, eg) -> float:
    """The time a curve escapes its plateau, or its last time (module docstring)."""
    t, eg = np.asarray(t, float), np.asarray(eg, float)
    ok = (t >= 1.0) & np.isfinite(eg) & (eg > 0)
    if ok.sum() < 3:
        return float(t[-1])
    tt, le = t[ok], np.log(eg[ok])
    slope = np.gradient(le, np.log(tt))
    flat = np.flatnonzero(np.abs(slope) <= PLATEAU_DEFAULTS["slope_tol"])
    if flat.size:  # the first flat stretch: what comes after it (a converged floor) cannot move the anchor
        i = j = int(flat[0])
        while j + 1 < slope.size and abs(slope[j + 1]) <= PLATEAU_DEFAULTS["slope_tol"]:
            j += 1
        ip = i + int(np.argmin(np.abs(slope[i : j + 1])))
    else:
        ip = int(np.argmin(np.abs(slope)))
    below = np.nonzero(le[ip:] < le[ip] - np.log(2.0))[0]
    return float(tt[ip + below[0]]) if below.size else float(t[-1])
