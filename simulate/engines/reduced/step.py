"""One step of the exact finite-D sampler in order-parameter space (engine "reduced"): :class:`ReducedStep`.

Why it is exact
---------------
One online step touches the weights only through the projections of the input x ~ N(0, I_D) on
the r = K + M + 1 vectors (w_1..w_K, w*_1..w*_M, f) and through |x|^2. Let G (r x r) be their
Gram matrix divided by D (G = Omega of THEORY.md section 2: [[Q, R, S], [R^T, T, U], [S^T, U^T, P]])
and let A (r x r) be any square root, A A^T = G. Pick an r-dimensional subspace containing the
span of the r vectors (possible whenever D >= r) and let eps in R^r be the coordinates of x in an
orthonormal basis of it: eps ~ N(0, I_r), and the rest of x is independent of eps with squared
norm chi^2_{D-r}. Then (for a suitable choice of basis; any two square roots differ by an
orthogonal matrix, under which eps is invariant in law)

    z = (lambda, nu, phi) = A eps ~ N(0, G),      |x|^2 = |eps|^2 + chi^2_{D-r},

jointly and exactly, whatever the rank of G (e.g. w = 0 at the start). This is the brief's
"z^T G^+ z + chi^2_{D - rank G}" written with a square root that needs no pseudo-inverse.

The rule's one-sample update (THEORY.md section 3, :meth:`theory.Rule.local_update`, the single
definition of every rule) gives (delta, alpha, e_out, h) from (lambda, nu, zeta, v, S). With
xp = x + alpha f / sqrt D and c = eta kappa / D (kappa = weight_decay),

    w_k' = (1 - c) w_k - (eta / sqrt D) delta_k xp,        v_k' = v_k - (eta_v / D) e_out h_k.

Writing xi_u = xp . u / sqrt D = z_u + alpha G[u, f] for u = w_l, w*_n, f, and
|xp|^2 = |x|^2 + 2 alpha phi + alpha^2 P, and taking dot products (derivation checked by hand
and by tests/simulate/engines/reduced/test_reduced.py against an explicit D-dimensional step with the same draws):

    Q'_kl = (1-c)^2 Q_kl - (1-c)(eta/D)(delta_k xi_l + delta_l xi_k) + (eta^2/D) delta_k delta_l |xp|^2/D
    R'_kn = (1-c) R_kn - (eta/D) delta_k xi*_n
    S'_k  = (1-c) S_k  - (eta/D) delta_k xi_f
    v'_k  = v_k - (eta_v/D) e_out h_k          (v frozen when the second layer is not trained)

T, U, P (and v_star, b) never change. So G evolves as a Markov chain with the law of the full
simulation's order parameters at any D, and a step costs O(r^3), independent of D.

The square root
---------------
The (M+1) x (M+1) teacher/f block G11 = [[T, U], [U^T, P]] is fixed: its square root
A11 = V sqrt(Lambda) (eigendecomposition, singular blocks allowed, e.g. P = 0) is computed once.
A is block lower triangular, [[A11, 0], [L21, L22]], with L21 = [R, S] V Lambda^{-1/2} (the
columns of a PSD matrix's off-diagonal block lie in the range of its diagonal block) and L22 the
Cholesky factor of the Schur complement Q - L21 L21^T, computed column by column with zero
columns where a pivot vanishes (exact for PSD matrices; handles w = 0). In the code the fields
are ordered (nu, phi, lambda); nothing else depends on that order.
"""

from __future__ import annotations

import numpy as np
import torch

from theory import HyperParams

__all__ = ["ReducedStep"]

_PIVOT_TOL = 1e-13


