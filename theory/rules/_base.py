"""Learning rules, each defined once by what it does to one sample (THEORY.md section 3).

Every rule updates, with eta the first-layer and eta_v the second-layer learning rate and kappa
the weight decay,

    w_k <- w_k - (eta / sqrt D) * delta_k * xp  -  (eta * kappa / D) * w_k
    v_k <- v_k - (eta_v / D) * e_out * h_k

and the presynaptic input is always of the form xp = x + alpha * f / sqrt D, with alpha = 0 for
the clean input x and alpha = -sigma_F e for the modulated input xt = x - F e, F = sigma_F f/sqrt D.
So a rule is fully described, for one sample, by the four quantities (delta, alpha, e_out, h) as
functions of the local fields lambda (K,), nu (M,), the noise zeta and the current v, v_star,
S, b: its :meth:`Rule.update`. The closed-form ODEs, the numerical expectations, the full
simulation, the reduced sampler and the compiled kernels are views of that one method, and the
tests hold every view against it.

Writing a rule
--------------
Subclass :class:`Rule`, give it a ``name``, and implement ``update(x)``, where ``x`` is a
:class:`Sample`: the fields ``x.lam`` (..., K), ``x.nu`` (..., M), ``x.zeta`` (...), the state
``x.v``, ``x.v_star``, ``x.S``, ``x.b``, the scalars ``x.sigma``, ``x.sigma_F``, the activation
``x.g`` and its derivative ``x.dg``, and the derived label ``x.y``, error ``x.e = yhat - y`` and
``x.g_lam = g(lambda)``. Write it with arithmetic, ``x.g``, ``x.dg`` and the array namespace
``x.xp`` (numpy, torch or the symbolic tracer: ``sign``, ``exp``, ``tanh``, ``abs``, ``where``,
``maximum``, ``minimum``, ...), so that the same code runs on numpy arrays, torch tensors and
sympy symbols. Return a :class:`LocalUpdate`; only ``delta`` is required: ``alpha`` defaults to
the rule's presynaptic input (-sigma_F e when ``presynaptic == "modulated"``, else 0), ``e_out``
to e and ``h`` to g(lambda). Declare the order parameters beyond v, v_star that it reads
(``reads = ("S",)`` or ``("b",)``), its feedback vector for the alignment angles
(:meth:`Rule.feedback`) and its variants as dataclass fields (:func:`variant`). Register it with
:func:`register_rule`; its name then works wherever a rule name is accepted.

What the views need to know about a rule is derived from its update traced on symbols, never
declared (theory.rules._facts): whether it is in the closed-form family (delta_k = feedback_k g'(lambda_k) e,
e_out = e, h = g(lambda), alpha as its presynaptic variant says: the closed forms then apply for
erf, relu and linear) and whether it modulates its presynaptic input (alpha not identically 0).
``closed_form = "feedback"`` on a class is an optional assertion, checked on registration: a
declaration that disagrees with the update is refused, saying what differs. A rule whose update
cannot be traced runs on the generic numpy/torch paths (a one-time theory.UntraceableRuleWarning).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from ..activations._base import Activation, activation

__all__ = ["Rule", "LocalUpdate", "Sample", "variant", "register_rule", "registered_rules", "make_rule", "load_rule",
           "rule_from_params", "RULES"]

#: The built-in rules, in the order the toolkit shows them (the defaults of compare and the CLI).
RULES = ("bp", "fa", "afa", "pepita")

#: Order parameters a rule may read beyond v and v_star.
READABLE = ("S", "b")


class LocalUpdate(NamedTuple):
    """One sample's update: delta (..., K), alpha (...), e_out (...), h (..., K), and the error e (...).

    A rule's :meth:`Rule.update` may leave alpha, e_out, h and e as None (see the module docstring);
    :meth:`Rule.local_update` fills them in.
    """

    delta: Any
    alpha: Any = None
    e_out: Any = None
    h: Any = None
    e: Any = None


def _is_torch(a) -> bool:
    return type(a).__module__.startswith("torch")


def _namespace(a):
    """The array namespace of ``a``: torch, the symbolic tracer's (object arrays) or numpy."""
    if _is_torch(a):
        import torch

        return torch
    import numpy as np

    if isinstance(a, np.ndarray) and a.dtype == object:
        from .._codegen.rule import symbolic_namespace

        return symbolic_namespace()
    return np


