"""The ODE of a rule at fixed hyper-parameters: right-hand sides (THEORY.md section 4).

:class:`Dynamics` maps the flat dynamic order parameters y = (Q, R, S, v) to dy/dt. Three views
of the same right-hand side, chosen by what the rule declares and what is installed:

- the closed forms of the feedback family (derived from the update: theory.rules._facts), compiled from
  the rule's definition (theory._codegen.rule) for a single state, numpy (theory.expectations.closed) for batches;
- the numerical Gaussian expectations of the rule's one-sample update (theory.expectations.numerical), for
  every other rule and activation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from .._hyper import HyperParams, resolve
from .._state import OrderParams, mirror_part, pack, unpack
from ..expectations.closed import assemble, closed_form_terms
from ..rules._base import Rule

__all__ = ["Dynamics", "make_dynamics", "rhs"]


@dataclasses.dataclass(frozen=True, eq=False)
class Dynamics:
    """The ODE of one rule at fixed hyper-parameters, around a state's constants (T, U, P, v_star, b).

    ``rhs(y, t)`` maps flat dynamic order parameters y (..., n) at time t to dy/dt (..., n); t matters
    only for a learning-rate schedule (``hyper`` restricted to an interval without breakpoints,
    HyperParams.on). For sweeps, ``hyper`` is a HyperBatch and the constants may be arrays
    broadcasting against the batch dimensions of y (and t one time per point). ``mirror``: feedback
    mirroring (f learns, HyperParams.eta_F): y = (Q, R, S, v, U, P), the constants U, P being only the
    initial values; the layout stays on intervals where a schedule makes eta_F 0.
    """

    rule: Rule
    hyper: Any
    K: int
    M: int
    T: Any
    U: Any
    P: Any
    v_star: Any
    b: Any
    quadrature: Any = None
    use_jit: bool = True
    mirror: bool = False
    expectation_error: Any = None

    @property
    def g(self):
        return self.hyper.g

    @functools.cached_property
    def closed_form(self) -> bool:
        """Whether the closed forms serve this ODE (theory.ode.views, derived from the rule's update)."""
        from .views import closed_form_applies

        return closed_form_applies(self.rule, self.g, self.quadrature, self.K, self.M)

    @functools.cached_property
    def view(self):
        """The view that serves this ODE (theory.ode.views.rhs_view: closed or numerical, compiled or numpy)."""
        from .views import rhs_view

        return rhs_view(self.rule, self.g, self.quadrature, self.K, self.M,
                        noise=bool(np.any(np.asarray(self.hyper.sigma) != 0)), mirror=self.mirror, use_jit=self.use_jit)

    def terms(self, Q, R, S, v, U=None, P=None):
        """(X, DD, EH): the expectations E[delta_k xi_u], E[delta_k delta_l], E[e_out h_k]."""
        hp = self.hyper
        U = self.U if U is None else U
        P = self.P if P is None else P
        args = (self.rule, Q, R, self.T, S, U, P, v, self.v_star, self.b)
        if self.closed_form:
            return closed_form_terms(*args, sigma=hp.sigma, sigma_F=hp.sigma_F, g=self.g)
        from ..expectations.numerical import numerical_terms

        return numerical_terms(*args, sigma=hp.sigma, sigma_F=hp.sigma_F, g=self.g, quadrature=self.quadrature)

    @property
    def time_dependent(self) -> bool:
        return self.hyper.time_dependent

    def derivatives(self, Q, R, S, v, t=0.0, U=None, P=None):
        """(dQ, dR, dS, dv) at the given dynamic order parameters and time; with mirroring
        (dQ, dR, dS, dv, dU, dP), U and P then being part of the state (default: the constants)."""
        X, DD, EH = self.terms(Q, R, S, v, U, P)
        hp = self.hyper
        eta, eta_v = hp.rates(t)
        out = assemble(X, DD, EH, Q, R, S, v, eta=eta, eta_v=eta_v, weight_decay=hp.weight_decay,
                       train_second_layer=hp.train_second_layer, batch=hp.batch)
        if not self.mirror:
            return out
        from ..expectations.mirror import mirror_derivatives

        U = self.U if U is None else U
        P = self.P if P is None else P
        dS_m, dU, dP = mirror_derivatives(Q, R, S, U, P, v, g=self.g, eta_F=hp.mirror_rate(t), kappa_F=hp.kappa_F,
                                          norm=hp.mirror_norm)
        dQ, dR, dS, dv = out
        return dQ, dR, dS + dS_m, dv, dU, dP

    def rhs(self, y, t=0.0):
        if self._jit_args is not None and np.ndim(y) == 1:
            fn, p = self._jit_args
            dy = np.empty(np.shape(y))
            fn(float(t), np.ascontiguousarray(y, dtype=np.float64), p, dy)
            return dy
        Q, R, S, v = unpack(y, self.K, self.M)
        mir = mirror_part(y, self.K, self.M) if self.mirror else None
        if self.mirror and mir is None:
            raise ValueError(
                "rhs: with mirroring (eta_F > 0) the state holds U and P: OrderParams.to_vector(mirror=True)"
            )
        U, P = mir if mir is not None else (None, None)
        return pack(*self.derivatives(Q, R, S, v, t, U, P))

    def on(self, a: float, b: float) -> Dynamics:
        """This ODE on [a, b], an interval without schedule breakpoints (HyperParams.on)."""
        return dataclasses.replace(self, hyper=self.hyper.on(a, b)) if self.hyper.time_dependent else self

    @functools.cached_property
    def _jit_args(self):
        """(compiled rhs(t, y, p, dy), p) for a single state, or None where no compiled view applies: the
        closed forms (theory._codegen.closed), else the numerical expectations (theory._codegen.quadrature)
        for a traceable rule and an activation with a compiled form."""
        if not self.use_jit:
            return None
        hp = self.hyper
        if not isinstance(hp, HyperParams) or hp.breakpoints() or np.ndim(self.T) != 2 or np.ndim(self.U) != 1 \
                or np.ndim(self.P) != 0:
            return None
        view = self.view
        if view.single is None:
            return None
        from .._codegen.rule import numerical_params, ode_params

        p = ode_params(self.K, self.M, self.T, self.U, float(self.P), self.v_star, self.b, hp, self.rule.modulated,
                       self.mirror)
        if view.closed:
            return view.single, p
        from ..expectations.numerical import node_rule

        nodes, weights = node_rule(self.rule, self.g, self.K, self.M, hp.sigma, view.quadrature)
        return view.single, numerical_params(p, nodes, weights)

    def compiled(self):
        """(rhs, p) of the compiled single-state right-hand side, or None (see :attr:`_jit_args`)."""
        return self._jit_args

    def jacobian(self, y, t=0.0, **options):
        """The derivative of :meth:`rhs` at the flat state y, with respect to the state or hyper-parameters
        (``wrt=``), with its error estimate: theory.ode.derivatives.dynamics_jacobian."""
        from .derivatives import dynamics_jacobian

        return dynamics_jacobian(self, y, t, **options)


def make_dynamics(state0: OrderParams, rule, params: HyperParams | None = None, *, quadrature=None, where="integrate",
                  extra=(), expectation_tol=None, max_cost=None, **options) -> Dynamics:
    """Validate the parameters of a run and build its :class:`Dynamics` (options: HyperParams fields
    and rule options such as presynaptic, error; ``extra``: the caller's other keywords, for hints).

    ``expectation_tol``: for a numerical view, the accuracy of the expectations (largest absolute error of any
    term relative to the largest): without ``quadrature``, the rule is chosen at state0 by
    :func:`theory.expectations.numerical.select_quadrature` (an embedded pair); with one, its estimate is recorded
    (``Dynamics.expectation_error``). None: the fixed default rule, no estimate. ``max_cost``: the ladder's
    cost limit (theory.expectations.numerical.select_quadrature; theory.integrate's default accuracy uses
    DEFAULT_COST_FACTOR)."""
    if not isinstance(state0, OrderParams):
        raise TypeError(f"{where}: state0 must be a theory.OrderParams, got {type(state0).__name__}")
    rule, hyper = resolve(rule, params, options, where=where, extra=extra)
    if "b" in rule.reads and state0.b is None:
        raise ValueError(
            f"{where}: rule {rule.name!r} needs the feedback vector b; build the state with OrderParams(..., b=...)"
        )
    dyn = Dynamics(rule=rule, hyper=hyper, K=state0.K, M=state0.M, T=state0.T, U=state0.U, P=state0.P,
                   v_star=state0.v_star, b=state0.b, quadrature=quadrature, mirror=hyper.mirroring)
    if expectation_tol is None or dyn.closed_form:
        return dyn
    from ..expectations.numerical import error_at, select_at

    if quadrature is None:
        quad, est = select_at(rule, state0, hyper, tol=expectation_tol, max_cost=max_cost)
    else:
        quad, est = quadrature, error_at(rule, state0, hyper, quadrature)
    return dataclasses.replace(dyn, quadrature=quad, expectation_error=est)


def rhs(state: OrderParams, rule, params: HyperParams | None = None, *, quadrature=None, expectation_tol=None,
        **options) -> dict[str, np.ndarray]:
    """The ODE's right-hand side at one state: {"Q": dQ/dt, "R": dR/dt, "S": dS/dt, "v": dv/dt}, and
    "U", "P" with feedback mirroring (eta_F > 0).

    Takes the same parameters as :func:`theory.integrate` (``expectation_tol``: the numerical view's rule is
    chosen at this state to meet it, see :func:`make_dynamics`).
    """
    dyn = make_dynamics(state, rule, params, quadrature=quadrature, where="rhs", expectation_tol=expectation_tol,
                        **options)
    return dict(zip(("Q", "R", "S", "v", "U", "P"), dyn.derivatives(state.Q, state.R, state.S, state.v)))
