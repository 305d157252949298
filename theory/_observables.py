"""Observables computed from order parameters (THEORY.md section 5), batched over leading dims.

- Generalisation error, noise-free target:
      eps_g = 1/2 E[(yhat - sum_m v*_m g(nu_m))^2] = 1/2 a^T I2(C) a,  a = (v, -v_star),
  with C the (K+M) block of Omega and I2 the activation's E[g(z_i) g(z_j)].
- Alignment angles, in degrees:
      "teacher"        angle(v, v_star)                         (K == M only)
      "degenerate:s"   angle(v, s * v_star) for each sign pattern s != all-ones (K == M only)
      "degenerate_min" the minimum of those
      "feedback"       angle(b_fb, v), b_fb the rule's feedback vector: sigma_F S (afa, pepita), b (fa), v (bp)
      "end_to_end"     angle between F and (W2 W1)^T: cos = sign(sigma_F) v.S / sqrt(P v^T Q v)
- Specialisation R_kn / sqrt(Q_kk T_nn).
"""

from __future__ import annotations

import itertools

import numpy as np

from .activations._base import activation
from .rules._base import Rule, make_rule

__all__ = ["generalisation_error", "alignment_angles", "angle", "specialisation", "expected_gg"]

_GH_NODES = 48


def expected_gg(C, g="erf"):
    """I2[i, j] = E[g(z_i) g(z_j)] for z ~ N(0, C), C (..., n, n), for any activation.

    Uses the activation's closed form when it has one, else a 2-D Gauss-Hermite rule with
    48 x 48 nodes in the whitened pair (error below 1e-12 for tanh at unit variances).
    """
    g = activation(g)
    C = np.asarray(C, dtype=float)
    d = np.diagonal(C, axis1=-2, axis2=-1)
    c11, c22 = d[..., :, None], d[..., None, :]
    if g.i2 is not None:
        return g.i2(c11, C, c22)
    x, w = np.polynomial.hermite_e.hermegauss(_GH_NODES)
    w = w / w.sum()
    # a = sqrt(c11) x1, b = rho sqrt(c22) x1 + sqrt(1 - rho^2) sqrt(c22) x2
    s1, s2 = np.sqrt(c11), np.sqrt(c22)
    rho = np.clip(np.divide(C, s1 * s2, out=np.zeros_like(C), where=(s1 * s2) > 0), -1, 1)
    ga = g.g(s1[..., None, None] * x[:, None])  # (..., n, 1, q, 1)
    b = s2[..., None, None] * (rho[..., None, None] * x[:, None] + np.sqrt(1 - rho**2)[..., None, None] * x[None, :])
    return np.einsum("...pq,p,q->...", ga * g.g(b), w, w)


def _second_layers(state):
    return np.asarray(state.v, dtype=float), np.asarray(state.v_star, dtype=float)


def generalisation_error(state, g="erf"):
    """eps_g = 1/2 E[(yhat - y_clean)^2] from the order parameters (closed form for erf, relu and linear).

    ``state`` is an :class:`OrderParams` or anything with Q, R, T, v, v_star attributes whose
    arrays may carry leading batch dimensions (a Trajectory, a simulation result).
    """
    Q, R, T = (np.asarray(getattr(state, k), dtype=float) for k in ("Q", "R", "T"))
    v, vs = _second_layers(state)
    K, M = R.shape[-2:]
    lead = np.broadcast_shapes(Q.shape[:-2], R.shape[:-2], T.shape[:-2], v.shape[:-1], vs.shape[:-1])
    C = np.empty(lead + (K + M, K + M))
    C[..., :K, :K] = Q
    C[..., :K, K:] = R
    C[..., K:, :K] = np.swapaxes(np.broadcast_to(R, lead + (K, M)), -1, -2)
    C[..., K:, K:] = T
    a = np.concatenate([np.broadcast_to(v, lead + (K,)), -np.broadcast_to(vs, lead + (M,))], axis=-1)
    return 0.5 * np.einsum("...i,...ij,...j->...", a, expected_gg(C, g), a)


def angle(a, b):
    """Angle in degrees between vectors along the last axis (nan where one of them is zero)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a * b).sum(-1) / (na * nb)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def feedback_vector(state, rule, sigma_F=1.0):
    """b_fb: what the first layer's update sees as second-layer weights (:meth:`theory.Rule.feedback`),
    or None for a rule without one."""
    rule = rule if isinstance(rule, Rule) else make_rule(rule)
    fb = rule.feedback_of(state, sigma_F)
    return None if fb is None else np.broadcast_to(np.asarray(fb, dtype=float), np.shape(state.v))


def alignment_angles(state, rule="bp", sigma_F=1.0) -> dict[str, np.ndarray]:
    """The named alignment angles of THEORY.md section 5, in degrees (batched).

    ``rule`` (a name or :class:`theory.Rule`) gives the feedback vector of the "feedback" angle;
    with None, or a rule without a feedback vector, that angle is left out.
    """
    v, vs = _second_layers(state)
    K, M = v.shape[-1], vs.shape[-1]
    out: dict[str, np.ndarray] = {}
    if K == M:
        out["teacher"] = angle(v, vs)
        flips = []
        for s in itertools.product((1.0, -1.0), repeat=M):
            if all(x > 0 for x in s):
                continue
            key = "degenerate:" + "".join("+" if x > 0 else "-" for x in s)
            out[key] = angle(v, np.asarray(s) * vs)
            flips.append(out[key])
        if flips:
            out["degenerate_min"] = np.min(np.stack(flips), axis=0)
    fb = None if rule is None else feedback_vector(state, rule, sigma_F)
    if fb is not None:
        out["feedback"] = angle(fb, v)
    S = np.asarray(state.S, dtype=float)
    Q = np.asarray(state.Q, dtype=float)
    P = np.asarray(state.P, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.sign(sigma_F) * (v * S).sum(-1) / np.sqrt(P * np.einsum("...k,...kl,...l->...", v, Q, v))
    out["end_to_end"] = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return out


def specialisation(state):
    """R_kn / sqrt(Q_kk T_nn), shape (..., K, M)."""
    Q, R, T = (np.asarray(getattr(state, k), dtype=float) for k in ("Q", "R", "T"))
    dq = np.sqrt(np.diagonal(Q, axis1=-2, axis2=-1))
    dt = np.sqrt(np.diagonal(T, axis1=-2, axis2=-1))
    return R / (dq[..., :, None] * dt[..., None, :])
