"""Facts about a rule, derived from its traced update (never declared, never probed).

A rule is defined by its one-sample update (theory.rules._base). What the views need to know about
it is read off the update traced on sympy symbols (:func:`theory._codegen.rule.trace`), with g and g'
the undefined functions ``g``, ``dg``, and e = sum_k v_k g(lambda_k) - sum_m v*_m g(nu_m) - sigma zeta:

closed_form
    the rule is in the feedback family of the closed forms (THEORY.md section 4, theory.expectations.closed):
    with c = its :meth:`~theory.Rule.feedback` (which exists and does not depend on lambda, nu, zeta),

        delta_k - c_k g'(lambda_k) e == 0   for every k,      e_out - e == 0,      h_k - g(lambda_k) == 0,
        alpha + sigma_F e == 0  (presynaptic "modulated")     or     alpha == 0  (clean),

    identically in the symbols (and the error e the rule reports is the e above).
modulates
    the presynaptic input is not x: alpha is not identically 0.

A difference is proven non-zero by a witness (its value at seeded random points of typical and of
wide spread, with g and g' replaced by a smooth function and its derivative, well above rounding), and zero by
``sympy.expand`` or, when neither settles it (a term non-zero only in a region the random points
miss), by ``sympy.simplify``; what stays undecided counts as non-zero, the conservative side (the
numerical view is correct for any rule, and keeping the alpha term is always correct). A rule
whose update cannot be traced gets closed_form False and modulates True for the same reason, and
a one-time :class:`UntraceableRuleWarning`.

The facts may in principle depend on K and M, so they are derived at the (K, M) in use, cached in
the process and on disk next to the rule's generated code (a later process neither imports sympy
nor traces). A declaration ``closed_form = "feedback"`` on a rule class is an assertion, checked
against the facts when the class is registered (:func:`check_declaration`) and whenever facts are
derived: a disagreement is a ValueError that says what differs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

__all__ = ["RuleFacts", "UntraceableRuleWarning", "rule_facts", "closed_form_applies", "check_declaration", "derive"]

#: the (K, M) at which a declaration is checked on registration (and every variant of the class)
DECLARATION_SIZES = ((2, 2), (3, 1))

#: a difference is non-zero when its value at a probe point exceeds this times (1 + |terms|)
WITNESS_TOL = 1e-8
#: the spreads of the probe points, _PROBES of each (wide ones reach regions such as lambda > 6 that typical fields
#: miss)
_PROBE_SCALES = (1.3, 8.0)
_PROBES = 32
_SIMPLIFY_MAX_OPS = 3000


class UntraceableRuleWarning(UserWarning):
    """A rule's update cannot be traced symbolically: it runs on the generic numpy/torch paths."""


@dataclasses.dataclass(frozen=True)
class RuleFacts:
    """What the views need to know about a rule at (K, M), derived from its traced update (module docstring).

    closed_form : in the closed-form feedback family; modulates : alpha is not identically 0;
    traceable : the update could be traced (else ``reason`` says why; closed_form False, modulates True);
    differs : what keeps the rule out of the closed-form family (empty when closed_form);
    kinks_exact : for a piecewise-linear g, every integrand (delta_k xi_u, delta_k delta_l, e_out h_k) is a
    polynomial of degree <= 2 in the fields between the zeros of the arguments of g and g' (what the compiled
    kink-aware engine integrates exactly, theory._codegen.quadrature.numerical_terms_kinks; :func:`_kinks_exact`).
    """

    closed_form: bool
    modulates: bool
    traceable: bool
    reason: str | None = None
    differs: tuple[str, ...] = ()
    kinks_exact: bool = False


# ============================================================================ deciding a difference
@functools.lru_cache(maxsize=1)
def _probe_functions():
    """A smooth g with its derivative g' for the witnesses (any pair would do: a witness shows a
    difference is not identically 0 as a function of the symbols and of g, g')."""
    import math

    def g(z):
        return math.tanh(0.9 * z) + 0.25 * math.sin(1.7 * z)

    def dg(z):
        return 0.9 / math.cosh(0.9 * z) ** 2 + 0.425 * math.cos(1.7 * z)

    return {"g": np.vectorize(g, otypes=[float]), "dg": np.vectorize(dg, otypes=[float])}


