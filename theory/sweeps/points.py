"""Sweep points: scalars shared by all points, 1-D sequences zipped, grid axes crossed.

Every sweepable parameter (``states``, ``rule``, the rules' options such as ``presynaptic`` and
``error``, the :class:`theory.HyperParams` fields and the extra ``tags`` columns) is either a
scalar, shared by all points, or a 1-D sequence. Sequences are zipped (they must have the same
length L). ``grid={name: values}`` adds Cartesian axes: the points are the product of the L
zipped points with every grid axis, in C order (the last grid axis varies fastest). A grid axis
replaces the argument's scalar (default) value; a name may not be both a sequence argument and
a grid axis.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._state import OrderParams
from ..rules._base import Rule

__all__ = ["GRID_ONLY", "expand"]

class _GridOnly:
    """The default of a required parameter that may come from the grid instead (shows as GRID_ONLY)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "GRID_ONLY"

    def __reduce__(self):
        return "GRID_ONLY"  # unpickles to this very object: ``is GRID_ONLY`` holds in executor workers


GRID_ONLY = _GridOnly()


def _is_seq(name, val) -> bool:
    if name == "states":
        if isinstance(val, OrderParams):
            return False
        if isinstance(val, (list, tuple)):
            return True
        raise TypeError(f"sweep: states must be a theory.OrderParams or a sequence of them, got {type(val).__name__}")
    if val is None or isinstance(val, (str, Rule, bool)):
        return False
    if isinstance(val, (list, tuple)):
        return True
    a = np.asarray(val, dtype=object)
    if a.ndim == 0:
        return False
    if a.ndim > 1:
        raise ValueError(f"sweep: {name} must be a scalar or a 1-D sequence, got shape {a.shape}")
    return True


def expand(params: dict[str, Any], tags: dict[str, Any], grid: Mapping[str, Sequence] | None,
           sweepable: Sequence[str]) -> dict[str, list]:
    """Expand zipped sequences and grid axes into per-point columns (lists of length n_points)."""
    grid = dict(grid or {})
    for k in grid:
        if k not in sweepable:
            raise ValueError(f"sweep: unknown grid axis {k!r}; sweepable parameters are {tuple(sweepable)}")
    zipped: dict[str, list] = {}
    scalars: dict[str, Any] = {}
    for k, val in list(params.items()) + list(tags.items()):
        if k in grid:
            if val is not GRID_ONLY and val is not None and _is_seq(k, val):
                raise ValueError(f"sweep: {k!r} is given both as an argument and as a grid axis")
            continue
        if val is GRID_ONLY:
            raise ValueError(f"sweep: {k} is required (as an argument or as a grid axis)")
        if _is_seq(k, val):
            zipped[k] = list(val)
        else:
            scalars[k] = val
    lengths = {k: len(v) for k, v in zipped.items()}
    if any(n == 0 for n in lengths.values()):
        raise ValueError(f"sweep: empty sequence for {[k for k, n in lengths.items() if n == 0]}")
    if len(set(lengths.values())) > 1:
        raise ValueError(f"sweep: zipped sequences must have the same length, got {lengths}")
    L = next(iter(lengths.values()), 1)
    axes = []
    for k, vals in grid.items():
        vals = list(vals) if not isinstance(vals, np.ndarray) else list(vals.ravel())
        if len(vals) == 0:
            raise ValueError(f"sweep: grid axis {k!r} is empty")
        axes.append((k, vals))
    cols: dict[str, list] = {k: [] for k in list(params) + list(tags) + [k for k in grid if k not in params]}
    for combo in itertools.product(range(L), *[range(len(v)) for _, v in axes]):
        i = combo[0]
        for k, v in zipped.items():
            cols[k].append(v[i])
        for (k, vals), j in zip(axes, combo[1:]):
            cols[k].append(vals[j])
        for k, v in scalars.items():
            cols[k].append(v)
    return cols
