"""The Omega check of the divergence policy (theory.solver.divergence.omega_check): its Cholesky screen decides
exactly as the smallest eigenvalue does."""

import numpy as np

from theory.solver import divergence as dv


def _decide_by_eigenvalues(om, tol):
    om = 0.5 * (om + np.swapaxes(om, -1, -2))
    scale = np.maximum(1.0, np.abs(np.diagonal(om, axis1=-2, axis2=-1)).max(-1))
    return np.linalg.eigvalsh(om)[:, 0] < -tol * scale


def test_omega_check_is_the_eigenvalue_test():
    rng = np.random.default_rng(0)
    n, B, tol = 5, 4000, 1e-4
    A = rng.standard_normal((B, n, n))
    om = A @ np.swapaxes(A, 1, 2) / n
    lam = np.linalg.eigvalsh(om)[:, 0]
    # shifted so that the smallest eigenvalue lands on both sides of -tol scale, many within 1e-9 of it
    scale = np.maximum(1.0, np.diagonal(om, axis1=1, axis2=2).max(-1))
    target = -tol * scale * (1.0 + rng.choice([-1e-1, -1e-6, 1e-6, 1e-1, 0.0], B) + rng.normal(0, 1e-9, B))
    om = om + (target - lam)[:, None, None] * np.eye(n)
    om[:200] = A[:200] @ np.swapaxes(A[:200], 1, 2) * 1e3  # clear cases, large scale
    om[200:210, 0, 1] += 1e-3  # not symmetric: the check symmetrises, as before
    ref = _decide_by_eigenvalues(om, tol)
    got = np.array([w is not None for w in dv.omega_check(om, tol)])
    assert 0.2 * B < ref.sum() < 0.9 * B  # both sides, near the boundary
    np.testing.assert_array_equal(got, ref)
    msgs = [w for w in dv.omega_check(om[ref][:3], tol)]
    assert all(w.startswith("Omega is no longer positive semi-definite (smallest eigenvalue -") for w in msgs)
    assert dv.omega_check(np.eye(3), tol) == [None]
    assert dv.omega_check(-np.eye(3), tol)[0] is not None
