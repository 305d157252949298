"""Pseudo-arclength continuation of fixed points in one hyper-parameter, with bifurcation detection.

A branch of fixed points f(x; p) = 0 (x the free coordinates of theory.analysis.fixed_points, p one continuous
hyper-parameter: sigma_F, eta, eta_v, sigma, weight_decay, ...) is followed as a curve z(s) = (x(s), p(s)) in
arclength s (Keller's pseudo-arclength method):

    predictor   z_pred = z_i + ds tau_i,          tau_i the unit null vector of [J_x, J_p] at z_i
    corrector   f(z) = 0,  tau_i . (z - z_pred) = 0     (scipy.optimize.root, "hybr", derived Jacobians)

so that folds (p turning back) are passed. The step ds grows by 1.5 after an easy corrector and halves after a
failed one (down to ``ds_min``). At every point the branch records the stability exponents (eigenvalues of J_x,
as :class:`theory.FixedPoint`). Between two consecutive points it looks for

- a fold: the p-component of the tangent changes sign (J_x is singular there; p is extremal);
- an eigenvalue crossing zero without a fold: the number of unstable exponents changes. A real exponent: a
  branch point (pitchfork or transcritical: another branch crosses this one); a complex pair: a Hopf point.

and locates it by Brent's method along the secant between the two points (each trial point corrected back onto
the branch): the p-component of the tangent for a fold, the real part of the exponent that changes sign for the
others. The result (:class:`Branch`) holds the points, their stability and the :class:`Bifurcation` list;
:func:`plot_bifurcation` draws eps_g (or any order parameter) against p, stable solid, unstable dashed.

Stretches where the branch has marginal exponents at consecutive points (a near-manifold of fixed points, such as
afa's plateau as sigma_F -> 0, where its feedback S vanishes) are not searched: sign changes there are noise.

Measured (K = M = 2, erf, T = I, U = 0, v_star = 1; tests/theory/analysis/test_fixed_points.py):

- bp, v frozen: the specialised solution loses stability at eta_c = 2.30683 (a branch point: a real exponent
  crosses 0; integrated perturbations at a sweep of eta around it agree to 2e-3);
- afa, eta = 0.5: the symmetric plateau branch has a fold at sigma_F = 3.23159 (eps_g = 0.02224), beyond which
  the symmetric plateau does not exist (direct solves at fixed sigma_F stop between 3.230 and 3.232);
- afa, sigma_F = 1, v frozen: on the symmetric plateau a slow complex pair (Im ~ 1.1e-4; the students' feedback
  turning against each other) crosses the imaginary axis at eta = 1.10359, a Hopf point (3 -> 1 unstable
  directions; a central-difference Jacobian at direct solves along a sweep of eta puts it at 1.10351).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.optimize

from .. import _checks as checks
from .._observables import generalisation_error
from ..ode.derivatives import HYPER_DIFFERENTIABLE
from .fixed_points import TOL, FixedPoint, _Coordinates, _eigen, _resid

__all__ = ["Branch", "Bifurcation", "continuation", "plot_bifurcation"]


@dataclasses.dataclass(frozen=True, eq=False)
class Bifurcation:
    """A special point of a branch.

    ``kind``: "fold", "branch point" or "hopf". ``parameter`` and ``value``: the parameter and its value there.
    ``state``: the fixed point's OrderParams. ``eigenvalue``: the exponent nearest 0 there (the one that
    crosses). ``index``: the branch's point just before it. ``eg``: eps_g there.
    """

    kind: str
    parameter: str
    value: float
    state: Any
    eigenvalue: complex
    index: int
    eg: float

    def __repr__(self) -> str:
        return (f"Bifurcation({self.kind!r}, {self.parameter}={self.value:.8g}, eg={self.eg:.6g}, "
                f"eigenvalue={self.eigenvalue:.3g})")


@dataclasses.dataclass(frozen=True, eq=False)
class Branch:
    """A branch of fixed points in one parameter, as :func:`continuation` follows it.

    ``parameter``: its name. ``values`` (n,): the parameter at each point. ``x`` (n, m): the free coordinates
    (labelled by ``coordinates``). ``states``: the OrderParams. ``eigenvalues`` (n, m): sorted by decreasing real
    part. ``n_unstable`` (n,) and ``stable`` (n,): as FixedPoint's. ``eg`` (n,): eps_g. ``s`` (n,): the arclength.
    ``residual`` (n,). ``bifurcations``: the located special points (:class:`Bifurcation`). ``message``: why the
    continuation stopped, in each direction. ``params``: the fixed point's, with the continuation's.
    """

    parameter: str
    values: np.ndarray
    x: np.ndarray
    states: list
    eigenvalues: np.ndarray
    n_unstable: np.ndarray
    stable: np.ndarray
    eg: np.ndarray
    s: np.ndarray
    residual: np.ndarray
    coordinates: tuple
    bifurcations: list
    message: str
    params: dict

    def __len__(self) -> int:
        return len(self.values)

    def table(self):
        """A pandas DataFrame, one row per point: the parameter, s, eg, n_unstable, stable, the leading
        exponent's real part, the residual and the coordinates."""
        import pandas as pd

        data = {self.parameter: self.values, "s": self.s, "eg": self.eg, "n_unstable": self.n_unstable,
                "stable": self.stable, "leading": self.eigenvalues[:, 0].real, "residual": self.residual}
        data.update({lab: self.x[:, i] for i, lab in enumerate(self.coordinates)})
        return pd.DataFrame(data)

    def plot(self, y="eg", ax=None, **kwargs):
        """:func:`plot_bifurcation` of this branch."""
        return plot_bifurcation(self, y=y, ax=ax, **kwargs)

    def __repr__(self) -> str:
        return (f"Branch({self.parameter} in [{self.values.min():.6g}, {self.values.max():.6g}], {len(self)} points, "
                f"bifurcations={self.bifurcations}, message={self.message!r})")


