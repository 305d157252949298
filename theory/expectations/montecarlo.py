"""Monte Carlo estimates of the ODE's expectations, straight from a rule's one-sample definition.

This is the reference every closed form and quadrature is tested against, and the "plain
Monte Carlo" baseline of the benchmarks. It draws the local fields z = (lambda, nu, phi) from
N(0, Omega) and the noise zeta from N(0, 1), applies :meth:`Rule.local_update`, and averages

    X_ku = delta_k xi_u,   DD_kl = delta_k delta_l,   EH_k = e_out h_k

with xi_u = z_u + alpha Ov_u, Ov = (S, U, P). Returns the means and their standard errors.
"""

from __future__ import annotations

import numpy as np

from .._state import OrderParams
from ..activations._base import activation

__all__ = ["monte_carlo_terms"]


def monte_carlo_terms(
    state: OrderParams,
    rule,
    *,
    n_samples: int,
    rng: np.random.Generator,
    sigma=0.0,
    sigma_F=1.0,
    g="erf",
    chunk: int = 200_000,
):
    """(X, DD, EH) and their standard errors (X_se, DD_se, EH_se) by Monte Carlo."""
    from ..rules._base import make_rule

    rule = make_rule(rule)
    g = activation(g)
    K, M = state.K, state.M
    om = state.omega
    L = np.linalg.cholesky(om + 1e-12 * np.eye(len(om)))
    Ov = om[:, -1]
    sums = None
    done = 0
    while done < n_samples:
        n = min(chunk, n_samples - done)
        z = rng.standard_normal((n, K + M + 1)) @ L.T
        zeta = rng.standard_normal(n)
        lam, nu = z[:, :K], z[:, K : K + M]
        up = rule.local_update(
            lam, nu, zeta, v=state.v, v_star=state.v_star, S=state.S, b=state.b, sigma=sigma, sigma_F=sigma_F, g=g
        )
        xi = z + up.alpha[:, None] * Ov
        X = up.delta[:, :, None] * xi[:, None, :]
        DD = up.delta[:, :, None] * up.delta[:, None, :]
        EH = up.e_out[:, None] * up.h
        parts = [(X.sum(0), (X**2).sum(0)), (DD.sum(0), (DD**2).sum(0)), (EH.sum(0), (EH**2).sum(0))]
        sums = parts if sums is None else [(a + c, b + d) for (a, b), (c, d) in zip(sums, parts)]
        done += n
    means = [s / n_samples for s, _ in sums]
    ses = [np.sqrt(np.maximum(s2 / n_samples - m**2, 0.0) / n_samples) for (_, s2), m in zip(sums, means)]
    return tuple(means), tuple(ses)