def _witness(a, b) -> float | None:
    """max |a - b| / (1 + |a| + |b|) over seeded random points, or None when it cannot be evaluated."""
    import sympy as sp

    syms = sorted(
        (sp.sympify(a) - sp.sympify(b)).free_symbols | sp.sympify(a).free_symbols | sp.sympify(b).free_symbols,
        key=lambda s: s.name,
    )
    try:
        fa = sp.lambdify(syms, a, modules=[_probe_functions(), "numpy"])
        fb = sp.lambdify(syms, b, modules=[_probe_functions(), "numpy"])
        rng = np.random.default_rng(8117)
        vals = np.repeat(np.asarray(_PROBE_SCALES), _PROBES) * rng.standard_normal(
            (len(syms), _PROBES * len(_PROBE_SCALES))
        )
        with np.errstate(all="ignore"):
            va = np.real(np.broadcast_to(np.asarray(fa(*vals), dtype=complex), vals.shape[1:]))
            vb = np.real(np.broadcast_to(np.asarray(fb(*vals), dtype=complex), vals.shape[1:]))
            rel = np.abs(va - vb) / (1.0 + np.abs(va) + np.abs(vb))
    except Exception:  # a function numpy cannot evaluate: undecided here
        return None
    rel = rel[np.isfinite(rel)]
    return float(rel.max()) if rel.size else None


def _difference(a, b):
    """None when a == b identically, else a short description of a - b (module docstring: how it is decided)."""
    import sympy as sp

    d = sp.expand(sp.sympify(a) - sp.sympify(b))
    if d == 0:
        return None
    w = _witness(a, b)
    if w is None or w <= WITNESS_TOL:
        try:
            if sp.count_ops(d) <= _SIMPLIFY_MAX_OPS and sp.simplify(sp.piecewise_fold(d)) == 0:
                return None
        except Exception:  # sympy could not decide: the conservative side
            pass
    text = str(d)
    text = text if len(text) <= 160 else text[:157] + "..."
    return text if w is None or w <= WITNESS_TOL else f"{text} (e.g. {w:.3g} of the terms at a random point)"


# ============================================================================ the facts
def _fields(K, M):
    import sympy as sp

    sym = lambda n: sp.Symbol(n, real=True)  # noqa: E731  (the tracer's symbols: theory._codegen.rule.trace)
    return ([sym(f"lam_{k}") for k in range(K)], [sym(f"nu_{m}") for m in range(M)], sym("zeta_t"),
            [sym(f"v_{k}") for k in range(K)], [sym(f"v_star_{m}") for m in range(M)], sym("sigma"), sym("sigma_F"))


def derive(rule, K: int, M: int, traced: dict, feedback) -> RuleFacts:
    """The facts of ``rule`` from its trace at (K, M) (theory._codegen.rule.trace's output)."""
    import sympy as sp

    G, DG = sp.Function("g"), sp.Function("dg")
    lam, nu, zeta, v, vs, sigma, sigma_F = _fields(K, M)
    e = sum(v[k] * G(lam[k]) for k in range(K)) - sum(vs[m] * G(nu[m]) for m in range(M)) - sigma * zeta
    modulates = _difference(traced["alpha"], 0) is not None
    differs = []

    def check(what, a, b):
        d = _difference(a, b)
        if d is not None:
            differs.append(f"{what} (difference: {d})")

    check("the error e it reports is not sum_k v_k g(lambda_k) - y", traced["e"], e)
    if feedback is None:
        differs.append("it has no feedback vector (Rule.feedback returns None)")
    else:
        fields = set(lam) | set(nu) | {zeta}
        for k, c in enumerate(feedback):
            dep = sorted(s.name for s in sp.sympify(c).free_symbols & fields)
            if dep:
                differs.append(f"feedback_{k} depends on the fields {', '.join(dep)}")
            else:
                check(
                    f"delta_{k} differs from feedback_{k} * g'(lambda_{k}) * e", traced["delta"][k], c * DG(lam[k]) * e
                )
    check("e_out is not e", traced["e_out"], e)
    for k in range(K):
        check(f"h_{k} is not g(lambda_{k})", traced["h"][k], G(lam[k]))
    if rule.modulated:
        check(
            "alpha is not -sigma_F e, the presynaptic input of presynaptic='modulated'", traced["alpha"], -sigma_F * e
        )
    else:
        check(f"alpha is not 0, the presynaptic input of presynaptic={rule.presynaptic!r}", traced["alpha"], 0)
    return RuleFacts(closed_form=not differs, modulates=modulates, traceable=True, differs=tuple(differs),
                     kinks_exact=_kinks_exact(traced, K, M))


