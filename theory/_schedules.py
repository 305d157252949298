"""Learning-rate schedules eta(t) (t in steps / D): constant, power law, piecewise constant, tabulated.

A schedule is a frozen object: ``schedule(t)`` evaluates it (vectorised), ``breakpoints()`` are
the times where it is not smooth (jumps of :class:`Piecewise`, kinks of :class:`Interpolated`),
and ``piece(a, b)`` is its smooth restriction to an interval [a, b] without breakpoints inside:
a :class:`Piece` (constant, linear or power law). The ODE integrators stop at every breakpoint
and restart there, integrating each interval with its piece (so an adaptive step never straddles
a jump, and the compiled right-hand sides only need the three smooth kinds); the simulations
evaluate the schedule at the time of each step, t = step / D.

    Constant(eta)                       eta
    PowerLaw(eta0, t0, p)               eta0 / (1 + t / t0)^p
    Piecewise(times, values)            values[i] for times[i-1] <= t < times[i] (values[0] before times[0],
                                        values[-1] from times[-1] on): step decay as in the papers' training
    Interpolated(times, values)         linear interpolation of the table (t, eta), constant beyond its ends

:func:`parse_schedule` reads the command line's form of them.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from pathlib import Path

import numpy as np

from . import _checks as checks

__all__ = ["Schedule", "Constant", "PowerLaw", "Piecewise", "Interpolated", "Piece", "as_schedule", "parse_schedule"]


def _nonneg(name, x, where):
    return checks.number(name, x, where=where, min=0.0)


def _times(name, times, where, *, min_len=1):
    if isinstance(times, (str, bytes)):
        raise TypeError(f"{where}: {name} must be a sequence of numbers (steps / D), got the string {times!r}")
    try:
        a = np.array(times, dtype=float).ravel()
    except (TypeError, ValueError):
        raise TypeError(
            f"{where}: {name} must be a sequence of numbers (steps / D), got {checks.describe(times)}"
        ) from None
    if a.size < min_len or not np.all(np.isfinite(a)) or np.any(np.diff(a) <= 0):
        raise ValueError(f"{where}: {name} must be {min_len} or more finite, strictly increasing times, got {times!r}")
    return tuple(float(x) for x in a)


class Schedule(abc.ABC):
    """A learning rate as a function of t = steps / D (see the module docstring)."""

    kind: str = ""

    @abc.abstractmethod
    def __call__(self, t):
        """eta(t), vectorised over t."""

    def breakpoints(self) -> tuple[float, ...]:
        return ()

    @abc.abstractmethod
    def piece(self, a: float, b: float) -> Piece:
        """The smooth restriction to [a, b] (no breakpoint strictly inside)."""

    @property
    def constant(self) -> bool:
        return False

    def params(self) -> dict:
        """The schedule's parameters, for records and tables."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe(self) -> str:
        return self.kind + "(" + ", ".join(f"{k}={_fmt(v)}" for k, v in self.params().items()) + ")"

    def __str__(self) -> str:
        return self.describe()


def _fmt(v):
    if isinstance(v, tuple):
        return "[" + ",".join(f"{x:g}" for x in v) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclasses.dataclass(frozen=True)
class Piece:
    """A smooth schedule on an interval: kind 0 constant a; 1 linear a + b t; 2 power law a / (1 + t / b)^c."""

    kind: int
    a: float
    b: float = 0.0
    c: float = 0.0

    def __call__(self, t):
        t = np.asarray(t, dtype=float)
        if self.kind == 0:
            return self.a + 0.0 * t
        if self.kind == 1:
            return self.a + self.b * t
        return self.a / (1.0 + t / self.b) ** self.c

    @property
    def constant(self) -> bool:
        return self.kind == 0

    def encode(self) -> tuple[float, float, float, float]:
        """(kind, a, b, c) for the compiled right-hand sides (theory._codegen.rule)."""
        return float(self.kind), float(self.a), float(self.b), float(self.c)


@dataclasses.dataclass(frozen=True)
class Constant(Schedule):
    """eta(t) = value."""

    value: float
    kind = "constant"

    def __post_init__(self):
        object.__setattr__(self, "value", _nonneg("value", self.value, "Constant"))

    def __call__(self, t):
        return self.value + 0.0 * np.asarray(t, dtype=float)

    def piece(self, a, b):
        return Piece(0, self.value)

    @property
    def constant(self) -> bool:
        return True


