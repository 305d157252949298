"""Saving results: JSON metadata next to numpy arrays in one .npz file (shared by theory and simulate)."""

from __future__ import annotations

import json

import numpy as np

__all__ = ["json_default", "dumps"]


def json_default(x):
    """JSON encoding of numpy arrays and scalars (and a readable string for anything else)."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def dumps(obj) -> str:
    return json.dumps(obj, default=json_default)
