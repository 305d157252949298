"""Finite-size studies with the exact order-parameter sampler: plateau escape times and spread of eg.

Definitions
-----------
Plateau escape time of a replica: the first time t (steps / D) at which its generalisation
error eg(t) falls below ``threshold``, linearly interpolated in log eg between the two records
around the crossing. With the default threshold (1e-2) and the K = M = 2 erf teacher (v* = 1),
the symmetric plateau sits at eg ~ 2e-2, so the first crossing comes after the plateau. A
replica that never crosses within the recorded times is censored: nan, and counted in
``escaped_fraction``; quantiles are then taken over all replicas with censored ones as +inf
(so a median is reported only when more than half escaped).
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["plateau_escape_times", "finite_size_study"]


def plateau_escape_times(result=None, *, t=None, eg=None, threshold: float = 1e-2) -> np.ndarray:
    """Per-replica plateau escape times (see the module docstring), shape (R_,), nan when censored.

    Pass a :class:`simulate.SimulationResult` (its t and closed-form eg are used) or arrays
    t (n,) and eg (R_, n).
    """
    if result is not None:
        t, eg = result.t, result.eg
    if t is None or eg is None:
        raise ValueError("plateau_escape_times: pass a SimulationResult or both t and eg")
    t = np.asarray(t, dtype=float)
    eg = np.atleast_2d(np.asarray(eg, dtype=float))
    if eg.shape[-1] != t.shape[0]:
        raise ValueError(f"plateau_escape_times: eg has {eg.shape[-1]} times, t has {t.shape[0]}")
    if not (threshold > 0 and np.isfinite(threshold)):
        raise ValueError(f"plateau_escape_times: threshold must be finite and > 0, got {threshold!r}")
    below = eg < threshold
    out = np.full(eg.shape[0], np.nan)
    for r in range(eg.shape[0]):
        idx = np.flatnonzero(below[r])
        if idx.size == 0:
            continue
        i = idx[0]
        if i == 0:
            out[r] = t[0]
            continue
        a, b = np.log(eg[r, i - 1]), np.log(max(eg[r, i], 1e-300))
        frac = (a - np.log(threshold)) / (a - b) if a != b else 1.0
        out[r] = t[i - 1] + frac * (t[i] - t[i - 1])
    return out


def finite_size_study(rule: str = "bp", Ds=(10**3, 10**4, 10**5), *, replicas: int = 200, K: int = 2, M: int = 2,
                      eta: float = 2.0, t_max: float = 200.0, dt: float = 0.5, threshold: float = 1e-2,
                      spread_times=(1.0, 10.0, 50.0), init_seed: int = 0, seed: int = 0, independent_init: bool = False,
                      quantiles=(0.1, 0.5, 0.9), device="cpu", progress: bool = True, **run_kwargs) -> list[dict]:
    """Escape-time distribution and eg spread against D, with the exact sampler (engine "reduced").

    For each D: the initial weights are drawn by ``Initialisation(K, M, D, seed=init_seed)``
    (so initial overlaps R, S ~ 1/sqrt D, as in a real network), ``replicas`` data streams are
    simulated to ``t_max`` (records every ``dt``), and the ODE is integrated from the same
    measured initial state. Returns a tidy table, one row per D, with the parameters and:
    escaped_fraction, escape_q<q> (quantiles of the escape times, censored = +inf -> inf),
    escape_mean and escape_std over escaped replicas, ode_escape (the ODE's escape time by the
    same definition), and for each time s in ``spread_times``: eg_mean@s, eg_std@s (std across
    replicas, the finite-D spread), eg_ode@s. Time in steps / D.
    """
    import theory

    from ._engine import run
    from ._init import Initialisation

    rows = []
    t = np.arange(0.0, t_max + dt / 2, dt)
    for D in Ds:
        D = int(D)
        init = Initialisation(K=K, M=M, D=D, seed=init_seed)
        wall = time.perf_counter()
        res = run(init, rule, t, eta=eta, replicas=replicas, seed=seed, engine="reduced", independent_init=independent_init,
                  device=device, progress=progress, n_test=0, throw=False, **run_kwargs)
        wall = time.perf_counter() - wall
        esc = plateau_escape_times(res, threshold=threshold)
        ode = theory.integrate(init.order_params(1), rule, res.t, eta=eta, throw=False,
                               **{k: v for k, v in run_kwargs.items() if k in ("eta_v", "sigma", "sigma_F", "weight_decay",
                                                                             "train_second_layer", "presynaptic", "error", "g")})
        ode_esc = plateau_escape_times(t=ode.t, eg=ode.eg[None], threshold=threshold)[0]
        row = dict(rule=rule, D=D, K=K, M=M, eta=eta, replicas=replicas, threshold=threshold, t_max=float(res.t[-1]),
                   init_seed=init_seed, seed=seed, status=res.status, message=res.message,
                   escaped_fraction=float(np.mean(np.isfinite(esc))),
                   escape_mean=float(np.nanmean(esc)) if np.isfinite(esc).any() else np.nan,
                   escape_std=float(np.nanstd(esc, ddof=1)) if np.isfinite(esc).sum() > 1 else np.nan,
                   ode_escape=float(ode_esc), wall_s=wall)
        filled = np.where(np.isfinite(esc), esc, np.inf)
        for q in quantiles:
            row[f"escape_q{q:g}"] = float(np.quantile(filled, q, method="inverted_cdf"))
        for s in spread_times:
            i = int(np.argmin(np.abs(res.t - s)))
            row[f"eg_mean@{s:g}"] = float(res.eg[:, i].mean())
            row[f"eg_std@{s:g}"] = float(res.eg[:, i].std(ddof=1))
            row[f"eg_ode@{s:g}"] = float(ode.eg[i]) if i < len(ode.eg) else np.nan
        rows.append(row)
    return rows