def _with(dyn, name: str, value: float):
    """dyn with hyper-parameter ``name`` = value (eta_v follows eta where it did)."""
    hp = dyn.hyper
    changes = {name: float(value)}
    if name == "eta" and hp.eta_v == hp.eta:
        changes["eta_v"] = float(value)
    return dataclasses.replace(dyn, hyper=dataclasses.replace(hp, **changes))


def _follows(dyn, name: str) -> bool:
    return name == "eta" and dyn.hyper.eta_v == dyn.hyper.eta


class _Problem:
    """f(x; p) and its derivatives in z = (x, p) for one branch."""

    def __init__(self, co: _Coordinates, name: str):
        self.co, self.name = co, name
        self.follow = _follows(co.dyn, name)

    def dyn(self, p):
        return _with(self.co.dyn, self.name, p)

    def f(self, z):
        return self.co.f(z[:-1], self.dyn(z[-1]))

    def jacobians(self, z):
        """(J_x, J_p (m,))."""
        dyn = self.dyn(z[-1])
        Jx = self.co.jac(z[:-1], dyn).matrix
        names = (self.name, "eta_v") if self.follow else (self.name,)
        Jp = self.co.jac(z[:-1], dyn, wrt=names).matrix.sum(axis=1)
        return Jx, Jp

    def valid(self, z) -> bool:
        try:
            self.dyn(z[-1])
        except ValueError:
            return False
        return self.co.valid(z[:-1]) is None


def _tangent(Jx, Jp, previous=None, sign=1.0):
    A = np.column_stack([Jx, Jp])
    _, _, Vt = np.linalg.svd(A)
    tau = Vt[-1]
    if previous is not None:
        if tau @ previous < 0:
            tau = -tau
    elif tau[-1] * sign < 0:
        tau = -tau
    return tau / np.linalg.norm(tau)


def _correct(prob: _Problem, z_pred, tau, tol):
    """Solve f(z) = 0, tau . (z - z_pred) = 0 from z_pred; (z, ok, nfev)."""
    big = 1e8

    def G(z):
        if not prob.valid(z):
            return np.full(z.size, big)
        f = prob.f(z)
        if not np.all(np.isfinite(f)):
            return np.full(z.size, big)
        return np.concatenate([f, [tau @ (z - z_pred)]])

    def dG(z):
        if not prob.valid(z):
            return np.eye(z.size)
        Jx, Jp = prob.jacobians(z)
        return np.vstack([np.column_stack([Jx, Jp]), tau[None]])

    sol = scipy.optimize.root(G, z_pred, jac=dG, method="hybr", options=dict(xtol=1e-14, maxfev=60))
    z = sol.x
    ok = prob.valid(z) and _resid(prob.f(z)) <= tol
    return z, ok, int(sol.nfev)


@dataclasses.dataclass
class _Point:
    z: np.ndarray
    tau: np.ndarray
    w: np.ndarray
    n_unstable: int
    n_marginal: int
    s: float