def _psd_cholesky(C: torch.Tensor) -> torch.Tensor:
    """Lower factor L with L L^T = C for batched PSD C (..., K, K); zero columns at vanishing pivots."""
    K = C.shape[-1]
    L = torch.zeros_like(C)
    scale = C.diagonal(dim1=-2, dim2=-1).abs().amax(-1, keepdim=True).clamp_min(1e-300)
    for j in range(K):
        col = C[..., j:, j]
        if j:
            col = col - (L[..., j:, :j] * L[..., j : j + 1, :j]).sum(-1)
        d = col[..., :1]
        ok = d > _PIVOT_TOL * scale
        ljj = torch.sqrt(torch.where(ok, d, torch.ones_like(d)))
        L[..., j:, j] = torch.where(ok, col / ljj, torch.zeros_like(col))
    return L


def _fixed_square_root(T, U, P):
    """(A11^T, Binv) of the fixed block G11 = [[T, U], [U^T, P]] (possibly batched), float64 numpy.

    A11 = V sqrt(Lambda) (so A11 A11^T = G11) and Binv = V Lambda^{-1/2} on the range of G11
    (zero on its null space), from the eigendecomposition G11 = V Lambda V^T.
    """
    T, U, P = (np.asarray(a, dtype=np.float64) for a in (T, U, P))
    M = T.shape[-1]
    lead = np.broadcast_shapes(T.shape[:-2], U.shape[:-1], P.shape)
    G11 = np.empty(lead + (M + 1, M + 1))
    G11[..., :M, :M] = T
    G11[..., :M, M] = U
    G11[..., M, :M] = U
    G11[..., M, M] = P
    lam, V = np.linalg.eigh(G11)
    tol = 1e-12 * np.maximum(1.0, np.abs(lam).max(-1, keepdims=True))
    pos = lam > tol
    A11 = V * np.sqrt(np.where(pos, lam, 0.0))[..., None, :]
    Binv = V * np.where(pos, 1.0 / np.sqrt(np.where(pos, lam, 1.0)), 0.0)[..., None, :]
    return np.swapaxes(A11, -1, -2), Binv