@dataclasses.dataclass(frozen=True)
class PowerLaw(Schedule):
    """eta(t) = eta0 / (1 + t / t0)^p: p = 1 is the 1/t annealing of online learning theory."""

    eta0: float
    t0: float
    p: float = 1.0
    kind = "power"

    def __post_init__(self):
        w = "PowerLaw"
        object.__setattr__(self, "eta0", _nonneg("eta0", self.eta0, w))
        object.__setattr__(self, "p", _nonneg("p", self.p, w))
        t0 = checks.number("t0", self.t0, where=w)
        if t0 <= 0:
            raise ValueError(f"PowerLaw: t0 must be > 0, got {t0}")
        object.__setattr__(self, "t0", t0)

    def __call__(self, t):
        return self.eta0 / (1.0 + np.asarray(t, dtype=float) / self.t0) ** self.p

    def piece(self, a, b):
        return Piece(2, self.eta0, self.t0, self.p)


def _values(values, where):
    """A schedule's table of learning rates: each a finite number >= 0 (named values[i] in errors)."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{where}: values must be a sequence of learning rates, got the string {values!r}")
    return tuple(_nonneg(f"values[{i}]", v, where) for i, v in enumerate(np.ravel(np.array(values, dtype=object))))


def _pieces(where, n):
    """Refuse (TooLarge) a schedule of ``n`` pieces that would not fit in memory, before building it: each piece
    holds a time and a value (Python floats in tuples) and is a breakpoint where the integrators restart."""
    n = math.ceil(n) + 1
    checks.memory(f"a schedule of {n:.3g} pieces (every is too small for until)", 200.0 * n, where=where)


@dataclasses.dataclass(frozen=True)
class Piecewise(Schedule):
    """Piecewise constant: values[0] before times[0], values[i] on [times[i-1], times[i]), values[-1] after."""

    times: tuple
    values: tuple
    kind = "piecewise"

    def __post_init__(self):
        w = "Piecewise"
        times = _times("times", self.times, w)
        values = _values(self.values, w)
        if len(values) != len(times) + 1:
            raise ValueError(
                f"Piecewise: needs len(values) = len(times) + 1, got {len(values)} values for {len(times)} times"
            )
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)

    def __call__(self, t):
        idx = np.searchsorted(np.asarray(self.times), np.asarray(t, dtype=float), side="right")
        return np.asarray(self.values)[idx]

    def breakpoints(self):
        return self.times

    def piece(self, a, b):
        return Piece(0, float(self(0.5 * (a + b)) if b > a else self(a)))

    @classmethod
    def step_decay(cls, eta0: float, every: float, factor: float, until: float) -> Piecewise:
        """eta0, then multiplied by ``factor`` every ``every`` (steps / D) up to ``until``."""
        w = "Piecewise.step_decay"
        eta0, factor = _nonneg("eta0", eta0, w), _nonneg("factor", factor, w)
        every, until = checks.number("every", every, where=w), checks.number("until", until, where=w)
        if every <= 0:
            raise ValueError(f"{w}: every must be > 0 (steps / D between decays), got {every}")
        if not every <= until:
            raise ValueError(f"{w}: needs every <= until (a decay before until), got every={every}, until={until}")
        _pieces(w, until / every)
        times = tuple(float(x) for x in np.arange(every, until + 0.5 * every, every))
        return cls(times, tuple(eta0 * factor**i for i in range(len(times) + 1)))

    @classmethod
    def windows(cls, value: float, every: float, duration: float, until: float, start: float = 0.0) -> Piecewise:
        """``value`` during [start + i every, start + i every + duration) for i = 0, 1, ... up to ``until``,
        0 otherwise: "mirroring every so often" (an eta_F schedule; HyperParams.eta_F)."""
        w = "Piecewise.windows"
        value, start = _nonneg("value", value, w), _nonneg("start", start, w)
        every, duration, until = (checks.number(n, x, where=w) for n, x in (("every", every), ("duration", duration),
                                                                             ("until", until)))
        if not 0 < duration < every:
            raise ValueError(f"{w}: needs 0 < duration < every, got duration={duration}, every={every}")
        if not until > start:
            raise ValueError(f"{w}: needs until > start, got until={until}, start={start}")
        _pieces(w, 2 * (until - start) / every)
        ons = np.arange(start, until, every)
        times = [x for a in ons for x in (a, a + duration)]
        values = [0.0] + [v for _ in ons for v in (value, 0.0)]
        if times[0] == 0.0:  # on from t = 0
            times, values = times[1:], [value] + values[2:]
        return cls(tuple(times), tuple(values))


@dataclasses.dataclass(frozen=True)
class Interpolated(Schedule):
    """Linear interpolation of a table of (times, values), constant beyond its ends."""

    times: tuple
    values: tuple
    kind = "table"

    def __post_init__(self):
        w = "Interpolated"
        times = _times("times", self.times, w, min_len=2)
        values = _values(self.values, w)
        if len(values) != len(times):
            raise ValueError(
                f"Interpolated: times and values must have the same length, got {len(times)} and {len(values)}"
            )
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)

    def __call__(self, t):
        return np.interp(np.asarray(t, dtype=float), self.times, self.values)

    def breakpoints(self):
        return self.times

    def piece(self, a, b):
        if not b > a:
            return Piece(0, float(self(a)))
        ya, yb = float(self(a)), float(self(b))
        slope = (yb - ya) / (b - a)
        return Piece(1, ya - slope * a, slope)


def as_schedule(x, name: str = "eta") -> Schedule:
    """A Schedule from a number (Constant) or a Schedule."""
    if isinstance(x, Schedule):
        return x
    return Constant(checks.number(name, x, min=0.0))


def parse_schedule(spec: str | None, eta: float) -> Schedule:
    """The command line's schedules, with eta the rate at t = 0 (``--eta``):

    "constant" (or None); "power:t0=10,p=1" (eta / (1 + t/t0)^p); "step:every=50,factor=0.5,until=500"
    (step decay); "piecewise:50=0.5,100=0.25" (eta before t = 50, then 0.5, then 0.25 from t = 100);
    "table:path.csv" (two columns t, eta; interpolated); "windows:every=20,duration=5,until=500[,start=0]"
    (eta during 5 of every 20 time units, 0 otherwise: a mirroring schedule, :meth:`Piecewise.windows`).
    """
    if spec is None or spec.strip() in ("", "constant"):
        return Constant(eta)
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    try:
        if kind == "table":
            data = np.loadtxt(Path(rest.strip()).expanduser(), delimiter=",", ndmin=2)
            if data.shape[1] != 2:
                raise ValueError(f"a table needs two columns (t, eta), got {data.shape[1]}")
            return Interpolated(tuple(data[:, 0]), tuple(data[:, 1]))
        items = [item.split("=", 1) for item in rest.split(",") if item.strip()]
        if any(len(item) != 2 for item in items):
            raise ValueError("expected name=value items separated by commas")
        if kind == "piecewise":
            return _parse_piecewise(items, eta)
        fields = {}
        for k, v in items:
            if k.strip() in fields:
                raise ValueError(f"parameter {k.strip()!r} given twice")
            fields[k.strip()] = v
        if kind == "windows":
            unknown = sorted(set(fields) - {"every", "duration", "until", "start"})
            if unknown:
                raise ValueError(f"unknown parameter(s) {unknown}; expected ('every', 'duration', 'until', 'start')")
            return Piecewise.windows(eta, float(fields["every"]), float(fields["duration"]), float(fields["until"]),
                                     float(fields.get("start", 0.0)))
        names = {"power": ("t0", "p"), "step": ("every", "factor", "until")}.get(kind)
        if names is not None:
            unknown = sorted(set(fields) - set(names))
            if unknown:
                raise ValueError(f"unknown parameter(s) {unknown}; expected {names}")
            if kind == "power":
                return PowerLaw(eta, float(fields["t0"]), float(fields.get("p", 1.0)))
            return Piecewise.step_decay(eta, float(fields["every"]), float(fields["factor"]), float(fields["until"]))
    except KeyError as exc:
        raise ValueError(f"schedule {spec!r}: missing parameter {exc}") from None
    except checks.TooLarge as exc:
        raise checks.TooLarge(f"schedule {spec!r}: {exc}") from None
    except (ValueError, OSError) as exc:
        raise ValueError(f"schedule {spec!r}: {exc}") from None
    raise ValueError(
        f"schedule {spec!r}: unknown kind {kind!r}; expected constant, power, step, piecewise, windows or table"
    )


def _parse_piecewise(items, eta):
    """"piecewise:t1=eta1,t2=eta2,...": times >= 0, strictly increasing as written (no duplicates)."""
    pairs = []
    for k, v in items:
        try:
            t = float(k)
        except ValueError:
            raise ValueError(f"time {k.strip()!r} is not a number") from None
        if not math.isfinite(t) or t < 0:
            raise ValueError(f"time {k.strip()!r} must be a finite time >= 0 (steps / D)")
        if pairs and t == pairs[-1][0]:
            raise ValueError(f"time {k.strip()!r} is given twice")
        if pairs and t < pairs[-1][0]:
            raise ValueError(f"times must be increasing as written: {k.strip()!r} comes after {pairs[-1][0]:g}")
        pairs.append((t, float(v)))
    if not pairs:
        raise ValueError("expected one or more time=eta items")
    return Piecewise(tuple(t for t, _ in pairs), (eta,) + tuple(v for _, v in pairs))
