"""Gaussian integrals of the linear activation g(z) = z, g'(z) = 1 (polynomial: exact).

    I2(i, j) = C_ij,   J2 = 1,   I3(a, u, c) = C_uc,   I4(a, b, c, d) = C_cd,
    E[g'(a) g(c) g(d)] = C_cd,   E[g'] = 1,

with C the covariance of the fields; shapes and index conventions as theory.activations.erf
(``A`` the indices of the g' arguments, ``B`` those of the g arguments, all by default).
"""

from __future__ import annotations

import numpy as np

__all__ = ["I2_matrix", "J2_matrix", "dg_mean", "I3_tensor", "dgg_tensor", "I4_tensor"]


def _idx(C, B):
    return np.arange(C.shape[-1]) if B is None else np.asarray(B)


def I2_matrix(C):
    return np.array(C, dtype=float)


def J2_matrix(C):
    return np.ones_like(C, dtype=float)


def dg_mean(C11):
    return np.ones_like(np.asarray(C11, dtype=float))


def I3_tensor(C, A, B=None):
    B = _idx(C, B)
    return np.broadcast_to(C[..., None, :, B], C.shape[:-2] + (len(A), C.shape[-1], len(B)))


def dgg_tensor(C, A, B=None):
    B = _idx(C, B)
    CBB = C[..., B, :][..., B]
    return np.broadcast_to(CBB[..., None, :, :], C.shape[:-2] + (len(A), len(B), len(B)))


def I4_tensor(C, A, B=None):
    B = _idx(C, B)
    CBB = C[..., B, :][..., B]
    return np.broadcast_to(CBB[..., None, None, :, :], C.shape[:-2] + (len(A), len(A), len(B), len(B)))
