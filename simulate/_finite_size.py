"""Finite-size studies with the exact order-parameter sampler: plateau escape times and spread of eg.

Definitions
-----------
Plateau escape time of a replica: the first time t (steps / D) at which its generalisation
error eg(t) falls to ``threshold`` (:func:`theory.crossing_time`: linearly interpolated in log eg
between the two records around the crossing). With the default threshold (1e-2) and the K = M = 2 erf teacher (v* = 1),
the symmetric plateau sits at eg ~ 2e-2, so the first crossing comes after the plateau. A
replica that never crosses within the recorded times is censored: nan, and counted in
``escaped_fraction``; quantiles are then taken over all replicas with censored ones as +inf
(so a median is reported only when more than half escaped).
"""

from __future__ import annotations

import time

import numpy as np

import theory
from theory import _internal

__all__ = ["plateau_escape_times", "finite_size_study"]


def plateau_escape_times(result=None, *, t=None, eg=None, threshold: float = 1e-2) -> np.ndarray:
    """Per-replica plateau escape times (see the module docstring), shape ``(R_,)``, nan when censored.

    Pass a :class:`simulate.SimulationResult` (its t and closed-form eg are used) or arrays
    t (n,) and eg (R_, n). The definition is :func:`theory.crossing_time` at ``threshold``.
    """
    if result is not None:
        t, eg = result.t, result.eg
    if t is None or eg is None:
        raise ValueError("plateau_escape_times: pass a SimulationResult or both t and eg")
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"plateau_escape_times: threshold must be finite and > 0, got {threshold!r}")
    return np.atleast_1d(theory.crossing_time(t, np.atleast_2d(np.asarray(eg, dtype=float)), threshold))


def finite_size_study(rule: str = "bp", Ds=(10**3, 10**4, 10**5), params=None, *, replicas: int = 200, K: int = 2,
                      M: int = 2, t_max: float = 200.0, dt: float = 0.5, threshold: float = 1e-2,
                      spread_times=(1.0, 10.0, 50.0), init_seed: int = 0, seed: int = 0, independent_init: bool = False,
                      quantiles=(0.1, 0.5, 0.9), device="cpu", progress: bool = True, **options) -> list[dict]:
    """Escape-time distribution and eg spread against D, with the exact sampler (engine "reduced").

    For each D: the initial weights are drawn by ``Initialisation(K, M, D, seed=init_seed)``
    (so initial overlaps R, S ~ 1/sqrt D, as in a real network), ``replicas`` data streams are
    simulated to ``t_max`` (records every ``dt``), and the ODE is integrated from the same
    measured initial state. Returns a tidy table, one row per D, with the parameters and:
    escaped_fraction, escape_q<q> (quantiles of the escape times, censored = +inf -> inf),
    escape_mean and escape_std over escaped replicas, ode_escape (the ODE's escape time by the
    same definition), and for each time s in ``spread_times``: eg_mean@s, eg_std@s (std across
    replicas, the finite-D spread), eg_ode@s. Time in steps / D. Ctrl-C stops the study and returns
    the rows done (the interrupted dimension's row from what it recorded, its status 1). ``params`` / ``**options``: a
    :class:`theory.HyperParams`, its fields and the rule's options as keyword arguments (eta
    defaults to 2).
    """
    from ._init import Initialisation
    from ._run import run

    where = "finite_size_study"
    if params is None and "eta" not in options:
        options["eta"] = 2.0
    rule, hyper = _internal.resolve(
        rule, params, options, where=where, extra=_internal.checks.parameters(finite_size_study)
    )
    if isinstance(Ds, (int, np.integer)):
        Ds = (Ds,)
    Ds = [_internal.checks.integer("Ds[]", D, where=where, min=K + M + 1) for D in Ds]
    if not Ds:
        raise ValueError(f"{where}: Ds must name at least one dimension D")
    replicas = _internal.checks.integer("replicas", replicas, where=where, min=1)
    for name, val in (("t_max", t_max), ("dt", dt), ("threshold", threshold)):
        if not _internal.checks.number(name, val, where=where) > 0:
            raise ValueError(f"{where}: {name} must be > 0, got {val}")
    if t_max / dt > 1e7:
        raise ValueError(f"{where}: t_max / dt = {t_max / dt:.3g} records; ask for fewer (at most 1e7)")
    quantiles = tuple(_internal.checks.number("quantiles[]", q, where=where) for q in np.atleast_1d(quantiles))
    if any(not 0 <= q <= 1 for q in quantiles):
        raise ValueError(f"{where}: quantiles must lie in [0, 1], got {quantiles}")
    spread_times = tuple(
        _internal.checks.number("spread_times[]", s, where=where, min=0.0) for s in np.atleast_1d(spread_times)
    )
    rows = []
    t = np.arange(0.0, t_max + dt / 2, dt)
    for D in Ds:
        D = int(D)
        init = Initialisation(K=K, M=M, D=D, seed=init_seed)
        wall = time.perf_counter()
        res = run(
            init,
            rule,
            t,
            hyper,
            replicas=replicas,
            seed=seed,
            engine="reduced",
            independent_init=independent_init,
            device=device,
            progress=progress,
            n_test=0,
            throw=False,
        )
        wall = time.perf_counter() - wall
        esc = plateau_escape_times(res, threshold=threshold)
        ode = theory.integrate(init.order_params(1), rule, res.t, hyper, throw=False)
        ode_esc = plateau_escape_times(t=ode.t, eg=ode.eg[None], threshold=threshold)[0]
        row = dict(
            rule=rule.label,
            D=D,
            K=K,
            M=M,
            **hyper.as_dict(),
            replicas=replicas,
            threshold=threshold,
            t_max=float(res.t[-1]),
            init_seed=init_seed,
            seed=seed,
            status=res.status,
            message=res.message,
            escaped_fraction=float(np.mean(np.isfinite(esc))),
            escape_mean=float(np.nanmean(esc)) if np.isfinite(esc).any() else np.nan,
            escape_std=float(np.nanstd(esc, ddof=1)) if np.isfinite(esc).sum() > 1 else np.nan,
            ode_escape=float(ode_esc),
            wall_s=wall,
        )
        filled = np.where(np.isfinite(esc), esc, np.inf)
        for q in quantiles:
            row[f"escape_q{q:g}"] = float(np.quantile(filled, q, method="inverted_cdf"))
        for s in spread_times:
            i = int(np.argmin(np.abs(res.t - s)))
            row[f"eg_mean@{s:g}"] = float(res.eg[:, i].mean())
            row[f"eg_std@{s:g}"] = float(res.eg[:, i].std(ddof=1))
            row[f"eg_ode@{s:g}"] = float(ode.eg[i]) if i < len(ode.eg) else np.nan
        rows.append(row)
        if res.status == 1 or ode.status == 1:
            break  # Ctrl-C: the dimensions done so far (this one with what it recorded)
    return rows