def _point(prob, z, tau_prev, s, mtol_rel, sign=1.0):
    Jx, Jp = prob.jacobians(z)
    w, _, _ = _eigen(Jx)
    tau = _tangent(Jx, Jp, tau_prev, sign)
    mtol = mtol_rel * max(float(np.max(np.abs(w))), 1e-300)
    return _Point(z=z, tau=tau, w=w, n_unstable=int(np.sum(w.real > mtol)),
                  n_marginal=int(np.sum(np.abs(w.real) <= mtol)), s=s)


def continuation(fixed_point: FixedPoint, parameter: str, span, *, ds: float | None = None,
                 ds_max: float | None = None, ds_min: float | None = None, max_points: int = 400,
                 direction: str = "both", tol: float = TOL, locate: bool = True, marginal_tol: float = 1e-7) -> Branch:
    """Continue ``fixed_point`` in the hyper-parameter ``parameter`` over ``span``: a :class:`Branch`.

    Pseudo-arclength continuation (theory.analysis.continuation states the method), with the stability exponents at
    every
    point and the folds, branch points and Hopf points located between them.

    ``fixed_point``: a converged :class:`FixedPoint` (its rule, hyper-parameters and constants are kept).
    ``parameter``: one of sigma_F, eta, eta_v, sigma, weight_decay (and eta_F, kappa_F with mirroring).
    ``span``: (low, high), the interval the branch may cover, or an array of values (their min and max).
    ``ds``, ``ds_max``, ``ds_min``: the first, largest and smallest arclength steps (defaults 1 %, 5 % and 1e-6 of
    the span's width; the state coordinates count in the arclength too). ``max_points``: the most points in each
    direction. ``direction``: "both" (default), "up" (increasing parameter) or "down". ``tol``: the residual at
    each point. ``locate``: locate the bifurcations by Brent's method. ``marginal_tol``: the relative tolerance of
    a marginal exponent (as :class:`FixedPoint`'s).
    """
    where = "continuation"
    if not isinstance(fixed_point, FixedPoint):
        raise TypeError(f"{where}: fixed_point must be a theory.FixedPoint, got {type(fixed_point).__name__}")
    if not fixed_point.success:
        raise ValueError(f"{where}: fixed_point did not converge ({fixed_point.message}); continue a converged one")
    dyn = fixed_point.dynamics
    valid_names = [n for n in HYPER_DIFFERENTIABLE if n not in ("eta_F", "kappa_F") or dyn.mirror]
    if not isinstance(parameter, str) or parameter not in valid_names:
        raise ValueError(f"{where}: parameter={parameter!r} is not a continuous hyper-parameter; expected one of "
                         f"{tuple(valid_names)}")
    if parameter == "eta_v" and not dyn.hyper.train_second_layer:
        raise ValueError(f"{where}: parameter='eta_v' does nothing with a frozen second layer")
    try:
        vals = np.asarray(span, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"{where}: span must be (low, high) or an array of values, got {span!r}") from None
    if vals.size < 2 or not np.all(np.isfinite(vals)) or vals.min() == vals.max():
        raise ValueError(f"{where}: span must hold at least two different finite values (low, high), got {span!r}")
    lo, hi = float(vals.min()), float(vals.max())
    p0 = float(getattr(dyn.hyper, parameter))
    if not lo <= p0 <= hi:
        raise ValueError(f"{where}: the fixed point's {parameter} = {p0:g} is outside span [{lo:g}, {hi:g}]")
    checks.choice("direction", direction, ("both", "up", "down"), where=where)
    width = hi - lo
    ds = 0.01 * width if ds is None else checks.number("ds", ds, where=where, min=0.0)
    ds_max = 0.05 * width if ds_max is None else checks.number("ds_max", ds_max, where=where, min=0.0)
    ds_min = 1e-6 * width if ds_min is None else checks.number("ds_min", ds_min, where=where, min=0.0)
    if not 0 < ds_min <= ds <= ds_max:
        raise ValueError(f"{where}: needs 0 < ds_min <= ds <= ds_max, got ds_min={ds_min:g}, ds={ds:g}, "
                         f"ds_max={ds_max:g}")
    max_points = checks.integer("max_points", max_points, where=where, min=1)
    tol = checks.number("tol", tol, where=where, min=0.0)
    co = _Coordinates.of(dyn, fixed_point.state)
    prob = _Problem(co, parameter)
    z0 = np.concatenate([fixed_point.x, [p0]])
    signs = {"both": (1.0, -1.0), "up": (1.0,), "down": (-1.0,)}[direction]
    legs, messages = [], []
    for sign in signs:
        pts, bifs, msg = _leg(prob, z0, sign, lo, hi, ds, ds_max, ds_min, max_points, tol, locate, marginal_tol)
        legs.append((pts, bifs))
        messages.append(f"{'up' if sign > 0 else 'down'}: {msg}")
    # one branch ordered along arclength: the "down" leg reversed, then the "up" leg
    points, bifs = [], []
    if direction == "both":
        down, bdown = legs[1]
        up, bup = legs[0]
        for p in down[::-1]:
            p.s = -p.s
        points = down[::-1] + up[1:]
        n_down = len(down)
        bifs = [dataclasses.replace(b, index=n_down - 2 - b.index) for b in bdown[::-1]] + \
               [dataclasses.replace(b, index=b.index + n_down - 1) for b in bup]
    else:
        points, bifs = legs[0]
    Z = np.array([p.z for p in points])
    states = [co.state_of(z[:-1]) for z in Z]
    return Branch(parameter=parameter, values=Z[:, -1], x=Z[:, :-1], states=states,
                  eigenvalues=np.array([p.w for p in points]), n_unstable=np.array([p.n_unstable for p in points]),
                  stable=np.array([p.n_unstable == 0 and p.n_marginal == 0 for p in points]),
                  eg=np.array([float(generalisation_error(s, dyn.g)) for s in states]),
                  s=np.array([p.s for p in points]), residual=np.array([_resid(prob.f(z)) for z in Z]),
                  coordinates=co.labels, bifurcations=bifs, message="; ".join(messages),
                  params=dict(fixed_point.params, continuation=parameter, span=(lo, hi)))