def _kinks_exact(traced: dict, K: int, M: int) -> bool:
    """Whether, with g and g' piecewise linear (each argument on its active piece: g(a) -> a, g'(a) -> 1; the
    other piece only lowers degrees), delta, alpha, e_out and h are polynomials in the fields (lambda, nu,
    zeta) with deg(delta) + max(1, deg(alpha)) <= 2, 2 deg(delta) <= 2 and deg(e_out) + deg(h) <= 2: the
    integrands are then piecewise quadratic along any line, with kinks only where an argument of g or g'
    changes sign. Anything else of the fields (tanh(e), sign(lambda), |nu|, a division) makes it False."""
    import sympy as sp

    G, DG = sp.Function("g"), sp.Function("dg")
    lam, nu, zeta, *_ = _fields(K, M)
    fields = [*lam, *nu, zeta]

    def degree(e):
        e = sp.sympify(e).replace(G, lambda a: a).replace(DG, lambda a: sp.Integer(1))
        if not e.is_polynomial(*fields):
            return None
        e = sp.expand(e)
        return -1 if e == 0 else sp.Poly(e, *fields).total_degree()

    degs = {k: [degree(e) for e in (traced[k] if isinstance(traced[k], list) else [traced[k]])]
            for k in ("delta", "alpha", "e_out", "h")}
    if any(d is None for ds in degs.values() for d in ds):
        return False
    dd, da, de, dh = (max(degs[k]) for k in ("delta", "alpha", "e_out", "h"))
    return dd + max(1, da) <= 2 and 2 * dd <= 2 and de + dh <= 2


def _untraceable(reason: str) -> RuleFacts:
    return RuleFacts(closed_form=False, modulates=True, traceable=False, reason=reason)


def _trace_facts(rule, K, M) -> RuleFacts:
    try:
        from .._codegen.rule import trace

        traced, feedback = trace(rule, K, M)
    except Exception as exc:  # any failure of a user's code on symbols (the reason theory.compiled_rule gives)
        return _untraceable(f"its update could not be traced symbolically ({type(exc).__name__}: {exc})")
    return derive(rule, K, M, traced, feedback)


@functools.lru_cache(maxsize=1)
def _version() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def _cache_file(rule, K, M) -> Path | None:
    """Where the facts of ``rule`` at (K, M) are kept on disk (None: not kept, see theory._codegen.rule._rule_key)."""
    try:
        from .._codegen.rule import _rule_key, cache_dir

        key = _rule_key(rule, K, M)
        if key is None:
            return None
        return cache_dir() / "rules" / f"facts_{hashlib.sha256(f'{key}|{_version()}'.encode()).hexdigest()[:24]}.json"
    except OSError:
        return None


def _load(path: Path | None) -> RuleFacts | None:
    if path is None or not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
        return RuleFacts(**{f.name: tuple(d[f.name]) if f.name == "differs" else d[f.name]
                            for f in dataclasses.fields(RuleFacts)})
    except (OSError, ValueError, KeyError, TypeError):  # a damaged file: derive again
        return None


def _store(path: Path | None, facts: RuleFacts) -> None:
    if path is None:
        return
    try:
        from .._codegen.rule import _write_atomic

        _write_atomic(path, json.dumps(dataclasses.asdict(facts)))
    except OSError:
        pass


_WARNED: set = set()


