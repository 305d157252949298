"""The one protocol whose optimum is known in closed form: linear g, K = M = 1, bp with output noise.

With g(z) = z, a frozen second layer (v, v* fixed) and e = v lambda - v* nu - sigma zeta, THEORY.md section 4 gives
E[delta lambda] = v (v Q - v* R), E[delta nu] = v (v R - v* T), E[delta^2] = v^2 (2 eps + sigma^2), so that
eps = eps_g = (v^2 Q - 2 v v* R + v*^2 T) / 2 obeys one scalar ODE,

    d eps / dt = -2 eta v^2 eps + eta^2 v^4 (eps + s),        s = sigma^2 / 2.

Its right-hand side is a convex quadratic in eta, least at the greedy rate eta*(eps) = eps / (v^2 (eps + s)), where
d eps / dt = -eps^2 / (eps + s). The greedy protocol is globally optimal for eps_g(T): any protocol has
d eps / dt >= G(eps) = min_eta (...), and by the comparison theorem for scalar ODEs its eps stays above the
solution of d eps / dt = G(eps). Separating variables, log eps - s / eps = log eps0 - s / eps0 - t, i.e. with
Lambert's W,

    eps*(t) = s / W( (s / eps0) exp(s / eps0 + t) ),        eta*(t) = 1 / ( v^2 (1 + W( (s / eps0) exp(s / eps0 + t)
    )) ),

so eta* decays like 1 / (v^2 t) at late times (the 1/t annealing, Saad & Rattray 1997) while eps* ~ s / t. Without
noise (s = 0) eta* = 1 / v^2 and eps* = eps0 exp(-t). The optimum lies inside any bounds [lo, hi] with
lo <= eta*(T) and hi >= eta*(0) = 1 / (v^2 (1 + s / eps0)).
"""

from __future__ import annotations

import numpy as np

__all__ = ["linear_optimal_eg", "linear_optimal_eta"]


def _w(t, eg0, sigma):
    """W((s / eps0) exp(s / eps0 + t)), evaluated without overflow (log-space Newton for large arguments)."""
    from scipy.special import lambertw

    s = 0.5 * sigma**2
    t = np.asarray(t, dtype=float)
    log_x = np.log(s / eg0) + s / eg0 + t
    out = np.empty_like(log_x)
    small = log_x < 600
    out[small] = np.real(lambertw(np.exp(log_x[small])))
    w = log_x[~small] - np.log(log_x[~small])
    for _ in range(8):  # w + log w = log x
        w -= (w + np.log(w) - log_x[~small]) / (1.0 + 1.0 / w)
    out[~small] = w
    return out


def linear_optimal_eg(t, eg0: float, sigma: float, v: float = 1.0):
    """eps_g*(t) of the optimal protocol (module docstring); v drops out of eps_g*."""
    t = np.asarray(t, dtype=float)
    if sigma == 0:
        return eg0 * np.exp(-t)
    return 0.5 * sigma**2 / _w(t, eg0, sigma)


def linear_optimal_eta(t, eg0: float, sigma: float, v: float = 1.0):
    """eta*(t) = 1 / (v^2 (1 + W(...))) of the optimal protocol (module docstring)."""
    t = np.asarray(t, dtype=float)
    if sigma == 0:
        return np.full_like(t, 1.0 / v**2)
    return 1.0 / (v**2 * (1.0 + _w(t, eg0, sigma)))
