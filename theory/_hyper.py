"""The hyper-parameters of a run, in one frozen, self-validating object.

Every entry point (integrate, rhs, sweep, simulate.run with both engines, compare, the command
line) takes a :class:`HyperParams` or the same names as keyword arguments; :func:`resolve` turns
keyword arguments into a rule and a HyperParams in one place, so that each value is checked once,
with one message, and an unknown keyword is an error everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _checks as checks
from ._schedules import Constant, Piece, Schedule
from .activations._base import Activation, activation
from .rules._base import Rule, make_rule, registered_rules

__all__ = ["HyperParams", "HyperBatch", "resolve", "split_options", "hyper_params", "record", "HYPER_FIELDS"]


@dataclasses.dataclass(frozen=True)
class HyperParams:
    """Learning rates, noise, feedback scale, weight decay, activation and batch size of a run
    (THEORY.md sections 1-3).

    eta : first-layer learning rate (>= 0), a number or a schedule eta(t) (:class:`theory.PowerLaw`,
    :class:`theory.Piecewise`, :class:`theory.Interpolated`, ...). eta_v : second-layer learning rate,
    likewise (default: eta, the same schedule). sigma : standard deviation of the output noise
    (>= 0). sigma_F : scale of the top-down projection F = sigma_F f / sqrt D (a negative value flips
    its sign). weight_decay : kappa (>= 0). train_second_layer : False freezes v. g : the activation of
    teacher and student ("erf", "relu", "tanh", "linear" or a :class:`theory.Activation`).
    batch : B, the samples averaged in one step (mini-batch; t stays steps / D, samples seen = B t D).

    Feedback mirroring (docs/extensions.md section 4): eta_F : the mirroring rate of the top-down
    projection f (>= 0, a number or a schedule; 0, the default, keeps F fixed). At every step with
    eta_F > 0 a fresh noise input xi drives the student and f <- f + (eta_F / sqrt D) yhat_xi xi
    - (eta_F kappa_F / D) f; U and P then evolve. kappa_F : the mirroring decay (>= 0).
    mirror_norm : rescale f after each mirroring step so that |f|^2 / D keeps its initial value.
    t_pre : pre-mirroring time (steps / D): the rule does not learn (eta = eta_v = 0) before t_pre.
    A mirroring schedule "every so often" is an eta_F schedule (:meth:`theory.Piecewise.windows`).
    """

    eta: Any
    eta_v: Any = None
    sigma: float = 0.0
    sigma_F: float = 1.0
    weight_decay: float = 0.0
    train_second_layer: bool = True
    g: Any = "erf"
    batch: int = 1
    eta_F: Any = 0.0
    kappa_F: float = 0.0
    mirror_norm: bool = False
    t_pre: float = 0.0

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("eta", _rate("eta", self.eta))
        set_("eta_v", self.eta if self.eta_v is None else _rate("eta_v", self.eta_v))
        set_("sigma", checks.number("sigma", self.sigma, min=0.0))
        set_("sigma_F", checks.number("sigma_F", self.sigma_F))
        set_("weight_decay", checks.number("weight_decay", self.weight_decay, min=0.0))
        set_("train_second_layer", checks.boolean("train_second_layer", self.train_second_layer))
        set_("g", activation(self.g))
        set_("batch", checks.integer("batch", self.batch, min=1))
        set_("eta_F", _rate("eta_F", self.eta_F))
        set_("kappa_F", checks.number("kappa_F", self.kappa_F, min=0.0))
        set_("mirror_norm", checks.boolean("mirror_norm", self.mirror_norm))
        set_("t_pre", checks.number("t_pre", self.t_pre, min=0.0))

    @property
    def activation(self) -> Activation:
        return self.g

    @property
    def mirroring(self) -> bool:
        """Whether f learns (eta_F a schedule or > 0): U and P are then dynamical order parameters."""
        return not (isinstance(self.eta_F, float) and self.eta_F == 0.0)

    @property
    def time_dependent(self) -> bool:
        """Whether eta, eta_v or eta_F changes with t (a schedule, or pre-mirroring before t_pre)."""
        return not (isinstance(self.eta, float) and isinstance(self.eta_v, float) and isinstance(self.eta_F, float)) \
            or self.t_pre > 0

    def rates(self, t):
        """(eta(t), eta_v(t)): floats for constant rates, else evaluated at t (vectorised); 0 before t_pre."""
        out = tuple(r if isinstance(r, float) else r(t) for r in (self.eta, self.eta_v))
        if self.t_pre > 0:
            on = np.asarray(t, dtype=float) >= self.t_pre
            out = tuple(np.where(on, r, 0.0) for r in out)
        return out

    def mirror_rate(self, t):
        """eta_F(t): a float when constant, else evaluated at t (vectorised)."""
        return self.eta_F if isinstance(self.eta_F, float) else self.eta_F(t)

    def max_rate(self) -> float:
        """The largest learning rate the schedules reach (for checks of representability)."""
        def top(r):
            if isinstance(r, float):
                return r
            vals = getattr(r, "values", None)
            return float(max(vals)) if vals is not None else float(np.max(np.asarray(r(np.array([0.0])))))

        return max(top(self.eta), top(self.eta_v), top(self.eta_F))

    def breakpoints(self) -> tuple[float, ...]:
        """Times where a schedule is not smooth (and t_pre): the ODE integrators stop and restart there."""
        pts = {b for r in (self.eta, self.eta_v, self.eta_F) if isinstance(r, Schedule) for b in r.breakpoints()}
        return tuple(sorted(pts | ({self.t_pre} if self.t_pre > 0 else set())))

    def on(self, a: float, b: float) -> HyperParams:
        """These hyper-parameters on [a, b], an interval without breakpoints inside: each schedule
        replaced by its smooth piece there (a number when it is constant), and eta = eta_v = 0 on an
        interval before t_pre (t_pre is then resolved: 0 in the result)."""
        def piece(r):
            if not isinstance(r, Schedule):
                return r
            p = r.piece(a, b)
            return p.a if p.constant else p

        if self.t_pre == 0 and not any(isinstance(r, Schedule) for r in (self.eta, self.eta_v, self.eta_F)):
            return self  # nothing to resolve (frozen: the same values)
        before = self.t_pre > 0 and (b <= self.t_pre if b > a else a < self.t_pre)
        eta, eta_v = (0.0, 0.0) if before else (piece(self.eta), piece(self.eta_v))
        return dataclasses.replace(self, eta=eta, eta_v=eta_v, eta_F=piece(self.eta_F), t_pre=0.0)

    def replace(self, **changes) -> HyperParams:
        """A copy with some values replaced (validated again); eta_v follows a new eta unless given."""
        checks.reject_unknown(changes, HYPER_FIELDS, where="HyperParams.replace")
        if "eta" in changes and "eta_v" not in changes and self.eta_v == self.eta:
            changes["eta_v"] = None
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The values as plain Python numbers (eta, eta_v at t = 0; their schedules described under
        eta_schedule, eta_v_schedule), with the activation's name under ``activation``."""
        eta0, eta_v0 = (float(np.asarray(r if isinstance(r, float) else r(0.0))) for r in (self.eta, self.eta_v))
        return dict(eta=eta0, eta_v=eta_v0, sigma=self.sigma, sigma_F=self.sigma_F,
                    weight_decay=self.weight_decay, train_second_layer=self.train_second_layer,
                    activation=self.g.name, batch=self.batch, eta_schedule=_describe(self.eta),
                    eta_v_schedule=_describe(self.eta_v), eta_F=float(np.asarray(self.mirror_rate(0.0))),
                    eta_F_schedule=_describe(self.eta_F), kappa_F=self.kappa_F, mirror_norm=self.mirror_norm,
                    t_pre=self.t_pre)


def _rate(name, x):
    """A learning rate: a number (>= 0) or a schedule (a constant one becomes its number)."""
    if isinstance(x, Constant):
        return x.value
    if isinstance(x, (Schedule, Piece)):
        return x
    return checks.number(name, x, min=0.0)


def _describe(r) -> str:
    return "constant" if isinstance(r, float) else (r.describe() if isinstance(r, Schedule) else repr(r))


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
        out = HyperParams(**fields)
    else:
        out = params.replace(**fields) if fields else params
    _check_mirroring_options(out, fields)
    return out


def _check_mirroring_options(hyper: HyperParams, fields: dict[str, Any]) -> None:
    """kappa_F and mirror_norm act only under feedback mirroring: set without eta_F they would be ignored.

    An explicit eta_F (0 included: mirroring asked to be off) makes them legitimate, as does a params
    object that already mirrors.
    """
    if "eta_F" in fields or hyper.mirroring:
        return
    inert = [f"{k} = {fields[k]!r}" for k, off in (("kappa_F", 0.0), ("mirror_norm", False))
             if k in fields and fields[k] is not None and fields[k] != off]
    if inert:
        raise ValueError(f"{' and '.join(inert)} {'has' if len(inert) == 1 else 'have'} no effect without feedback "
                         "mirroring; set eta_F > 0 (the mirroring rate), or eta_F=0 to keep it off explicitly")


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
    arrays (B,), ``train_second_layer`` and ``g`` shared. Built from validated :class:`HyperParams`
    restricted to an interval without breakpoints (:meth:`HyperParams.on`): ``eta_code``,
    ``eta_v_code`` and ``eta_F_code`` (B, 4) hold each point's smooth schedule piece
    (theory._schedules.Piece.encode)."""

    eta: Any
    eta_v: Any
    sigma: Any
    sigma_F: Any
    weight_decay: Any
    batch: Any
    eta_code: Any
    eta_v_code: Any
    train_second_layer: bool
    g: Activation
    eta_F: Any = None
    eta_F_code: Any = None
    kappa_F: Any = None
    mirror_norm: Any = None

    NUMERIC = ("eta", "eta_v", "sigma", "sigma_F", "weight_decay", "batch", "eta_code", "eta_v_code", "eta_F",
               "eta_F_code", "kappa_F", "mirror_norm")

    @classmethod
    def of(cls, points: list[HyperParams]) -> HyperBatch:
        first = points[0]
        if any(p.train_second_layer != first.train_second_layer or p.g != first.g for p in points):
            raise ValueError("HyperBatch: train_second_layer and g must be shared by the points of a batch")
        code = lambda r: (0.0, r, 0.0, 0.0) if isinstance(r, float) else r.encode()  # noqa: E731
        arrays = {k: np.array([getattr(p, k) for p in points], dtype=float)
                  for k in ("sigma", "sigma_F", "weight_decay", "batch", "kappa_F", "mirror_norm")}
        rates = np.array([[np.asarray(r) for r in p.rates(0.0)] for p in points], dtype=float)
        return cls(**arrays, eta=rates[:, 0], eta_v=rates[:, 1], eta_code=np.array([code(p.eta) for p in points]),
                   eta_v_code=np.array([code(p.eta_v) for p in points]), train_second_layer=first.train_second_layer,
                   g=first.g, eta_F=np.array([float(np.asarray(p.mirror_rate(0.0))) for p in points]),
                   eta_F_code=np.array([code(p.eta_F) for p in points]))

    @property
    def time_dependent(self) -> bool:
        return bool(np.any(self.eta_code[:, 0] != 0) or np.any(self.eta_v_code[:, 0] != 0)
                    or np.any(self.eta_F_code[:, 0] != 0))

    def rates(self, t):
        """(eta(t), eta_v(t)) of every point (t: one time per point, or a scalar)."""
        if not self.time_dependent:
            return self.eta, self.eta_v
        return _piece_values(self.eta_code, t), _piece_values(self.eta_v_code, t)

    def mirror_rate(self, t):
        """eta_F(t) of every point."""
        if not self.time_dependent:
            return self.eta_F
        return _piece_values(self.eta_F_code, t)

    def take(self, idx) -> HyperBatch:
        return dataclasses.replace(self, **{k: getattr(self, k)[idx] for k in self.NUMERIC})

    def point(self, i: int) -> HyperParams:
        rate = lambda c: float(c[1]) if c[0] == 0 else Piece(int(c[0]), *map(float, c[1:]))  # noqa: E731
        return HyperParams(eta=rate(self.eta_code[i]), eta_v=rate(self.eta_v_code[i]), sigma=float(self.sigma[i]),
                           sigma_F=float(self.sigma_F[i]), weight_decay=float(self.weight_decay[i]),
                           train_second_layer=self.train_second_layer, g=self.g, batch=int(self.batch[i]),
                           eta_F=rate(self.eta_F_code[i]), kappa_F=float(self.kappa_F[i]),
                           mirror_norm=bool(self.mirror_norm[i]))


def _piece_values(code, t):
    """Values of the pieces code (B, 4) = (kind, a, b, c) at times t (B,) (theory._schedules.Piece)."""
    kind, a, b, c = code.T
    t = np.asarray(t, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        power = a / (1.0 + t / np.where(kind == 2, b, 1.0)) ** c
    return np.where(kind == 0, a, np.where(kind == 1, a + b * t, power))


def split_options(options: dict[str, Any], *, where: str, extra: Iterable[str] = ()) -> tuple[dict, dict]:
    """(HyperParams fields, rule options) of keyword ``options``; any other name is a TypeError."""
    hyper = {k: v for k, v in options.items() if k in HYPER_FIELDS}
    rule_opts = {k: v for k, v in options.items() if k not in hyper}
    names = rule_option_names()
    checks.reject_unknown([k for k in rule_opts if k not in names], HYPER_FIELDS + tuple(sorted(names)) + tuple(extra),
                          where=where)
    return hyper, rule_opts
