"""Closed-form ODE right-hand sides of the feedback family for erf, relu and linear g (THEORY.md section 4).

For rules of the feedback family (bp, fa, afa, and any user rule of that form; derived: theory.rules._facts)
delta_k = c_k g'(lambda_k) e with c the rule's feedback vector (v for bp, b for fa, sigma_F S
for afa; :meth:`theory.Rule.feedback`), e_out = e, h = g(lambda), and
e = sum_j a_j g(z_j) - sigma zeta over the fields z = (lambda, nu), a = (v, -v_star). Then

    X_ku  = E[delta_k xi_u] = c_k ( sum_j a_j I3(k, u, j)  -  sigma_F Ov_u E[g'(lambda_k) e^2] [modulated] )
    E[g'(lambda_k) e^2]     = sum_jj' a_j a_j' E[g'(lambda_k) g(z_j) g(z_j')] + sigma^2 E[g'(lambda_k)]
    E[delta_k delta_l]      = c_k c_l ( sum_jj' a_j a_j' I4(k, l, j, j') + sigma^2 J2(k, l) )

where u runs over (lambda_l, nu_n, phi), Ov_u = (S_l, U_n, P) is the overlap of u's vector with f,
and the presynaptic overlaps are xi_u = z_u - sigma_F Ov_u e for the modulated input. Then

    dQ_kl/dt = -eta (X_kl + X_lk) + eta^2 E[delta_k delta_l] - 2 eta kappa Q_kl
    dR_kn/dt = -eta X_k,nu_n - eta kappa R_kn
    dS_k/dt  = -eta X_k,phi  - eta kappa S_k
    dv_k/dt  = -eta_v E[e g(lambda_k)] = -eta_v sum_j a_j I2(k, j)

The integrals I2, J2, I3, I4 and E[g'(a) g(c) g(d)] come from theory.activations.erf (erf),
theory.activations.relu (relu: arc-cosine kernels, orthant probabilities) or theory.activations.linear (polynomial).
Everything is vectorised over leading batch dimensions of the order parameters.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .._state import field_covariance

__all__ = ["closed_form_terms", "assemble"]


def integrals(g):
    """The namespace of closed-form integrals for activation ``g`` (erf, relu, linear): ``Activation.integrals``."""
    from ..activations._base import activation

    return activation(g).integrals


def _feedback(rule, v, S, b, sigma_F, M):
    """The coefficient c (..., K) of delta_k = c_k g'(lambda_k) e: the rule's feedback vector."""
    from ..rules._facts import rule_facts

    if not rule_facts(rule, np.shape(v)[-1], M).closed_form:
        raise ValueError(f"closed forms: rule {rule.name!r} has no closed form; use the numerical engine")
    return rule.feedback_of(SimpleNamespace(v=v, S=S, b=b), sigma_F)


def closed_form_terms(rule, Q, R, T, S, U, P, v, v_star, b=None, *, sigma=0.0, sigma_F=1.0, g="erf"):
    """The expectations the ODE is built from, for the feedback family with g = erf, relu or linear.

    Returns X (..., K, K+M+1) = E[delta_k xi_u], DD (..., K, K) = E[delta_k delta_l] and
    EH (..., K) = E[e_out h_k].
    """
    ig = integrals(g)
    K, M = np.shape(R)[-2:]
    # sigma and sigma_F may be arrays over the batch dimensions (sweeps): give them room for the index axes.
    sigma = np.asarray(sigma, dtype=float)[..., None]
    sigma_F = np.asarray(sigma_F, dtype=float)[..., None]
    om = field_covariance(Q, R, T, S, U, P)  # (..., K+M+1, K+M+1)
    n = K + M
    C = om[..., :n, :n]
    a = np.concatenate(
        [np.broadcast_to(v, om.shape[:-2] + (K,)), -np.broadcast_to(v_star, om.shape[:-2] + (M,))], axis=-1
    )
    c = _feedback(rule, v, S, b, sigma_F, M)
    A = np.arange(K)
    fields = np.arange(n)
    # E[g'(lambda_k) z_u e] = sum_j a_j I3(k, u, j), u over all K+M+1 fields, j over the K+M.
    I3 = ig.I3_tensor(om, A, fields)  # (..., K, n+1, n)
    X = np.einsum("...kuj,...j->...ku", I3, a)
    if rule.modulated:
        dgg = ig.dgg_tensor(C, A)  # (..., K, n, n)
        Ege2 = np.einsum("...kij,...i,...j->...k", dgg, a, a) + sigma**2 * ig.dg_mean(
            np.diagonal(Q, axis1=-2, axis2=-1)
        )
        Ov = om[..., :, -1]  # (..., n+1): (S, U, P)
        X = X - sigma_F[..., None] * Ov[..., None, :] * Ege2[..., :, None]
    X = c[..., :, None] * X
    I4 = ig.I4_tensor(C, A)  # (..., K, K, n, n)
    DD = np.einsum("...klij,...i,...j->...kl", I4, a, a) + sigma[..., None] ** 2 * ig.J2_matrix(Q)
    DD = c[..., :, None] * c[..., None, :] * DD
    EH = np.einsum("...kj,...j->...k", ig.I2_matrix(C)[..., :K, :], a)
    return X, DD, EH


def assemble(X, DD, EH, Q, R, S, v, *, eta, eta_v, weight_decay=0.0, train_second_layer=True, batch=1):
    """Turn the expectations X, DD, EH into (dQ, dR, dS, dv) (THEORY.md section 4).

    With mini-batches of B samples per step the second-order term is divided by B (the B samples'
    cross terms vanish as D grows; THEORY.md section 4b). eta, eta_v, weight_decay and batch may be
    arrays broadcasting against the batch dimensions.
    """
    K = np.shape(Q)[-1]
    M = np.shape(R)[-1]
    eta = np.asarray(eta, dtype=float)[..., None, None]
    kappa = np.asarray(weight_decay, dtype=float)[..., None, None]
    XQ = X[..., :K]
    inv_batch = 1.0 / np.asarray(batch, dtype=float)[..., None, None]
    dQ = -eta * (XQ + np.swapaxes(XQ, -1, -2)) + eta**2 * inv_batch * DD - 2 * eta * kappa * Q
    dR = -eta * X[..., K : K + M] - eta * kappa * R
    dS = -eta[..., 0] * X[..., -1] - eta[..., 0] * kappa[..., 0] * S
    if train_second_layer:
        dv = -np.asarray(eta_v, dtype=float)[..., None] * EH
    else:
        dv = np.zeros(np.broadcast_shapes(np.shape(v), np.shape(EH)))
    return dQ, dR, dS, dv
