"""Which view of a rule serves a request: the one place it is decided (issue 21, "one view selector").

A rule written once has several views: the closed forms (numpy, batched; compiled, one state or rows of
points), the numerical Gaussian expectations (numpy, batched; compiled, one state; the compiled
kink-aware kernel; the numpy line rule), and for the samplers its compiled one-sample update. Which one
serves (rule, activation, quadrature, K, M) follows from the rule's derived facts (:mod:`theory.rules._facts`)
and what is installed, never from a declaration:

    closed form      the activation has closed forms, no quadrature is asked for, and the update is in the
                     feedback family (RuleFacts.closed_form);
    compiled         numba is installed, the activation has a compiled form and the rule traced; a KinkAware
                     quadrature also needs RuleFacts.kinks_exact (piecewise quadratic integrands: what the
                     kink-aware kernel integrates exactly), else the numpy line rule serves;
    otherwise        the numpy numerical expectations (theory.expectations.numerical.numerical_terms).

:func:`rhs_view` answers for the ODE (``theory.Dynamics``, ``theory.integrate``, ``theory.sweep``),
:func:`update_view` for the reduced sampler's compiled kernel (``simulate``).
"""

from __future__ import annotations

import dataclasses

from ..activations._base import activation
from ..rules._facts import closed_form_applies

__all__ = ["RhsView", "closed_form_applies", "rhs_view", "update_view"]


@dataclasses.dataclass(frozen=True)
class RhsView:
    """The right-hand side that serves a request.

    closed : the closed forms (else numerical expectations); quadrature : the numerical rule (resolved; None
    for closed forms); single : the compiled single-state right-hand side rhs(t, y, p, dy), or None (numpy);
    rows : the compiled closed-form kernel over rows of points (sweeps), or None; engine : a short name
    (``closed-jit``, ``closed-numpy``, ``numerical-jit``, ``kinks-jit``, ``lines-numpy``, ``numerical-numpy``);
    reason : why no compiled view serves, when none does.
    """

    closed: bool
    quadrature: object = None
    single: object = None
    rows: object = None
    engine: str = ""
    reason: str | None = None


def _compiled(rule, g, K, M):
    """(CompiledRule or None, why not)."""
    from .._codegen.rule import HAVE_NUMBA, activation_code, compiled_rule

    if not HAVE_NUMBA:
        return None, "numba is not installed"
    if activation_code(g) is None:
        return None, f"activation {g.name!r} has no compiled form"
    comp = compiled_rule(rule, int(K), int(M))
    return (comp, None) if comp.ok else (None, comp.reason)


def rhs_view(rule, g, quadrature, K: int, M: int, *, noise: bool = False, mirror: bool = False,
             use_jit: bool = True) -> RhsView:
    """The view of the ODE right-hand side for ``rule`` with activation ``g`` and ``quadrature`` (None: the
    default) at (K, M); ``noise``: sigma > 0 (the numerical rule's dimension); ``mirror``: feedback mirroring
    (the compiled numerical kernels serve it only for activations with closed mirror terms); ``use_jit``
    False: numpy only."""
    g = activation(g)
    closed = closed_form_applies(rule, g, quadrature, K, M)
    comp, why = _compiled(rule, g, K, M) if use_jit else (None, "use_jit=False")
    if closed:
        if comp is None or comp.closed_rhs is None:
            return RhsView(True, engine="closed-numpy", reason=why or "no compiled closed form was generated")
        return RhsView(True, single=comp.closed_rhs, rows=comp.closed_rhs_rows, engine="closed-jit")
    from ..expectations.numerical import KinkAware, quadrature_rule

    quad = quadrature_rule(quadrature, int(K) + int(M) + int(noise), g)
    kinks = isinstance(quad, KinkAware)
    if comp is not None and mirror and not g.closed_forms:
        comp, why = None, f"mirroring with activation {g.name!r} has no compiled mirror terms"
    if comp is not None:
        single = comp.numerical_rhs_kinks if kinks else comp.numerical_rhs
        if single is not None:
            return RhsView(False, quad, single=single, engine="kinks-jit" if kinks else "numerical-jit")
        why = "its integrands are not piecewise quadratic (theory.rules._facts.RuleFacts.kinks_exact)" if kinks else \
            "no compiled numerical right-hand side was generated"
    return RhsView(False, quad, engine="lines-numpy" if kinks else "numerical-numpy", reason=why)


def update_view(rule, g, K: int, M: int):
    """(the rule's compiled one-sample update, None) for the reduced sampler's numba kernel, or (None, why not)."""
    comp, why = _compiled(rule, activation(g), K, M)
    return (comp.update, None) if comp is not None else (None, why)