class Sample:
    """What a rule's update sees of one sample (or of a batch of samples along leading axes).

    lam (..., K), nu (..., M), zeta (...): student and teacher local fields and the output noise;
    v (..., K), v_star (..., M), S (..., K), b (..., K): the current state (S and b only when the
    rule declares them in ``reads``); sigma, sigma_F: output noise and top-down projection scale;
    g, dg: the activation and its derivative; xp: the array namespace of the inputs.
    Derived: y = sum_m v*_m g(nu_m) + sigma zeta, e = sum_k v_k g(lambda_k) - y, g_lam = g(lambda).
    """

    def __init__(self, rule: Rule, lam, nu, zeta, *, v, v_star, S=None, b=None, sigma=0.0, sigma_F=1.0,
                 g: Activation | str = "erf"):
        self._rule = rule
        self.lam, self.nu, self.zeta = lam, nu, zeta
        self.v, self.v_star = v, v_star
        self._S, self._b = S, b
        self.sigma, self.sigma_F = sigma, sigma_F
        act = activation(g)
        self.g, self.dg = act.g, act.dg
        self.activation = act

    def _read(self, name, val):
        if name not in self._rule.reads:
            raise ValueError(f"rule {self._rule.name!r} reads {name} but does not declare it: set reads = "
                             f"{tuple(self._rule.reads) + (name,)!r} on the rule class")
        if val is None:
            what = "the feedback vector b (OrderParams.b)" if name == "b" else f"the overlaps {name}"
            raise ValueError(f"rule {self._rule.name!r} needs {what}")
        return val

    @property
    def S(self):
        return self._read("S", self._S)

    @property
    def b(self):
        return self._read("b", self._b)

    @functools.cached_property
    def xp(self):
        return _namespace(self.lam if self.lam is not None else self.v)

    @functools.cached_property
    def g_lam(self):
        return self.g(self.lam)

    @functools.cached_property
    def y(self):
        return (self.v_star * self.g(self.nu)).sum(-1) + self.sigma * self.zeta

    @functools.cached_property
    def e(self):
        return (self.v * self.g_lam).sum(-1) - self.y


@dataclasses.dataclass(frozen=True)
class Variant:
    """The metadata of a rule option declared with :func:`variant`."""

    choices: tuple
    aliases: dict
    short: str | None
    keys: dict


def variant(default, *others, aliases: dict | None = None, short: str | None = None, keys: dict | None = None):
    """A rule option with a fixed set of values (a dataclass field): ``default`` first, then ``others``.

    aliases : other names accepted for a value (e.g. {"forward": "clean"}).
    short : the option's name in labels ("pre" for presynaptic); default: the field name.
    keys : file-safe names of values in rule keys (default: the value itself).
    """
    choices = (default,) + others
    bad = [c for c in choices if not isinstance(c, str) or not c]
    if bad:
        raise TypeError(f"variant: choices must be non-empty strings, got {bad[0]!r} in {choices!r}")
    twice = sorted({c for c in choices if choices.count(c) > 1})
    if twice:
        raise ValueError(f"variant: choices must be distinct, got {twice[0]!r} twice in {choices!r}")
    meta = Variant(choices=choices, aliases=dict(aliases or {}), short=short, keys=dict(keys or {}))
    return dataclasses.field(default=default, metadata={"variant": meta})


