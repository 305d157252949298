"""Saving and loading results: JSON metadata next to numpy arrays in one .npz file (theory and simulate).

Every saved result records its kind ("Trajectory", "SimulationResult", ...) and the format version;
:func:`load_npz` refuses, with one error type (:class:`theory.checks.LoadError`) that says what is
wrong, a file that is missing, not an .npz, damaged or truncated, of another kind, of a newer
format, or without the arrays its kind needs.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .._checks import LoadError

__all__ = ["json_default", "dumps", "save_npz", "load_npz", "FORMAT", "file_path"]

#: version of the saved layout; files of a newer version are refused
FORMAT = 1


def json_default(x):
    """JSON encoding of numpy arrays and scalars (and a readable string for anything else)."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def dumps(obj) -> str:
    return json.dumps(obj, default=json_default)


def save_npz(path, kind: str, meta: dict, arrays: dict) -> Path:
    """Write ``arrays`` and ``meta`` (plus kind and format) to an .npz; returns the path written."""
    path = Path(path)
    meta = dict(meta, kind=kind, format=FORMAT)
    np.savez_compressed(path, __meta__=np.array(dumps(meta)), **arrays)
    return path if path.suffix == ".npz" else path.with_suffix(path.suffix + ".npz")


def file_path(path, where: str) -> Path:
    """``path`` as a Path: a str or os.PathLike naming a file; TypeError naming the path otherwise."""
    import os

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{where}: path must be a file path (str or pathlib.Path), got {path!r}")
    return Path(path)


def load_npz(path, kind: str, required=()) -> tuple[dict, dict]:
    """(meta, arrays) of a result saved by :func:`save_npz` as ``kind``; LoadError otherwise."""
    path = file_path(path, f"{kind}.load")
    what = f"{kind}.load: {str(path)!r}"
    if not path.is_file():
        raise LoadError(f"{what}: no such file")
    try:
        with open(path, "rb") as fh:  # our own handle: closed whatever numpy makes of a damaged file
            z = np.load(fh, allow_pickle=False)
            if not hasattr(z, "files"):
                raise LoadError(f"{what}: not an .npz archive (a single array)")
            with z:
                files = list(z.files)
                if "__meta__" not in files:
                    raise LoadError(f"{what}: not a pepita-dynamics result (no metadata)")
                arrays = {k: z[k] for k in files if k != "__meta__"}
                meta = json.loads(str(z["__meta__"]))
    except LoadError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise LoadError(f"{what}: not a readable .npz result ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise LoadError(f"{what}: damaged metadata")
    got = meta.get("kind", kind)
    if got != kind:
        raise LoadError(f"{what}: holds a {got}, not a {kind}")
    if int(meta.get("format", FORMAT)) > FORMAT:
        raise LoadError(f"{what}: written in format {meta.get('format')}, newer than this package reads ({FORMAT})")
    missing = [k for k in required if k not in arrays]
    if missing:
        raise LoadError(f"{what}: missing arrays {missing} (truncated or not a {kind})")
    return meta, arrays


def check_arrays(what: str, arrays: dict, shapes: dict, finite=()) -> None:
    """Shapes (tuples with None for any length) and finiteness of loaded arrays; LoadError otherwise."""
    for name, shape in shapes.items():
        a = arrays[name]
        if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
            raise LoadError(
                f"{what}: array {name} has shape {a.shape}, expected {tuple('n' if s is None else s for s in shape)}"
            )
        if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
            raise LoadError(f"{what}: array {name} is not numeric ({a.dtype})")
    for name in finite:
        if not np.all(np.isfinite(arrays[name])):
            raise LoadError(f"{what}: array {name} has non-finite entries (damaged file)")


def mirrored_by(params) -> bool:
    """Whether recorded hyper-parameters mirror f (eta_F a schedule or > 0): U and P then move in time."""
    if not isinstance(params, dict):
        return False
    return params.get("eta_F_schedule", "constant") != "constant" or float(params.get("eta_F") or 0.0) != 0.0


def check_order_params(what: str, arrays: dict, params, M: int, lead: tuple = ()) -> None:
    """One check for every loader of a result (npz and netCDF, Trajectory and SimulationResult): t, Q, R, S, v
    present, shaped (*lead, n, ...) and finite; U_t, P_t present exactly when the recorded parameters mirror f,
    shaped and finite. ``lead``: the leading axes before time (() for a Trajectory, (replicas,) for a
    simulation). LoadError otherwise."""
    for name in ("t", "Q", "R", "S", "v"):
        if name not in arrays:
            raise LoadError(f"{what}: damaged (no array {name})")
    n, K = len(arrays["t"]), np.shape(arrays["Q"])[-1]
    lead = tuple(lead)
    check_arrays(what, arrays, dict(t=(None,), Q=(*lead, n, K, K), R=(*lead, n, K, M), S=(*lead, n, K),
                                    v=(*lead, n, K)), finite=("t", "Q", "R", "S", "v"))
    present = [k for k in ("U_t", "P_t") if k in arrays]
    if mirrored_by(params) and len(present) < 2:
        raise LoadError(
            f"{what}: the run mirrors f (eta_F = {params.get('eta_F')}, {params.get('eta_F_schedule')}) "
            f"but the file lacks {' and '.join(k for k in ('U_t', 'P_t') if k not in present)} (damaged file)"
        )
    if len(present) == 1:
        raise LoadError(f"{what}: holds {present[0]} without {({'U_t', 'P_t'} - set(present)).pop()} (damaged file)")
    if present:
        check_arrays(what, arrays, dict(U_t=(*lead, n, M), P_t=(*lead, n)), finite=("U_t", "P_t"))
