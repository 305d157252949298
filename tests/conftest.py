import os

import numpy as np
import pytest
from hypothesis import settings

import theory

# Property tests draw their examples from a fixed seed by default, so that a CI run is reproducible; set
# HYPOTHESIS_PROFILE=explore to search with fresh random examples (and fix what it finds).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def random_covariance(rng, n, extra=3):
    A = rng.standard_normal((n, n + extra))
    return A @ A.T / (n + extra)


def random_state(rng, K=2, M=2, *, b=True, scale=1.0):
    """A random valid state: Omega is a random (K+M+1) covariance."""
    om = scale * random_covariance(rng, K + M + 1)
    return theory.OrderParams(
        Q=om[:K, :K], R=om[:K, K:K + M], T=om[K:K + M, K:K + M], S=om[:K, -1], U=om[K:K + M, -1], P=om[-1, -1],
        v=rng.standard_normal(K), v_star=rng.standard_normal(M), b=rng.standard_normal(K) if b else None,
    )


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)