@dataclasses.dataclass(frozen=True)
class Rule(abc.ABC):
    """A learning rule with its variant, defined by its one-sample :meth:`update` (module docstring).

    Class attributes a rule sets: ``name`` (its registry name), ``reads`` (order parameters beyond
    v, v_star it uses: "S", "b") and optionally ``closed_form = "feedback"``, an assertion that
    delta_k = feedback_k g'(lambda_k) e, e_out = e, h = g(lambda) and alpha is its presynaptic
    variant's, checked on registration (whether the closed forms apply is derived from the update
    either way: theory.rules._facts.rule_facts; None, the default, asserts nothing). Instances are frozen:
    their dataclass fields are the rule's options (variants), validated on construction.
    Two options of THEORY.md section 3 exist for every rule, fixed unless it declares them as
    variants: ``presynaptic`` ("clean", xp = x) and ``error`` ("first": the last layer's error is
    e of the first forward pass).
    """

    name: ClassVar[str] = ""
    reads: ClassVar[tuple[str, ...]] = ()
    closed_form: ClassVar[str | None] = None
    presynaptic: ClassVar[str] = "clean"
    error: ClassVar[str] = "first"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            meta = f.metadata.get("variant")
            if meta is None:
                continue
            val = getattr(self, f.name)
            val = meta.aliases.get(val, val) if isinstance(val, str) else val
            if val not in meta.choices:
                raise ValueError(f"rule: {f.name}={getattr(self, f.name)!r} is not available for {self.name!r}; "
                                 f"expected one of {meta.choices}")
            object.__setattr__(self, f.name, val)

    # ------------------------------------------------------------------ the definition
    @abc.abstractmethod
    def update(self, x: Sample) -> LocalUpdate:
        """One sample's update (delta, and optionally alpha, e_out, h) from :class:`Sample` ``x``."""

    def feedback(self, x):
        """The feedback vector b_fb (..., K) of the alignment angles (what the first layer's update uses
        in place of v), from ``x.v``, ``x.S``, ``x.b``, ``x.sigma_F``; None when the rule has none.
        For a rule of the closed-form family it is also the coefficient c of delta_k = c_k g'(lambda_k) e
        (it must not depend on the fields lambda, nu, zeta)."""
        return None

    # ------------------------------------------------------------------ provided
    @property
    def modulated(self) -> bool:
        """Whether the presynaptic input is the modulated xt = x - F e."""
        return self.presynaptic == "modulated"

    @classmethod
    def options(cls) -> dict[str, dataclasses.Field]:
        """The rule's options (its dataclass fields), by name."""
        return {f.name: f for f in dataclasses.fields(cls)}

    def option_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.options()}

    @property
    def label(self) -> str:
        """"bp", or "[afa, pre=modulated]": the name and every option."""
        parts = [self.name]
        for name, f in self.options().items():
            meta = f.metadata.get("variant")
            parts.append(f"{meta.short if meta and meta.short else name}={getattr(self, name)}")
        return "[" + ", ".join(parts) + "]" if len(parts) > 1 else self.name

    @property
    def key(self) -> str:
        """A file-safe name: the rule's name and its options that differ from their defaults
        (bp, afa-clean, pepita-clean-errmod, ...)."""
        key = self.name
        for name, f in self.options().items():
            val = getattr(self, name)
            if val != f.default:
                meta = f.metadata.get("variant")
                key += "-" + str(meta.keys.get(val, val) if meta else f"{name}{val}")
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", key)

    def local_update(self, lam, nu, zeta, *, v, v_star, S=None, b=None, sigma=0.0, sigma_F=1.0,
                     g: Activation | str = "erf") -> LocalUpdate:
        """One sample's (delta, alpha, e_out, h, e) from the local fields, every entry filled in.

        lam (..., K) and nu (..., M) are the student and teacher pre-activations w.x/sqrt D,
        zeta (...) the standard-normal output noise. v (..., K), v_star (..., M), S (..., K) and
        b (..., K) broadcast against the leading dimensions. Works for numpy arrays, torch tensors
        and sympy object arrays alike.

        What the rule returns is checked once here (theory.rules._validate): every field comes back
        with exactly the shape above (lam's array kind; float64 for numpy), or a ValueError /
        TypeError names the rule, the field, the expected and the actual shape.
        """
        from ._validate import sample_shape, update_fields

        x = Sample(self, lam, nu, zeta, v=v, v_star=v_star, S=S, b=b, sigma=sigma, sigma_F=sigma_F, g=g)
        up = self.update(x)
        if not isinstance(up, LocalUpdate):
            raise TypeError(f"rule {self.name!r}: update must return a theory.LocalUpdate, got {type(up).__name__}")
        e = x.e if up.e is None else up.e
        alpha = up.alpha
        if alpha is None:
            alpha = -sigma_F * e if self.modulated else 0.0 * e
        fields = dict(delta=up.delta, alpha=alpha, e_out=e if up.e_out is None else up.e_out,
                      h=x.g_lam if up.h is None else up.h, e=e)
        lead = sample_shape(x.e, S if "S" in self.reads else None, b if "b" in self.reads else None)
        return LocalUpdate(*update_fields(self.name, fields, lead, lam.shape[-1], lam))

    def modulates_input(self, K: int, M: int, g: Activation | str = "erf") -> bool:
        """Whether the presynaptic input differs from x: alpha is not identically 0 in the traced update
        (theory.rules._facts.rule_facts; True for a rule that cannot be traced, the conservative side). The
        fact holds for any activation; ``g`` is accepted for compatibility and checked."""
        activation(g)
        from ._facts import rule_facts

        return rule_facts(self, int(K), int(M)).modulates

    def feedback_of(self, state, sigma_F=1.0):
        """:meth:`feedback` evaluated on a state-like object (v, S, b attributes; batched arrays allowed)."""
        import numpy as np

        val = lambda name: None if getattr(state, name, None) is None else np.asarray(getattr(state, name), dtype=float)  # noqa: E731
        x = Sample(self, None, None, None, v=val("v"), v_star=val("v_star"), S=val("S"), b=val("b"), sigma_F=sigma_F)
        x.xp = np
        return self.feedback(x)


