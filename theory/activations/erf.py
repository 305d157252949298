"""Closed-form Gaussian integrals of g(z) = erf(z / sqrt 2) (THEORY.md section 4).

Every function takes entries of the covariance C of its arguments, in the order written, as
arrays that broadcast against each other, so a single call evaluates all index tuples at once:

    I2(a,b)     = E[g(a) g(b)]          = (2/pi) arcsin( C12 / sqrt((1+C11)(1+C22)) )
    J2(a,b)     = E[g'(a) g'(b)]        = (2/pi) / sqrt( (1+C11)(1+C22) - C12^2 )
    I3(a,b,c)   = E[g'(a) b g(c)]       = (2/pi) (C23 (1+C11) - C12 C13) / ((1+C11) sqrt(L3)),
                                          L3 = (1+C11)(1+C33) - C13^2
    I4(a,b,c,d) = E[g'(a) g'(b) g(c) g(d)] = (4/pi^2) / sqrt(L4) * arcsin( L0 / sqrt(L1 L2) )

with, for I4 (Saad & Solla 1995),

    L4 = (1+C11)(1+C22) - C12^2
    L0 = L4 C34 - C23 C24 (1+C11) - C13 C14 (1+C22) + C12 C13 C24 + C12 C14 C23
    L1 = L4 (1+C33) - C23^2 (1+C11) - C13^2 (1+C22) + 2 C12 C13 C23
    L2 = L4 (1+C44) - C24^2 (1+C11) - C14^2 (1+C22) + 2 C12 C14 C24

The tilt identity handles the extra terms of the modulated presynaptic input:

    E[g'(a) G(z)] = sqrt(2/pi) / sqrt(1 + C_aa) * E'[G(z)],
    E' over N(0, C_zz - C_za C_az / (1 + C_aa)).

The ``*_matrix`` helpers evaluate the integrals for all index tuples of a field covariance
``C`` of shape (..., n, n) in one broadcast expression.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "I2",
    "J2",
    "I3",
    "I4",
    "dg_mean",
    "tilt",
    "I2_matrix",
    "J2_matrix",
    "I3_tensor",
    "I4_tensor",
    "dgg_tensor",
]

_2_PI = 2.0 / np.pi
_SQRT_2_PI = np.sqrt(2.0 / np.pi)


def _covariance(name, diag: dict, off: dict):
    """Check that the entries given are those of a covariance: finite, variances >= 0, and every
    covariance within Cauchy-Schwarz |C_ij| <= sqrt(C_ii C_jj) (to rounding); arrays broadcast."""
    vals = {k: np.asarray(v) for k, v in {**diag, **off}.items()}
    for k, v in vals.items():
        if np.iscomplexobj(v) or v.dtype.kind not in "biuf":
            raise ValueError(f"{name}: {k} must be real numbers, got {v!r}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name}: {k} must be finite")
    for k, v in diag.items():
        if np.any(np.asarray(v) < 0):
            raise ValueError(f"{name}: the variance {k} must be >= 0, got min {np.min(v):.3g}")
    for k, v in off.items():
        i, j = f"C{k[1]}{k[1]}", f"C{k[2]}{k[2]}"
        if i in diag and j in diag:
            bound = np.sqrt(np.asarray(diag[i], float) * np.asarray(diag[j], float))
            if np.any(np.abs(v) > bound * (1 + 1e-9) + 1e-12):
                raise ValueError(f"{name}: ({i}, {k}, {j}) is not a covariance: |{k}| > sqrt({i} {j})")


def I2(C11, C12, C22):
    """E[g(a) g(b)] for erf."""
    _covariance("I2", dict(C11=C11, C22=C22), dict(C12=C12))
    return _i2(C11, C12, C22)


def J2(C11, C12, C22):
    """E[g'(a) g'(b)] for erf."""
    _covariance("J2", dict(C11=C11, C22=C22), dict(C12=C12))
    return _2_PI / np.sqrt((1.0 + C11) * (1.0 + C22) - C12 * C12)


def I3(C11, C12, C13, C23, C33):
    """E[g'(a) b g(c)] for erf."""
    _covariance("I3", dict(C11=C11, C33=C33), dict(C12=C12, C13=C13, C23=C23))
    return _i3(C11, C12, C13, C23, C33)


def I4(C11, C12, C13, C14, C22, C23, C24, C33, C34, C44):
    """E[g'(a) g'(b) g(c) g(d)] for erf."""
    _covariance("I4", dict(C11=C11, C22=C22, C33=C33, C44=C44),
                dict(C12=C12, C13=C13, C14=C14, C23=C23, C24=C24, C34=C34))
    return _i4(C11, C12, C13, C14, C22, C23, C24, C33, C34, C44)


def _i2(C11, C12, C22):
    return _2_PI * np.arcsin(C12 / np.sqrt((1.0 + C11) * (1.0 + C22)))


def _i3(C11, C12, C13, C23, C33):
    L3 = (1.0 + C11) * (1.0 + C33) - C13 * C13
    return _2_PI * (C23 * (1.0 + C11) - C12 * C13) / ((1.0 + C11) * np.sqrt(L3))


def _i4(C11, C12, C13, C14, C22, C23, C24, C33, C34, C44):
    a1, a2 = 1.0 + C11, 1.0 + C22
    L4 = a1 * a2 - C12 * C12
    L0 = L4 * C34 - C23 * C24 * a1 - C13 * C14 * a2 + C12 * C13 * C24 + C12 * C14 * C23
    L1 = L4 * (1.0 + C33) - C23 * C23 * a1 - C13 * C13 * a2 + 2.0 * C12 * C13 * C23
    L2 = L4 * (1.0 + C44) - C24 * C24 * a1 - C14 * C14 * a2 + 2.0 * C12 * C14 * C24
    return (4.0 / np.pi**2) / np.sqrt(L4) * np.arcsin(L0 / np.sqrt(L1 * L2))


def dg_mean(C11):
    """E[g'(a)] = sqrt(2/pi) / sqrt(1 + C11): the normalisation of the tilt."""
    return _SQRT_2_PI / np.sqrt(1.0 + C11)


def tilt(C, a):
    """The tilted covariance of the remaining fields when averaging against g'(z_a).

    C has shape (..., n, n); returns (prefactor, C') with prefactor = E[g'(z_a)] (...,) and
    C' = C - C[:, a] C[a, :] / (1 + C_aa) (..., n, n), so that E[g'(z_a) G(z)] = prefactor * E'[G(z)].
    """
    caa = C[..., a, a]
    col = C[..., :, a]
    Ct = C - col[..., :, None] * col[..., None, :] / (1.0 + caa)[..., None, None]
    return dg_mean(caa), Ct


# --- all index tuples of one covariance at once -------------------------------------------------


def _diag(C):
    return np.diagonal(C, axis1=-2, axis2=-1)


def I2_matrix(C):
    """I2[i, j] = E[g(z_i) g(z_j)] for z ~ N(0, C); C (..., n, n) -> (..., n, n)."""
    d = 1.0 + _diag(C)
    return _2_PI * np.arcsin(C / np.sqrt(d[..., :, None] * d[..., None, :]))


def J2_matrix(C):
    """J2[i, j] = E[g'(z_i) g'(z_j)]; C (..., n, n) -> (..., n, n)."""
    d = 1.0 + _diag(C)
    return _2_PI / np.sqrt(d[..., :, None] * d[..., None, :] - C * C)


def I3_tensor(C, A, B=None):
    """I3[a, u, c] = E[g'(z_a) z_u g(z_c)] for a in A, u in all fields, c in B (index arrays).

    C (..., n, n); A, B integer index arrays (B defaults to all). Returns (..., |A|, n, |B|).
    """
    n = C.shape[-1]
    B = np.arange(n) if B is None else np.asarray(B)
    A = np.asarray(A)
    d = _diag(C)
    C11 = d[..., A][..., :, None, None]
    C12 = C[..., A, :][..., :, :, None]
    C13 = C[..., A, :][..., B][..., :, None, :]
    C23 = C[..., :, B][..., None, :, :]
    C33 = d[..., B][..., None, None, :]
    return _i3(C11, C12, C13, C23, C33)


def I4_tensor(C, A, B=None):
    """I4[a, b, c, d] = E[g'(z_a) g'(z_b) g(z_c) g(z_d)] for a, b in A and c, d in B.

    C (..., n, n) -> (..., |A|, |A|, |B|, |B|).
    """
    n = C.shape[-1]
    B = np.arange(n) if B is None else np.asarray(B)
    A = np.asarray(A)
    d = _diag(C)
    CAA = C[..., A, :][..., A]
    CAB = C[..., A, :][..., B]
    CBB = C[..., B, :][..., B]
    dA, dB = d[..., A], d[..., B]
    C11 = dA[..., :, None, None, None]
    C22 = dA[..., None, :, None, None]
    C12 = CAA[..., :, :, None, None]
    C13 = CAB[..., :, None, :, None]
    C14 = CAB[..., :, None, None, :]
    C23 = CAB[..., None, :, :, None]
    C24 = CAB[..., None, :, None, :]
    C33 = dB[..., None, None, :, None]
    C44 = dB[..., None, None, None, :]
    C34 = CBB[..., None, None, :, :]
    return _i4(C11, C12, C13, C14, C22, C23, C24, C33, C34, C44)


def dgg_tensor(C, A, B=None):
    """E[g'(z_a) g(z_c) g(z_d)] for a in A and c, d in B, by the tilt identity.

    C (..., n, n) -> (..., |A|, |B|, |B|).
    """
    n = C.shape[-1]
    B = np.arange(n) if B is None else np.asarray(B)
    A = np.asarray(A)
    caa = _diag(C)[..., A]  # (..., |A|)
    col = C[..., B, :][..., A]  # (..., |B|, |A|) = C[c, a]
    col = np.swapaxes(col, -1, -2)  # (..., |A|, |B|)
    CBB = C[..., B, :][..., B]  # (..., |B|, |B|)
    Ct = CBB[..., None, :, :] - col[..., :, :, None] * col[..., :, None, :] / (1.0 + caa)[..., :, None, None]
    return dg_mean(caa)[..., :, None, None] * I2_matrix(Ct)