class ReducedStep:
    """One step of the order-parameter Markov chain for a fixed rule and fixed constants.

    Holds the fixed square root of the teacher/f block and the run's parameters; ``__call__``
    maps (Q, R, S, v) with a leading replica axis and one step's draws to the next (Q, R, S, v);
    ``batch_step`` does the same for a mini-batch of B samples per step (module docstring).
    """

    def __init__(self, rule, hyper: HyperParams, *, D, T, U, P, v_star, b, device, dtype):
        self.rule, self.g = rule, hyper.g
        self.D = int(D)
        self.M = T.shape[-1]

        def tt(a):
            if a is None:
                return None
            return torch.as_tensor(np.array(a, dtype=np.float64)).to(device=device, dtype=dtype)

        A11T, Binv = _fixed_square_root(T, U, P)
        self.A11T = tt(A11T)  # y = eps1 @ A11^T
        self.Binv = tt(Binv)  # L21 = [R, S] @ Binv
        self.U, self.P = tt(U), tt(P)
        self.T = tt(T)
        self.v_star, self.b = tt(v_star), tt(b)
        self.hyper = hyper
        self.mirror = hyper.mirroring  # f learns: U and P are state, the square root is taken at every step
        self.sigma, self.sigma_F = hyper.sigma, hyper.sigma_F
        self.train_second_layer = hyper.train_second_layer

    def fields(self, Q, R, S, eps, *, sample_axis=False):
        """(lam, nu, phi) = A eps and |eps|^2 for eps (..., r) ordered (nu, phi, lambda); with
        ``sample_axis``, eps (R_, B, r) against Q, R, S with a length-1 axis for the samples."""
        M = self.M
        A11T, Binv = self.A11T, self.Binv
        if sample_axis and A11T.ndim > 2:  # per-replica constants: room for the sample axis
            A11T, Binv = A11T[:, None], Binv[:, None]
        e1, e2 = eps[..., : M + 1], eps[..., M + 1 :]
        y = (e1[..., None, :] * A11T.transpose(-1, -2)).sum(-1) if A11T.ndim > 2 else e1 @ A11T
        L21 = torch.cat([R, S[..., None]], -1) @ Binv
        L22 = _psd_cholesky(Q - L21 @ L21.transpose(-1, -2))
        lam = (L21 @ e1[..., None]).squeeze(-1) + (L22 @ e2[..., None]).squeeze(-1)
        return lam, y[..., :M], y[..., M]

    def fields_of(self, Q, R, S, U, P, eps, *, sample_axis=False):
        """(lam, nu, phi) = L eps with L the PSD Cholesky factor of the whole Gram matrix G ordered
        (nu, phi, lambda): for U and P that change (mirroring), where the fixed block's square root
        of :meth:`fields` no longer applies. Any square root gives the same law (module docstring)."""
        M, K = self.M, Q.shape[-1]
        T = self.T
        lead = Q.shape[:-2]
        G = torch.empty(lead + (M + 1 + K, M + 1 + K), dtype=Q.dtype, device=Q.device)
        G[..., :M, :M] = T[:, None] if sample_axis and T.ndim > 2 else T
        G[..., :M, M] = U
        G[..., M, :M] = U
        G[..., M, M] = P
        G[..., M + 1 :, :M] = R
        G[..., :M, M + 1 :] = R.transpose(-1, -2)
        G[..., M + 1 :, M] = S
        G[..., M, M + 1 :] = S
        G[..., M + 1 :, M + 1 :] = Q
        z = (_psd_cholesky(G) @ eps[..., None]).squeeze(-1)
        return z[..., M + 1 :], z[..., :M], z[..., M]

    def mirror_step(self, Q, R, S, U, P, v, eps, chi2, t=0.0, P0=None):
        """The mirroring step after a learning step (docs/extensions.md section 4): f <- (1 - c_F) f +
        (eta_F / sqrt D) yhat_xi xi with c_F = eta_F kappa_F / D, for the fields (lambda, nu, phi) of xi
        (eps (R_, r), ordered as in :meth:`fields`) and |xi|^2 = |eps|^2 + chi2; with mirror_norm, f
        then rescaled to |f|^2 / D = P0. Returns (S, U, P)."""
        hp = self.hyper
        eta_F = float(hp.mirror_rate(t))
        if eta_F == 0.0:
            return S, U, P
        D = self.D
        lam, nu, phi = self.fields_of(Q, R, S, U, P, eps)
        a = eta_F * (v * self.g.g(lam)).sum(-1)  # eta_F yhat_xi
        k = 1.0 - eta_F * hp.kappa_F / D
        S = k * S + (a / D)[..., None] * lam
        U = k * U + (a / D)[..., None] * nu
        P = (k * k) * P + (2.0 * k / D) * a * phi + (a * a / D**2) * ((eps * eps).sum(-1) + chi2)
        if hp.mirror_norm:
            scale = torch.sqrt(P0 / P)
            S, U, P = S * scale[..., None], U * scale[..., None], P0.expand_as(P).clone()
        return S, U, P

    def _rates(self, t):
        """(eta, eta_v, c = eta kappa / D) at time t = step / D."""
        eta, eta_v = (float(r) for r in self.hyper.rates(t))
        return eta, eta_v, eta * self.hyper.weight_decay / self.D

    def __call__(self, Q, R, S, v, eps, chi2, zeta, t=0.0, U=None, P=None):
        """One step with one sample: eps (R_, r), chi2 (R_,) ~ chi^2_{D-r}, zeta (R_,); t = step / D.
        U (R_, M) and P (R_,): their current values when they are state (mirroring)."""
        eta, eta_v, c = self._rates(t)
        D = self.D
        if U is None:
            lam, nu, phi = self.fields(Q, R, S, eps)
            U, P = self.U, self.P
        else:
            lam, nu, phi = self.fields_of(Q, R, S, U, P, eps)
        up = self.rule.local_update(lam, nu, zeta, v=v, v_star=self.v_star, S=S, b=self.b,
                                    sigma=self.sigma, sigma_F=self.sigma_F, g=self.g)
        alpha, delta = up.alpha, up.delta
        if not torch.is_tensor(alpha):
            alpha = torch.zeros_like(phi)
        a = alpha[..., None]
        xi_lam = lam + a * S
        xi_nu = nu + a * U
        xi_phi = phi + alpha * P
        xp2 = (eps * eps).sum(-1) + chi2 + 2.0 * alpha * phi + alpha * alpha * P  # |xp|^2
        k = 1.0 - c
        dxi = delta[..., :, None] * xi_lam[..., None, :]
        Q = (k * k) * Q - (k * eta / D) * (dxi + dxi.transpose(-1, -2)) \
            + (eta * eta / D**2) * xp2[..., None, None] * delta[..., :, None] * delta[..., None, :]
        R = k * R - (eta / D) * delta[..., :, None] * xi_nu[..., None, :]
        S = k * S - (eta / D) * delta * xi_phi[..., None]
        if self.train_second_layer:
            v = v - (eta_v / D) * up.e_out[..., None] * up.h
        return Q, R, S, v

    def batch_step(self, Q, R, S, v, eps, W, zeta, t=0.0, U=None, P=None):
        """One step with B samples: eps (R_, B, r), W (R_, B, B) the Gram matrix of the inputs' parts
        orthogonal to the r vectors (Wishart(D - r, I_B)), zeta (R_, B); t = step / D. U (R_, M) and
        P (R_,): their current values when they are state (mirroring)."""
        eta, eta_v, c = self._rates(t)
        D, B = self.D, eps.shape[-2]
        per = lambda a, nd: a if a is None or a.ndim <= nd else a[:, None]  # noqa: E731  (per-replica constants)
        if U is None:
            lam, nu, phi = self.fields(Q[:, None], R[:, None], S[:, None], eps, sample_axis=True)  # (R_, B, ...)
            U, P = per(self.U, 1), per(self.P, 0)
        else:
            lam, nu, phi = self.fields_of(Q[:, None], R[:, None], S[:, None], U[:, None], P[:, None], eps,
                                          sample_axis=True)
            U, P = U[:, None], P[:, None]
        v_star, b = per(self.v_star, 1), per(self.b, 1)
        up = self.rule.local_update(lam, nu, zeta, v=v[:, None], v_star=v_star, S=S[:, None], b=b,
                                    sigma=self.sigma, sigma_F=self.sigma_F, g=self.g)
        alpha, delta = up.alpha, up.delta
        if not torch.is_tensor(alpha):
            alpha = torch.zeros_like(phi)
        a = alpha[..., None]
        xi_lam = lam + a * S[:, None]
        xi_nu = nu + a * U
        xi_phi = phi + alpha * P
        P2 = P if P.ndim == 0 else P[..., None]
        G = (
            eps @ eps.transpose(-1, -2)
            + W
            + alpha[..., None, :] * phi[..., :, None]
            + alpha[..., :, None] * phi[..., None, :]
            + P2 * alpha[..., :, None] * alpha[..., None, :]
        )  # xp_s . xp_s'
        k = 1.0 - c
        dxi = delta.transpose(-1, -2) @ xi_lam  # sum_s delta_s xi_s^T
        Q = (k * k) * Q - (k * eta / (D * B)) * (dxi + dxi.transpose(-1, -2)) \
            + (eta * eta / (D * D * B * B)) * delta.transpose(-1, -2) @ G @ delta
        R = k * R - (eta / (D * B)) * delta.transpose(-1, -2) @ xi_nu
        S = k * S - (eta / (D * B)) * (delta * xi_phi[..., None]).sum(-2)
        if self.train_second_layer:
            v = v - (eta_v / (D * B)) * (up.e_out[..., None] * up.h).sum(-2)
        return Q, R, S, v