# ================================================================================ registry
_REGISTRY: dict[str, type[Rule]] = {}


def register_rule(cls: type | None = None, *, replace: bool = False):
    """Register a :class:`Rule` subclass under its ``name`` (usable as a class decorator).

    The class is made a frozen dataclass if it is not one already. A ``closed_form = "feedback"``
    declaration is checked against the traced update of every variant (theory.rules._facts.check_declaration):
    one that disagrees is a ValueError saying what differs. A name that is already taken
    by another class is an error unless ``replace=True`` or the class has the same qualified name
    (the same definition loaded again: a re-run notebook cell, a script loaded from its path).
    """
    if cls is None:
        return functools.partial(register_rule, replace=replace)
    if not (isinstance(cls, type) and issubclass(cls, Rule)):
        raise TypeError(f"register_rule: expected a subclass of theory.Rule, got {cls!r}")
    if "__dataclass_fields__" not in cls.__dict__:
        cls = dataclasses.dataclass(frozen=True)(cls)
    name = cls.__dict__.get("name", getattr(cls, "name", ""))
    if "name" in {f.name for f in dataclasses.fields(cls)}:
        raise TypeError(f"register_rule: {cls.__name__}.name must be a class attribute (name = '...'), not a field")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.+-]*", name):
        raise ValueError(f"register_rule: {cls.__name__}.name must be a name of letters, digits and _.+- "
                         f"starting with a letter, got {name!r}")
    from .._hyper import HYPER_FIELDS  # (theory._hyper imports this module)

    clash = [
        f.name for f in dataclasses.fields(cls) if f.metadata.get("variant") is not None and f.name in HYPER_FIELDS
    ]
    if clash:
        raise ValueError(
            f"register_rule: {cls.__name__}'s variant field {clash[0]!r} has the name of a hyper-parameter "
            f"(HyperParams.{clash[0]}), which an option of that name would set instead; rename the field"
        )
    if getattr(cls, "__abstractmethods__", None):
        raise TypeError(f"register_rule: {cls.__name__} does not implement {sorted(cls.__abstractmethods__)}")
    bad = [r for r in cls.reads if r not in READABLE]
    if bad:
        raise ValueError(f"register_rule: {cls.__name__}.reads may name {READABLE}, got {bad}")
    if cls.closed_form not in (None, "feedback"):
        raise ValueError(
            f"register_rule: {cls.__name__}.closed_form must be None or 'feedback', got {cls.closed_form!r}"
        )
    if cls.closed_form == "feedback":  # an assertion: checked against the traced update (imports sympy)
        from ._facts import check_declaration

        try:
            check_declaration(cls)
        except ValueError as exc:
            raise ValueError(f"register_rule: {exc}") from None
    old = _REGISTRY.get(name)
    if old is not None and old is not cls and not replace and old.__qualname__ != cls.__qualname__:
        raise ValueError(f"register_rule: a rule named {name!r} is already registered ({_qualname(old)}); "
                         "pass replace=True to replace it")
    _REGISTRY[name] = cls
    return cls