def _leg(prob, z0, sign, lo, hi, ds, ds_max, ds_min, max_points, tol, locate, mtol):
    first = _point(prob, z0, None, 0.0, mtol, sign)
    if abs(first.tau[-1]) < 1e-12:
        return [first], [], "the start is a fold (dp/ds = 0): no direction"
    pts, bifs = [first], []
    msg = f"{max_points} points"
    while len(pts) < max_points:
        a = pts[-1]
        z, ok, nfev = _correct(prob, a.z + ds * a.tau, a.tau, tol)
        if not ok:
            ds *= 0.5
            if ds < ds_min:
                edge = not prob.valid(a.z + 2 * ds_min * a.tau)
                msg = (f"step below ds_min at {prob.name} = {a.z[-1]:.6g} ("
                       + ("the branch leaves the domain there: Omega singular, or the parameter out of its range)"
                          if edge else "no corrector convergence)"))
                break
            continue
        b = _point(prob, z, a.tau, a.s + float(np.linalg.norm(z - a.z)), mtol)
        pb = z[-1]
        if pb > hi or pb < lo:
            edge = hi if pb > hi else lo
            frac = (edge - a.z[-1]) / (pb - a.z[-1])
            z_edge, ok_edge, _ = _correct(prob, a.z + frac * (z - a.z), np.eye(z.size)[-1], tol)
            if ok_edge:
                b = _point(prob, z_edge, a.tau, a.s + float(np.linalg.norm(z_edge - a.z)), mtol)
                bifs += _special(prob, a, b, len(pts) - 1, tol, locate)
                pts.append(b)
            msg = f"reached {prob.name} = {edge:g}"
            break
        bifs += _special(prob, a, b, len(pts) - 1, tol, locate)
        pts.append(b)
        ds = min(ds * 1.5, ds_max) if nfev <= 8 else ds
    return pts, bifs, msg


def _on_secant(prob, a, b, sigma, tol):
    """The branch point between a and b at fraction sigma of the secant (corrected orthogonally to it)."""
    chord = b.z - a.z
    u = chord / np.linalg.norm(chord)
    z, ok, _ = _correct(prob, a.z + sigma * chord, u, tol)
    return z if ok else None


