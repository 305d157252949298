"""Labelled views of results: xarray Datasets with named dimensions, and netCDF files through them.

xarray (and h5netcdf for the files) are optional dependencies (``pip install pepita-dynamics[xarray]``);
nothing else needs them.
Dimensions: ``t`` (steps / D), ``replica``, ``k`` and ``l`` (student units), ``m`` and ``n``
(teacher units), ``angle`` (the names of the alignment angles), ``rule`` and ``ode`` (comparisons).
Everything a result records that is not an array (its parameters, status, message, provenance)
travels as JSON in the Dataset's attributes, so a Dataset (and a netCDF file) round-trips.
netCDF-4 files are written and read with xarray's h5netcdf backend; a comparison is a tree of
Datasets (``xarray.DataTree``: one node per rule, with its simulation and its ODE(s)).
"""

from __future__ import annotations

import json

import numpy as np

from .._checks import LoadError
from .io import FORMAT, json_default

__all__ = ["xarray", "order_parameter_vars", "to_attrs", "from_attrs", "write_netcdf", "read_netcdf"]


def xarray():
    """The xarray module, or an ImportError that says how to get it."""
    try:
        import xarray as xr
    except ImportError:  # pragma: no cover - exercised where xarray is absent
        raise ImportError("to_xarray and netCDF files need xarray: pip install 'pepita-dynamics[xarray]'") from None
    return xr


def order_parameter_vars(lead: tuple[str, ...], Q, R, S, v, eg, angles: dict, prefix: str = "") -> dict:
    """Data variables of order parameters with leading dimensions ``lead`` (e.g. ("replica", "t"))."""
    out = {
        f"{prefix}Q": (lead + ("k", "l"), np.asarray(Q)),
        f"{prefix}R": (lead + ("k", "m"), np.asarray(R)),
        f"{prefix}S": (lead + ("k",), np.asarray(S)),
        f"{prefix}v": (lead + ("k",), np.asarray(v)),
        f"{prefix}eg": (lead, np.asarray(eg)),
    }
    if angles:
        out[f"{prefix}angles"] = (lead + ("angle",), np.stack([np.asarray(a) for a in angles.values()], axis=-1))
    return out


def to_attrs(kind: str, **fields) -> dict:
    """Dataset attributes: the kind, the format and every field as JSON text (netCDF-safe)."""
    return {"kind": kind, "format": FORMAT, **{k: json.dumps(v, default=json_default) for k, v in fields.items()},
            "units": "t: steps / D; angles: degrees"}


def from_attrs(ds, kind: str) -> dict:
    """The fields stored by :func:`to_attrs`; LoadError when the Dataset is not a ``kind``."""
    got = ds.attrs.get("kind")
    if got != kind:
        raise LoadError(f"{kind}.from_xarray: the Dataset holds {got or 'no pepita-dynamics result'}, not a {kind}")
    if int(ds.attrs.get("format", FORMAT)) > FORMAT:
        raise LoadError(
            f"{kind}.from_xarray: format {ds.attrs.get('format')} is newer than this package reads ({FORMAT})"
        )
    try:
        return {k: json.loads(v) for k, v in ds.attrs.items() if k not in ("kind", "format", "units")}
    except (TypeError, ValueError) as exc:
        raise LoadError(f"{kind}.from_xarray: damaged attributes ({exc})") from None


ENGINE = "h5netcdf"


def write_netcdf(ds, path):
    """Write a Dataset or DataTree to a netCDF-4 file."""
    from pathlib import Path

    path = Path(path)
    ds.to_netcdf(path, engine=ENGINE)
    return path


def read_netcdf(path, kind: str, tree: bool = False):
    """The Dataset (or DataTree) in a file of :func:`write_netcdf`; LoadError when it is not readable."""
    from pathlib import Path

    xr = xarray()
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{kind}.load: {str(path)!r}: no such file")
    try:
        if tree:
            with xr.open_datatree(path, engine=ENGINE) as dt:
                return dt.load()
        with xr.open_dataset(path, engine=ENGINE) as ds:
            return ds.load()
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise LoadError(
            f"{kind}.load: {str(path)!r}: not a readable netCDF file ({type(exc).__name__}: {exc})"
        ) from None