def _warn_untraceable(rule, facts: RuleFacts) -> None:
    cls = type(rule)
    if cls in _WARNED:
        return
    _WARNED.add(cls)
    warnings.warn(UntraceableRuleWarning(
        f"rule {rule.name!r} ({cls.__module__}.{cls.__qualname__}): {facts.reason}. It runs on the generic "
        "numpy/torch paths, correct for any rule but slower: its ODE uses numerical expectations in numpy (no "
        "closed forms, no compiled right-hand side), the reduced sampler has no numba kernel, and simulations always "
        "keep the presynaptic alpha term. Write the update with arithmetic, x.g, x.dg and x.xp to make it traceable."),
        stacklevel=4)


def rule_facts(rule, K: int, M: int) -> RuleFacts:
    """The facts of ``rule`` (a Rule instance, or a name or spec as :func:`theory.make_rule` takes) for K student
    and M teacher units (module docstring).

    Cached in the process and on disk. An untraceable rule warns once per class
    (:class:`UntraceableRuleWarning`); a class declaring ``closed_form = "feedback"`` that the facts
    contradict is a ValueError.
    """
    if not (isinstance(rule, _rule_class()) and type(K) is int and type(M) is int and K > 0 and M > 0):
        from .._checks import integer  # (the hot path, a Rule and two positive ints, skips the checks)
        from ._base import make_rule

        rule = make_rule(rule)
        K, M = integer("K", K, where="rule_facts", min=1), integer("M", M, where="rule_facts", min=1)
    return _rule_facts(rule, K, M)


@functools.cache
def _rule_class():
    from ._base import Rule  # the rules' base module imports this one

    return Rule


@functools.lru_cache(maxsize=512)
def _rule_facts(rule, K: int, M: int) -> RuleFacts:
    path = _cache_file(rule, K, M)
    facts = _load(path)
    if facts is None:
        facts = _trace_facts(rule, K, M)
        _store(path, facts)
    _assert_declaration(rule, K, M, facts)
    if not facts.traceable:
        _warn_untraceable(rule, facts)
    return facts


def _assert_declaration(rule, K, M, facts: RuleFacts) -> None:
    declared = getattr(type(rule), "closed_form", None)
    if declared != "feedback" or facts.closed_form:
        return
    if not facts.traceable:
        why = (f"cannot be checked: {facts.reason}; remove the declaration (the closed-form family is derived from "
               "the update) or write the update so that it can be traced")
    else:
        why = f"disagrees with its update at K={K}, M={M}: {'; '.join(facts.differs)}"
    raise ValueError(
        f"rule {rule.name!r} ({type(rule).__qualname__}{'' if rule.label == rule.name else ', ' + rule.label}) "
        f"declares closed_form = 'feedback' (delta_k = feedback_k g'(lambda_k) e, e_out = e, h = g(lambda), "
        f"alpha of its presynaptic input), which {why}"
    )


def closed_form_applies(rule, g, quadrature, K: int, M: int) -> bool:
    """Whether the closed-form right-hand side serves ``rule`` with activation ``g`` and ``quadrature``
    at (K, M): the activation has closed forms, no quadrature other than "closed" is asked for, and
    the rule is in the feedback family (:func:`rule_facts`). The one place this is decided."""
    from ..activations._base import activation

    if not activation(g).closed_forms or quadrature not in (None, "closed"):
        return False
    return rule_facts(rule, int(K), int(M)).closed_form


def _instances(cls):
    """Every variant of ``cls`` (the product of its variants' choices), or () when it needs arguments."""
    import itertools

    fields = [f for f in dataclasses.fields(cls) if f.init]
    if any(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields):
        return ()
    choices = {f.name: f.metadata["variant"].choices for f in fields if "variant" in f.metadata}
    return tuple(cls(**dict(zip(choices, combo))) for combo in itertools.product(*choices.values()))


def check_declaration(cls) -> None:
    """Refuse a class whose ``closed_form = "feedback"`` declaration disagrees with its update (ValueError
    saying what differs), for every variant at the sizes :data:`DECLARATION_SIZES`. Traces the update
    (imports sympy); called by :func:`theory.register_rule` only for classes that declare it."""
    if getattr(cls, "closed_form", None) != "feedback":
        return
    for rule in _instances(cls):
        for K, M in DECLARATION_SIZES:
            rule_facts(rule, K, M)
