"""The baselines an optimal protocol is measured against, found by a small search with the same objective.

    best constant    a grid over the bounds (8 values per control; the product grid for two controls, one
                     control at a time for more), then L-BFGS-B from the best point;
    best power law   u0 / (1 + t / t0)^p per rate control (families.PowerLawFamily): the best constant (p = 0)
                     and a grid of (t0, p, u0) = ({T/100, T/10, T}, {1/2, 1}, {hi, 2 x the best constant}), then
                     L-BFGS-B from the best of them. The family holds the constants, so the best power law is
                     never worse than the best constant.

:func:`minimise` is the one optimiser loop (scipy.optimize.minimize on theta scaled to [0, 1], L-BFGS-B or
SLSQP with bounds), shared with the optimised protocol (theory.control.protocol). Each search keeps the best
point it has evaluated; Ctrl-C (KeyboardInterrupt) stops it and is re-raised with that point attached
(:class:`Interrupted`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from .families import ConstantFamily, PowerLawFamily

__all__ = ["Interrupted", "PhaseResult", "minimise", "best_constant", "best_power_law"]

#: the constant grid, as fractions of each control's range [lo, hi]
CONSTANT_GRID = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a search: ``best`` is the PhaseResult of the best point evaluated before it."""

    def __init__(self, best):
        super().__init__("interrupted")
        self.best = best


@dataclasses.dataclass
class PhaseResult:
    """The outcome of one search: its family, the best theta and its objective J (F = the scaled objective the
    optimiser saw), and scipy's report (nit, nfev, status, message; None for a grid)."""

    name: str
    family: object
    theta: np.ndarray
    J: float
    F: float
    nit: int = 0
    nfev: int = 0
    status: int | None = None
    message: str = ""


def minimise(evaluator, family, theta0, *, name: str, method: str = "L-BFGS-B", maxiter: int = 50,
             gtol: float = 1e-6, ftol: float = 1e-10, before: PhaseResult | None = None) -> PhaseResult:
    """Minimise the evaluator's scaled objective over ``family`` from ``theta0`` (scipy.optimize.minimize with
    the bounds of theta, on theta scaled to [0, 1] and the evaluator's gradient). Returns the best point
    evaluated (which is scipy's answer unless scipy stopped on a worse one). ``before``: the best point of what
    led to theta0 (a grid), returned by a Ctrl-C that comes before this search has a point of its own."""
    import scipy.optimize

    evaluator.start(family, name)
    x0 = family.to_unit(family.clip(theta0))
    opts = dict(maxiter=maxiter)
    if method == "L-BFGS-B":
        opts.update(gtol=gtol, ftol=ftol)
    else:
        opts.update(ftol=ftol)
    try:
        res = scipy.optimize.minimize(evaluator, x0, jac=True, method=method, bounds=[(0.0, 1.0)] * x0.size,
                                      options=opts)
    except KeyboardInterrupt:
        if evaluator.best is None and before is not None:
            raise Interrupted(before) from None
        raise Interrupted(evaluator.best_result(name, family)) from None
    out = evaluator.best_result(name, family)
    out.nit, out.nfev, out.status, out.message = int(res.nit), int(res.nfev), int(res.status), str(res.message)
    return out


def _grid_best(evaluator, family, thetas, name):
    evaluator.start(family, name)
    try:
        for th in thetas:
            evaluator.value(th)
    except KeyboardInterrupt:
        raise Interrupted(evaluator.best_result(name, family)) from None
    return evaluator.best_result(name, family)


def best_constant(evaluator, names, bounds, T, initial, *, method="L-BFGS-B", maxiter=20) -> PhaseResult:
    """The best constant protocol (module docstring); ``initial`` the controls' starting values."""
    fam = ConstantFamily(tuple(names), tuple(bounds), T)
    lo, hi = np.asarray(bounds, dtype=float).T
    grid = [lo[i] + np.array(CONSTANT_GRID) * (hi[i] - lo[i]) for i in range(len(names))]
    if len(names) <= 2:
        thetas = [np.array(p) for p in itertools.product(*grid)]
    else:
        base = np.asarray(initial, dtype=float)
        thetas = []
        for i, g in enumerate(grid):
            for v in g:
                th = base.copy()
                th[i] = v
                thetas.append(th)
    start = _grid_best(evaluator, fam, thetas, "constant")
    res = minimise(evaluator, fam, start.theta, name="constant", method=method, maxiter=maxiter, before=start)
    res.nfev += len(thetas)
    return res


def best_power_law(evaluator, names, bounds, T, constant: PhaseResult, *, method="L-BFGS-B",
                   maxiter=20) -> PhaseResult:
    """The best power law (module docstring), started from the best constant ``constant``."""
    fam = PowerLawFamily(tuple(names), tuple(bounds), T)
    const = np.asarray(constant.theta, dtype=float)
    thetas = [fam.from_constants(const)]
    hi = np.asarray(bounds, dtype=float)[:, 1]
    for t0, p, top in itertools.product((T / 100, T / 10, T), (0.5, 1.0), (True, False)):
        theta = []
        for k, c, h in zip(names, const, hi):
            if k == "sigma_F":
                theta.append(c)
            else:
                theta += [h if top else min(h, 2.0 * c), math.log(t0), p]
        thetas.append(fam.clip(theta))
    start = _grid_best(evaluator, fam, thetas, "power_law")
    res = minimise(evaluator, fam, start.theta, name="power_law", method=method, maxiter=maxiter, before=start)
    res.nfev += len(thetas)
    return res
