"""The reduced engine's empirical test error: a Monte Carlo estimate of eg from recorded order parameters.

In order-parameter space there is no held-out input set; :func:`empirical_eg` draws fresh local
fields z ~ N(0, Omega) for every record instead. :func:`eg_test` applies it to a chain's records.
"""

from __future__ import annotations

import numpy as np

import theory

__all__ = ["empirical_eg", "eg_test"]


def empirical_eg(Q, R, S, v, T, U, P, v_star, *, n_test: int, g="erf", rng: np.random.Generator):
    """1/2 mean over n_test fresh fields z ~ N(0, Omega) of (yhat - sum_m v*_m g(nu_m))^2.

    Q (..., K, K), R (..., K, M), v (..., K) with T, v_star broadcasting. This is the reduced
    engine's eg_test: an independent Monte Carlo estimate from the recorded order parameters
    (fresh fields for every record, not a fixed held-out input set, which does not exist in
    order-parameter space). It checks the closed-form eg, with statistical error of order
    eg / sqrt(n_test).
    """
    g = theory.activation(g)
    Q, R, T, v, v_star = (np.asarray(a, dtype=np.float64) for a in (Q, R, T, v, v_star))
    K, M = R.shape[-2:]
    lead = np.broadcast_shapes(Q.shape[:-2], R.shape[:-2], v.shape[:-1])
    per = max(1, 2_000_000 // (n_test * (K + M)))  # states per chunk (memory)
    if int(np.prod(lead)) > per:
        Qf, Rf = (
            np.broadcast_to(Q, lead + (K, K)).reshape(-1, K, K),
            np.broadcast_to(R, lead + (K, M)).reshape(-1, K, M),
        )
        vf = np.broadcast_to(v, lead + (K,)).reshape(-1, K)
        Tf, vsf = (
            np.broadcast_to(T, lead + (M, M)).reshape(-1, M, M),
            np.broadcast_to(v_star, lead + (M,)).reshape(-1, M),
        )
        parts = [
            empirical_eg(
                Qf[i : i + per],
                Rf[i : i + per],
                None,
                vf[i : i + per],
                Tf[i : i + per],
                None,
                None,
                vsf[i : i + per],
                n_test=n_test,
                g=g,
                rng=rng,
            )
            for i in range(0, len(Qf), per)
        ]
        return np.concatenate(parts).reshape(lead)
    C = np.empty(lead + (K + M, K + M))
    C[..., :K, :K] = Q
    C[..., :K, K:] = R
    C[..., K:, :K] = np.swapaxes(R, -1, -2)
    C[..., K:, K:] = T
    w, V = np.linalg.eigh(C)
    A = V * np.sqrt(np.clip(w, 0.0, None))[..., None, :]
    z = np.einsum("...ij,...sj->...si", A, rng.standard_normal(lead + (n_test, K + M)))
    yhat = (np.broadcast_to(v, lead + (K,))[..., None, :] * g.g(z[..., :K])).sum(-1)
    y = (np.broadcast_to(v_star, lead + (M,))[..., None, :] * g.g(z[..., K:])).sum(-1)
    return 0.5 * ((yhat - y) ** 2).mean(-1)


def eg_test(Q, R, S, v, state, *, n_test: int, g, rng: np.random.Generator) -> np.ndarray:
    """(R_, n) :func:`empirical_eg` of the records Q (R_, n, K, K), R, S, v with the constants of the initial
    ``state`` (an OrderParams or simulate's ReplicaStates), n_test fresh fields per record."""
    if Q.shape[1] == 0:
        return np.empty(Q.shape[:2])
    return np.stack([empirical_eg(Q[:, i], R[:, i], S[:, i], v[:, i], state.T, state.U, state.P, state.v_star,
                                  n_test=n_test, g=g, rng=rng) for i in range(Q.shape[1])], axis=1)