def _special(prob, a, b, index, tol, locate) -> list:
    out = []
    fold = a.tau[-1] * b.tau[-1] < 0
    crossing = a.n_unstable != b.n_unstable
    if not (fold or crossing):
        return out
    kind = "fold"
    if not fold:
        k = min(a.n_unstable, b.n_unstable)
        kind = "hopf" if abs(a.w[k].imag) > 1e-9 * max(abs(a.w[k]), 1e-300) and abs(b.w[k].imag) > 0 else "branch point"
    if a.n_marginal and b.n_marginal:
        # marginal exponents at both ends: a degenerate stretch (e.g. afa's feedback S -> 0, where the branch
        # approaches a manifold of fixed points); sign changes of dp/ds or of ~0 exponents are noise there
        return out
    if not fold:
        # a real crossing changes the sign of the exponent; a change of n_unstable without one is an exponent
        # entering or leaving the marginal band (|Re| <= marginal_tol): not a bifurcation
        k = min(a.n_unstable, b.n_unstable)
        if a.w[k].real * b.w[k].real > 0:
            return out
    z_star = 0.5 * (a.z + b.z)
    if locate:
        def h(sig):
            z = _on_secant(prob, a, b, sig, tol)
            if z is None:
                raise _NoPoint
            Jx, Jp = prob.jacobians(z)
            if kind == "fold":
                return _tangent(Jx, Jp, a.tau)[-1]
            w, _, _ = _eigen(Jx)
            return w[min(a.n_unstable, b.n_unstable)].real

        try:
            ha, hb = h(0.0), h(1.0)
            if ha * hb < 0:
                sig = scipy.optimize.brentq(h, 0.0, 1.0, xtol=1e-12, rtol=1e-12)
                z = _on_secant(prob, a, b, sig, tol)
                if z is not None:
                    z_star = z
        except _NoPoint:
            pass
    Jx, _ = prob.jacobians(z_star)
    w, _, _ = _eigen(Jx)
    ev = w[int(np.argmin(np.abs(w.real)))]
    state = prob.co.state_of(z_star[:-1])
    out.append(Bifurcation(kind=kind, parameter=prob.name, value=float(z_star[-1]), state=state, eigenvalue=complex(ev),
                           index=index, eg=float(generalisation_error(state, prob.co.dyn.g))))
    return out


class _NoPoint(Exception):
    pass


def plot_bifurcation(branches, y="eg", ax=None, *, labels=None, colors=None, marker_bifurcations: bool = True):
    """A bifurcation diagram of one :class:`Branch` or several: stable solid, unstable dashed, marginal dotted.

    ``y``: what is drawn against the parameter: "eg" (eps_g, the default), a coordinate label such as "R[0,0]",
    or a function of an OrderParams. ``ax``: the matplotlib Axes to draw on (default a new figure).
    ``labels``, ``colors``: one per branch. ``marker_bifurcations``: mark and name the bifurcations.
    Returns the Axes.
    """
    import matplotlib.pyplot as plt

    if isinstance(branches, Branch):
        branches = [branches]
    branches = list(branches)
    if not branches or not all(isinstance(b, Branch) for b in branches):
        raise TypeError("plot_bifurcation: branches must be a theory.Branch or a sequence of them")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for i, br in enumerate(branches):
        if callable(y):
            vals, ylabel = np.array([float(y(s)) for s in br.states]), getattr(y, "__name__", "y")
        elif y == "eg":
            vals, ylabel = br.eg, "eps_g"
        elif y in br.coordinates:
            vals, ylabel = br.x[:, br.coordinates.index(y)], y
        else:
            raise ValueError(f"plot_bifurcation: y={y!r}; expected 'eg', a coordinate label among {br.coordinates} "
                             "or a function of an OrderParams")
        color = colors[i] if colors is not None else f"C{i}"
        label = labels[i] if labels is not None else f"{br.params.get('rule_label', br.params.get('rule'))}"
        style = np.where(br.stable, 0, np.where(br.n_unstable > 0, 1, 2))
        first = True
        j = 0
        while j < len(br) - 1:
            k = j
            while k + 1 < len(br) - 1 and style[k + 1] == style[j]:
                k += 1
            ls = ("-", "--", ":")[style[j]]
            ax.plot(br.values[j : k + 2], vals[j : k + 2], ls, color=color, label=label if first else None)
            first = False
            j = k + 1
        if marker_bifurcations:
            for bf in br.bifurcations:
                yv = bf.eg if y == "eg" else (float(y(bf.state)) if callable(y) else float(vals[bf.index + 1]))
                ax.plot([bf.value], [yv], "o", color=color, ms=5)
                ax.annotate(bf.kind, (bf.value, yv), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(branches[0].parameter)
    ax.set_ylabel(ylabel)
    ax.set_title("fixed points: stable solid, unstable dashed")
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax
