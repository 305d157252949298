"""The hyper-parameters of a run, in one frozen, self-validating object.

Every entry point (integrate, rhs, sweep, simulate.run with both engines, compare, the command
line) takes a :class:`HyperParams` or the same names as keyword arguments; :func:`resolve` turns
keyword arguments into a rule and a HyperParams in one place, so that each value is checked once,
with one message, and an unknown keyword is an error everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import numpy as np

from . import _checks as checks
from ._activations import Activation, activation
from ._rules import Rule, make_rule, registered_rules

__all__ = ["HyperParams", "HyperBatch", "resolve", "split_options", "hyper_params", "record", "HYPER_FIELDS"]


@dataclasses.dataclass(frozen=True)
class HyperParams:
    """Learning rates, noise, feedback scale, weight decay and activation of a run (THEORY.md sections 1-3).

    eta : first-layer learning rate (>= 0). eta_v : second-layer learning rate (default eta).
    sigma : standard deviation of the output noise (>= 0). sigma_F : scale of the top-down
    projection F = sigma_F f / sqrt D (a negative value flips its sign). weight_decay : kappa (>= 0).
    train_second_layer : False freezes v. g : the activation of teacher and student ("erf",
    "relu", "tanh", "linear" or a :class:`theory.Activation`).
    """

    eta: float
    eta_v: float | None = None
    sigma: float = 0.0
    sigma_F: float = 1.0
    weight_decay: float = 0.0
    train_second_layer: bool = True
    g: Any = "erf"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("eta", checks.number("eta", self.eta, min=0.0))
        set_("eta_v", self.eta if self.eta_v is None else checks.number("eta_v", self.eta_v, min=0.0))
        set_("sigma", checks.number("sigma", self.sigma, min=0.0))
        set_("sigma_F", checks.number("sigma_F", self.sigma_F))
        set_("weight_decay", checks.number("weight_decay", self.weight_decay, min=0.0))
        set_("train_second_layer", checks.boolean("train_second_layer", self.train_second_layer))
        set_("g", activation(self.g))

    @property
    def activation(self) -> Activation:
        return self.g

    def replace(self, **changes) -> "HyperParams":
        """A copy with some values replaced (validated again); eta_v follows a new eta unless given."""
        checks.reject_unknown(changes, HYPER_FIELDS, where="HyperParams.replace")
        if "eta" in changes and "eta_v" not in changes and self.eta_v == self.eta:
            changes["eta_v"] = None
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The values as plain Python numbers, with the activation's name under ``activation``."""
        return dict(eta=self.eta, eta_v=self.eta_v, sigma=self.sigma, sigma_F=self.sigma_F,
                    weight_decay=self.weight_decay, train_second_layer=self.train_second_layer,
                    activation=self.g.name)


HYPER_FIELDS = tuple(f.name for f in dataclasses.fields(HyperParams))


def rule_option_names() -> set[str]:
    """Every option (variant) name of every registered rule."""
    return {name for cls in registered_rules().values() for name in cls.options()} | {"presynaptic"}


def resolve(rule, params: HyperParams | None, options: dict[str, Any], *, where: str,
            extra: Iterable[str] = ()) -> tuple[Rule, HyperParams]:
    """The rule and the hyper-parameters of a call from its keyword ``options``.

    ``options`` may hold HyperParams fields (they override ``params``) and rule options
    (presynaptic, error, ... applied with :func:`theory.make_rule`); any other name is a TypeError.
    """
    hyper, rule_opts = split_options(options, where=where, extra=extra)
    if params is not None and not isinstance(params, HyperParams):
        raise TypeError(f"{where}: params must be a theory.HyperParams, got {type(params).__name__}")
    try:
        return make_rule(rule, **rule_opts), hyper_params(params, hyper)
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith(f"{where}:") else f"{where}: {msg}") from None


def hyper_params(params: HyperParams | None, fields: dict[str, Any]) -> HyperParams:
    """``params`` with ``fields`` replaced, or a new HyperParams from ``fields`` (eta then required)."""
    if params is None:
        if "eta" not in fields:
            raise ValueError("eta (the first-layer learning rate) is required")
        return HyperParams(**fields)
    return params.replace(**fields) if fields else params


def record(rule: Rule, hyper: HyperParams) -> dict[str, Any]:
    """The rule and hyper-parameters every result records (Trajectory, SimulationResult, sweep rows).

    One definition so that every result carries the same keys in the same order.
    """
    out = dict(rule=rule.name, rule_label=rule.label, presynaptic=rule.presynaptic, error=rule.error)
    out.update(rule.option_values())
    out["rule_options"] = rule.option_values()
    out.update(hyper.as_dict())
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class HyperBatch:
    """The hyper-parameters of B points of a batched right-hand side (sweeps): the numeric fields as
    arrays (B,), ``train_second_layer`` and ``g`` shared. Built from validated :class:`HyperParams`."""

    eta: Any
    eta_v: Any
    sigma: Any
    sigma_F: Any
    weight_decay: Any
    train_second_layer: bool
    g: Activation

    NUMERIC = ("eta", "eta_v", "sigma", "sigma_F", "weight_decay")

    @classmethod
    def of(cls, points: list[HyperParams]) -> "HyperBatch":
        first = points[0]
        if any(p.train_second_layer != first.train_second_layer or p.g != first.g for p in points):
            raise ValueError("HyperBatch: train_second_layer and g must be shared by the points of a batch")
        arrays = {k: np.array([getattr(p, k) for p in points], dtype=float) for k in cls.NUMERIC}
        return cls(**arrays, train_second_layer=first.train_second_layer, g=first.g)

    def take(self, idx) -> "HyperBatch":
        return dataclasses.replace(self, **{k: getattr(self, k)[idx] for k in self.NUMERIC})

    def point(self, i: int) -> HyperParams:
        return HyperParams(**{k: float(getattr(self, k)[i]) for k in self.NUMERIC},
                           train_second_layer=self.train_second_layer, g=self.g)


def split_options(options: dict[str, Any], *, where: str, extra: Iterable[str] = ()) -> tuple[dict, dict]:
    """(HyperParams fields, rule options) of keyword ``options``; any other name is a TypeError."""
    hyper = {k: v for k, v in options.items() if k in HYPER_FIELDS}
    rule_opts = {k: v for k, v in options.items() if k not in hyper}
    names = rule_option_names()
    checks.reject_unknown([k for k in rule_opts if k not in names], HYPER_FIELDS + tuple(sorted(names)) + tuple(extra),
                          where=where)
    return hyper, rule_opts
