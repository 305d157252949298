"""Order parameters of a two-layer student and its teacher (THEORY.md section 2).

    Q_kl = w_k . w_l / D      R_km = w_k . w*_m / D     T_mn = w*_m . w*_n / D
    S_k  = w_k . f / D        U_m  = w*_m . f / D       P    = f . f / D

plus the second layers v (K,), v_star (M,) and, for feedback alignment, the fixed feedback b (K,).
The local fields (lambda, nu, phi) are Gaussian with covariance Omega = [[Q, R, S], [R^T, T, U],
[S^T, U^T, P]].
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

__all__ = ["OrderParams", "DYNAMIC_FIELDS"]

#: The order parameters that evolve in time (T, U, P, v_star and b are constants, except U and P under
#: feedback mirroring, HyperParams.eta_F > 0: then the flat state is (Q, R, S, v, U, P)).
DYNAMIC_FIELDS = ("Q", "R", "S", "v")
MIRROR_FIELDS = ("U", "P")

_PSD_TOL = 1e-9


def _as_float(name: str, x, ndim: int) -> np.ndarray:
    try:
        if np.iscomplexobj(x):
            raise ValueError(f"OrderParams: {name} must be real, got complex values")
        a = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        if str(exc).startswith("OrderParams:"):
            raise
        raise ValueError(f"OrderParams: {name} must be an array of real numbers, got {x!r:.60}") from None
    if a.ndim != ndim:
        raise ValueError(f"OrderParams: {name} must have {ndim} dimension(s), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"OrderParams: {name} has non-finite entries")
    a.setflags(write=False)
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class OrderParams:
    """Order parameters of a K-unit student learning an M-unit teacher.

    Parameters
    ----------
    Q : (K, K) student-student overlaps w_k . w_l / D.
    R : (K, M) student-teacher overlaps w_k . w*_m / D.
    T : (M, M) teacher-teacher overlaps.
    v : (K,) student second layer.
    v_star : (M,) teacher second layer.
    S : (K,) overlaps w_k . f / D with the top-down projection direction f (default zeros).
    U : (M,) overlaps w*_m . f / D (default zeros).
    P : f . f / D (default 1).
    b : (K,) fixed feedback vector of feedback alignment (default: None, i.e. not set).

    Validation on construction: shapes, symmetry of Q and T, and positive semi-definiteness of
    Omega, each failing with a ValueError that names the parameter.

    ``origin``: how the state was drawn, for the record of results started from it (None unless it
    came from :func:`theory.random_state`: then D, init_seed, w_std, v_std, v_star, the fields
    ``simulate`` records for its initial weights). Not a field: it is not compared, flattened or saved.
    """

    origin: ClassVar[dict | None] = None

    Q: np.ndarray
    R: np.ndarray
    T: np.ndarray
    v: np.ndarray
    v_star: np.ndarray
    S: np.ndarray | None = None
    U: np.ndarray | None = None
    P: float = 1.0
    b: np.ndarray | None = None

    def __post_init__(self):
        set_ = lambda k, val: object.__setattr__(self, k, val)  # noqa: E731
        Q = _as_float("Q", self.Q, 2)
        R = _as_float("R", self.R, 2)
        T = _as_float("T", self.T, 2)
        K, M = R.shape
        if K < 1 or M < 1:
            raise ValueError(f"OrderParams: needs K >= 1 student and M >= 1 teacher units, got R of shape {R.shape} "
                             f"(K = {K}, M = {M})")
        if Q.shape != (K, K):
            raise ValueError(f"OrderParams: Q must be (K, K) = ({K}, {K}) to match R {R.shape}, got {Q.shape}")
        if T.shape != (M, M):
            raise ValueError(f"OrderParams: T must be (M, M) = ({M}, {M}) to match R {R.shape}, got {T.shape}")
        for name, mat in (("Q", Q), ("T", T)):
            if not np.allclose(mat, mat.T, rtol=1e-10, atol=1e-12):
                raise ValueError(
                    f"OrderParams: {name} must be symmetric, max |{name} - {name}^T| = {np.abs(mat - mat.T).max():.3g}"
                )
        set_("Q", Q)
        set_("R", R)
        set_("T", T)
        set_("v", _as_float("v", self.v, 1))
        set_("v_star", _as_float("v_star", self.v_star, 1))
        if self.v.shape != (K,):
            raise ValueError(f"OrderParams: v must have shape (K,) = ({K},), got {self.v.shape}")
        if self.v_star.shape != (M,):
            raise ValueError(f"OrderParams: v_star must have shape (M,) = ({M},), got {self.v_star.shape}")
        set_("S", _as_float("S", np.zeros(K) if self.S is None else self.S, 1))
        set_("U", _as_float("U", np.zeros(M) if self.U is None else self.U, 1))
        if self.S.shape != (K,):
            raise ValueError(f"OrderParams: S must have shape (K,) = ({K},), got {self.S.shape}")
        if self.U.shape != (M,):
            raise ValueError(f"OrderParams: U must have shape (M,) = ({M},), got {self.U.shape}")
        P = _as_float("P", self.P, 0)
        if not np.isfinite(P) or P < 0:
            raise ValueError(f"OrderParams: P = f.f/D must be finite and >= 0, got {P}")
        set_("P", float(P))
        if self.b is not None:
            set_("b", _as_float("b", self.b, 1))
            if self.b.shape != (K,):
                raise ValueError(f"OrderParams: b must have shape (K,) = ({K},), got {self.b.shape}")
        omega = self.omega
        scale = max(1.0, float(np.abs(np.diag(omega)).max()))
        min_eig = float(np.linalg.eigvalsh(omega).min())
        if min_eig < -_PSD_TOL * scale:
            raise ValueError(
                "OrderParams: the field covariance Omega = [[Q, R, S], [R^T, T, U], [S^T, U^T, P]] "
                f"is not positive semi-definite (smallest eigenvalue {min_eig:.3g})"
            )

    # ---------------------------------------------------------------- shapes
    @property
    def K(self) -> int:
        return self.R.shape[0]

    @property
    def M(self) -> int:
        return self.R.shape[1]

    # ---------------------------------------------------------------- derived
    @property
    def omega(self) -> np.ndarray:
        """Covariance of the local fields (lambda_1..K, nu_1..M, phi), shape (K+M+1, K+M+1)."""
        return field_covariance(self.Q, self.R, self.T, self.S, self.U, self.P)

    def replace(self, **changes) -> OrderParams:
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- flat vector
    def to_vector(self, mirror: bool = False) -> np.ndarray:
        """The dynamic order parameters (Q, R, S, v) as one flat float64 vector; with ``mirror``
        (feedback mirroring: f learns) followed by U and P."""
        parts = [self.Q.ravel(), self.R.ravel(), self.S, self.v]
        return np.concatenate(parts + ([self.U, [self.P]] if mirror else []))

    def from_vector(self, y: np.ndarray, *, validate: bool = True) -> OrderParams:
        """The state with dynamic parameters read from ``y`` (U and P too when y holds them) and the
        other constants kept from ``self``."""
        Q, R, S, v = unpack(y, self.K, self.M)
        Q = 0.5 * (Q + np.swapaxes(Q, -1, -2))
        changes = dict(Q=Q, R=R, S=S, v=v)
        mir = mirror_part(y, self.K, self.M)
        if mir is not None:
            changes.update(U=mir[0], P=float(mir[1]))
        if validate:
            return self.replace(**changes)
        new = object.__new__(OrderParams)
        for f in dataclasses.fields(self):
            object.__setattr__(new, f.name, getattr(self, f.name))
        for k, val in changes.items():
            object.__setattr__(new, k, val)
        return new

    def as_dict(self) -> dict[str, np.ndarray | float | None]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __eq__(self, other):
        if not isinstance(other, OrderParams):
            return NotImplemented
        a, b = self.as_dict(), other.as_dict()
        return all(
            (a[k] is None and b[k] is None)
            or (a[k] is not None and b[k] is not None and np.array_equal(a[k], b[k]))
            for k in a
        )

    __hash__ = None

    def __repr__(self) -> str:
        return f"OrderParams(K={self.K}, M={self.M}, P={self.P:g}, b={'set' if self.b is not None else None})"


def vector_size(K: int, M: int, mirror: bool = False) -> int:
    return K * K + K * M + 2 * K + (M + 1 if mirror else 0)


def unpack(y: np.ndarray, K: int, M: int):
    """Split a (..., K*K + K*M + 2K) array into Q (..., K, K), R (..., K, M), S (..., K), v (..., K)
    (a state with mirroring, (..., K*K + K*M + 2K + M + 1), also holds U, P: :func:`mirror_part`)."""
    lead = y.shape[:-1]
    if y.shape[-1] not in (vector_size(K, M), vector_size(K, M, True)):
        raise ValueError(f"unpack: expected last dimension {vector_size(K, M)} (or {vector_size(K, M, True)} with "
                         f"mirroring) for K={K}, M={M}, got {y.shape[-1]}")
    i = 0
    Q = y[..., i : i + K * K].reshape(lead + (K, K))
    i += K * K
    R = y[..., i : i + K * M].reshape(lead + (K, M))
    i += K * M
    S = y[..., i : i + K]
    v = y[..., i + K : i + 2 * K]
    return Q, R, S, v


def mirror_part(y: np.ndarray, K: int, M: int):
    """(U (..., M), P (...)) of a flat state with mirroring, or None for a state (Q, R, S, v)."""
    y = np.asarray(y)
    if y.shape[-1] != vector_size(K, M, True):
        return None
    i = vector_size(K, M)
    return y[..., i : i + M], y[..., i + M]


def pack(Q, R, S, v, U=None, P=None) -> np.ndarray:
    """Inverse of :func:`unpack` (leading batch dimensions allowed); U, P appended when given."""
    lead = np.shape(R)[:-2]
    parts = [np.reshape(Q, lead + (-1,)), np.reshape(R, lead + (-1,)), np.asarray(S), np.asarray(v)]
    if U is not None:
        parts += [
            np.broadcast_to(U, lead + np.shape(U)[-1:]),
            np.broadcast_to(np.asarray(P, dtype=float), lead)[..., None],
        ]
    return np.concatenate(parts, axis=-1)


def field_covariance(Q, R, T, S, U, P) -> np.ndarray:
    """Omega with leading batch dimensions allowed: shape (..., K+M+1, K+M+1)."""
    Q, R, T, S, U, P = (np.asarray(a, dtype=np.float64) for a in (Q, R, T, S, U, P))
    lead = np.broadcast_shapes(Q.shape[:-2], R.shape[:-2], T.shape[:-2], S.shape[:-1], U.shape[:-1], P.shape)
    K, M = R.shape[-2:]
    n = K + M + 1
    om = np.empty(lead + (n, n))
    om[..., :K, :K] = Q
    om[..., :K, K : K + M] = R
    om[..., K : K + M, :K] = np.swapaxes(np.broadcast_to(R, lead + (K, M)), -1, -2)
    om[..., K : K + M, K : K + M] = T
    om[..., :K, -1] = S
    om[..., -1, :K] = S
    om[..., K : K + M, -1] = U
    om[..., -1, K : K + M] = U
    om[..., -1, -1] = P
    return om
