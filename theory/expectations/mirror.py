"""Feedback mirroring: the top-down projection f learns from noise (docs/extensions.md section 4).

At a step with mirroring rate eta_F > 0 a fresh input xi ~ N(0, I_D), independent of everything
else, drives the student; with yhat_xi = sum_k v_k g(lambda^xi_k) its clean output,

    f <- f + (eta_F / sqrt D) yhat_xi xi  -  (eta_F kappa_F / D) f          [then, with mirror_norm,
                                                                              f <- f sqrt(P(0) / P)]

so that, with (lambda^xi, nu^xi, phi^xi) ~ N(0, Omega) the fields of xi and |xi|^2 / D -> 1,

    dS_k/dt = eta_F E[yhat_xi lambda_k] - eta_F kappa_F S_k          (added to the rule's dS_k/dt)
    dU_m/dt = eta_F E[yhat_xi nu_m]     - eta_F kappa_F U_m
    dP/dt   = 2 eta_F E[yhat_xi phi] + eta_F^2 E[yhat_xi^2] - 2 eta_F kappa_F P

and with mirror_norm P stays at P(0) while dS_k, dU_m each lose S_k dP/(2P), U_m dP/(2P) (dP the
unnormalised rate above). By Stein's lemma E[g(lambda_j) z_u] = Omega_ju E[g'(lambda_j)], so

    E[yhat_xi z_u] = sum_j v_j E[g'(lambda_j)] Omega_ju,     E[yhat_xi^2] = v^T I2(Q) v,

with E[g'(lambda_j)] = sqrt(2/pi) / sqrt(1 + Q_jj) for erf, 1/2 for relu, 1 for linear (a
64-node Gauss-Hermite rule otherwise) and I2 the activation's E[g(a) g(b)]: closed forms for any
activation with a closed-form I2, whatever the rule. The terms do not depend on the rule.
"""

from __future__ import annotations

import numpy as np

from ..activations._base import activation

__all__ = ["expected_dg", "mirror_terms", "mirror_derivatives"]

_SQRT_2_PI = np.sqrt(2.0 / np.pi)
_DG_MEAN = {"erf": lambda q: _SQRT_2_PI / np.sqrt(1.0 + q), "relu": lambda q: 0.5 + 0.0 * q,
            "linear": lambda q: 1.0 + 0.0 * q}


def expected_dg(q, g="erf"):
    """E[g'(z)] for z ~ N(0, q) (q >= 0, any shape): closed for erf, relu and linear, else a
    64-node Gauss-Hermite rule (error below 1e-13 for tanh at q <= 10)."""
    g = activation(g)
    q = np.asarray(q, dtype=float)
    if g.name in _DG_MEAN and g is activation(g.name):
        return _DG_MEAN[g.name](q)
    x, w = np.polynomial.hermite_e.hermegauss(64)
    w = w / w.sum()
    return np.einsum("...p,p->...", g.dg(np.sqrt(np.maximum(q, 0.0))[..., None] * x), w)


def mirror_terms(Q, R, S, v, g="erf"):
    """(E[yhat_xi lambda] (..., K), E[yhat_xi nu] (..., M), E[yhat_xi phi] (...), E[yhat_xi^2] (...))."""
    from .._observables import expected_gg

    Q, R, S, v = (np.asarray(a, dtype=float) for a in (Q, R, S, v))
    c = v * expected_dg(np.diagonal(Q, axis1=-2, axis2=-1), g)  # (..., K): v_j E[g'(lambda_j)]
    m_lam = np.einsum("...j,...jk->...k", c, Q)
    m_nu = np.einsum("...j,...jm->...m", c, R)
    m_phi = (c * S).sum(-1)
    m_yy = np.einsum("...i,...ij,...j->...", v, expected_gg(Q, g), v)
    return m_lam, m_nu, m_phi, m_yy


def mirror_derivatives(Q, R, S, U, P, v, *, g, eta_F, kappa_F=0.0, norm=False):
    """The mirroring's (dS (..., K), dU (..., M), dP (...)) (module docstring); eta_F, kappa_F and norm
    may be arrays over the leading dimensions (sweeps)."""
    m_lam, m_nu, m_phi, m_yy = mirror_terms(Q, R, S, v, g)
    eF = np.asarray(eta_F, dtype=float)
    kF = np.asarray(kappa_F, dtype=float)
    S, U, P = (np.asarray(a, dtype=float) for a in (S, U, P))
    dS = eF[..., None] * (m_lam - kF[..., None] * S)
    dU = eF[..., None] * (m_nu - kF[..., None] * U)
    dP = 2.0 * eF * (m_phi - kF * P) + eF * eF * m_yy
    norm = np.asarray(norm, dtype=bool)
    if np.any(norm):
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(P > 0, dP / (2.0 * P), 0.0)
        rel = np.where(norm, rel, 0.0)
        dS = dS - rel[..., None] * S
        dU = dU - rel[..., None] * U
        dP = np.where(norm, 0.0, dP)
    return dS, dU, dP
