"""When a run counts as diverged: one policy for the ODE integrators and both simulation engines.

A state has diverged when any order parameter is non-finite, or when one of |Q_kk|, |S_k|, |v_k|
(the overlaps that run away: R and the off-diagonal Q are bounded by them) exceeds
:data:`BLOWUP`; at output times the ODE integrators also require the field covariance Omega to
stay positive semi-definite, up to the integration error (a perfect fit makes Omega singular).
The run then stops with status -1 and a message saying when and why. So does a right-hand side
that is non-finite at a finite state (a rule whose update returns NaN or inf there: log of a
negative number, 0/0, ...): the message names the derivatives that are (:meth:`StateCheck.derivative`),
and the linear algebra on such states (the whitening of Omega) returns NaN instead of raising.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BLOWUP",
    "runaway",
    "why",
    "why_replicas",
    "omega_check",
    "nonfinite_derivative",
    "StateCheck",
    "state_check",
]

#: |Q_kk|, |S_k| or |v_k| above this counts as divergence. |Q_kk| = |w_k|^2 / D = 1e6 is a student norm a thousand
#: times the teacher's: no run from O(1) weights gets there but a runaway (afa at a large sigma_F: |w| grows without
#: bound while eps_g stays flat), and past it such runs turn stiff (a sweep point at eta = 2, sigma_F = 10 spent
#: 137,000 evaluations between |Q_kk| = 5e6 and 1e8, against 1,200 to reach 5e6), so a threshold of 1e8 made a
#: sweep with runaway points 7 times slower than one without (benchmarks/bench_runaway.py; 0.8 times at 1e6).
BLOWUP = 1e6


def runaway(Qd, S, v):
    """(bad, big): per leading index, whether the state ran away and max(|Q_kk|, |S_k|, |v_k|).

    Qd (..., K) the diagonal of Q, S (..., K), v (..., K); non-finite entries make ``big`` nan.
    """
    parts = np.concatenate(
        [np.abs(np.asarray(Qd, float)), np.abs(np.asarray(S, float)), np.abs(np.asarray(v, float))], -1
    )
    finite = np.all(np.isfinite(parts), -1)
    with np.errstate(invalid="ignore"):
        big = np.where(finite, np.max(np.where(np.isfinite(parts), parts, 0.0), -1, initial=0.0), np.nan)
    return ~finite | (big > BLOWUP), big


def why(Qd, S, v, *, R=None) -> list[str | None]:
    """Per row (leading axis): None, or why the state counts as diverged."""
    bad, big = runaway(Qd, S, v)
    out: list[str | None] = [None] * len(bad)
    nonfinite = ~np.isfinite(big)
    if R is not None:
        nonfinite |= ~np.all(np.isfinite(np.reshape(R, (len(bad), -1))), -1)
    for j in np.nonzero(bad | nonfinite)[0]:
        out[j] = ("non-finite order parameters" if nonfinite[j] else
                  f"order parameters exploded (max |Q_kk|, |v_k|, |S_k| = {big[j]:.3g} > {BLOWUP:g})")
    return out


def why_replicas(Qd, S, v) -> str | None:
    """For a simulation of many replicas (leading axis): None, or why it counts as diverged, naming the replicas."""
    bad, big = runaway(Qd, S, v)
    if not bad.any():
        return None
    reps = np.nonzero(bad)[0].tolist()
    if not np.all(np.isfinite(big[bad])):
        return f"non-finite order parameters in replica(s) {reps[:8]}"
    return (
        f"order parameters exploded in replica(s) {reps[:8]} "
        f"(max |Q_kk|, |v_k|, |S_k| = {np.nanmax(big):.3g} > {BLOWUP:g})"
    )


def _shifted_cholesky_succeeds(om, shift) -> np.ndarray:
    """Per matrix of om (B, n, n), symmetric: whether om + shift I has a Cholesky factor, i.e. its smallest
    eigenvalue exceeds -shift (B,). Vectorised over the batch, one column at a time (n is K + M + 1)."""
    B, n, _ = om.shape
    L = np.zeros_like(om)
    ok = np.ones(B, dtype=bool)
    with np.errstate(invalid="ignore"):
        for j in range(n):
            d = om[:, j, j] + shift - np.einsum("bk,bk->b", L[:, j, :j], L[:, j, :j])
            ok &= d > 0.0
            dj = np.sqrt(np.where(d > 0.0, d, 1.0))
            L[:, j, j] = dj
            if j + 1 < n:
                L[:, j + 1 :, j] = (om[:, j + 1 :, j] - np.einsum("bik,bk->bi", L[:, j + 1 :, :j], L[:, j, :j])) / dj[
                    :, None
                ]
    return ok


def omega_check(omega, tol) -> list[str | None]:
    """Per leading index of omega (..., n, n): None, or the message that Omega is not positive
    semi-definite (smallest eigenvalue below -tol times the largest diagonal entry, at least 1).

    A Cholesky factor of Omega + tol scale I clears a matrix (its smallest eigenvalue is above -tol scale);
    only the others get their eigenvalues (numpy's eigvalsh took 11 us a matrix: at the outputs of 1,000
    sweep points, a tenth of the sweep)."""
    om = np.asarray(omega, float)
    om = 0.5 * (om + np.swapaxes(om, -1, -2))
    om = om.reshape((-1,) + om.shape[-2:])
    scale = np.maximum(1.0, np.abs(np.diagonal(om, axis1=-2, axis2=-1)).max(-1))
    out: list[str | None] = [None] * len(om)
    doubt = np.nonzero(~_shifted_cholesky_succeeds(om, tol * scale))[0]
    if doubt.size:
        lo = np.linalg.eigvalsh(om[doubt])[..., 0]
        for j, l_ in zip(doubt, lo):
            if l_ < -tol * scale[j]:
                out[j] = f"Omega is no longer positive semi-definite (smallest eigenvalue {l_:.3g})"
    return out


def omega_tolerance(rtol: float, atol: float) -> float:
    """Tolerance of :func:`omega_check` for an integration at tolerances (rtol, atol)."""
    return 1e-7 + 100.0 * (rtol + atol)


def nonfinite_derivative(dy, names=None) -> list[str | None]:
    """Per row of dy (B, n): None when every entry is finite, else why: "the right-hand side became
    non-finite: dQ, dS" with ``names`` (name, start, stop) the blocks of the flat state, or the
    indices of the non-finite entries without them."""
    dy = np.atleast_2d(np.asarray(dy, float))
    bad = ~np.isfinite(dy)
    out: list[str | None] = [None] * len(dy)
    for j in np.nonzero(bad.any(-1))[0]:
        if names:
            what = ", ".join(f"d{name}" for name, a, b in names if bad[j, a:b].any())
        else:
            idx = np.nonzero(bad[j])[0].tolist()
            what = f"entries {idx[:8]}{' ...' if len(idx) > 8 else ''} of dy/dt"
        out[j] = f"the right-hand side became non-finite: {what}"
    return out


def state_blocks(K: int, M: int, n: int) -> tuple:
    """(name, start, stop) of the blocks of a flat state of length n (theory._state: Q, R, S, v, then U, P
    with mirroring)."""
    from .._state import vector_size

    sizes = [("Q", K * K), ("R", K * M), ("S", K), ("v", K)] + (
        [("U", M), ("P", 1)] if n == vector_size(K, M, True) else []
    )
    out, i = [], 0
    for name, size in sizes:
        out.append((name, i, i + size))
        i += size
    return tuple(out)


class StateCheck:
    """The policy as the ODE driver's ``diagnose(y, idx, at_output)`` for flat states y (B, n) = (Q, R, S, v)
    (with mirroring also U, P), and its :meth:`derivative` check (theory.solver.driver asks it why a right-hand
    side is non-finite).

    T, U, P are the constants of one state, or (per_point) of every point of a batch, indexed by idx.
    """

    def __init__(self, K: int, M: int, T, U, P, *, rtol: float, atol: float, per_point: bool = False):
        self.K, self.M, self.T, self.U, self.P, self.per_point = K, M, T, U, P, per_point
        self.tol = omega_tolerance(rtol, atol)

    def __call__(self, y, idx, at_output):
        from .._state import field_covariance, mirror_part, unpack

        K, M, T, U, P = self.K, self.M, self.T, self.U, self.P
        y = np.asarray(y, float)
        Q, R, S, v = unpack(y, K, M)
        mir = mirror_part(y, K, M)  # feedback mirroring: U and P are state
        out = why(np.diagonal(Q, axis1=-2, axis2=-1), S, v, R=R)
        if at_output:
            ok = np.array([w is None for w in out])
            if ok.any():
                sel = np.asarray(idx)[ok]
                consts = (T[sel], U[sel], P[sel]) if self.per_point else (T, U, P)
                if mir is not None:
                    consts = (consts[0], mir[0][ok], mir[1][ok])
                om = field_covariance(Q[ok], R[ok], consts[0], S[ok], consts[1], consts[2])
                for j, w in zip(np.nonzero(ok)[0], omega_check(om, self.tol)):
                    out[j] = w
        return out

    def derivative(self, dy) -> list[str | None]:
        """Per row of dy (B, n): None, or which derivatives are non-finite (:func:`nonfinite_derivative`)."""
        dy = np.atleast_2d(np.asarray(dy, float))
        return nonfinite_derivative(dy, state_blocks(self.K, self.M, dy.shape[-1]))


def state_check(K: int, M: int, T, U, P, *, rtol: float, atol: float, per_point: bool = False) -> StateCheck:
    """The policy as the ODE driver's ``diagnose`` (:class:`StateCheck`)."""
    return StateCheck(K, M, T, U, P, rtol=rtol, atol=atol, per_point=per_point)
