"""Initial conditions: the order parameters of randomly drawn finite-D weights.

The draw, shared with :mod:`simulate` (which draws the same distribution in torch):

    teacher  w*_m ~ N(0, I_D),        v*_m = v_star (default 1)
    student  w_k  ~ N(0, w_std^2 I_D), v_k  ~ N(0, v_std^2)
    f ~ N(0, I_D) (top-down projection direction), b_k ~ N(0, 1) (FA feedback)

and the state holds their measured overlaps (Q = W W^T / D etc.), so that finite-D initial
overlaps such as S_k(0) ~ 1/sqrt D are part of the initial condition (THEORY.md section 6).
"""

from __future__ import annotations

import numpy as np

from . import _checks as checks
from ._state import OrderParams

__all__ = ["draw_weights", "random_state", "state_from_weights"]


def state_from_weights(W, W_star, v, v_star, f=None, b=None) -> OrderParams:
    """Measure the order parameters of weights W (K, D), W_star (M, D), f (D,) (numpy arrays)."""
    W, W_star = np.asarray(W, dtype=float), np.asarray(W_star, dtype=float)
    if W.ndim != 2 or W_star.ndim != 2 or W.shape[1] != W_star.shape[1]:
        raise ValueError(
            f"state_from_weights: W (K, D) and W_star (M, D) must share D, got {W.shape} and {W_star.shape}"
        )
    D = W.shape[1]
    f = np.zeros(D) if f is None else np.asarray(f, dtype=float)
    return OrderParams(
        Q=W @ W.T / D, R=W @ W_star.T / D, T=W_star @ W_star.T / D, v=v, v_star=v_star,
        S=W @ f / D, U=W_star @ f / D, P=f @ f / D, b=b,
    )


def draw_weights(K: int, M: int, D: int, seed: int, w_std: float = 1.0, v_std: float = 1.0, v_star=1.0,
                 replicas: int = 1) -> dict[str, np.ndarray]:
    """The initial weights of ``replicas`` students and their teacher (module docstring), float64 numpy arrays:
    W (replicas, K, D), W_star (M, D), v (replicas, K), v_star (M,), f (D,), b (K,).

    The one draw behind :func:`random_state` and ``simulate.Initialisation``, so that one (K, M, D, seed) is one
    initial state everywhere: from ``np.random.default_rng(seed)`` in the order W*, W, f, v, b (replica 0), and
    the student of replica r = 1, 2, ... from ``np.random.default_rng([seed, r])`` (W, then v), so each
    replica's student is the same whatever the number of replicas."""
    rng = np.random.default_rng(seed)
    W, v = np.empty((replicas, K, D)), np.empty((replicas, K))
    W_star = rng.standard_normal((M, D))
    W[0] = w_std * rng.standard_normal((K, D))
    f = rng.standard_normal(D)
    v[0] = v_std * rng.standard_normal(K)
    b = rng.standard_normal(K)
    for r in range(1, replicas):
        own = np.random.default_rng([seed, r])
        W[r] = w_std * own.standard_normal((K, D))
        v[r] = v_std * own.standard_normal(K)
    vs = np.broadcast_to(np.asarray(v_star, dtype=float), (M,)).copy()
    return dict(W=W, W_star=W_star, v=v, v_star=vs, f=f, b=b)


def random_state(K: int = 2, M: int = 2, *, D: int = 1000, seed: int = 0, w_std: float = 1.0, v_std: float = 1.0,
                 v_star: float | np.ndarray = 1.0) -> OrderParams:
    """The measured order parameters of random weights at dimension D (see module docstring): the state of
    ``simulate.Initialisation(K, M, D, seed, ...)`` (one draw, ``theory._internal.draw_weights``)."""
    where = "random_state"
    K, M, D = (checks.integer(name, val, where=where, min=1) for name, val in (("K", K), ("M", M), ("D", D)))
    seed = checks.integer("seed", seed, where=where, min=0)
    w_std = checks.number("w_std", w_std, where=where, min=0.0)
    v_std = checks.number("v_std", v_std, where=where, min=0.0)
    checks.memory(f"weights of dimension D = {D}", 8.0 * 3 * (K + M + 1) * D, where=where)
    w = draw_weights(K, M, D, seed, w_std, v_std, v_star)
    state = state_from_weights(w["W"][0], w["W_star"], w["v"][0], w["v_star"], w["f"], w["b"])
    vs = w["v_star"]
    object.__setattr__(state, "origin", dict(D=D, init_seed=seed, w_std=w_std, v_std=v_std,
                                             v_star=float(vs[0]) if np.all(vs == vs[0]) else [float(x) for x in vs]))
    return state
