"""Parametrised protocols: a vector theta of control parameters, its bounds, and the schedules it makes.

A family maps theta to one schedule per control (eta, eta_v, sigma_F, eta_F) on [0, T]:

    PiecewiseFamily   theta[i, j] = value of control i on piece j (theory.Piecewise), or at the j-th edge of the
                      pieces, linear in between (theory.Interpolated): the optimised protocol.
    ConstantFamily    theta[i] = the constant value of control i: the first baseline.
    PowerLawFamily    theta[i] = (u0, log t0, p) of control i, u0 / (1 + t / t0)^p (theory.PowerLaw): the second
                      baseline; sigma_F, whose ODE pieces must be constant, stays a constant in it.

:meth:`Family.segment_hyper` is the hyper-parameters on an interval [a, b] without breakpoints (the schedules'
smooth pieces there, HyperParams.on): the one place where theta becomes an ODE. Each family also says which
entries of theta act on an interval (:meth:`Family.active`), so that the sensitivities force only those.
theta is handed to the optimisers scaled to [0, 1] (:meth:`Family.to_unit`, :meth:`Family.from_unit`).
"""

from __future__ import annotations

import abc
import dataclasses
import math

import numpy as np

from .._hyper import HyperParams
from .._schedules import Constant, Interpolated, Piecewise, PowerLaw, Schedule

__all__ = ["CONTROLS", "SCHEDULED", "Family", "PiecewiseFamily", "ConstantFamily", "PowerLawFamily", "piece_times"]

#: the hyper-parameters a protocol may vary in time
CONTROLS = ("eta", "eta_v", "sigma_F", "eta_F")
#: those that theory.HyperParams accepts as schedules (sigma_F takes a number only: its protocol is integrated
#: piece by piece, theory.control.protocol.integrate_protocol)
SCHEDULED = ("eta", "eta_v", "eta_F")


def piece_times(T: float, pieces: int, spacing: str = "linear") -> tuple[float, ...]:
    """The inner boundaries of ``pieces`` pieces on [0, T]: equal lengths ("linear"), or log-spaced from T / 100
    ("log": the first piece is [0, T / 100], then geometric; for schedules that decay like 1 / t)."""
    if pieces == 1:
        return ()
    if spacing == "linear":
        return tuple(float(x) for x in np.linspace(0.0, T, pieces + 1)[1:-1])
    return tuple(float(x) for x in np.geomspace(T / 100.0, T, pieces)[:-1])


@dataclasses.dataclass(frozen=True)
class Family(abc.ABC):
    """A parametrised protocol of the controls ``names`` with ``bounds`` ((lo, hi) each) on [0, T]."""

    names: tuple
    bounds: tuple
    T: float

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """The number of parameters (len(theta))."""

    @abc.abstractmethod
    def parameter_bounds(self) -> np.ndarray:
        """(size, 2) lower and upper bounds of theta."""

    @abc.abstractmethod
    def schedules(self, theta) -> dict[str, Schedule]:
        """The schedule of each control."""

    @abc.abstractmethod
    def active(self, a: float, b: float) -> np.ndarray:
        """Indices of the entries of theta that act on [a, b]."""

    def breakpoints(self) -> tuple[float, ...]:
        """Times in (0, T) where a schedule of the family jumps (the integrators restart there)."""
        return ()

    def to_unit(self, theta) -> np.ndarray:
        lo, hi = self.parameter_bounds().T
        return (np.asarray(theta, dtype=float) - lo) / (hi - lo)

    def from_unit(self, x) -> np.ndarray:
        lo, hi = self.parameter_bounds().T
        return lo + np.clip(np.asarray(x, dtype=float), 0.0, 1.0) * (hi - lo)

    def clip(self, theta) -> np.ndarray:
        lo, hi = self.parameter_bounds().T
        return np.clip(np.asarray(theta, dtype=float), lo, hi)

    def hyper(self, base: HyperParams, theta) -> HyperParams:
        """``base`` with the scheduled controls replaced by their schedules (eta_v follows eta unless base sets
        its own, as HyperParams.replace); sigma_F keeps base's value (see :meth:`segment_hyper`)."""
        sched = {k: v for k, v in self.schedules(theta).items() if k in SCHEDULED}
        return base.replace(**sched) if sched else base

    def segment_hyper(self, base: HyperParams, theta, a: float, b: float) -> HyperParams:
        """The hyper-parameters on [a, b], an interval without breakpoints inside: every schedule replaced by
        its piece there (HyperParams.on), sigma_F by its value on the piece."""
        out = self.hyper(base, theta).on(a, b)
        sched = self.schedules(theta)
        if "sigma_F" in sched:
            piece = sched["sigma_F"].piece(a, b)
            if not piece.constant:
                raise ValueError("a sigma_F protocol must be constant on each piece")
            out = dataclasses.replace(out, sigma_F=float(piece.a))
        return out

    def values(self, theta, t) -> dict[str, np.ndarray]:
        """Each control's value at times t."""
        return {k: np.asarray(s(np.asarray(t, dtype=float)), dtype=float) for k, s in self.schedules(theta).items()}


def _constant_or_piecewise(times, vals):
    vals = tuple(float(v) for v in vals)
    if not times or all(v == vals[0] for v in vals):
        return Constant(vals[0])
    return Piecewise(times, vals)


