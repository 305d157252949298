"""Derivatives of the ODE right-hand side, derived from the right-hand side itself (THEORY.md section 4).

For dy/dt = f(y; theta) (:meth:`theory.Dynamics.rhs`) this module gives

    J_y     = df/dy        (the Jacobian with respect to the flat state: fixed points, stability, continuation)
    J_theta = df/dtheta    (theta among eta, eta_v, sigma, sigma_F, weight_decay, eta_F, kappa_F: protocols)

for every rule, activation and view, with no hand-written derivative: each column is Ridders' extrapolation
(Numerical Recipes' ``dfridr``) of central differences of the very right-hand side the integrator uses (the
compiled kernel where one exists, called directly; otherwise the numpy view), with its error estimate.

Why Ridders: the compiled kernels are real (numba, real math functions), so the complex step is not available;
the closed forms (erf, relu, linear) are analytic in y away from singular covariances, and the numerical views
are smooth in y too (fixed quadrature nodes mapped by the symmetric square root of the field covariance), so a
Richardson tableau of central differences of shrinking steps converges fast and estimates its own error.

Coordinates of the state (theory._state.pack / unpack, OrderParams.to_vector): y = (Q (K*K, row by row), R (K*M,
row by row), S (K), v (K)) and, with feedback mirroring (eta_F > 0), (U (M), P). Q is symmetric and stored twice, so:

- ``coordinates="packed"`` (default): the n x n matrix of y -> f(sym(y)), sym symmetrising the Q block as
  OrderParams.from_vector does. Rows are the components of f (row "Q[k,l]" is dQ_kl/dt, equal to row
  "Q[l,k]"); column "Q[k,l]" (k != l) is half the derivative along the symmetric perturbation
  Q_kl = Q_lk += h, column "Q[k,k]" the derivative along Q_kk += h, the others plain partials. Then J @ d is the
  directional derivative of f along any d whose Q block is symmetric (and 0 along an antisymmetric one: those
  K(K-1)/2 directions are the spurious zero eigenvalues of this matrix).
- ``coordinates="independent"``: the coordinates x = (Q_kl for k <= l, R, S, v[, U, P]) of the symmetric state,
  rows likewise (dQ_kl/dt for k <= l): the square Jacobian of the ODE the order parameters actually obey
  (its eigenvalues are the stability exponents; Newton's step for a fixed point is -J^-1 f in these coordinates).
  Column "Q[k,l]" is then the full derivative along Q_kl = Q_lk += h.

Each column's initial step is ``step * max(|x_j|, 1)``, and for the entries of the field covariance Omega (Q, R,
S, and U, P with mirroring) at most half the smallest eigenvalue of Omega, so that every perturbed state stays
positive definite (a perturbation of one symmetric pair has spectral norm h). The tableau shrinks it by 1.4 per
level, up to 10 levels, and stops an entry where a higher order gets worse (dfridr's rule) or where its error
estimate is below ``rtol`` (1e-10) of its column's largest entry. At a singular Omega (a student that has learnt
its teacher exactly: lambda = nu) no step keeps every perturbed state positive semi-definite; the steps are then
not capped and the columns are the derivatives of the view's continuation across the singular set: exact for the
erf closed forms (analytic there, thanks to the 1 + C of their denominators), worse for relu (the arcsine kernel
is not analytic at correlation 1) and numerical views, which the error estimate shows. A hyper-parameter at
its bound (eta, eta_v, weight_decay, eta_F, kappa_F within a step of 0) gets one-sided differences extrapolated
the same way; f is even in sigma (the noise zeta is symmetric), so sigma is differentiated centrally through
|sigma|. Only a constant hyper-parameter is differentiable: a schedule is an error, and eta moves alone (eta_v
held, even where it follows eta: the derivative along both is the sum of the two columns).

Accuracy and cost (measured at K = M = 2, random_state(D=500) states, default step 0.1 and rtol 1e-10, on a
shared 2-core machine; tests/theory/ode/test_derivatives.py holds the checks):

- linear g (bp with noise, weight decay, batch, mirroring; afa): against sympy's exact derivative of the
  polynomial ODE, max error 1e-14 of the largest entry (estimate 1e-14);
- bp erf closed form, compiled: estimate 5e-11 of the largest entry, true error ~1e-13 (against the same method
  run to rounding, rtol=0, and at steps 0.05 and 0.2, which agree to 1e-13); 91 evaluations, 1.6 ms (one
  evaluation 2.8 us; the rest is the tableau's bookkeeping, so a numba loop over the columns would save ~1 ms
  and was not worth a second copy); df/d(eta, sigma_F) in 9 evaluations, 2 ms;
- pepita erf numerical (default quadrature), compiled: estimate 1e-10, true error ~3e-12; 97 evaluations,
  ~1.1 s (the right-hand side, ~10 ms each, is 98 % of it);
- relu numerical views (their kinks cross the fixed outer nodes as y moves: only piecewise smooth in y) get a
  second tableau from 10 times smaller steps (:func:`_ridders_checked`), the estimate at least the two tableaux'
  difference: relu pepita (KinkAware(24, "sphere"), compiled) estimate 2.5e-5, true ~3e-8, 281 evaluations,
  ~30 s; an untraceable relu rule (numpy line rule) estimate 1.3e-4, true 1.2e-5, ~90 s (its right-hand
  side is ~0.4 s). With one tableau its estimate under-reported (0.055 against 0.2 true, GaussHermite(48));
- at a singular Omega (student = teacher): bp erf 5e-11; bp relu ~1e-3 and pepita erf numerical ~2e-4 (both
  views are not differentiable there; the estimate says so).

The error estimate is conservative (100 to 1000 times the true error above). The Jacobian of a numerical view is
the derivative of that quadrature's right-hand side: it differs from the exact ODE's Jacobian by about the
quadrature's own error (differentiate with a finer quadrature to shrink it). The complex step is not available:
the compiled kernels are real.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import _checks as checks
from .._state import OrderParams, vector_size

__all__ = ["Jacobian", "jacobian", "dynamics_jacobian", "state_labels", "HYPER_DIFFERENTIABLE"]

#: the continuous hyper-parameters a right-hand side can be differentiated by, with their lower bound
#: (None: unbounded; "even": f is even in it)
HYPER_DIFFERENTIABLE = {"eta": 0.0, "eta_v": 0.0, "sigma": "even", "sigma_F": None, "weight_decay": 0.0,
                        "eta_F": 0.0, "kappa_F": 0.0}

_CON = 1.4      # step ratio between tableau levels (dfridr's CON)
_NTAB = 10      # levels of the tableau (dfridr's NTAB)
_SAFE = 2.0     # stop when a higher order is worse by this factor (dfridr's SAFE)
_SHRINK = 10.0  # a column whose first perturbed states give a non-finite rhs retries with steps this much smaller
_RETRIES = 4
_SINGULAR = 1e-9  # below this smallest eigenvalue of Omega (relative) the steps are not capped by it
RTOL = 1e-10    # default: stop an entry's extrapolation at this error relative to its column's largest entry


@dataclasses.dataclass(frozen=True, eq=False)
class Jacobian:
    """A derivative of the right-hand side f at one state and time, with labels and its error estimate.

    matrix : (rows, columns) array d f_row / d column.  error : same shape, Ridders' estimate of each entry's
    absolute error.  rows, columns : the labels ("Q[0,1]", "R[1,0]", "S[0]", "v[1]", "U[0]", "P", or the
    hyper-parameter names).  wrt : "state" or the tuple of hyper-parameter names.  coordinates : "packed" or
    "independent" (module docstring).  rhs : f at the state, in the rows' coordinates.  nfev : right-hand side
    evaluations used.
    """

    matrix: np.ndarray
    error: np.ndarray
    rows: tuple
    columns: tuple
    wrt: Any
    coordinates: str
    rhs: np.ndarray
    nfev: int

    @property
    def max_error(self) -> float:
        """The largest estimated error of an entry."""
        return float(np.max(self.error)) if self.error.size else 0.0

    @property
    def relative_error(self) -> float:
        """The largest estimated error relative to the largest entry."""
        scale = float(np.max(np.abs(self.matrix))) if self.matrix.size else 0.0
        return self.max_error / scale if scale > 0 else self.max_error

    def entry(self, row: str, column: str) -> float:
        """The entry d f_row / d column by labels (e.g. ``J.entry("Q[0,0]", "v[1]")``)."""
        try:
            return float(self.matrix[self.rows.index(row), self.columns.index(column)])
        except ValueError:
            raise KeyError(
                f"Jacobian: no entry ({row!r}, {column!r}); rows {self.rows}, columns {self.columns}"
            ) from None

    def to_frame(self):
        """The matrix as a pandas DataFrame indexed by the labels."""
        import pandas as pd

        return pd.DataFrame(self.matrix, index=list(self.rows), columns=list(self.columns))

    def __array__(self, dtype=None, copy=None):
        return self.matrix if dtype is None else self.matrix.astype(dtype)

    def __repr__(self) -> str:
        return (f"Jacobian(wrt={self.wrt!r}, shape={self.matrix.shape}, coordinates={self.coordinates!r}, "
                f"max_error={self.max_error:.2g}, nfev={self.nfev})")


# --------------------------------------------------------------------------------------------- coordinates
def state_labels(K: int, M: int, mirror: bool = False, coordinates: str = "packed") -> tuple[str, ...]:
    """Labels of the flat state's coordinates: "Q[k,l]" (all K*K, or k <= l for ``"independent"``), "R[k,m]",
    "S[k]", "v[k]", then "U[m]", "P" with mirroring."""
    q = [(k, l) for k in range(K) for l in range(K) if coordinates == "packed" or k <= l]
    out = [f"Q[{k},{l}]" for k, l in q] + [f"R[{k},{m}]" for k in range(K) for m in range(M)]
    out += [f"S[{k}]" for k in range(K)] + [f"v[{k}]" for k in range(K)]
    if mirror:
        out += [f"U[{m}]" for m in range(M)] + ["P"]
    return tuple(out)


def _independent(K: int, M: int, mirror: bool):
    """(E, rows, half): E (n, m) maps the independent coordinates x to the packed state y = E x (a pair
    Q_kl, Q_lk shares one coordinate); rows (m,) the packed indices of the independent ones; half (m,) 0.5 for
    an off-diagonal pair of Q (its packed column is half the pair's derivative), else 1."""
    n = vector_size(K, M, mirror)
    rows, cols, half = [], [], []
    for k in range(K):
        for l in range(k, K):
            rows.append(k * K + l)
            cols.append([k * K + l, l * K + k])
            half.append(0.5 if k != l else 1.0)
    for i in range(K * K, n):
        rows.append(i)
        cols.append([i])
        half.append(1.0)
    E = np.zeros((n, len(rows)))
    for j, idx in enumerate(cols):
        E[idx, j] = 1.0
    return E, np.array(rows), np.array(half)


def _covariance_of(dyn, y) -> np.ndarray:
    """The field covariance Omega of the flat state y (U, P from y with mirroring)."""
    from .._state import field_covariance, mirror_part, unpack

    Q, R, S, _ = unpack(y, dyn.K, dyn.M)
    mir = mirror_part(y, dyn.K, dyn.M) if dyn.mirror else None
    U, P = mir if mir is not None else (dyn.U, dyn.P)
    return field_covariance(0.5 * (Q + Q.T), R, dyn.T, S, U, P)


# --------------------------------------------------------------------------------------------- Ridders
def _ridders(values, base, h0, one_sided, *, rtol=0.0, ntab=_NTAB, con=_CON, safe=_SAFE):
    """Ridders' extrapolation of finite differences, column by column and entry by entry (dfridr).

    values(cols, h) -> (len(cols), n_out): f at parameter j + h_j for the columns ``cols``; base (n_out,) f at the
    point (used by one-sided columns); h0 (c,) the initial steps; one_sided (c,) forward differences (error
    series in every power of h) instead of central ones (even powers); rtol: an entry also stops once its error
    estimate is below rtol times the largest entry of its column. Returns (deriv (n_out, c), err (n_out, c), nfev).
    """
    c = len(h0)
    nfev = 0

    def diff(cols, h):
        nonlocal nfev
        fp = values(cols, h)
        nfev += len(cols)
        out = np.empty_like(fp)
        cen = ~one_sided[cols]
        if cen.any():
            fm = values(cols[cen], -h[cen])
            nfev += int(cen.sum())
            out[cen] = (fp[cen] - fm) / (2 * h[cen, None])
        out[~cen] = (fp[~cen] - base) / h[~cen, None]
        return out

    all_cols = np.arange(c)
    h = np.asarray(h0, dtype=float).copy()
    first = diff(all_cols, h)
    for _ in range(_RETRIES):
        bad = ~np.all(np.isfinite(first), axis=1)
        if not bad.any():
            break
        h[bad] /= _SHRINK
        first[bad] = diff(all_cols[bad], h[bad])
    n_out = first.shape[1]
    ratio = np.where(one_sided, con, con * con)[:, None]
    prev = [first]                        # the previous column of the tableau, a[0..i-1][i-1]
    ans = first.copy()
    err = np.full((c, n_out), np.inf)
    done = np.zeros((c, n_out), dtype=bool)
    for i in range(1, ntab):
        active = np.flatnonzero(~done.all(axis=1))
        if active.size == 0:
            break
        h = h / con
        a0 = prev[0].copy()
        a0[active] = diff(active, h[active])
        cur = [a0]
        fac = ratio.copy()
        for j in range(1, i + 1):
            aj = (cur[j - 1] * fac - prev[j - 1]) / (fac - 1.0)
            fac = fac * ratio
            errt = np.maximum(np.abs(aj - cur[j - 1]), np.abs(aj - prev[j - 1]))
            better = (errt <= err) & ~done
            err = np.where(better, errt, err)
            ans = np.where(better, aj, ans)
            cur.append(aj)
        done |= np.abs(cur[i] - prev[i - 1]) >= safe * err
        done |= err <= rtol * np.abs(ans).max(axis=1, keepdims=True)
        prev = cur
    return ans.T, err.T, nfev


# --------------------------------------------------------------------------------------------- evaluation
def _state_values(dyn, t: float):
    """f at a batch of packed states (m, n): the compiled kernel called directly where it exists, else the
    numpy view (batched)."""
    comp = dyn.compiled() if np.ndim(dyn.T) == 2 else None
    if comp is not None:
        fn, p = comp

        def values(Y):
            out = np.empty_like(Y)
            for i in range(Y.shape[0]):
                fn(float(t), Y[i], p, out[i])
            return out
    else:
        def values(Y):
            return np.asarray(dyn.rhs(Y, t), dtype=float).reshape(Y.shape)
    return values


def _hyper_value(dyn, name: str, where: str) -> float:
    if name not in HYPER_DIFFERENTIABLE:
        hint = " (an integer: not differentiable)" if name == "batch" else ""
        raise ValueError(f"{where}: wrt={name!r} is not a continuous hyper-parameter{hint}; expected 'state' or "
                         f"names among {tuple(HYPER_DIFFERENTIABLE)}")
    if name in ("eta_F", "kappa_F") and not dyn.mirror:
        raise ValueError(f"{where}: wrt={name!r} needs feedback mirroring (eta_F > 0, the state then holds U and P); "
                         "without it the right-hand side does not depend on it")
    value = getattr(dyn.hyper, name)
    if not isinstance(value, float):
        raise ValueError(f"{where}: {name} is a schedule ({type(value).__name__}); only a constant hyper-parameter "
                         f"can be differentiated: pass {name}=<number>")
    return value


# --------------------------------------------------------------------------------------------- public
#: for piecewise-smooth views (relu numerical: the kinks move across the fixed outer nodes as y moves) the tableau
#: is run again from initial steps this much smaller; the difference between the two bounds the error from below
PIECEWISE_STEP_RATIO = 10.0


def _piecewise(dyn) -> bool:
    """Whether the view is only piecewise smooth in y and theta: numerical expectations of a piecewise-linear
    activation (its kinks cross the fixed outer nodes as the state moves; the closed forms are analytic)."""
    return dyn.g.piecewise_linear and dyn.g.name != "linear" and not dyn.closed_form


def _ridders_checked(dyn, fn, f0, h0, one_sided, rtol):
    """:func:`_ridders`, and for piecewise-smooth views (:func:`_piecewise`) a second tableau from steps
    :data:`PIECEWISE_STEP_RATIO` times smaller: it returns that one, with the error estimate raised to at
    least the two tableaux' difference (Ridders' own estimate assumes smoothness at the scale of its steps, and
    under-reports across a kink: measured 0.2 true against 0.055 estimated on an untraceable relu rule)."""
    deriv, err, nfev = _ridders(fn, f0, h0, one_sided, rtol=rtol)
    if not _piecewise(dyn):
        return deriv, err, nfev
    fine, err_f, nfev_f = _ridders(fn, f0, h0 / PIECEWISE_STEP_RATIO, one_sided, rtol=rtol)
    return fine, np.maximum(err_f, np.abs(fine - deriv)), nfev + nfev_f


def dynamics_jacobian(dyn, y, t: float = 0.0, *, wrt="state", coordinates: str = "packed", step: float = 0.1,
                      rtol: float = RTOL, where: str = "jacobian") -> Jacobian:
    """The derivative of ``dyn.rhs`` at the flat state y and time t (module docstring for the coordinates, the
    method and its accuracy).

    Parameters
    ----------
    dyn : a :class:`theory.Dynamics` of one point (HyperParams, not a sweep's HyperBatch).
    y : (n,) flat state (OrderParams.to_vector(mirror=dyn.mirror)); its Q block is symmetrised.
    t : time (matters for a schedule).
    wrt : "state" for df/dy, or a hyper-parameter name or tuple of names (:data:`HYPER_DIFFERENTIABLE`).
    coordinates : "packed" (the n coordinates of y) or "independent" (Q_kl for k <= l only).
    step : initial step of each column relative to max(|value|, 1) (Ridders shrinks it).
    rtol : an entry's extrapolation stops once its error estimate is below rtol times the largest entry of its
        column (0: only dfridr's rule, i.e. until rounding errors dominate, about twice the evaluations).
    """
    from .._hyper import HyperParams

    if not isinstance(dyn.hyper, HyperParams):
        raise TypeError(f"{where}: needs the Dynamics of one point (HyperParams); got {type(dyn.hyper).__name__}")
    checks.choice("coordinates", coordinates, ("packed", "independent"), where=where)
    step = checks.number("step", step, where=where, min=0.0)
    rtol = checks.number("rtol", rtol, where=where, min=0.0)
    if step <= 0:
        raise ValueError(f"{where}: step must be > 0, got {step}")
    t = checks.number("t", t, where=where)
    n = vector_size(dyn.K, dyn.M, dyn.mirror)
    y = np.array(y, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"{where}: y must be the flat state of shape ({n},) (K={dyn.K}, M={dyn.M}"
                         f"{', with U and P: mirroring' if dyn.mirror else ''}), got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{where}: y has non-finite entries")
    K = dyn.K
    Q = y[: K * K].reshape(K, K)
    y[: K * K] = (0.5 * (Q + Q.T)).ravel()
    E, ind_rows, half = _independent(dyn.K, dyn.M, dyn.mirror)
    rows_sel = slice(None) if coordinates == "packed" else ind_rows
    labels_rows = state_labels(dyn.K, dyn.M, dyn.mirror, coordinates)
    values = _state_values(dyn, t)
    f0 = values(y[None])[0]
    if not np.all(np.isfinite(f0)):
        raise ValueError(f"{where}: the right-hand side is not finite at this state: no derivative")

    if wrt == "state":
        x0 = E.T @ y / E.sum(axis=0)
        h0 = step * np.maximum(np.abs(x0), 1.0)
        n_cov = E.shape[1] - 2 * dyn.K - (dyn.M + 1 if dyn.mirror else 0)
        cov = np.zeros(E.shape[1], dtype=bool)
        cov[:n_cov] = True
        cov[E.shape[1] - (dyn.M + 1 if dyn.mirror else 0):] = dyn.mirror
        cov[n_cov : n_cov + dyn.K] = True  # S
        omega = _covariance_of(dyn, y)
        lam = float(np.linalg.eigvalsh(omega).min())
        if lam > _SINGULAR * max(1.0, float(np.abs(np.diag(omega)).max())):
            h0 = np.where(cov, np.minimum(h0, 0.5 * lam), h0)
        deriv, err, nfev = _ridders_checked(dyn, lambda cols, h: values(y + h[:, None] * E[:, cols].T), f0, h0,
                                            np.zeros(len(h0), dtype=bool), rtol=rtol)
        if coordinates == "packed":
            owner = E.argmax(axis=1)  # the independent coordinate of each packed one
            matrix, error = deriv[:, owner] * half[owner], err[:, owner] * half[owner]
        else:
            matrix, error = deriv[ind_rows], err[ind_rows]
        return Jacobian(matrix=matrix, error=error, rows=labels_rows, columns=labels_rows, wrt="state",
                        coordinates=coordinates, rhs=f0[rows_sel], nfev=nfev + 1)

    names = (wrt,) if isinstance(wrt, str) else tuple(wrt)
    if not names or not all(isinstance(nm, str) for nm in names):
        raise ValueError(f"{where}: wrt must be 'state' or hyper-parameter names among {tuple(HYPER_DIFFERENTIABLE)}, "
                         f"got {wrt!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: wrt names a hyper-parameter twice: {names}")
    theta = np.array([_hyper_value(dyn, nm, where) for nm in names])
    h0 = step * np.maximum(np.abs(theta), 1.0)
    bounds = [HYPER_DIFFERENTIABLE[nm] for nm in names]
    one_sided = np.array([isinstance(b, float) and th - h < b for b, th, h in zip(bounds, theta, h0)])

    def values_theta(cols, h):
        out = np.empty((len(cols), n))
        for i, (j, hj) in enumerate(zip(cols, h)):
            val = theta[j] + hj
            if bounds[j] == "even":
                val = abs(val)
            moved = dataclasses.replace(dyn, hyper=dataclasses.replace(dyn.hyper, **{names[j]: float(val)}))
            out[i] = _state_values(moved, t)(y[None])[0]
        return out

    deriv, err, nfev = _ridders_checked(dyn, values_theta, f0, h0, one_sided, rtol=rtol)
    return Jacobian(matrix=deriv[rows_sel], error=err[rows_sel], rows=labels_rows, columns=names, wrt=names,
                    coordinates=coordinates, rhs=f0[rows_sel], nfev=nfev + 1)


def jacobian(state: OrderParams, rule, params=None, *, wrt="state", quadrature=None, coordinates: str = "packed",
             t: float = 0.0, step: float = 0.1, rtol: float = RTOL, **options) -> Jacobian:
    """The Jacobian of the ODE's right-hand side at one state, labelled, with its error estimate.

    Takes the same parameters as :func:`theory.rhs` (a rule, HyperParams or their names as keywords, rule
    options, ``quadrature``), and: ``wrt`` "state" (df/dy) or hyper-parameter names (df/d eta, ...);
    ``coordinates`` "packed" (the n coordinates of OrderParams.to_vector) or "independent" (Q_kl for k <= l: the
    square Jacobian of the symmetric ODE); ``t`` the time (schedules); ``step`` the initial relative step;
    ``rtol`` where an entry's extrapolation may stop (relative to its column's largest entry).
    See theory.ode.derivatives for what a column means, the method and its measured accuracy.

    >>> J = jacobian(random_state(2, 2, seed=1), "bp", eta=0.5, coordinates="independent")  # doctest: +SKIP
    >>> np.linalg.eigvals(J.matrix)  # the linearised dynamics around the state  # doctest: +SKIP
    """
    dyn = _make(state, rule, params, quadrature, options)
    y = state.to_vector(mirror=dyn.mirror)
    return dynamics_jacobian(dyn, y, t, wrt=wrt, coordinates=coordinates, step=step, rtol=rtol)


def _make(state, rule, params, quadrature, options):
    from .dynamics import make_dynamics

    return make_dynamics(state, rule, params, quadrature=quadrature, where="jacobian",
                         extra=("wrt", "coordinates", "t", "step", "rtol"), **options)