def _qualname(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def registered_rules() -> dict[str, type[Rule]]:
    """The registered rule classes by name (built-in ones first)."""
    _load_builtins()
    return {**{n: _REGISTRY[n] for n in RULES}, **{n: c for n, c in _REGISTRY.items() if n not in RULES}}


def _load_builtins():
    if not _REGISTRY or not all(n in _REGISTRY for n in RULES):
        from . import load_builtins

        load_builtins()


def _lookup(name: str) -> type[Rule]:
    _load_builtins()
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    raise ValueError(f"rule: unknown rule {name!r}; expected one of {tuple(registered_rules())} "
                     "(or register your own with theory.register_rule)")


def make_rule(rule: str | Rule, **options) -> Rule:
    """A :class:`Rule` from its registered name (or a Rule, with some options replaced) and options.

    Options left as None take the rule's defaults. An option the rule does not have is accepted
    only when it equals the rule's fixed value (e.g. presynaptic="clean" for bp).
    """
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(rule, Rule):
        cls, base = type(rule), rule
    elif isinstance(rule, str):
        cls, base = _lookup(rule), None
    else:
        raise ValueError(f"rule: unknown rule {rule!r}; expected a rule name or a theory.Rule")
    own = cls.options()
    for k in [k for k in options if k not in own]:
        val = options.pop(k)
        fixed = getattr(cls, k, None)
        if isinstance(fixed, str) and _normalise(k, val) == fixed:
            continue
        holders = [n for n, c in registered_rules().items() if k in c.options()]
        where = f"; {k} applies to {', '.join(holders)} only" if holders else ""
        if fixed is not None or holders:
            raise ValueError(f"rule: {k}={val!r} is not available for {cls.name!r}{where}")
        raise TypeError(f"rule: {cls.name!r} has no option {k!r}; its options are {sorted(own) or 'none'}")
    if base is not None:
        return dataclasses.replace(base, **options) if options else base
    return cls(**options)


def _normalise(name, val):
    """An option's value with the aliases of any registered rule's variant of that name applied."""
    for c in _REGISTRY.values():
        f = c.options().get(name)
        meta = f.metadata.get("variant") if f is not None else None
        if meta and isinstance(val, str) and val in meta.aliases:
            return meta.aliases[val]
    return val


def rule_from_params(params: dict) -> Rule | None:
    """The rule recorded in a result's parameters (None when its class is not registered here)."""
    name = params.get("rule")
    try:
        cls = _lookup(name)
    except ValueError:
        return None
    opts = params.get("rule_options")
    if opts is None:  # results written before rule options were recorded
        opts = {k: params[k] for k in cls.options() if k in params}
    try:
        return make_rule(cls.name, **opts)
    except (TypeError, ValueError):
        return None


def load_rule(spec: str | Rule) -> Rule:
    """A rule from a name, ``"module:NAME"`` or ``"path/to/file.py:NAME"`` (NAME a Rule subclass, a Rule
    instance or a registered name defined by that module); the class is registered if it is not yet."""
    if isinstance(spec, Rule):
        register_rule(type(spec))
        return spec
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"rule: expected a rule name or 'file.py:NAME' / 'module:NAME', got {spec!r}")
    if ":" not in spec:
        return make_rule(spec)
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise ValueError(f"rule: no such file {str(path)!r} (in {spec!r})")
        modname = f"pepita_user_rules_{path.stem}"
        mod = sys.modules.get(modname)
        if mod is None or getattr(mod, "__file__", None) != str(path.resolve()):
            loader = importlib.util.spec_from_file_location(modname, path.resolve())
            mod = importlib.util.module_from_spec(loader)
            sys.modules[modname] = mod
            try:
                loader.loader.exec_module(mod)
            except Exception:
                sys.modules.pop(modname, None)
                raise
    else:
        try:
            mod = importlib.import_module(where)
        except ImportError as exc:
            raise ValueError(f"rule: cannot import module {where!r} (in {spec!r}): {exc}") from None
    obj = getattr(mod, name, None)
    if isinstance(obj, type) and issubclass(obj, Rule):
        return register_rule(obj)()
    if isinstance(obj, Rule):
        register_rule(type(obj))
        return obj
    if obj is None and name in _REGISTRY:
        return make_rule(name)
    raise ValueError(f"rule: {spec!r} names no theory.Rule subclass, instance or registered rule")
