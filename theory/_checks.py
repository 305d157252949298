"""Input checks shared by every public entry point of ``theory`` and ``simulate``.

Each check takes the parameter's name and the caller's name (``where``) and either returns the
value normalised (a float, an int, a bool, an array) or raises one clear error that names the
parameter and the problem: ``ValueError`` for a bad value, ``TypeError`` for an unknown keyword.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["number", "integer", "boolean", "choice", "times", "tolerances", "reject_unknown", "memory", "TooLarge",
           "available_memory", "writable_folder", "LoadError"]


class TooLarge(ValueError):
    """A request that would not fit in memory, refused before anything is allocated."""


class LoadError(ValueError):
    """A file that is not a result of this package, or is damaged (missing, truncated, inconsistent)."""


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""


def number(name: str, x, *, where: str | None = None, min: float | None = None, finite: bool = True) -> float:
    """A real number (Python or numpy scalar; not a bool, string or sequence), optionally >= min."""
    if isinstance(x, (bool, np.bool_, str, bytes)) or not np.isscalar(x) and np.ndim(x) != 0:
        raise ValueError(f"{_prefix(where)}{name} must be a number, got {x!r}")
    try:
        if np.iscomplexobj(x):
            raise TypeError
        val = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{_prefix(where)}{name} must be a number, got {x!r}") from None
    if finite and not math.isfinite(val):
        raise ValueError(f"{_prefix(where)}{name} must be finite, got {val}")
    if min is not None and val < min:
        raise ValueError(f"{_prefix(where)}{name} must be >= {min:g}, got {val}")
    return val


def integer(name: str, x, *, where: str | None = None, min: int | None = None) -> int:
    """An integer (a float with an integral value is accepted), optionally >= min."""
    if isinstance(x, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{_prefix(where)}{name} must be an integer, got {x!r}")
    try:
        val = int(x)
        ok = val == x
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{_prefix(where)}{name} must be an integer, got {x!r}")
    if min is not None and val < min:
        what = "a positive integer" if min == 1 else f"an integer >= {min}"
        raise ValueError(f"{_prefix(where)}{name} must be {what}, got {x!r}")
    return val


def boolean(name: str, x, *, where: str | None = None) -> bool:
    """True or False (numpy booleans too); strings such as "False" are refused."""
    if not isinstance(x, (bool, np.bool_)):
        raise ValueError(f"{_prefix(where)}{name} must be True or False, got {x!r}")
    return bool(x)


def choice(name: str, x, choices: Iterable, *, where: str | None = None):
    """One of ``choices``."""
    choices = tuple(choices)
    if not isinstance(x, str) or x not in choices:
        raise ValueError(f"{_prefix(where)}{name}={x!r}; expected one of {choices}")
    return x


def times(t, *, where: str | None = None) -> np.ndarray:
    """Output or recording times: a non-empty, finite, strictly increasing 1-D array of times >= 0.

    A scalar is refused (``integrate(state, "bp", 100.0)`` means t = [0, 100]: say so).
    """
    msg = f"{_prefix(where)}t must be a non-empty, finite, strictly increasing array of times >= 0 (steps / D)"
    if isinstance(t, (str, bytes)) or np.iscomplexobj(t):
        raise ValueError(msg + f", got {describe(t)}")
    try:
        a = np.asarray(t, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(msg + f", got {describe(t)}") from None
    if a.ndim == 0:
        raise ValueError(msg + f", got the scalar {t!r} (for times from 0 to {t!r}: t=[0, {t!r}] or "
                         f"theory.default_times({t!r}))")
    if a.ndim > 1:
        raise ValueError(msg + f", got shape {a.shape}")
    a = a.ravel()
    if a.size < 1 or not np.all(np.isfinite(a)) or a[0] < 0 or np.any(np.diff(a) <= 0):
        raise ValueError(msg)
    return a


def tolerances(rtol, atol, *, where: str | None = None) -> tuple[float, float]:
    """Relative and absolute tolerances of an adaptive integrator: both finite and > 0."""
    r = number("rtol", rtol, where=where)
    a = number("atol", atol, where=where)
    if r <= 0 or a <= 0:
        raise ValueError(f"{_prefix(where)}rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    return r, a


def reject_unknown(names: Iterable[str], valid: Iterable[str], *, where: str | None = None) -> None:
    """Raise ``TypeError`` naming every unknown keyword, with the closest valid name when there is one."""
    valid = sorted(set(valid))
    bad = [n for n in names if n not in valid]
    if not bad:
        return
    hints = []
    for n in bad:
        close = difflib.get_close_matches(n, valid, n=1, cutoff=0.6)
        if not close:
            close = [v for v in valid if v.lower() == str(n).lower()]
        hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(f"{_prefix(where)}unknown option{'s' if len(bad) > 1 else ''} {', '.join(hints)}; "
                    f"valid options are {', '.join(valid)}")


def available_memory() -> int:
    """Bytes of memory available to allocate now (Linux: free plus reclaimable; elsewhere the total)."""
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh if ":" in line}
        return int(info.get("MemAvailable", info.get("MemFree", 0)))
    except (OSError, ValueError, IndexError):
        try:
            import os

            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):  # pragma: no cover
            return 1 << 62


def memory(what: str, nbytes: float, *, where: str | None = None, fraction: float = 0.8) -> None:
    """Refuse (TooLarge) a request whose estimated size exceeds ``fraction`` of the available memory."""
    avail = available_memory()
    if nbytes > fraction * avail:
        raise TooLarge(f"{_prefix(where)}{what} needs about {_bytes(nbytes)} of memory, more than the "
                       f"{_bytes(avail)} available; ask for less")


#: how many times the default work limits (:func:`work`) a request may use: PEPITA_DYNAMICS_WORK_SCALE=10 asks for 10x
WORK_SCALE_ENV = "PEPITA_DYNAMICS_WORK_SCALE"
#: the default limits of :func:`work` (before the scale): operations of one right-hand side evaluation, output
#: times of one run, restarts of the integrator at schedule breakpoints
WORK_LIMITS = {"rhs": 2e9, "times": 2e6, "breakpoints": 5e3}


def work(what: str, amount: float, kind: str, *, where: str | None = None) -> None:
    """Refuse (TooLarge) a request whose size ``amount`` of ``kind`` (WORK_LIMITS) exceeds its limit times
    $PEPITA_DYNAMICS_WORK_SCALE (default 1): a run that would not finish in reasonable time is refused before
    it starts, with the way to ask for more."""
    import os

    raw = os.environ.get(WORK_SCALE_ENV, "1")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{WORK_SCALE_ENV} must be a number, got {raw!r}") from None
    limit = WORK_LIMITS[kind] * scale
    if amount > limit:
        raise TooLarge(f"{_prefix(where)}{what}: {amount:.3g} is above the limit {limit:.3g} (a run this size would "
                       f"take hours or never finish); ask for less, or set {WORK_SCALE_ENV} to raise the limit")


def learns_within(t_pre: float, t_end: float, *, where: str | None = None) -> None:
    """t_pre (the pre-mirroring time: no learning before it) must lie before the last time: else the rule never
    learns in the run and every result is that of mirroring alone."""
    if t_pre > 0 and t_pre >= t_end:
        raise ValueError(f"{_prefix(where)}t_pre = {t_pre:g} is at or beyond the last time {t_end:g}: the rule never "
                         "learns in this run (before t_pre eta = eta_v = 0); give times beyond t_pre, or a smaller "
                         "t_pre")


def _bytes(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PB"  # pragma: no cover


def writable_folder(path, *, where: str | None = None):
    """The folder ``path`` (created if needed), checked writable before any computation; a Path."""
    import os
    import tempfile
    from pathlib import Path

    if path is None or str(path).strip() == "":
        raise ValueError(f"{_prefix(where)}the output folder must be a non-empty path, got {path!r}")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{_prefix(where)}the output folder {str(p)!r} exists and is not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(
            f"{_prefix(where)}cannot write into the output folder {str(p)!r}: {exc.strerror or exc}"
        ) from None
    return p


def parameters(fn) -> tuple[str, ...]:
    """The named parameters of a function (for "did you mean" hints next to its **options)."""
    import inspect

    return tuple(name for name, p in inspect.signature(fn).parameters.items()
                 if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))


def describe(x: Any) -> str:
    """A short description of a value for an error message."""
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."