@dataclasses.dataclass(frozen=True)
class PiecewiseFamily(Family):
    """The optimised protocol, pieces cut at ``times``. ``shape="constant"``: control i is u[i, j] on piece j
    (theory.Piecewise), theta = (u[0, 0..N-1], u[1, 0..N-1], ...). ``shape="linear"``: control i is continuous
    and linear on each piece, u[i, j] at the j-th edge of the pieces (0, times..., T) (theory.Interpolated),
    N + 1 values per control; sigma_F (which the ODE's pieces hold fixed) is piecewise constant only."""

    times: tuple = ()
    shape: str = "constant"

    def __post_init__(self):
        if self.shape not in ("constant", "linear"):
            raise ValueError(f"shape must be 'constant' or 'linear', got {self.shape!r}")
        if self.shape == "linear" and "sigma_F" in self.names:
            raise ValueError("a sigma_F protocol is piecewise constant (the ODE's pieces hold sigma_F fixed): "
                             "use shape='constant'")

    @property
    def n_pieces(self) -> int:
        return len(self.times) + 1

    @property
    def n_values(self) -> int:
        """Values per control: one per piece, or one per edge (linear)."""
        return self.n_pieces + (self.shape == "linear")

    @property
    def size(self) -> int:
        return len(self.names) * self.n_values

    @property
    def edges(self) -> np.ndarray:
        return np.array((0.0,) + tuple(self.times) + (self.T,))

    def parameter_bounds(self):
        return np.repeat(np.asarray(self.bounds, dtype=float), self.n_values, axis=0)

    def matrix(self, theta) -> np.ndarray:
        """theta as (controls, values)."""
        return np.asarray(theta, dtype=float).reshape(len(self.names), self.n_values)

    def schedules(self, theta):
        u = self.matrix(theta)
        if self.shape == "linear":
            edges = tuple(float(x) for x in self.edges)
            return {k: Constant(float(u[i, 0])) if np.all(u[i] == u[i, 0]) else Interpolated(edges, tuple(u[i]))
                    for i, k in enumerate(self.names)}
        return {k: _constant_or_piecewise(self.times, u[i]) for i, k in enumerate(self.names)}

    def breakpoints(self):
        return tuple(self.times)

    def active(self, a, b):
        j = int(np.searchsorted(np.asarray(self.times), 0.5 * (a + b), side="right"))
        base = np.arange(len(self.names)) * self.n_values
        return np.sort(np.concatenate([base + j, base + j + 1])) if self.shape == "linear" else base + j

    def from_constants(self, values) -> np.ndarray:
        """theta of the constant protocol ``values`` (one per control)."""
        return np.repeat(np.asarray(values, dtype=float), self.n_values)

    def project(self, family: Family, theta) -> np.ndarray:
        """theta of this family closest to another family's protocol, clipped to the bounds: each piece gets the
        mean of the schedule over it (Simpson's rule on 64 sub-intervals); for the linear shape, each edge the
        schedule's value there."""
        sched = family.schedules(theta)
        e = self.edges
        if self.shape == "linear":
            return self.clip(np.concatenate([np.asarray(sched[k](e), dtype=float) * np.ones(e.size)
                                             for k in self.names]))
        out = np.empty((len(self.names), self.n_pieces))
        for j in range(self.n_pieces):
            s = np.linspace(e[j], e[j + 1], 65)
            w = np.ones(65)
            w[1:-1:2], w[2:-1:2] = 4.0, 2.0
            for i, k in enumerate(self.names):
                out[i, j] = np.dot(w, sched[k](s)) / w.sum()
        return self.clip(out.ravel())


@dataclasses.dataclass(frozen=True)
class ConstantFamily(Family):
    """theta = one constant value per control."""

    @property
    def size(self) -> int:
        return len(self.names)

    def parameter_bounds(self):
        return np.asarray(self.bounds, dtype=float).reshape(-1, 2)

    def schedules(self, theta):
        return {k: Constant(float(v)) for k, v in zip(self.names, np.asarray(theta, dtype=float))}

    def active(self, a, b):
        return np.arange(self.size)


#: the range of the power law's t0 relative to T, and of its exponent p
T0_RANGE = (1e-3, 10.0)
P_RANGE = (0.0, 2.0)


@dataclasses.dataclass(frozen=True)
class PowerLawFamily(Family):
    """theta = (u0, log t0, p) per rate control: u(t) = u0 / (1 + t / t0)^p with u0 in the control's bounds,
    t0 in T * T0_RANGE, p in P_RANGE (p = 0: the constants); sigma_F has one entry (a constant).

    With a lower bound lo > 0 the power law may decay below lo late on: the baseline is then given more room
    than the optimised protocol (a conservative comparison)."""

    def _layout(self):
        return [(k, 1 if k == "sigma_F" else 3) for k in self.names]

    @property
    def size(self) -> int:
        return sum(n for _, n in self._layout())

    def parameter_bounds(self):
        rows = []
        for (k, n), (lo, hi) in zip(self._layout(), self.bounds):
            rows.append((lo, hi))
            if n == 3:
                rows += [(math.log(T0_RANGE[0] * self.T), math.log(T0_RANGE[1] * self.T)), P_RANGE]
        return np.asarray(rows, dtype=float)

    def schedules(self, theta):
        theta = np.asarray(theta, dtype=float)
        out, i = {}, 0
        for k, n in self._layout():
            if n == 1:
                out[k] = Constant(float(theta[i]))
            else:
                u0, log_t0, p = theta[i:i + 3]
                out[k] = Constant(float(u0)) if p == 0 else PowerLaw(float(u0), float(math.exp(log_t0)), float(p))
            i += n
        return out

    def active(self, a, b):
        return np.arange(self.size)

    def from_constants(self, values, t0: float | None = None) -> np.ndarray:
        """theta of the constant protocol ``values`` (p = 0; t0 = T / 10 unless given)."""
        t0 = 0.1 * self.T if t0 is None else t0
        theta = []
        for (k, n), v in zip(self._layout(), values):
            theta += [float(v)] if n == 1 else [float(v), math.log(t0), 0.0]
        return self.clip(theta)
