"""Exact Gaussian integrals of the ReLU g(z) = max(z, 0), g'(z) = theta(z) (Heaviside, theta(0) = 0).

The fields z ~ N(0, C) are centred Gaussian with a positive SEMI-definite covariance C: identical or
perfectly (anti-)correlated fields occur (a student field paired with itself, a student equal to
its teacher), and every formula below is used up to and including those limits.

Everything reduces to one moment,

    M(H; l1, l2) = E[ prod_{i in H} theta(z_i) * z_l1 * z_l2 ],     |H| <= 4, linear factors optional,

because g(z) = z theta(z) and theta^2 = theta: with the index coincidences removed (H is a set),

    I2(i,j)      = E[g(z_i) g(z_j)]                      = M({i, j}; i, j)
    J2(k,l)      = E[theta(z_k) theta(z_l)]              = M({k, l})
    I3(k,u,j)    = E[theta(z_k) z_u g(z_j)]              = M({k, j}; u, j)
    dgg(k;i,j)   = E[theta(z_k) g(z_i) g(z_j)]           = M({k, i, j}; i, j)
    I4(k,l,i,j)  = E[theta(z_k) theta(z_l) g(z_i) g(z_j)] = M({k, l, i, j}; i, j)

Orthant probabilities
---------------------
Without linear factors M is the orthant probability P_m(R) = P(x_1 > 0, ..., x_m > 0) of the
standardised fields x_i = z_i / sqrt(C_ii) (theta(z_i) = theta(x_i)), whose covariance is the
correlation matrix R. For m <= 3 it is elementary (Sheppard; the sum of the angles of a spherical
triangle): with asin taken of the pairwise correlations r_ij,

    P0 = 1,  P1 = 1/2,  P2(r) = 1/4 + asin(r) / (2 pi),
    P3 = 1/8 + (asin r12 + asin r13 + asin r23) / (4 pi).

P4 has no elementary form. Plackett's identity, dP_m / dr_ij = phi_2(0, 0; r_ij) P_{m-2}(the other
variables | x_i = x_j = 0), with the bivariate density at the origin phi_2(0, 0; r) =
1 / (2 pi sqrt(1 - r^2)), gives it as a one-dimensional integral along the straight path
R(s) = R0 + s (R - R0), s in [0, 1]. R0 keeps one pairing {(1,2), (3,4)} of R and zeroes the other
four correlations, so that P4(R0) = P2(r12) P2(r34) (two independent blocks). Among the three
pairings the one kept is the one with the smallest (1 - r_a^2)(1 - r_b^2), so that nearly
degenerate pairs stay fixed along the path. R(s) = (1 - s) R0 + s R is positive definite for s < 1
(R0 is, R is semi-definite), so every conditional below is well defined inside the path. With
P2 = 1/4 + asin/(2 pi) the constant 1/4 integrates in closed form (the integral of
r / (2 pi sqrt(1 - s^2 r^2)) over [0, 1] is asin(r) / (2 pi)), and

    P4(R) = P2(r12) P2(r34) + (asin r13 + asin r14 + asin r23 + asin r24) / (8 pi)
            + 1/(4 pi^2) int_0^1  sum_{(i,j) in {13, 14, 23, 24}}  r_ij asin(rho_{kl|ij}(s)) / sqrt(1 - s^2 r_ij^2) ds,

(k, l) the complement of (i, j), rho_{kl|ij}(s) = -A_kl / sqrt(A_kk A_ll) the partial correlation
of x_k, x_l given the other two, A the adjugate (cofactor matrix) of R(s): no inverse, and each
cofactor shared by the terms that use it. Along the path the cofactors are polynomials in s,
A_kk = alpha + beta s^2 and A_kl = s (gamma + delta s^2); their coefficients are computed once per
call in double-double arithmetic (error-free products and sums), so that a cofactor that is small
because of a nearly degenerate pair (1 - r ~ t) is still accurate to a relative ~eps instead of
eps / t: with plain double cofactors two nearly degenerate pairs (student ~ teacher, twice) left
errors of ~1e-6 in P4 at 1 - r ~ 1e-13.

Quadrature, in three stages: (1) the 21-point Gauss-Kronrod rule in u with s = 1 - u^2 (which turns
the square-root endpoint behaviour of an exactly singular R into an analytic one), accepted when
the embedded 10-point Gauss rule agrees to 1e-12 (about 2/3 of random covariances; the Kronrod
value is then good to ~1e-16); (2) else the tanh-sinh rule in s with step 1/8 (51 nodes), accepted
when it agrees with the Kronrod value to 1e-13; (3) else tanh-sinh with step 1/16 (52 more nodes),
which copes with a singularity just beyond s = 1 (R nearly singular in a direction that is not a
kept pair). A path correlation above 0.99 in modulus (three nearly coincident fields: no pairing
keeps them all) skips to (3), because there both Gauss rules miss the singularity and agree on a
wrong value.

Measured error of P4 against an independent evaluation (Plackett's path from the identity through
all six correlations, partial correlations from mpmath's matrix inverse, mpmath's tanh-sinh
quadrature at 30 digits, split at 1 - 10^-k, k = 1..14, for the nearly singular sets):

    1000 random R (Gram matrices of 4 random vectors in 4 to 6 dimensions)      max error 6e-17
    150 (nearly) singular R (4 vectors in 3 dimensions plus a 4th component of
        size 0 or 1e-8..1e-2; smallest eigenvalue -6e-16..6e-5)                 max error 4e-14
    150 R with one or two nearly degenerate pairs (1 - |r| = 1e-12..1e-2)       max error 6e-17
    150 R with three nearly coincident fields (1 - r = 1e-12..1e-2)             max error 3e-12

and 2000 exactly singular R of rank 3 agree with the closed form (the solid angle of the spherical
polygon {x in R^3: v_i . x > 0}, R = V V^T) to 1e-15. tests/theory/activations/test_relu.py holds samples of each.

Moments with linear factors: Stein's lemma
------------------------------------------
Stein's lemma E[z_l F(z)] = sum_j C_lj E[d_j F(z)] (integration by parts against the Gaussian
density) removes the linear factors. With the standardised x_j and b_lj = Cov(z_l, x_j) =
C_lj / sqrt(C_jj), the derivative of theta(x_j) is the delta function delta(x_j), and
E[delta(x_j) G] = phi(0) E[G | x_j = 0] with phi(0) = 1 / sqrt(2 pi). Conditioning on x_j = 0
leaves a centred Gaussian with covariance C - C[:, j] C[j, :] / C_jj, and a linear factor z_j
times delta(x_j) vanishes (its conditional covariances are zero). Hence

    E[z_l Theta_H]       = sum_{j in H} b_lj phi(0) P_{|H|-1}(H \\ j | x_j = 0)
    E[z_l1 z_l2 Theta_H] = C_l1l2 P_|H|(R) + sum_{j in H} b_l1j phi(0) E[z_l2 Theta_{H \\ j} | x_j = 0]
                         = C_l1l2 P_|H|(R) + sum_{j<k in H} c_jk P_{|H|-2}(H \\ {j, k} | x_j = x_k = 0),

where the second Stein step inside the conditional, summed over the ordered pairs (j, k) and
(k, j), collects into

    c_jk = [ b_l1j (b_l2k - b_l2j r_jk) + b_l1k (b_l2j - b_l2k r_jk) ] / (2 pi sqrt(1 - r_jk^2)):

phi(0) times Cov(z_l2, x_k | x_j = 0) = b_l2k - b_l2j r_jk times the conditional density
phi(0) / sqrt(1 - r_jk^2) of x_k at 0. The conditional orthant probabilities are those of the
partial correlations, rho_{kl|j} = (r_kl - r_kj r_lj) / sqrt((1 - r_kj^2)(1 - r_lj^2)) and, for
|H| = 4, rho_{pq|jk} = -A_pq / sqrt(A_pp A_qq) with A the adjugate of R, so P_{|H|-2} is 1,
1/2 or P2(rho_{pq|jk}). Examples (checked by tests/theory/activations/test_relu.py against Monte Carlo):

    I2 = C12 P2(r12) + sqrt(C11 C22 - C12^2) / (2 pi)
       = sqrt(C11 C22) / (2 pi) (sin t + (pi - t) cos t),  cos t = r12   (order-1 arc-cosine kernel);
    J2 = P2(r12);
    I3 = E[theta(a) b g(c)] = C12 sqrt(C11 C33 - C13^2) / (2 pi C11) + C23 P2(r13)
         (l1 = b, l2 = c: b_c1 = sqrt(C33) r13 and b_c3 = sqrt(C33) give
          c_13 = b_b1 sqrt(C33) (1 - r13^2) / (2 pi sqrt(1 - r13^2)), b_b1 = C12 / sqrt(C11));
    dgg = C23 P3(r12, r13, r23) + (c_12 + c_13 + c_23) / 2;
    I4  = C34 P4(R) + sum_{j<k} c_jk P2(rho_{pq|jk}).

Degenerate covariances
----------------------
* A Heaviside field of zero variance is identically 0 and theta(0) = 0: the moment is 0. (This
  is the one discontinuity: for a positive variance P(z > 0) = 1/2 however small the variance.)
* Heaviside fields are deduplicated by index, and two distinct fields with |r| = 1 to within
  1 - |r| <= 1e-14 (about the rounding of r itself) are merged before anything else:
  theta(x) theta(x) = theta(x) (r = +1) and theta(x) theta(-x) = 0 (r = -1). Without the merge
  exact duplicates would give 0/0 in c_jk and, for three coincident fields, wrong weights (the
  limit of the conditional correlation between two vanishing residuals is not 0). The moment is
  continuous there: it has a square-root cusp in 1 - r (the arc-cosine kernel's
  sin t ~ sqrt(2 (1 - r))), so merging at 1 - r <= 1e-14 moves it by at most
  ~ sqrt(2e-14) / (2 pi) ~ 2e-8 times its scale, the level at which the double-precision input
  itself stops determining it (a rounding of C by eps moves the result by ~ eps / sqrt(1 - r)).
* Every other quantity is clamped: correlations clipped to [-1, 1], 1 - r^2 computed as
  (1 - |r|)(1 + |r|), a conditional variance (cofactor) <= 0 makes its partial correlation 0
  (an independent zero-variance residual, the limit whenever the terms that share it cancel).
  Near a degenerate pair single Stein terms are ill-conditioned while their sum is not: the
  partners use the same rounded quantities (each 1 - r^2 and each cofactor is computed once, the
  cofactors and the numerators of rho_{kl|j} in double-double), so their errors cancel. Measured
  against a 40-digit evaluation of the same formulas, for one nearly degenerate pair, two
  (student = teacher, twice), an antipodal pair and three nearly coincident fields, 1 - r = 1e-2
  to 1e-13, for I2, J2, I3, dgg, I4, P4 and the one-linear moments: absolute error (scale ~1)
  <= 2e-14 for 1 - r >= 1e-6, <= 2e-12 for 1 - r >= 1e-10, <= 5e-11 at 1e-12 and <= 3e-10 at
  1e-13, i.e. within ~3 eps / sqrt(1 - r), the conditioning of the moment itself.

Speed (one core, compiled, measured with a loop inside numba): relu_moment with at most 3 distinct
Heaviside fields (I2, J2, I3, dgg, P3, and I4 with an index coincidence) 70-100 ns per call; a
genuine P4 (and I4 of four distinct fields) 1.1 us when the Kronrod rule suffices, 3.4 us on average
over random covariances (W W^T / 6, W 6x6 Gaussian), ~10 us for a nearly singular one (all 124
nodes). The core allocates nothing (scalars only). The tensor helpers loop over the batch in
compiled code: for 300 covariances of K + M + 1 = 8 fields (K = 3 students), I4_tensor 36 ms,
dgg_tensor 4 ms, I3_tensor 3 ms, I2_matrix and J2_matrix < 1 ms.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency, but stay importable without it
    numba = None
    HAVE_NUMBA = False

__all__ = [
    "HAVE_NUMBA",
    "relu_moment",
    "j2",
    "i2",
    "i3",
    "I2",
    "J2",
    "I3",
    "I4",
    "dgg",
    "orthant_probability",
    "dg_mean",
    "I2_matrix",
    "J2_matrix",
    "I3_tensor",
    "I4_tensor",
    "dgg_tensor",
]


def _njit(f):
    return numba.njit(cache=True)(f) if HAVE_NUMBA else f


_INV_2PI = 1.0 / (2.0 * math.pi)
_INV_4PI = 1.0 / (4.0 * math.pi)
_INV_8PI = 1.0 / (8.0 * math.pi)
_INV_4PI2 = 1.0 / (4.0 * math.pi**2)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
#: two Heaviside fields with 1 - |r| below this are one field (r > 0) or exclusive (r < 0).
_MERGE = 1e-14
#: the quadrature of P4 accepts the 21-point Kronrod value when the embedded Gauss value is this close.
_GK_ACCEPT = 1e-12
#: ... else the tanh-sinh value of step 1/8 when it agrees with the Kronrod value this well (else step 1/16).
_TS_ACCEPT = 1e-13
#: a path correlation beyond this (a cluster of >= 3 nearly coincident fields) skips the Kronrod rule,
#: whose nodes cannot see the singularity just beyond s = 1 (both rules agree on a wrong value).
_CLUSTER = 0.99
_SPLIT = 134217729.0  # 2^27 + 1, Dekker's splitting constant

# 21-point Gauss-Kronrod rule on [-1, 1] (QUADPACK qk21): the positive nodes (the last one is 0), the
# Kronrod weights, and the weights of the embedded 10-point Gauss rule (nodes _XK[1], _XK[3], ...).
_XK = np.array([0.995657163025808080735527280689003, 0.973906528517171720077964012084452,
                0.930157491355708226001207180059508, 0.865063366688984510732096688423493,
                0.780817726586416897063717578345042, 0.679409568299024406234327365114874,
                0.562757134668604683339000099272694, 0.433395394129247190799265943165784,
                0.294392862701460198131126603103866, 0.148874338981631210884826001129720, 0.0])
_WK = np.array([0.011694638867371874278064396062192, 0.032558162307964727478818972459390,
                0.054755896574351996031381300244580, 0.075039674810919952767043140916190,
                0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
                0.123491976262065851077958109831074, 0.134709217311473325928054001771707,
                0.142775938577060080797094273138717, 0.147739104901338491374841515972068,
                0.149445554002916905664936468389821])
_WG = np.array([0.066671344308688137593568809893332, 0.149451349150580593145776339657697,
                0.219086362515982043995534934228163, 0.269266719309996355091226921569469,
                0.295524224714752870173892994651338])


def _tanh_sinh(h, k):
    """Nodes s and weights of the tanh-sinh rule on [0, 1]: s = (1 + tanh(pi/2 sinh t)) / 2, t = k h."""
    t = h * np.asarray(k, dtype=float)
    sh = 0.5 * np.pi * np.sinh(t)
    s = 0.5 * (1.0 + np.tanh(sh))
    w = h * 0.25 * np.pi * np.cosh(t) / np.cosh(sh) ** 2
    return s, w


# step 1/8 (t = k/8, |t| <= 3.125: 51 nodes) and the odd nodes of step 1/16 that refine it (|t| <= 3.1875: 52 nodes)
_TS8_S, _TS8_W = _tanh_sinh(1.0 / 8.0, np.arange(-25, 26))
_TS16_S, _TS16_W = _tanh_sinh(1.0 / 16.0, np.arange(-51, 52, 2))


# --- scalar building blocks (compiled) -------------------------------------------------------------


@_njit
def _clip1(r):
    if r > 1.0:
        return 1.0
    if r < -1.0:
        return -1.0
    return r


@_njit
def _om(r):
    """1 - r^2 without the cancellation of 1 - r*r near |r| = 1."""
    a = abs(r)
    return (1.0 - a) * (1.0 + a)


@_njit
def _p2(r):
    return 0.25 + math.asin(_clip1(r)) * _INV_2PI


@_njit
def _p3(r01, r02, r12):
    return 0.125 + (math.asin(_clip1(r01)) + math.asin(_clip1(r02)) + math.asin(_clip1(r12))) * _INV_4PI


# double-double arithmetic (error-free transformations, Dekker/Knuth) for the few sums that cancel


@_njit
def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@_njit
def _two_prod(a, b):
    p = a * b
    t = _SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@_njit
def _acc3(hi, lo, k, x, y, z):
    """(hi, lo) + k x y z in double-double; k = +-1, +-2 (exact), |x|, |y|, |z| <= 1."""
    p, e = _two_prod(x, y)
    q, g = _two_prod(k * p, z)
    s, t = _two_sum(hi, q)
    return s, lo + t + g + k * e * z


@_njit
def _acc2(hi, lo, k, x, y):
    p, e = _two_prod(x, y)
    s, t = _two_sum(hi, k * p)
    return s, lo + t + k * e


@_njit
def _dd_round(hi, lo):
    return hi + lo


@_njit
def _dd_sum(h, l, H, L):
    """(h + l) + (H + L) rounded to double."""
    s, t = _two_sum(h, H)
    return s + (t + l + L)


@_njit
def _ccorr(rkl, rkj, rlj, okj, olj):
    """Correlation of x_k, x_l given x_j = 0: (r_kl - r_kj r_lj) / sqrt((1 - r_kj^2)(1 - r_lj^2)), the
    numerator in double-double; 0 when a conditional variance vanishes."""
    d = okj * olj
    if d <= 0.0:
        return 0.0
    hi, lo = _acc2(rkl, 0.0, -1.0, rkj, rlj)
    return _clip1(_dd_round(hi, lo) / math.sqrt(d))


@_njit
def _pcorr(num, p, q):
    """The partial correlation -num / sqrt(p q) from an adjugate entry and two cofactors; 0 when a
    conditional variance vanishes (the limit convention: an independent, zero-variance field)."""
    if p <= 0.0 or q <= 0.0:
        return 0.0
    return _clip1(-num / math.sqrt(p * q))


# Cofactors of the 4x4 correlation matrix R(s) = [[1, a, bs, cs], [a, 1, ds, es], [bs, ds, 1, f], [cs, es, f, 1]]
# (the Plackett path with the pairing (0,1), (2,3) kept): A_kk, A01 and A23 are p + q s^2, the other
# four s (p + q s^2), with coefficients p, q computed in double-double (the expansions by sympy).


@_njit
def _cof_diag(w, y, z):
    """det [[1, w, y], [w, 1, z], [y, z, 1]] with w fixed and y, z scaled by s, = (1 - w^2) + s^2 (2 w y z - y^2 - z^2):
    the two coefficients as double-double pairs (h0, l0), (h2, l2)."""
    h0, l0 = _acc2(1.0, 0.0, -1.0, w, w)
    h2, l2 = _acc3(0.0, 0.0, 2.0, w, y, z)
    h2, l2 = _acc2(h2, l2, -1.0, y, y)
    h2, l2 = _acc2(h2, l2, -1.0, z, z)
    return h0, l0, h2, l2


@_njit
def _cof_all(a, b, c, d, e, f):
    """The 16 path coefficients (rounded to double) of A00, A11, A22, A33 (lo, hi of s^0, s^2) and
    A02, A03, A12, A13 (lo, hi of s^1, s^3)."""
    h, l, H, L = _cof_diag(f, d, e)
    k0, k1 = _dd_round(h, l), _dd_round(H, L)
    h, l, H, L = _cof_diag(f, b, c)
    k2, k3 = _dd_round(h, l), _dd_round(H, L)
    h, l, H, L = _cof_diag(a, c, e)
    k4, k5 = _dd_round(h, l), _dd_round(H, L)
    h, l, H, L = _cof_diag(a, b, d)
    k6, k7 = _dd_round(h, l), _dd_round(H, L)
    # A02: s (a d - a e f - b + c f) + s^3 (b e^2 - c d e)
    h, l = _acc2(-b, 0.0, 1.0, a, d)
    h, l = _acc3(h, l, -1.0, a, e, f)
    h, l = _acc2(h, l, 1.0, c, f)
    H, L = _acc3(0.0, 0.0, 1.0, b, e, e)
    H, L = _acc3(H, L, -1.0, c, d, e)
    k8, k9 = _dd_round(h, l), _dd_round(H, L)
    # A03: s (-a d f + a e + b f - c) + s^3 (-b d e + c d^2)
    h, l = _acc3(-c, 0.0, -1.0, a, d, f)
    h, l = _acc2(h, l, 1.0, a, e)
    h, l = _acc2(h, l, 1.0, b, f)
    H, L = _acc3(0.0, 0.0, -1.0, b, d, e)
    H, L = _acc3(H, L, 1.0, c, d, d)
    k10, k11 = _dd_round(h, l), _dd_round(H, L)
    # A12: s (a b - a c f - d + e f) + s^3 (-b c e + c^2 d)
    h, l = _acc2(-d, 0.0, 1.0, a, b)
    h, l = _acc3(h, l, -1.0, a, c, f)
    h, l = _acc2(h, l, 1.0, e, f)
    H, L = _acc3(0.0, 0.0, -1.0, b, c, e)
    H, L = _acc3(H, L, 1.0, c, c, d)
    k12, k13 = _dd_round(h, l), _dd_round(H, L)
    # A13: s (-a b f + a c + d f - e) + s^3 (b^2 e - b c d)
    h, l = _acc3(-e, 0.0, -1.0, a, b, f)
    h, l = _acc2(h, l, 1.0, a, c)
    h, l = _acc2(h, l, 1.0, d, f)
    H, L = _acc3(0.0, 0.0, 1.0, b, b, e)
    H, L = _acc3(H, L, -1.0, b, c, d)
    k14, k15 = _dd_round(h, l), _dd_round(H, L)
    return (k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15)


@_njit
def _p4_integrand(s, b, c, d, e, K):
    """Plackett's integrand at s (kept pairs (0,1), (2,3); path entries b = r02, c = r03, d = r12,
    e = r13 scaled by s), from the cofactor coefficients K of _cof_all."""
    s2 = s * s
    A00 = K[0] + K[1] * s2
    A11 = K[2] + K[3] * s2
    A22 = K[4] + K[5] * s2
    A33 = K[6] + K[7] * s2
    A02 = s * (K[8] + K[9] * s2)
    A03 = s * (K[10] + K[11] * s2)
    A12 = s * (K[12] + K[13] * s2)
    A13 = s * (K[14] + K[15] * s2)
    out = b * math.asin(_pcorr(A13, A11, A33)) / math.sqrt(_om(b * s))
    out += c * math.asin(_pcorr(A12, A11, A22)) / math.sqrt(_om(c * s))
    out += d * math.asin(_pcorr(A03, A00, A33)) / math.sqrt(_om(d * s))
    out += e * math.asin(_pcorr(A02, A00, A22)) / math.sqrt(_om(e * s))
    return out


@_njit
def _p4_canonical(a, b, c, d, e, f):
    """P4 with the kept pairing (0,1), (2,3) (no pair merged): closed part + Plackett integral."""
    K = _cof_all(a, b, c, d, e, f)
    base = _p2(a) * _p2(f) + (math.asin(b) + math.asin(c) + math.asin(d) + math.asin(e)) * _INV_8PI
    k = 0.0
    if max(abs(b), abs(c), abs(d), abs(e)) <= _CLUSTER:
        # Gauss-Kronrod in u, s = 1 - u^2, ds = 2 u du, u in [0, 1]
        g = 0.0
        for i in range(11):
            x = _XK[i]
            u = 0.5 * (1.0 + x)
            v = 2.0 * u * _p4_integrand(1.0 - u * u, b, c, d, e, K)
            if i < 10:
                u2 = 0.5 * (1.0 - x)
                v += 2.0 * u2 * _p4_integrand(1.0 - u2 * u2, b, c, d, e, K)
            k += _WK[i] * v
            if i % 2 == 1:
                g += _WG[i // 2] * v
        k *= 0.5
        g *= 0.5
        if abs(k - g) <= _GK_ACCEPT:
            return base + k * _INV_4PI2
    else:
        k = math.inf  # a path entry near +-1: three nearly coincident fields; straight to tanh-sinh 1/16
    # tanh-sinh, step 1/8; accepted when it agrees with the Kronrod value, else refined to step 1/16
    t8 = 0.0
    for i in range(_TS8_S.shape[0]):
        t8 += _TS8_W[i] * _p4_integrand(_TS8_S[i], b, c, d, e, K)
    if abs(t8 - k) <= _TS_ACCEPT:
        return base + t8 * _INV_4PI2
    t16 = 0.5 * t8
    for i in range(_TS16_S.shape[0]):
        t16 += _TS16_W[i] * _p4_integrand(_TS16_S[i], b, c, d, e, K)
    return base + t16 * _INV_4PI2


@_njit
def _p4(r01, r02, r03, r12, r13, r23):
    """P(x_0 > 0, ..., x_3 > 0) for the correlations r_ij (of a positive semi-definite matrix)."""
    r01, r02, r03 = _clip1(r01), _clip1(r02), _clip1(r03)
    r12, r13, r23 = _clip1(r12), _clip1(r13), _clip1(r23)
    # a degenerate pair: one field (r = +1) or exclusive (r = -1)
    if 1.0 - abs(r01) <= _MERGE:
        return _p3(r02, r03, r23) if r01 > 0.0 else 0.0
    if 1.0 - abs(r02) <= _MERGE:
        return _p3(r01, r03, r13) if r02 > 0.0 else 0.0
    if 1.0 - abs(r03) <= _MERGE:
        return _p3(r01, r02, r12) if r03 > 0.0 else 0.0
    if 1.0 - abs(r12) <= _MERGE:
        return _p3(r01, r03, r13) if r12 > 0.0 else 0.0
    if 1.0 - abs(r13) <= _MERGE:
        return _p3(r01, r02, r12) if r13 > 0.0 else 0.0
    if 1.0 - abs(r23) <= _MERGE:
        return _p3(r01, r02, r12) if r23 > 0.0 else 0.0
    s1 = _om(r01) * _om(r23)
    s2 = _om(r02) * _om(r13)
    s3 = _om(r03) * _om(r12)
    if s1 <= s2 and s1 <= s3:  # keep (0,1), (2,3)
        return _p4_canonical(r01, r02, r03, r12, r13, r23)
    if s2 <= s3:  # keep (0,2), (1,3): order (0, 2, 1, 3)
        return _p4_canonical(r02, r01, r03, r12, r23, r13)
    # keep (0,3), (1,2): order (0, 3, 1, 2)
    return _p4_canonical(r03, r01, r02, r13, r23, r12)


@_njit
def _pair_coef(bj, bk, cj, ck, r, o):
    """c_jk = [b_l1j (b_l2k - b_l2j r) + b_l1k (b_l2j - b_l2k r)] / (2 pi sqrt(1 - r^2))."""
    if o <= 0.0:
        return 0.0
    return (bj * (ck - cj * r) + bk * (cj - ck * r)) * _INV_2PI / math.sqrt(o)


@_njit
def _gather(C, idx, nth):
    """The distinct Heaviside fields (m, h0, h1, h2, h3): duplicates by index dropped, fields with
    1 - |r| <= _MERGE to one already kept dropped (r > 0); m = -1 when the moment is 0 (a zero
    variance, theta(0) = 0, or two fields with r = -1)."""
    m = 0
    h0 = -1
    h1 = -1
    h2 = -1
    h3 = -1
    for t in range(nth):
        i = idx[t]
        if i == h0 or i == h1 or i == h2 or i == h3:
            continue
        v = C[i, i]
        if not v > 0.0:
            return -1, h0, h1, h2, h3
        keep = True
        for p in range(m):
            hp = h0 if p == 0 else (h1 if p == 1 else h2)
            r = C[i, hp] / math.sqrt(v * C[hp, hp])
            if 1.0 - abs(r) <= _MERGE:
                if r < 0.0:
                    return -1, h0, h1, h2, h3
                keep = False
                break
        if keep:
            if m == 0:
                h0 = i
            elif m == 1:
                h1 = i
            elif m == 2:
                h2 = i
            else:
                h3 = i
            m += 1
    return m, h0, h1, h2, h3


@_njit
def _corr(C, i, j, si, sj):
    return _clip1(C[i, j] / (si * sj))


@_njit
def _cov_std(C, l, h, s):
    """b_lh = Cov(z_l, x_h) = C_lh / sqrt(C_hh); 0 without a linear factor (l < 0)."""
    return C[l, h] / s if l >= 0 else 0.0


@_njit
def _moment4_pairs(r01, r02, r03, r12, r13, r23, o01, o02, o03, o12, o13, o23,
                   b10, b11, b12, b13, b20, b21, b22, b23):
    """sum_{j<k} c_jk P2(rho_{pq|jk}) for four Heaviside fields, the cofactors of R in double-double."""
    a, b, c, d, e, f = r01, r02, r03, r12, r13, r23
    h, l, H, L = _cof_diag(f, d, e)
    A00 = _dd_sum(h, l, H, L)
    h, l, H, L = _cof_diag(f, b, c)
    A11 = _dd_sum(h, l, H, L)
    h, l, H, L = _cof_diag(a, c, e)
    A22 = _dd_sum(h, l, H, L)
    h, l, H, L = _cof_diag(a, b, d)
    A33 = _dd_sum(h, l, H, L)
    # A01 = a f^2 - a + b d - b e f - c d f + c e
    h, l = _acc3(-a, 0.0, 1.0, a, f, f)
    h, l = _acc2(h, l, 1.0, b, d)
    h, l = _acc3(h, l, -1.0, b, e, f)
    h, l = _acc3(h, l, -1.0, c, d, f)
    h, l = _acc2(h, l, 1.0, c, e)
    A01 = _dd_round(h, l)
    # A02 = a d - a e f + b e^2 - b - c d e + c f
    h, l = _acc2(-b, 0.0, 1.0, a, d)
    h, l = _acc3(h, l, -1.0, a, e, f)
    h, l = _acc3(h, l, 1.0, b, e, e)
    h, l = _acc3(h, l, -1.0, c, d, e)
    h, l = _acc2(h, l, 1.0, c, f)
    A02 = _dd_round(h, l)
    # A03 = -a d f + a e - b d e + b f + c d^2 - c
    h, l = _acc3(-c, 0.0, -1.0, a, d, f)
    h, l = _acc2(h, l, 1.0, a, e)
    h, l = _acc3(h, l, -1.0, b, d, e)
    h, l = _acc2(h, l, 1.0, b, f)
    h, l = _acc3(h, l, 1.0, c, d, d)
    A03 = _dd_round(h, l)
    # A12 = a b - a c f - b c e + c^2 d - d + e f
    h, l = _acc2(-d, 0.0, 1.0, a, b)
    h, l = _acc3(h, l, -1.0, a, c, f)
    h, l = _acc3(h, l, -1.0, b, c, e)
    h, l = _acc3(h, l, 1.0, c, c, d)
    h, l = _acc2(h, l, 1.0, e, f)
    A12 = _dd_round(h, l)
    # A13 = -a b f + a c + b^2 e - b c d + d f - e
    h, l = _acc3(-e, 0.0, -1.0, a, b, f)
    h, l = _acc2(h, l, 1.0, a, c)
    h, l = _acc3(h, l, 1.0, b, b, e)
    h, l = _acc3(h, l, -1.0, b, c, d)
    h, l = _acc2(h, l, 1.0, d, f)
    A13 = _dd_round(h, l)
    # A23 = a^2 f - a b e - a c d + b c + d e - f
    h, l = _acc3(-f, 0.0, 1.0, a, a, f)
    h, l = _acc3(h, l, -1.0, a, b, e)
    h, l = _acc3(h, l, -1.0, a, c, d)
    h, l = _acc2(h, l, 1.0, b, c)
    h, l = _acc2(h, l, 1.0, d, e)
    A23 = _dd_round(h, l)
    out = _pair_coef(b10, b11, b20, b21, a, o01) * _p2(_pcorr(A23, A22, A33))
    out += _pair_coef(b10, b12, b20, b22, b, o02) * _p2(_pcorr(A13, A11, A33))
    out += _pair_coef(b10, b13, b20, b23, c, o03) * _p2(_pcorr(A12, A11, A22))
    out += _pair_coef(b11, b12, b21, b22, d, o12) * _p2(_pcorr(A03, A00, A33))
    out += _pair_coef(b11, b13, b21, b23, e, o13) * _p2(_pcorr(A02, A00, A22))
    out += _pair_coef(b12, b13, b22, b23, f, o23) * _p2(_pcorr(A01, A00, A11))
    return out


@_njit
def relu_moment(C, idx, nth, lin1, lin2):
    """E[ prod_{i in idx[:nth]} theta(z_i) * z_lin1 * z_lin2 ] for z ~ N(0, C) (module docstring).

    C: float64 (N, N) covariance of all fields (positive semi-definite, not checked here); idx: int64
    array of the Heaviside field indices (0 <= nth <= 4; repeats allowed, theta^2 = theta); lin1,
    lin2: indices of the linear factors, -1 for none.
    """
    m, h0, h1, h2, h3 = _gather(C, idx, nth)
    if m < 0:
        return 0.0
    if lin1 < 0:
        lin1, lin2 = lin2, -1
    nlin = 0
    if lin1 >= 0:
        nlin = 2 if lin2 >= 0 else 1
    c12 = C[lin1, lin2] if nlin == 2 else 0.0
    if m == 0:
        if nlin == 0:
            return 1.0
        return 0.0 if nlin == 1 else c12
    s0 = math.sqrt(C[h0, h0])
    b10, b20 = _cov_std(C, lin1, h0, s0), _cov_std(C, lin2, h0, s0)
    if m == 1:
        if nlin == 0:
            return 0.5
        return b10 * _INV_SQRT_2PI if nlin == 1 else 0.5 * c12
    s1 = math.sqrt(C[h1, h1])
    b11, b21 = _cov_std(C, lin1, h1, s1), _cov_std(C, lin2, h1, s1)
    r01 = _corr(C, h0, h1, s0, s1)
    o01 = _om(r01)
    if m == 2:
        if nlin == 0:
            return _p2(r01)
        if nlin == 1:
            return 0.5 * (b10 + b11) * _INV_SQRT_2PI
        return c12 * _p2(r01) + _pair_coef(b10, b11, b20, b21, r01, o01)
    s2 = math.sqrt(C[h2, h2])
    b12, b22 = _cov_std(C, lin1, h2, s2), _cov_std(C, lin2, h2, s2)
    r02, r12 = _corr(C, h0, h2, s0, s2), _corr(C, h1, h2, s1, s2)
    o02, o12 = _om(r02), _om(r12)
    if m == 3:
        if nlin == 0:
            return _p3(r01, r02, r12)
        if nlin == 1:
            out = b10 * _p2(_ccorr(r12, r01, r02, o01, o02))
            out += b11 * _p2(_ccorr(r02, r01, r12, o01, o12))
            out += b12 * _p2(_ccorr(r01, r02, r12, o02, o12))
            return out * _INV_SQRT_2PI
        s = _pair_coef(b10, b11, b20, b21, r01, o01)
        s += _pair_coef(b10, b12, b20, b22, r02, o02)
        s += _pair_coef(b11, b12, b21, b22, r12, o12)
        return c12 * _p3(r01, r02, r12) + 0.5 * s
    s3 = math.sqrt(C[h3, h3])
    b13, b23 = _cov_std(C, lin1, h3, s3), _cov_std(C, lin2, h3, s3)
    r03, r13, r23 = _corr(C, h0, h3, s0, s3), _corr(C, h1, h3, s1, s3), _corr(C, h2, h3, s2, s3)
    o03, o13, o23 = _om(r03), _om(r13), _om(r23)
    if nlin == 0:
        return _p4(r01, r02, r03, r12, r13, r23)
    if nlin == 1:
        out = b10 * _p3(
            _ccorr(r12, r01, r02, o01, o02), _ccorr(r13, r01, r03, o01, o03), _ccorr(r23, r02, r03, o02, o03)
        )
        out += b11 * _p3(
            _ccorr(r02, r01, r12, o01, o12), _ccorr(r03, r01, r13, o01, o13), _ccorr(r23, r12, r13, o12, o13)
        )
        out += b12 * _p3(
            _ccorr(r01, r02, r12, o02, o12), _ccorr(r03, r02, r23, o02, o23), _ccorr(r13, r12, r23, o12, o23)
        )
        out += b13 * _p3(
            _ccorr(r01, r03, r13, o03, o13), _ccorr(r02, r03, r23, o03, o23), _ccorr(r12, r13, r23, o13, o23)
        )
        return out * _INV_SQRT_2PI
    out = _moment4_pairs(r01, r02, r03, r12, r13, r23, o01, o02, o03, o12, o13, o23,
                         b10, b11, b12, b13, b20, b21, b22, b23)
    if c12 != 0.0:
        out += c12 * _p4(r01, r02, r03, r12, r13, r23)
    return out


# --- explicit scalar closed forms (compiled) -------------------------------------------------------


@_njit
def j2(c11, c12, c22):
    """E[theta(a) theta(b)] = 1/4 + asin(r) / (2 pi), r = C12 / sqrt(C11 C22); 0 for a zero variance."""
    if not (c11 > 0.0 and c22 > 0.0):
        return 0.0
    return _p2(c12 / math.sqrt(c11 * c22))


@_njit
def i2(c11, c12, c22):
    """E[g(a) g(b)] = sqrt(C11 C22) / (2 pi) (sin t + (pi - t) cos t), cos t = r (arc-cosine kernel)
    = C12 P2(r) + sqrt(C11 C22 - C12^2) / (2 pi)."""
    if not (c11 > 0.0 and c22 > 0.0):
        return 0.0
    n = math.sqrt(c11 * c22)
    r = _clip1(c12 / n)
    return n * (r * _p2(r) + math.sqrt(_om(r)) * _INV_2PI)


@_njit
def i3(c11, c12, c13, c23, c33):
    """E[theta(a) b g(c)] = C12 sqrt(C11 C33 - C13^2) / (2 pi C11) + C23 (1/4 + asin(r13) / (2 pi))."""
    if not (c11 > 0.0 and c33 > 0.0):
        return 0.0
    r = _clip1(c13 / math.sqrt(c11 * c33))
    return c12 * math.sqrt(c33 / c11) * math.sqrt(_om(r)) * _INV_2PI + c23 * _p2(r)


# --- batched kernels (compiled) --------------------------------------------------------------------


@_njit
def _moment_batch(Cs, idx, nth, lin1, lin2, out):
    for b in range(Cs.shape[0]):
        out[b] = relu_moment(Cs[b], idx, nth, lin1, lin2)


@_njit
def _orthant_batch(Rs, out):
    m = Rs.shape[1]
    idx = np.arange(m).astype(np.int64)
    for b in range(Rs.shape[0]):
        out[b] = relu_moment(Rs[b], idx, m, -1, -1)


@_njit
def _dgg_kernel(Cs, A, B, out):
    idx = np.empty(3, np.int64)
    nA, nB = A.shape[0], B.shape[0]
    for b in range(Cs.shape[0]):
        C = Cs[b]
        for ia in range(nA):
            idx[0] = A[ia]
            for ic in range(nB):
                idx[1] = B[ic]
                for id_ in range(ic + 1):
                    idx[2] = B[id_]
                    v = relu_moment(C, idx, 3, B[ic], B[id_])
                    out[b, ia, ic, id_] = v
                    out[b, ia, id_, ic] = v


@_njit
def _i4_kernel(Cs, A, B, out):
    idx = np.empty(4, np.int64)
    nA, nB = A.shape[0], B.shape[0]
    for b in range(Cs.shape[0]):
        C = Cs[b]
        for ia in range(nA):
            idx[0] = A[ia]
            for ib in range(ia + 1):
                idx[1] = A[ib]
                for ic in range(nB):
                    idx[2] = B[ic]
                    for id_ in range(ic + 1):
                        idx[3] = B[id_]
                        v = relu_moment(C, idx, 4, B[ic], B[id_])
                        out[b, ia, ib, ic, id_] = v
                        out[b, ia, ib, id_, ic] = v
                        out[b, ib, ia, ic, id_] = v
                        out[b, ib, ia, id_, ic] = v


# --- input checks ----------------------------------------------------------------------------------


def _real(name, k, v):
    v = np.asarray(v)
    if np.iscomplexobj(v) or v.dtype.kind not in "biuf":
        raise ValueError(f"{name}: {k} must be real numbers, got {v!r:.60}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: {k} must be finite")
    return v.astype(np.float64)


def _check_psd(name, what, M):
    """M (..., m, m) symmetric: raise ValueError unless positive semi-definite (to rounding)."""
    if M.shape[-1] == 0 or M.size == 0:
        return
    scale = np.max(np.abs(np.diagonal(M, axis1=-2, axis2=-1)), axis=-1, initial=0.0)
    lo = np.linalg.eigvalsh(M)[..., 0]
    bad = lo < -(1e-9 * scale + 1e-12)
    if np.any(bad):
        raise ValueError(f"{name}: {what} is not a covariance: not positive semi-definite "
                         f"(smallest eigenvalue {np.min(lo):.3g})")


def _check_variances(name, vals, keys):
    """Raise ValueError unless the variances vals[k] (k in keys) are >= 0."""
    for k in keys:
        if np.any(vals[k] < 0):
            raise ValueError(f"{name}: the variance {k} must be >= 0, got min {np.min(vals[k]):.3g}")


def _check_bounds(name, vals, keys):
    """Raise ValueError unless |Cij| <= sqrt(Cii Cjj) (to rounding) for the covariances Cij = vals[k], k in keys."""
    for k in keys:
        i, j = f"C{k[1]}{k[1]}", f"C{k[2]}{k[2]}"
        bound = np.sqrt(vals[i] * vals[j])
        if np.any(np.abs(vals[k]) > bound * (1 + 1e-9) + 1e-12):
            raise ValueError(f"{name}: ({i}, {k}, {j}) is not a covariance: |{k}| > sqrt({i} {j})")


def _symmetric(vals, m):
    """The (..., m, m) symmetric matrices of the entries vals {Cij: (...)} (i <= j, 1-based; all of them given)."""
    shape = np.broadcast_shapes(*(v.shape for v in vals.values()))
    C = np.empty(shape + (m, m))
    for k, v in vals.items():
        i, j = int(k[1]) - 1, int(k[2]) - 1
        C[..., i, j] = v
        C[..., j, i] = v
    return C


def _assemble(name, names, values):
    """Covariance entries Cij (i <= j, named as in ``names``) -> validated (..., m, m) matrices.

    Checks: real and finite, variances >= 0, |Cij| <= sqrt(Cii Cjj) (naming the entry), and the
    whole matrix positive semi-definite."""
    vals = {k: _real(name, k, v) for k, v in zip(names, values)}
    _check_variances(name, vals, [k for k in names if k[1] == k[2]])
    _check_bounds(name, vals, [k for k in names if k[1] != k[2]])
    C = _symmetric(vals, max(int(k[1]) for k in names))
    _check_psd(name, "(" + ", ".join(names) + ")", C)
    return C


def _run_batch(C, idx, lin1, lin2):
    shape = C.shape[:-2]
    m = C.shape[-1]
    Cs = np.ascontiguousarray(C.reshape((int(np.prod(shape)), m, m)))
    out = np.empty(Cs.shape[0])
    _moment_batch(Cs, np.asarray(idx, dtype=np.int64), len(idx), lin1, lin2, out)
    out = out.reshape(shape)
    return out[()] if out.ndim == 0 else out


# --- public scalar functions (validated, broadcasting) ----------------------------------------------


def I2(C11, C12, C22):
    """E[g(a) g(b)] for ReLU (arc-cosine kernel of order one)."""
    C = _assemble("I2", ("C11", "C12", "C22"), (C11, C12, C22))
    return _run_batch(C, (0, 1), 0, 1)


def J2(C11, C12, C22):
    """E[g'(a) g'(b)] = E[theta(a) theta(b)] for ReLU."""
    C = _assemble("J2", ("C11", "C12", "C22"), (C11, C12, C22))
    return _run_batch(C, (0, 1), -1, -1)


def I3(C11, C12, C13, C23, C33):
    """E[g'(a) b g(c)] for ReLU (the variance C22 of b does not enter; it is not checked)."""
    names = ("C11", "C12", "C13", "C23", "C33")
    vals = {k: _real("I3", k, v) for k, v in zip(names, (C11, C12, C13, C23, C33))}
    _check_variances("I3", vals, ("C11", "C33"))
    _check_bounds("I3", vals, ("C13",))
    shape = np.broadcast_shapes(*(v.shape for v in vals.values()))
    C = np.zeros(shape + (3, 3))
    C[..., 0, 0], C[..., 2, 2] = vals["C11"], vals["C33"]
    for k in ("C12", "C13", "C23"):
        i, j = int(k[1]) - 1, int(k[2]) - 1
        C[..., i, j] = C[..., j, i] = vals[k]
    return _run_batch(C, (0, 2), 1, 2)


def I4(C11, C12, C13, C14, C22, C23, C24, C33, C34, C44):
    """E[g'(a) g'(b) g(c) g(d)] for ReLU."""
    names = ("C11", "C12", "C13", "C14", "C22", "C23", "C24", "C33", "C34", "C44")
    C = _assemble("I4", names, (C11, C12, C13, C14, C22, C23, C24, C33, C34, C44))
    return _run_batch(C, (0, 1, 2, 3), 2, 3)


def dgg(C11, C12, C13, C22, C23, C33):
    """E[g'(a) g(b) g(c)] for ReLU."""
    C = _assemble("dgg", ("C11", "C12", "C13", "C22", "C23", "C33"), (C11, C12, C13, C22, C23, C33))
    return _run_batch(C, (0, 1, 2), 1, 2)


def orthant_probability(R):
    """P(z_1 > 0, ..., z_m > 0) for z ~ N(0, R), R (..., m, m) a covariance (or correlation) matrix,
    m <= 4. A zero-variance variable gives 0 (theta(0) = 0)."""
    R = _real("orthant_probability", "R", R)
    if R.ndim < 2 or R.shape[-1] != R.shape[-2]:
        raise ValueError(f"orthant_probability: R must be a square matrix (..., m, m), got shape {R.shape}")
    m = R.shape[-1]
    if m > 4:
        raise ValueError(f"orthant_probability: R must be at most 4 x 4, got {m} x {m}")
    scale = np.max(np.abs(R), axis=(-1, -2), initial=0.0)
    if np.any(np.abs(R - np.swapaxes(R, -1, -2)) > 1e-12 * scale[..., None, None] + 1e-300):
        raise ValueError("orthant_probability: R must be symmetric")
    if np.any(np.diagonal(R, axis1=-2, axis2=-1) < 0):
        raise ValueError("orthant_probability: R has a negative variance on its diagonal")
    _check_psd("orthant_probability", "R", R)
    shape = R.shape[:-2]
    Rs = np.ascontiguousarray(R.reshape((int(np.prod(shape)), m, m)))
    out = np.empty(Rs.shape[0])
    _orthant_batch(Rs, out)
    out = out.reshape(shape)
    return out[()] if out.ndim == 0 else out


# --- all index tuples of one covariance at once (the contracts of theory.activations.erf) ---------------


def _diag(C):
    return np.diagonal(C, axis1=-2, axis2=-1)


def _square(name, C):
    C = np.asarray(C, dtype=np.float64)
    if C.ndim < 2 or C.shape[-1] != C.shape[-2]:
        raise ValueError(f"{name}: C must have shape (..., n, n), got {C.shape}")
    return C


def _p2_array(C):
    """(P2(r_ij), sqrt(C_ii C_jj), r_ij, 1 - r_ij^2) of a covariance (..., n, n); r = 0 where a variance is 0."""
    d = _diag(C)
    norm = np.sqrt(np.maximum(d[..., :, None] * d[..., None, :], 0.0))
    r = np.clip(np.divide(C, norm, out=np.zeros_like(C), where=norm > 0), -1.0, 1.0)
    a = np.abs(r)
    return 0.25 + np.arcsin(r) / (2 * np.pi), norm, r, (1.0 - a) * (1.0 + a)


def dg_mean(C11):
    """E[g'(a)] = E[theta(a)] = 1/2 (0 for a zero variance, theta(0) = 0), broadcast like C11."""
    return np.where(np.asarray(C11) > 0, 0.5, 0.0)


def I2_matrix(C):
    """I2[i, j] = E[g(z_i) g(z_j)] for z ~ N(0, C); C (..., n, n) -> (..., n, n)."""
    C = _square("I2_matrix", C)
    p2, norm, r, om = _p2_array(C)
    return norm * (r * p2 + np.sqrt(om) / (2 * np.pi))


def J2_matrix(C):
    """J2[i, j] = E[g'(z_i) g'(z_j)] = E[theta(z_i) theta(z_j)]; C (..., n, n) -> (..., n, n)."""
    C = _square("J2_matrix", C)
    p2, norm, _, _ = _p2_array(C)
    return np.where(norm > 0, p2, 0.0)


def I3_tensor(C, A, B=None):
    """I3[a, u, c] = E[g'(z_a) z_u g(z_c)] for a in A, u in all fields, c in B (index arrays).

    C (..., n, n); A, B integer index arrays (B defaults to all). Returns (..., |A|, n, |B|).
    """
    C = _square("I3_tensor", C)
    n = C.shape[-1]
    B = np.arange(n) if B is None else np.asarray(B)
    A = np.asarray(A)
    p2, norm, r, om = _p2_array(C)
    d = _diag(C)
    dA = d[..., A]
    ok = norm[..., A, :][..., B] > 0  # (..., |A|, |B|): both variances > 0
    # C12 sqrt(C33 / C11) sqrt(1 - r13^2) / (2 pi) + C23 P2(r13)
    ratio = np.sqrt(np.divide(d[..., None, B], dA[..., :, None], out=np.zeros(ok.shape), where=ok))
    first = (ratio * np.sqrt(om[..., A, :][..., B]) / (2 * np.pi))[..., :, None, :] * C[..., A, :][..., :, :, None]
    second = p2[..., A, :][..., B][..., :, None, :] * C[..., :, B][..., None, :, :]
    return np.where(ok[..., :, None, :], first + second, 0.0)


def _batched(C):
    n = C.shape[-1]
    return np.ascontiguousarray(C.reshape((int(np.prod(C.shape[:-2])), n, n))), C.shape[:-2]


def dgg_tensor(C, A, B=None):
    """E[g'(z_a) g(z_c) g(z_d)] for a in A and c, d in B; C (..., n, n) -> (..., |A|, |B|, |B|)."""
    C = _square("dgg_tensor", C)
    n = C.shape[-1]
    B = np.arange(n) if B is None else np.asarray(B)
    A, B = np.asarray(A, dtype=np.int64).ravel(), np.asarray(B, dtype=np.int64).ravel()
    Cs, lead = _batched(C)
    out = np.empty((Cs.shape[0], A.size, B.size, B.size))
    _dgg_kernel(Cs, A, B, out)
    return out.reshape(lead + out.shape[1:])


def I4_tensor(C, A, B=None):
    """I4[a, b, c, d] = E[g'(z_a) g'(z_b) g(z_c) g(z_d)] for a, b in A and c, d in B.

    C (..., n, n) -> (..., |A|, |A|, |B|, |B|).
    """
    C = _square("I4_tensor", C)
    n = C.shape[-1]
    B = np.arange(n) if B is None else np.asarray(B)
    A, B = np.asarray(A, dtype=np.int64).ravel(), np.asarray(B, dtype=np.int64).ravel()
    Cs, lead = _batched(C)
    out = np.empty((Cs.shape[0], A.size, A.size, B.size, B.size))
    _i4_kernel(Cs, A, B, out)
    return out.reshape(lead + out.shape[1:])
