"""What a protocol minimises, from a flow of the ODE (theory.control.sensitivities.Flow) and its tangents.

    eg_final         eps_g(T)
    eg_integral      int_0^T w(t) eps_g(t) dt, w >= 0 with int_0^T w = 1 (default w = 1 / T: the mean error;
                     ``weight=q`` a number: w = (q + 1) t^q / T^(q + 1), late times weighted more for q > 0;
                     or any callable w(t) >= 0, used as given)
    time_to_target   t*, the first time eps_g(t*) = target (``target=``). Where the target is not reached by T,
                     T + tau log(eps_g(T) / target) with tau = T / log(eps_g(0) / target): continuous at
                     eps_g(T) = target, so the optimiser is led into the region that reaches it.

The optimisers minimise log J for the errors (their scale spans decades) and J / T for the time
(:meth:`Objective.scaled`). Gradients: d eps_g(T) = grad eps_g . Z(T); the integral's by the stages of its
quadrature (sensitivities.flow); t*'s by the implicit function theorem at the crossing.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable

import numpy as np

from .. import _checks as checks

__all__ = ["OBJECTIVES", "Objective", "EgFinal", "EgIntegral", "TimeToTarget", "make_objective"]


@dataclasses.dataclass(frozen=True)
class Objective(abc.ABC):
    """An objective J of a flow on [0, T] (module docstring)."""

    T: float
    name = ""
    weight: Callable | None = dataclasses.field(default=None, init=False)
    target: float | None = dataclasses.field(default=None, init=False)

    @abc.abstractmethod
    def value(self, fl, problem) -> float:
        """J of a flow."""

    @abc.abstractmethod
    def gradient(self, fl, problem) -> np.ndarray:
        """dJ/dtheta of a flow with sensitivities."""

    def scaled(self, J: float, dJ=None):
        """(F, dF): what the optimiser minimises, log J (errors) or J / T (times)."""
        F = math.log(J) if J > 0 else -745.0
        return F, (None if dJ is None else np.asarray(dJ) / max(J, 1e-300))

    @property
    def units(self) -> str:
        return "eps_g"

    def describe(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class EgFinal(Objective):
    name = "eg_final"

    def value(self, fl, problem):
        return float(fl.eg[-1])

    def gradient(self, fl, problem):
        return fl.Z @ problem.eg_grad(fl.y[-1])


@dataclasses.dataclass(frozen=True)
class EgIntegral(Objective):
    w: Callable | None = None
    exponent: float | None = None
    name = "eg_integral"

    def __post_init__(self):
        if self.w is not None:
            fn = self.w
        else:
            q, T = (0.0 if self.exponent is None else self.exponent), self.T
            fn = (lambda t: 1.0 / T) if q == 0 else (lambda t: (q + 1.0) * t**q / T ** (q + 1.0))
        object.__setattr__(self, "weight", fn)

    def value(self, fl, problem):
        return float(fl.integral)

    def gradient(self, fl, problem):
        return np.asarray(fl.d_integral)

    def describe(self):
        if self.w is not None:
            return "eg_integral(weight=callable)"
        return "eg_integral" + ("" if not self.exponent else f"(weight=t^{self.exponent:g})")


@dataclasses.dataclass(frozen=True)
class TimeToTarget(Objective):
    goal: float = 0.0
    eg0: float = 1.0
    name = "time_to_target"

    def __post_init__(self):
        object.__setattr__(self, "target", float(self.goal))

    @property
    def tau(self) -> float:
        return self.T / math.log(self.eg0 / self.goal)

    def value(self, fl, problem):
        if fl.crossing is not None:
            return float(fl.crossing)
        return self.T + self.tau * math.log(float(fl.eg[-1]) / self.goal)

    def gradient(self, fl, problem):
        if fl.crossing is not None:
            return np.asarray(fl.d_crossing)
        return self.tau / float(fl.eg[-1]) * (fl.Z @ problem.eg_grad(fl.y[-1]))

    def scaled(self, J, dJ=None):
        return J / self.T, (None if dJ is None else np.asarray(dJ) / self.T)

    @property
    def units(self) -> str:
        return "steps / D"

    def describe(self):
        return f"time_to_target(target={self.goal:g})"


OBJECTIVES = ("eg_final", "eg_integral", "time_to_target")


def make_objective(objective: str, T: float, eg0: float, *, target=None, weight=None,
                   where: str = "optimal_protocol") -> Objective:
    """The objective named ``objective`` (OBJECTIVES), its options checked: ``target`` only with
    time_to_target (required there, 0 < target < eps_g(0)), ``weight`` only with eg_integral."""
    if not isinstance(objective, str) or objective not in OBJECTIVES:
        raise ValueError(f"{where}: unknown objective {objective!r}; expected one of {OBJECTIVES}")
    if target is not None and objective != "time_to_target":
        raise ValueError(f"{where}: target = {target!r} has no effect with objective {objective!r}; it is the "
                         "eps_g that objective='time_to_target' must reach")
    if weight is not None and objective != "eg_integral":
        raise ValueError(f"{where}: weight has no effect with objective {objective!r}; it weights "
                         "objective='eg_integral'")
    if objective == "eg_final":
        return EgFinal(T)
    if objective == "eg_integral":
        if weight is None or callable(weight):
            return EgIntegral(T, w=weight)
        q = checks.number("weight", weight, where=where)
        if q <= -1:
            raise ValueError(f"{where}: weight (the exponent q of w = (q + 1) t^q / T^(q + 1)) must be > -1, got {q}")
        return EgIntegral(T, exponent=q)
    if target is None:
        raise ValueError(f"{where}: objective 'time_to_target' needs target= (the eps_g to reach)")
    target = checks.number("target", target, where=where)
    if not 0 < target < eg0:
        raise ValueError(f"{where}: target must be in (0, eps_g(0)) = (0, {eg0:.6g}), got {target}")
    return TimeToTarget(T, goal=target, eg0=eg0)
