"""What made a result: the package's version, its dependencies' versions and the machine.

Every saved result carries :func:`provenance` (Trajectory, SimulationResult, Comparison, sweep
tables, the command line's files), so that a number in a paper can be traced to the code that
produced it. Nothing here imports torch: its version is read from the installed metadata unless
torch is already loaded.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import sys

from ._version import __version__

__all__ = ["provenance"]


def _version(name: str) -> str | None:
    mod = sys.modules.get(name)
    if mod is not None and getattr(mod, "__version__", None):
        return str(mod.__version__)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _static() -> dict:
    return {"pepita_dynamics": __version__, "python": platform.python_version(), "platform": platform.platform(),
            **{name: _version(name) for name in ("numpy", "scipy", "numba", "torch", "sympy")}}


def provenance(device: str | None = None) -> dict:
    """{"pepita_dynamics": version, "python", "platform", "numpy", "scipy", "numba", "torch", "sympy",
    "device"}: plain strings (None for what is not installed)."""
    out = dict(_static())
    out["device"] = device if device is not None else "cpu"
    return out
