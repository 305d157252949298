"""Numerical Gaussian expectations of the ODE terms, for any rule and any activation (THEORY.md section 4).

The ODE needs, at order parameters Omega,

    X_ku  = E[delta_k xi_u]     (u over lambda_1..K, nu_1..M, phi;  xi_u = z_u + alpha Ov_u, Ov = (S, U, P))
    DD_kl = E[delta_k delta_l]
    EH_k  = E[e_out h_k]

with (delta, alpha, e_out, h) the rule's one-sample update, :meth:`theory.Rule.local_update`,
which is the only place a rule is defined. This module evaluates that function on the nodes of a
quadrature rule and reduces with the weights; nothing here knows any rule's integrand.

Dimensions. delta, alpha, e_out, h depend on y = (lambda, nu) (n = K + M fields) and, when
sigma > 0, on the noise zeta. The field phi enters only linearly, through xi_phi, so

    E[G(y, zeta) phi] = E[G(y, zeta) E[phi | y]],   E[phi | y] = c^T C^+ y,

with C the (n, n) covariance of y and c = (S, U) its covariance with phi: no extra dimension.
We write y = C^{1/2} u with u ~ N(0, I_n) and the symmetric square root C^{1/2} = V diag(sqrt w) V^T
(continuous in Omega, unlike a pivoted Cholesky or the eigenvectors themselves, which keeps the
right-hand side smooth for the adaptive ODE solver, and fine for singular C: zero eigenvalues
simply give zero columns). Then E[phi | y] = gamma . u with gamma = C^{+1/2} c (pseudo-inverse
over the eigenvalues above 1e-12 of the largest; |gamma_i| <= sqrt(P) because Omega is positive
semi-definite). For pepita, e enters g(lambda - sigma_F S e) non-linearly, and e contains
sigma zeta, so zeta gets its own quadrature dimension (d = n + 1) when sigma > 0. For bp, fa and
afa the integrands are polynomials of degree <= 2 in zeta, integrated exactly by any Gauss-Hermite
rule with >= 2 nodes in that dimension; the same extra dimension is used for simplicity.

Quadrature rules (the ``quadrature`` argument of :func:`theory.integrate`):

- ``GaussHermite(n)``: tensor-product Gauss-Hermite with n nodes per dimension (n^d nodes) in
  the whitened fields. Exponentially convergent for erf and tanh; algebraic for relu, whose kink
  (and, for bp/fa/afa, the jump of g' = Heaviside) breaks the analyticity.
- ``SparseGrid(level)``: Smolyak combination of Gauss-Hermite rules of sizes 1, 3, 5, ..., for
  smooth activations in d = 5..9 dimensions (negative weights; not for relu).
- ``QMC(n, scrambles, seed)``: randomised (scrambled) Sobol points mapped through the normal
  quantile, ``scrambles`` independent randomisations; the spread between them gives a standard
  error (:func:`numerical_terms` with ``return_error=True``). Works for any activation and d.
- ``None``: :func:`default_quadrature` picks by d and the activation.

Measured accuracy (largest absolute error of any entry of X, DD, EH against a much finer rule,
GaussHermite(48); K = M = 2 at random_state(2, 2, D=1000) and at random O(1) covariances, and along a
pepita trajectory to t = 300; tests/theory/expectations/test_numerical.py and benchmarks/bench_pepita.py check these):

- erf, pepita: GaussHermite(12) ~7e-5, (16) ~5e-6, (20, the default for d <= 4) ~3e-7 .. 1e-5,
  (24) ~4e-8 .. 1e-4 (the larger figures at states with |sigma_F S| ~ 2).
- erf, bp/fa/afa through this engine (their default is the closed form): the integrand
  g'(lambda_k) g'(lambda_l) e^2 is peaked, GaussHermite(20) ~5e-4, (32) ~3e-6.
- tanh (poles at i pi/2 limit the convergence to ~exp(-c sqrt(n))): pepita GaussHermite(20)
  ~1e-3, bp ~1e-2.
- relu: GaussHermite(32) ~1e-2 for pepita (kink of g) and bp/fa/afa (jump of g'), falling only like
  1/n; KinkAware(16) (exact along lines, Gauss-Hermite across) 2e-4 .. 3e-3 (pepita); the default is
  KinkAware(24, outer="sphere") (exact along lines, a polar rule across): pepita 6e-7 .. 2e-5, bp and fa
  against their closed forms 1e-6 .. 7e-5 (three O(1) random states, tests/theory/expectations/test_accuracy.py;
  reference
  KinkAware(96, outer="sphere")), and bp, fa, afa have closed forms (theory.activations.relu).
- relu rules that cannot be traced (np.sign called directly), and traced ones whose integrands are not
  piecewise quadratic (RuleFacts.kinks_exact False), run the default KinkAware rule's lines in numpy
  (:func:`_line_terms`: the first-pass kinks are known without tracing), equal to the compiled kernel on the
  same lines to 1e-9 where both apply. The untraceable sign-feedback rule (bp-like: g' jumps, so DD converges
  only like ~n^-2 across the lines) against its twin's closed form: KinkAware(24, "sphere") 1.5e-5 .. 2.8e-4,
  (48) 5e-6 .. 5e-5, the rule the default accuracy control picks (tests/theory/expectations/test_accuracy.py, four
  O(1) states). (Before:
  GaussHermite(32), ~1e-2, and the compiled kink kernel silently ~1e-3 off for a tanh(e) rule.)

Error control (``expectation_tol=`` of theory.integrate and theory.rhs): :func:`select_quadrature` climbs the
default family's ladder until the embedded estimate (:func:`expectation_error`: the difference to the next
rule of the family times a safety factor, or 3 QMC standard errors) is below the tolerance; the trajectory
records the rule and the largest estimate (at the first and the last state). Measured at O(1) random
states (tests/theory/expectations/test_accuracy.py): the estimate bounds the error against a much finer rule for erf,
tanh and
relu pepita at tol 1e-3 and 1e-5.
- d >= 5 (K = M = 4, or noise): QMC(2^14 x 8) standard error ~1e-5 .. 1e-4 for pepita, ~1e-3
  for bp (return_error=True reports it); SparseGrid(7) ~1e-5 for smooth g at 6e4 nodes.

Cost: the rule is cached; one call evaluates Rule.local_update once over all nodes (and all batch
states). For odd g (erf, tanh, linear) the symmetric rules are folded onto a half-space (exact,
see ``_prepared``), and GaussHermite drops its negligible corner nodes: K = M = 2 with
GaussHermite(20) is 33,872 nodes, ~5 ms per call.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from .. import _checks as checks
from .._state import field_covariance
from ..activations._base import Activation, activation
from ..rules._base import make_rule

__all__ = ["GaussHermite", "SparseGrid", "QMC", "KinkAware", "default_quadrature", "numerical_terms", "quadrature_rule",
           "select_quadrature", "expectation_error", "DEFAULT_EXPECTATION_TOL", "AccuracyWarning"]

_EIG_RTOL = 1e-12


# ------------------------------------------------------------------------------------------ rules


@dataclasses.dataclass(frozen=True)
class GaussHermite:
    """Tensor-product Gauss-Hermite rule for N(0, I_d): n nodes per dimension, n^d in all.

    Exact for polynomials of degree <= 2n - 1 in each variable. ``n_noise`` sets the node count of
    the noise dimension (default n). Nodes whose product weight is below ``prune`` times the
    largest are dropped (the "corners" of the grid: for prune = 1e-14 they carry a total
    probability of ~2e-13 and E[|u|^4] ~ 1e-9, and they are 40 to 70 % of the nodes for d = 4).
    """

    n: int = 20
    n_noise: int | None = None
    prune: float = 1e-14

    def __post_init__(self):
        for name in ("n", "n_noise"):
            val = getattr(self, name)
            if val is None and name == "n_noise":
                continue
            if not isinstance(val, (int, np.integer)) or val < 1:
                raise ValueError(f"GaussHermite: {name} must be a positive integer, got {val!r}")
        if not (0.0 <= self.prune < 1.0):
            raise ValueError(f"GaussHermite: prune must be in [0, 1), got {self.prune!r}")

    def nodes(self, d: int, noise: bool):
        sizes = (self.n,) * d + (((self.n_noise or self.n),) if noise else ())
        _fits(self, math.prod(int(n) for n in sizes), len(sizes))
        x, w, _ = _tensor_gh(sizes)
        if self.prune > 0:
            keep = w > self.prune * w.max()
            x, w = x[keep], w[keep]
        return x, w, None


@dataclasses.dataclass(frozen=True)
class SparseGrid:
    """Smolyak sparse grid built from Gauss-Hermite rules of sizes 1, 3, 5, ... (2i - 1 at index i).

    A(level, d) = sum over multi-indices i (i_j >= 1) with level - d + 1 <= |i| - d + 1 <= level of
    (-1)^(level - |i| + d - 1) binom(d - 1, level - |i| + d - 1) (x)_j GH(2 i_j - 1); coinciding
    nodes are merged. Exact for polynomials of total degree <= 2 level - 1. Weights may be negative.
    """

    level: int = 5

    def __post_init__(self):
        if not isinstance(self.level, (int, np.integer)) or self.level < 1:
            raise ValueError(f"SparseGrid: level must be a positive integer, got {self.level!r}")

    def nodes(self, d: int, noise: bool):
        dim = d + int(noise)
        # every tensor rule of the combination is built, and its nodes entered one by one in a dict (~200 bytes each)
        _fits(self, _smolyak_terms(dim, int(self.level)), dim, per_node=200 + 32 * dim)
        return _smolyak(dim, int(self.level))


@dataclasses.dataclass(frozen=True)
class QMC:
    """Randomised quasi-Monte Carlo: ``scrambles`` independently scrambled Sobol sequences of
    ``n`` points each (n a power of 2), mapped to N(0, I_d) by the normal quantile.

    The estimate is the mean over all n * scrambles points; the standard error is the spread of
    the per-scramble estimates / sqrt(scrambles). Seeded, so the rule is a fixed function of the
    state (needed by the adaptive ODE solver).
    """

    n: int = 2**14
    scrambles: int = 8
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.n, (int, np.integer)) or self.n < 2 or (int(self.n) & (int(self.n) - 1)):
            raise ValueError(f"QMC: n must be a power of 2 >= 2, got {self.n!r}")
        if not isinstance(self.scrambles, (int, np.integer)) or self.scrambles < 2:
            raise ValueError(f"QMC: scrambles must be an integer >= 2 (for the error estimate), got {self.scrambles!r}")
        if isinstance(self.seed, (bool, np.bool_)) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"QMC: seed must be a non-negative integer, got {self.seed!r}")

    def nodes(self, d: int, noise: bool):
        _fits(self, int(self.n) * int(self.scrambles), d + int(noise))
        return _qmc(d + int(noise), int(self.n), int(self.scrambles), int(self.seed))


@dataclasses.dataclass(frozen=True)
class KinkAware:
    """Kink-aware rule for piecewise-linear activations (relu, linear): exact along lines, Gauss-Hermite across.

    Along every line of the whitened node space in the direction C^{+1/2} (1, ..., 1) (crossing every
    first-pass kink at the same angle; theory._codegen.quadrature.line_basis), a relu rule's integrands
    are piecewise quadratic; the compiled engine (theory._codegen.quadrature.numerical_terms_kinks) finds the
    kinks (the zeros of every argument of g and g', level by level) and integrates each piece exactly
    against the Gaussian weight. The lines pass through the nodes of GaussHermite(n) in the remaining
    d - 1 dimensions, where the integrated function is smooth but for weaker kinks (where two kinks
    meet, where pepita's kink lambda - sigma_F S e bends, or, for g', where two jumps meet), so the
    error falls faster than GaussHermite's 1/n on the raw integrand, though still algebraically.
    Measured (largest error of any term relative to the largest term, O(1) random K = M = 2 states;
    tests/theory/codegen/test_compiled_engine.py, benchmarks/bench_relu.py): n = 16: 1e-4 .. 7e-3, n = 24:
    2e-5 .. 2e-3, n = 48: 4e-6 .. 1e-4, against the relu closed forms (bp, afa) and n = 64 (pepita);
    GaussHermite(32) on the same states: 1e-4 .. 1e-2 with 50 times the evaluations. Compiled for rules whose
    integrands are piecewise quadratic (derived: RuleFacts.kinks_exact), else the same lines in numpy
    (:func:`_line_terms`).

    ``outer="sphere"``: the outer rule in polar form (:func:`_sphere_rule`: ``radial`` Gauss nodes for the
    radius, n Gauss-Jacobi nodes per polar angle and 2n trapezoid nodes in the last angle). relu rules are
    positively homogeneous, so every kink is a cone through the origin: the line-integrated function is
    analytic along rays and its kinks are crossed at angular spacing ~pi / n, the error falling like
    n^-3 .. n^-4. Measured (same states, tests/theory/expectations/test_accuracy.py): pepita n = 16: 9e-6 .. 1.4e-4,
    n = 24:
    6e-7 .. 2e-5, n = 32: 4e-7 .. 3e-6; bp and fa against their closed forms n = 24: 1e-6 .. 1.2e-4 (a floor
    near 5e-5 at one state, not yet understood), with 2 n^2 radial lines for K = M = 2 (9216 at n = 24,
    against 2296 for the Gauss-Hermite outer rule at n = 16).
    """

    n: int = 24
    prune: float = 1e-10
    outer: str = "gauss-hermite"
    radial: int = 8

    def __post_init__(self):
        if not isinstance(self.n, (int, np.integer)) or self.n < 1:
            raise ValueError(f"KinkAware: n must be a positive integer, got {self.n!r}")
        if not (0.0 <= self.prune < 1.0):
            raise ValueError(f"KinkAware: prune must be in [0, 1), got {self.prune!r}")
        if self.outer not in ("gauss-hermite", "sphere"):
            raise ValueError(f"KinkAware: outer must be 'gauss-hermite' or 'sphere', got {self.outer!r}")
        if not isinstance(self.radial, (int, np.integer)) or self.radial < 1:
            raise ValueError(f"KinkAware: radial must be a positive integer, got {self.radial!r}")

    def nodes(self, d: int, noise: bool):
        """The outer rule in d + noise - 1 dimensions: GaussHermite(n), or (outer="sphere") :func:`_sphere_rule`."""
        m = d + int(noise) - 1
        if m == 0:
            return np.zeros((1, 0)), np.ones(1), None
        if self.outer == "sphere":
            _fits(self, int(self.radial) * int(self.n) ** max(m - 2, 0) * (2 * int(self.n) if m > 1 else 2), m)
            x, w, _ = _sphere_rule(m, int(self.n), int(self.radial))
        else:
            _fits(self, int(self.n) ** m, m)
            x, w, _ = _tensor_gh((self.n,) * m)
        if self.prune > 0:
            keep = w > self.prune * w.max()
            x, w = x[keep], w[keep]
        return x, w, None


@functools.lru_cache(maxsize=16)
def _radial_gauss(m: int, nr: int):
    """Gauss rule (nodes r, weights) for the chi_m density, r^(m-1) exp(-r^2/2) on [0, inf), normalised: the
    recurrence coefficients by the discretised Stieltjes procedure (Gauss-Legendre with 4000 nodes on [0, 14]),
    then Golub-Welsch. (scipy's roots_legendre: numpy's leggauss(4000) takes ~15-50 s, an eigenvalue problem
    of that size, in every process.)"""
    import scipy.special

    x, w = scipy.special.roots_legendre(4000)
    r = 7.0 * (x + 1.0)
    w = 7.0 * w * np.exp((m - 1) * np.log(r) - 0.5 * r * r)
    w = w / w.sum()
    a, b = np.zeros(nr), np.zeros(nr)
    p_prev, p = np.zeros_like(r), np.ones_like(r)
    for k in range(nr):
        a[k] = (w * r * p * p).sum()
        q = (r - a[k]) * p - (b[k - 1] if k else 0.0) * p_prev
        b[k] = math.sqrt((w * q * q).sum())
        p_prev, p = p, q / b[k]
    J = np.diag(a) + np.diag(b[: nr - 1], 1) + np.diag(b[: nr - 1], -1)
    ev, V = np.linalg.eigh(J)
    return ev, V[0] ** 2


@functools.lru_cache(maxsize=32)
def _sphere_rule(m: int, n: int, nr: int):
    """A rule for N(0, I_m) in polar form x = r theta: r by :func:`_radial_gauss` (nr nodes), theta on S^(m-1) by
    hyperspherical coordinates, z_j = cos(theta_j) with Gauss-Jacobi(n, (k-1)/2, (k-1)/2) nodes (weight
    (1 - z^2)^((k-1)/2), k = m-2, ..., 1), and the last angle by the trapezoid rule with 2n points.

    For the kink-aware rule's outer integral: when every kink of the rule is a cone through the origin (relu
    rules are positively homogeneous in the fields), the line-integrated function is analytic along rays, so
    the radial rule converges exponentially, and its kinks lie on great spheres, crossed by the angular nodes
    at spacing ~pi / n instead of Gauss-Hermite's ~1 / sqrt(n)."""
    r, wr = _radial_gauss(m, nr)
    if m == 1:
        dirs, wd = np.array([[1.0], [-1.0]]), np.full(2, 0.5)
    else:
        import scipy.special

        grids = [scipy.special.roots_jacobi(n, 0.5 * (k - 1), 0.5 * (k - 1)) for k in range(m - 2, 0, -1)]
        nphi = 2 * n
        grids.append(((np.arange(nphi) + 0.5) * 2.0 * math.pi / nphi, np.full(nphi, 1.0)))
        ang = [a.ravel() for a in np.meshgrid(*[g[0] for g in grids], indexing="ij")]
        wd = np.prod([a.ravel() for a in np.meshgrid(*[g[1] for g in grids], indexing="ij")], axis=0)
        wd = wd / wd.sum()
        dirs = np.empty((len(wd), m))
        s = np.ones(len(wd))
        for j in range(m - 2):
            dirs[:, j] = s * ang[j]
            s = s * np.sqrt(np.maximum(1.0 - ang[j] ** 2, 0.0))
        dirs[:, m - 2], dirs[:, m - 1] = s * np.cos(ang[-1]), s * np.sin(ang[-1])
    nodes = (r[:, None, None] * dirs[None]).reshape(-1, m)
    weights = (wr[:, None] * wd[None]).ravel()
    return _freeze(np.ascontiguousarray(nodes), weights) + (None,)


def default_quadrature(d: int, g: str | Activation = "erf"):
    """The default rule for d = K + M fields plus the noise dimension (when sigma > 0).

    d <= 4: GaussHermite(20) (exact for linear g's quadratics); relu with d <= 5: KinkAware(24, outer="sphere")
    (exact along lines, polar across; in numpy for rules without the compiled kink kernel); d = 5 with a smooth g:
    GaussHermite(12); otherwise QMC(2^14 points x 8 scrambles).
    """
    g = activation(g)
    if g.name == "relu" and d <= 5:
        return KinkAware(24, outer="sphere")
    if d <= 4:
        return GaussHermite(32 if g.name == "relu" else 20)
    if d == 5 and g.name != "relu":
        return GaussHermite(12)
    return QMC()


def quadrature_rule(quadrature, d: int, g="erf"):
    """Normalise the ``quadrature`` argument: None, a rule object, or a string
    ("gauss-hermite", "sparse", "qmc", each with its default settings)."""
    if quadrature is None:
        return default_quadrature(d, g)
    if isinstance(quadrature, (GaussHermite, SparseGrid, QMC, KinkAware)):
        return quadrature
    if isinstance(quadrature, str):
        named = {
            "gauss-hermite": GaussHermite,
            "gh": GaussHermite,
            "sparse": SparseGrid,
            "smolyak": SparseGrid,
            "qmc": QMC,
            "kink-aware": KinkAware,
            "kinks": KinkAware,
        }
        if quadrature.lower() in named:
            return named[quadrature.lower()]()
    raise ValueError(
        f"quadrature: expected None, GaussHermite(n), SparseGrid(level), QMC(n, scrambles, seed), KinkAware(n) or one "
        f"of 'gauss-hermite', 'sparse', 'qmc', 'kink-aware'; got {quadrature!r}"
    )


def _fits(quad, n_nodes: int, dim: int, *, per_node: float | None = None) -> None:
    """Refuse (TooLarge) a rule whose nodes would not fit in memory, before building them (checks.memory's policy).

    Building a tensor rule holds about 4 (dim + 1) float64 per node (the meshgrids of nodes and weights, then their
    stacks); the integrands evaluated on them (one value per node and term) need as much again.
    """
    per_node = 8.0 * 4 * (dim + 1) if per_node is None else per_node
    checks.memory(f"quadrature={quad!r} with {n_nodes:.3g} nodes in {dim} dimensions", float(n_nodes) * per_node,
                  where="quadrature")


def _smolyak_terms(d: int, level: int) -> int:
    """Nodes entered (before merging) by :func:`_smolyak`: the sum of prod_j (2 i_j - 1) over its multi-indices,
    the coefficients of (sum_{i=1}^{level} (2i - 1) x^i)^d at |i| = level .. level + d - 1 (exact integers)."""
    base = [0] + [2 * i - 1 for i in range(1, level + 1)]
    poly = [1]
    for _ in range(d):
        out = [0] * (len(poly) + len(base) - 1)
        for a, pa in enumerate(poly):
            if pa:
                for b, pb in enumerate(base):
                    out[a + b] += pa * pb
        poly = out
    q = level + d - 1
    return sum(poly[s] for s in range(q - d + 1, q + 1) if s < len(poly))


def _gh_1d(n: int):
    """Gauss-Hermite nodes and weights for the standard normal (probabilists' weight)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / math.sqrt(2.0 * math.pi)


def _freeze(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=64)
def _tensor_gh(sizes: tuple[int, ...]):
    grids = [_gh_1d(n) for n in sizes]
    xs = np.meshgrid(*[x for x, _ in grids], indexing="ij")
    ws = np.meshgrid(*[w for _, w in grids], indexing="ij")
    nodes = np.stack([x.ravel() for x in xs], axis=-1)
    weights = np.prod(np.stack([w.ravel() for w in ws], axis=-1), axis=-1)
    return _freeze(nodes, weights) + (None,)


@functools.lru_cache(maxsize=64)
def _smolyak(d: int, level: int):
    import itertools

    acc: dict[tuple, float] = {}
    q = level + d - 1  # |i| ranges over q - d + 1 .. q with i_j >= 1
    for idx in itertools.product(range(1, level + 1), repeat=d):
        s = sum(idx)
        if not (q - d + 1 <= s <= q):
            continue
        coef = (-1) ** (q - s) * math.comb(d - 1, q - s)
        x, w = _tensor_gh(tuple(2 * i - 1 for i in idx))[:2]
        for node, weight in zip(np.round(x, 12), w):
            key = tuple(node + 0.0)
            acc[key] = acc.get(key, 0.0) + coef * weight
    keys = [k for k, w in acc.items() if w != 0.0]
    nodes = np.array(keys, dtype=float).reshape(len(keys), d)
    weights = np.array([acc[k] for k in keys])
    return _freeze(nodes, weights) + (None,)


@functools.lru_cache(maxsize=16)
def _qmc(d: int, n: int, scrambles: int, seed: int):
    import scipy.stats.qmc

    rng = np.random.default_rng(seed)
    pts = []
    for _ in range(scrambles):
        sob = scipy.stats.qmc.Sobol(d, scramble=True, seed=rng)
        pts.append(sob.random_base2(int(math.log2(n))))
    u = np.clip(np.concatenate(pts), 1e-16, 1 - 1e-16)
    nodes = scipy.special.ndtri(u)
    weights = np.full(n * scrambles, 1.0 / (n * scrambles))
    groups = np.repeat(np.arange(scrambles), n)
    return _freeze(nodes, weights, groups)


@functools.lru_cache(maxsize=32)
def _is_odd(g: Activation) -> bool:
    """g odd and g' even, checked on probe points (then every rule's integrand is even in (u, zeta))."""
    x = np.linspace(0.1, 4.0, 17) + 0.0123
    with np.errstate(all="ignore"):
        return bool(
            np.allclose(g.g(-x), -g.g(x), rtol=1e-13, atol=1e-15)
            and np.allclose(g.dg(-x), g.dg(x), rtol=1e-13, atol=1e-15)
        )


@functools.lru_cache(maxsize=256)
def _rule_is_odd(rule, g: Activation, K: int, M: int) -> bool:
    """Whether the rule's delta, alpha, e_out and h change sign with (lambda, nu, zeta), checked on
    random probe samples and states (exact symmetries give equality to rounding)."""
    rng = np.random.default_rng(12345)
    n = 64
    lam, nu, zeta = 1.3 * rng.standard_normal((n, K)), 1.3 * rng.standard_normal((n, M)), rng.standard_normal(n)
    state = dict(v=rng.standard_normal((n, K)), v_star=rng.standard_normal((n, M)), S=0.5 * rng.standard_normal((n, K)),
                 b=rng.standard_normal((n, K)), sigma=0.3, sigma_F=0.9, g=g)
    with np.errstate(all="ignore"):
        a = rule.local_update(lam, nu, zeta, **state)
        m = rule.local_update(-lam, -nu, -zeta, **state)
    for x, y in zip(a[:4], m[:4]):
        x, y = np.broadcast_to(np.asarray(x, float), np.shape(lam)[:1] + np.shape(x)[1:]), np.asarray(y, float)
        if not np.allclose(x, -y, rtol=1e-12, atol=1e-12 * max(1.0, float(np.nanmax(np.abs(x), initial=0.0)))):
            return False
    return True


@functools.lru_cache(maxsize=64)
def _prepared(quad, n: int, noise: bool, odd: bool):
    """The rule's nodes (N, d), weights (N,) and scramble groups; for odd g and a symmetric rule,
    folded onto the half-space "first non-zero coordinate > 0" with doubled weights.

    Folding is exact when the rule's delta, alpha, e_out and h are odd in (y, zeta): then every
    integrand of X, DD and EH is even, and a symmetric rule gives it equal values at p and -p. For
    odd g (erf, tanh, linear) this holds for bp, fa, afa and pepita (e is odd, g(lambda - sigma_F S e)
    is odd, g' is even); for any rule it is checked on probe samples (:func:`_rule_is_odd`).
    """
    nodes, weights, groups = quad.nodes(n, noise)
    if odd and groups is None:
        tol = 1e-12
        nz = np.abs(nodes) > tol
        first = np.where(nz.any(1), nz.argmax(1), 0)
        lead = nodes[np.arange(len(nodes)), first]
        pos, zero = lead > tol, ~nz.any(1)
        nodes = np.concatenate([nodes[pos], nodes[zero]])
        weights = np.concatenate([2.0 * weights[pos], weights[zero]])
    return _freeze(np.ascontiguousarray(nodes), np.ascontiguousarray(weights)) + (groups,)


# ------------------------------------------------------------------------------------ expectations


def _whiten(om, n):
    """Symmetric square root A = C^{1/2} of the (lambda, nu) block and gamma = C^{+1/2} c (phi's regression)."""
    C = om[..., :n, :n]
    c = om[..., :n, n]
    bad = ~np.all(np.isfinite(om[..., :n, :]), axis=(-2, -1))  # a non-finite (diverging) state: NaN, no LinAlgError
    if np.any(bad):
        C = np.where(bad[..., None, None], np.eye(n), C)
    w, V = np.linalg.eigh(C)
    tol = _EIG_RTOL * np.maximum(w[..., -1:], 1.0)
    keep = w > tol
    sw = np.sqrt(np.where(keep, w, 0.0))
    inv = np.where(keep, 1.0 / np.where(keep, sw, 1.0), 0.0)
    Vt = np.swapaxes(V, -1, -2)
    A = (V * sw[..., None, :]) @ Vt
    gamma = ((V * inv[..., None, :]) @ (Vt @ c[..., None]))[..., 0]
    out = np.concatenate([A, gamma[..., None, :]], axis=-2)  # (..., n+1, n)
    return np.where(bad[..., None, None], np.nan, out) if np.any(bad) else out


def numerical_terms(rule, Q, R, T, S, U, P, v, v_star, b=None, *, sigma=0.0, sigma_F=1.0, g="erf", quadrature=None,
                    return_error=False):
    """(X, DD, EH) by quadrature over the Gaussian fields, from :meth:`Rule.local_update`.

    Same contract as :func:`theory.expectations.closed.closed_form_terms`: X (..., K, K+M+1) = E[delta_k xi_u],
    DD (..., K, K) = E[delta_k delta_l], EH (..., K) = E[e_out h_k], with leading batch dimensions
    on the order parameters. ``quadrature``: see the module docstring (None picks by K + M + [sigma > 0]).

    With ``return_error=True`` also returns an error estimate (X_err, DD_err, EH_err): for QMC the
    standard error across scrambles; for deterministic rules the difference to the same family
    one step finer (GaussHermite(n + 8), SparseGrid(level + 1)), a conservative estimate.
    """
    rule = make_rule(rule)
    g = activation(g)
    K, M = np.shape(R)[-2:]
    n = K + M
    noise = bool(np.any(np.asarray(sigma) != 0))
    quad = quadrature_rule(quadrature, n + int(noise), g)
    if isinstance(quad, KinkAware):
        kinks = _kink_terms(rule, g, K, M)
        terms = kinks(rule, Q, R, T, S, U, P, v, v_star, b, sigma=sigma, sigma_F=sigma_F, g=g, quadrature=quad)
        if not return_error:
            return terms
        ref = kinks(rule, Q, R, T, S, U, P, v, v_star, b, sigma=sigma, sigma_F=sigma_F, g=g,
                    quadrature=dataclasses.replace(quad, n=2 * quad.n))
        return terms, tuple(np.abs(a - c) for a, c in zip(terms, ref))
    nodes, weights, groups = _prepared(quad, n, noise, _is_odd(g) and _rule_is_odd(rule, g, K, M))

    om = field_covariance(Q, R, T, S, U, P)  # (..., n+1, n+1)
    B = _whiten(om, n)
    z = np.einsum("...ij,pj->...pi", B, nodes[:, :n])  # (..., N, n+1); last column E[phi | y]
    zeta = nodes[:, n] if noise else np.zeros(len(weights))
    reduce = _reducer(rule, om, z, zeta, K, n, v, v_star, S, b, sigma, sigma_F, g)
    terms = reduce(weights)
    if not return_error:
        return terms
    if groups is not None:
        r = int(groups.max()) + 1
        per = [reduce(np.where(groups == j, weights * r, 0.0)) for j in range(r)]
        err = tuple(np.std(np.stack([p[i] for p in per]), axis=0, ddof=1) / math.sqrt(r) for i in range(3))
    else:
        finer = (
            GaussHermite(quad.n + 8, None if quad.n_noise is None else quad.n_noise + 8)
            if isinstance(quad, GaussHermite)
            else SparseGrid(quad.level + 1)
        )
        ref = numerical_terms(rule, Q, R, T, S, U, P, v, v_star, b, sigma=sigma, sigma_F=sigma_F, g=g, quadrature=finer)
        err = tuple(np.abs(a - c) for a, c in zip(terms, ref))
    return terms, err



def _reducer(rule, om, z, zeta, K, n, v, v_star, S, b, sigma, sigma_F, g):
    """The rule's update at the nodes z (..., N, n+1) (fields and E[phi | fields]) and zeta (N,) (the noise),
    and the function that reduces it with weights (N,) to (X, DD, EH)."""
    ex = lambda a: None if a is None else np.asarray(a, dtype=float)[..., None, :]  # noqa: E731
    up = rule.local_update(z[..., :K], z[..., K:n], zeta, v=ex(v), v_star=ex(v_star), S=ex(S), b=ex(b),
                           sigma=sigma, sigma_F=sigma_F, g=g)
    Ov = om[..., :, n]  # (..., n+1): (S, U, P)
    lead = om.shape[:-2]
    N = z.shape[-2]
    delta = np.broadcast_to(up.delta, lead + (N, K))
    alpha = np.broadcast_to(up.alpha, lead + (N,))
    xi = z + alpha[..., None] * Ov[..., None, :]
    e_out = np.broadcast_to(up.e_out, lead + (N,))
    h = np.broadcast_to(up.h, lead + (N, K))

    def reduce(wts):
        dw = delta * wts[..., None]
        dwT = np.swapaxes(dw, -1, -2)
        return dwT @ xi, dwT @ delta, np.einsum("...p,...pk->...k", e_out * wts, h)

    return reduce


#: the fixed breakpoints of the line rule (:func:`_line_terms`) besides the kinks, and its truncation
_LINE_GRID = np.array([-8.0, -5.0, -3.0, -1.5, 0.0, 1.5, 3.0, 5.0, 8.0])
_LINE_ORDER = 6


def _line_terms(rule, Q, R, T, S, U, P, v, v_star, b=None, *, sigma=0.0, sigma_F=1.0, g="relu", quadrature=None):
    """(X, DD, EH) of a KinkAware rule evaluated in numpy, for rules without a compiled view (untraceable).

    The lines are those of the compiled kink-aware engine (the outer rule ``quadrature.nodes``, the direction
    ``theory._codegen.quadrature.line_basis``); along each, the first-pass kinks (the zeros of lambda_k and nu_m,
    known without tracing: the fields are linear along the line) and the fixed grid :data:`_LINE_GRID` split
    [-8, 8] into pieces, each integrated by Gauss-Legendre(:data:`_LINE_ORDER`) times the Gaussian weight.
    Measured against the compiled engine on the same lines (K = M = 2, O(1) random states): 3e-10 .. 1e-9 of
    the largest term for a rule polynomial between first-pass kinks (an untraceable sign-feedback rule; the
    compiled engine is exact there); smooth functions of the fields (tanh(e)) are integrated to the same
    order. Kinks the update makes elsewhere (pepita's second pass g(lambda - sigma_F S e)) are not known and
    fall between nodes: 1e-5 .. 3e-5 for pepita at KinkAware(16, "sphere"), which the embedded estimate
    (:func:`expectation_error`) sees. Also serves traceable rules whose integrands are not piecewise
    quadratic (RuleFacts.kinks_exact False: the compiled kink engine would be wrong for them)."""
    from .._codegen.quadrature import line_basis

    K, M = np.shape(R)[-2:]
    n = K + M
    noise = bool(np.any(np.asarray(sigma) != 0))
    d = n + int(noise)
    outer, w_out, _ = quadrature.nodes(n, noise)
    xg, wg = np.polynomial.legendre.leggauss(_LINE_ORDER)
    om_all = field_covariance(Q, R, T, S, U, P)
    lead = om_all.shape[:-2]
    B_all = _whiten(om_all, n)
    X, DD, EH = np.zeros(lead + (K, n + 1)), np.zeros(lead + (K, K)), np.zeros(lead + (K,))
    def pick(a, k):  # the state idx's value of a (leading dimensions lead, then k own dimensions)
        return (
            None
            if a is None
            else np.broadcast_to(np.asarray(a, dtype=float), lead + np.shape(a)[np.ndim(a) - k :])[idx]
        )

    for idx in np.ndindex(*lead):
        om, B = om_all[idx], B_all[idx]
        A = B[:n]
        H = line_basis(np.ascontiguousarray(np.linalg.pinv(A, rcond=_EIG_RTOL, hermitian=True)), d)
        u, E = H[:, 0], H[:, 1:]
        p0 = outer @ E.T  # (L, d): the lines' points at t = 0
        speed = A @ u[:n]  # (n,)
        f0 = p0[:, :n] @ A.T  # (L, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            kinks = np.where(np.abs(speed) > 1e-14, -f0 / np.where(np.abs(speed) > 1e-14, speed, 1.0), _LINE_GRID[0])
        br = np.sort(np.concatenate([np.broadcast_to(_LINE_GRID, (len(p0), len(_LINE_GRID))),
                                     np.clip(kinks, _LINE_GRID[0], _LINE_GRID[-1])], axis=1), axis=1)
        a, c = br[:, :-1], br[:, 1:]
        t = 0.5 * (a + c)[..., None] + 0.5 * (c - a)[..., None] * xg  # (L, pieces, order)
        wt = (
            w_out[:, None, None] * 0.5 * (c - a)[..., None] * wg * np.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
        ).ravel()
        nodes = (p0[:, None, None, :] + t[..., None] * u).reshape(-1, d)
        keep = wt > 0
        nodes, wt = nodes[keep], wt[keep]
        z = nodes[:, :n] @ B.T
        zeta = nodes[:, n] if noise else np.zeros(len(wt))
        reduce = _reducer(rule, om, z, zeta, K, n, pick(v, 1), pick(v_star, 1), pick(S, 1), pick(b, 1),
                          pick(sigma, 0), pick(sigma_F, 0), g)
        X[idx], DD[idx], EH[idx] = reduce(wt)
    return X, DD, EH


def _kink_terms(rule, g, K, M):
    """The engine of a KinkAware rule: compiled (:func:`_compiled_terms`, kinks found level by level from the
    traced update) where the rule has a compiled view, else the numpy line rule (:func:`_line_terms`)."""
    if not g.piecewise_linear:
        raise ValueError(
            f"quadrature: KinkAware integrates piecewise-linear activations (relu, linear); got {g.name!r}"
        )
    return _compiled_terms if _compiled_available(rule, g, K, M, KinkAware()) else _line_terms


def _compiled_available(rule, g, K, M, quadrature=None) -> bool:
    """Whether a compiled numerical kernel serves this rule, activation and quadrature (theory.ode.views.rhs_view;
    KinkAware: the kink-aware kernel, which exists only where the rule's integrands are piecewise quadratic)."""
    from ..ode.views import rhs_view

    quad = GaussHermite() if quadrature is None else quadrature  # a numerical rule: never the closed forms
    return rhs_view(rule, g, quad, int(K), int(M)).single is not None


def _compiled_terms(rule, Q, R, T, S, U, P, v, v_star, b=None, *, sigma=0.0, sigma_F=1.0, g="erf", quadrature=None):
    """(X, DD, EH) by the compiled engine (theory._codegen.quadrature), state by state over the batch dimensions."""
    from .._codegen.rule import activation_code, compiled_rule, numerical_params, terms_params

    g = activation(g)
    K, M = np.shape(R)[-2:]
    comp = compiled_rule(rule, int(K), int(M))
    gk = activation_code(g)
    noise = bool(np.any(np.asarray(sigma) != 0))
    quad = quadrature_rule(quadrature, K + M + int(noise), g)
    kinks = isinstance(quad, KinkAware)
    if kinks and not g.piecewise_linear:
        raise ValueError(
            f"quadrature: KinkAware integrates piecewise-linear activations (relu, linear); got {g.name!r}"
        )
    terms = comp.numerical_terms_kinks if kinks else comp.numerical_terms
    if terms is None or gk is None:
        why = comp.reason or (f"activation {g.name!r} has no compiled form" if gk is None else
                              "its integrands are not piecewise quadratic (theory.rules._facts.RuleFacts.kinks_exact)")
        raise ValueError(
            f"quadrature: {quadrature!r} needs the compiled engine, unavailable for rule {rule.label}: {why}"
        )
    nodes, weights = node_rule(rule, g, K, M, sigma, quad)
    arrs = [
        np.asarray(a, dtype=float)
        for a in (Q, R, T, S, U, P, v, v_star, np.zeros(K) if b is None else b, sigma, sigma_F)
    ]
    ndims = (2, 2, 2, 1, 1, 0, 1, 1, 1, 0, 0)
    lead = np.broadcast_shapes(*(a.shape[: a.ndim - k] for a, k in zip(arrs, ndims)))
    X, DD, EH = np.zeros(lead + (K, K + M + 1)), np.zeros(lead + (K, K)), np.zeros(lead + (K,))
    for idx in np.ndindex(*lead):
        Qi, Ri, Ti, Si, Ui, Pi, vi, vsi, bi, sg, sF = (np.broadcast_to(a, lead + a.shape[a.ndim - k:])[idx]
                                                    for a, k in zip(arrs, ndims))
        y = np.concatenate([Qi.ravel(), Ri.ravel(), Si, vi])
        p = numerical_params(terms_params(K, M, Ti, Ui, float(Pi), vsi, bi, float(sg), float(sF), gk), nodes, weights)
        terms(y, p, X[idx], DD[idx], EH[idx])
    return X, DD, EH


def node_rule(rule, g, K: int, M: int, sigma, quadrature):
    """(nodes, weights) that the compiled numerical kernels read from p (theory._codegen.rule.numerical_params):
    a KinkAware rule's outer rule, else the tensor rule as :func:`_prepared` gives it (folded, pruned)."""
    g = activation(g)
    n = K + M
    noise = bool(np.any(np.asarray(sigma) != 0))
    quad = quadrature_rule(quadrature, n + int(noise), g)
    if isinstance(quad, KinkAware):
        nodes, weights, _ = quad.nodes(n, noise)
    else:
        nodes, weights, _ = _prepared(quad, n, noise, _is_odd(g) and _rule_is_odd(rule, g, K, M))
    return np.ascontiguousarray(nodes, dtype=float), np.ascontiguousarray(weights, dtype=float)


# ------------------------------------------------------------------------------------ error control

#: the accuracy a numerical view aims at by default (theory.integrate, theory.sweep) and :func:`select_quadrature`
#: when asked (``expectation_tol=``): the largest absolute error of any of X, DD, EH relative to the largest of them
DEFAULT_EXPECTATION_TOL = 1e-5
#: at the default tolerance the ladder climbs only to rules with at most this many times the default rule's nodes
#: (an explicit ``expectation_tol`` climbs to the ladder's top); above it the estimate is reported (AccuracyWarning)
DEFAULT_COST_FACTOR = 4.0


class AccuracyWarning(UserWarning):
    """A numerical view's estimated accuracy is above the requested ``expectation_tol`` "
    "(theory.expectations.numerical)."""


_GH_LADDER = (12, 16, 20, 24, 32, 40, 48, 64)
_KINK_LADDER = (16, 24, 32, 48, 64, 96)


def _finer(quad, g):
    """The next rule of the same family (the embedded pair's finer member) and the safety factor that turns the
    difference between the two into an estimate of the coarser rule's error, or (None, None) at the top.

    GaussHermite: the next n of _GH_LADDER, factor 2 for analytic g (exponential but irregular convergence; tanh's
    poles), 8 for relu (algebraic, ~1/n); KinkAware(n) against KinkAware(2n) with 4 more radial nodes, factor 2 (the
    spherical rule converges
    like n^-3 .. n^-4, but not monotonically), 4 for the Gauss-Hermite outer rule; SparseGrid: level + 1 (factor 1)."""
    if isinstance(quad, KinkAware):
        return (
            (dataclasses.replace(quad, n=2 * quad.n, radial=quad.radial + 4), 2.0 if quad.outer == "sphere" else 4.0)
            if 2 * quad.n <= 2 * _KINK_LADDER[-1]
            else (None, None)
        )
    if isinstance(quad, GaussHermite):
        up = [n for n in _GH_LADDER if n > quad.n]
        if not up:
            return None, None
        return dataclasses.replace(
            quad, n=up[0], n_noise=None if quad.n_noise is None else quad.n_noise + up[0] - quad.n
        ), (8.0 if g.piecewise_linear else 2.0)
    if isinstance(quad, SparseGrid):
        return (SparseGrid(quad.level + 1), 1.0) if quad.level < 9 else (None, None)
    if isinstance(quad, QMC):
        return (dataclasses.replace(quad, n=4 * quad.n), None) if quad.n < 2**20 else (None, None)
    return None, None


def _next_rung(quad, g):
    """The next rule of the ladder that :func:`select_quadrature` climbs (KinkAware: _KINK_LADDER; else "
    ":func:`_finer`)."""
    if isinstance(quad, KinkAware):
        up = [n for n in _KINK_LADDER if n > quad.n]
        return dataclasses.replace(quad, n=up[0]) if up else None
    return _finer(quad, g)[0]


def _terms_any(rule, args, quad, g, sigma, sigma_F, compiled):
    if isinstance(quad, KinkAware):
        return _kink_terms(rule, g, *np.shape(args[1])[-2:])(
            rule, *args, sigma=sigma, sigma_F=sigma_F, g=g, quadrature=quad
        )
    if compiled:
        return _compiled_terms(rule, *args, sigma=sigma, sigma_F=sigma_F, g=g, quadrature=quad)
    return numerical_terms(rule, *args, sigma=sigma, sigma_F=sigma_F, g=g, quadrature=quad)


def expectation_error(rule, Q, R, T, S, U, P, v, v_star, b=None, *, sigma=0.0, sigma_F=1.0, g="erf", quadrature=None):
    """An error estimate of the quadrature's (X, DD, EH) at one state: the largest absolute error of any term
    relative to the largest term, from the embedded pair (this rule and the next finer of its family,
    :func:`_finer`) or, for QMC, three standard errors across scrambles. None at the top of a ladder."""
    rule = make_rule(rule)
    g = activation(g)
    K, M = np.shape(R)[-2:]
    noise = bool(np.any(np.asarray(sigma) != 0))
    quad = quadrature_rule(quadrature, K + M + int(noise), g)
    args = (Q, R, T, S, U, P, v, v_star, b)
    if isinstance(quad, QMC):
        terms, err = numerical_terms(rule, *args, sigma=sigma, sigma_F=sigma_F, g=g, quadrature=quad, return_error=True)
        return 3.0 * max(float(np.max(e)) for e in err) / max(max(float(np.max(np.abs(t))) for t in terms), 1e-300)
    fine, factor = _finer(quad, g)
    if fine is None:
        return None
    compiled = _compiled_available(rule, g, K, M)
    a = _terms_any(rule, args, quad, g, sigma, sigma_F, compiled)
    c = _terms_any(rule, args, fine, g, sigma, sigma_F, compiled)
    scale = max(max(float(np.max(np.abs(t))) for t in c), 1e-300)
    return factor * max(float(np.max(np.abs(x - y))) for x, y in zip(a, c)) / scale


def _check_tol(tol, where: str | None = None) -> float:
    if isinstance(tol, bool) or not (isinstance(tol, (int, float, np.floating)) and 0 < float(tol) < 1):
        raise ValueError(f"{where + ': ' if where else ''}expectation_tol: expected a number in (0, 1), got {tol!r}")
    return float(tol)


def accuracy_target(expectation_tol, where: str):
    """(tol, max_cost) of a run's accuracy request (theory.integrate, theory.sweep): None, the default, is
    (DEFAULT_EXPECTATION_TOL, DEFAULT_COST_FACTOR); a number in (0, 1) is (it, None: the whole ladder)."""
    if expectation_tol is None:
        return DEFAULT_EXPECTATION_TOL, DEFAULT_COST_FACTOR
    return _check_tol(expectation_tol, where), None


def _at(state, hyper) -> tuple[tuple, dict]:
    """The order parameters of an OrderParams and the keywords of a HyperParams, as the functions here take them."""
    s = state
    return (s.Q, s.R, s.T, s.S, s.U, s.P, s.v, s.v_star, s.b), {
        "sigma": hyper.sigma,
        "sigma_F": hyper.sigma_F,
        "g": hyper.g,
    }


def select_at(rule, state, hyper, **options):
    """:func:`select_quadrature` at an OrderParams with a HyperParams' sigma, sigma_F and g."""
    args, kw = _at(state, hyper)
    return select_quadrature(rule, *args, **kw, **options)


def error_at(rule, state, hyper, quadrature):
    """:func:`expectation_error` at an OrderParams with a HyperParams' sigma, sigma_F and g."""
    args, kw = _at(state, hyper)
    return expectation_error(rule, *args, **kw, quadrature=quadrature)


def select_quadrature(rule, Q, R, T, S, U, P, v, v_star, b=None, *, sigma=0.0, sigma_F=1.0, g="erf",
                      tol=DEFAULT_EXPECTATION_TOL, start=None, max_cost=None):
    """(quadrature, estimate): the first rule of the default family's ladder (from :func:`default_quadrature` with
    the default cost limit, from the ladder's bottom, GaussHermite(12) or KinkAware(16), when ``max_cost`` is None
    (an explicit tolerance: a looser one then costs fewer nodes), or from ``start``; upwards: GaussHermite(n), the
    spherical KinkAware(n), QMC(n) with n x 4) whose error estimate (:func:`expectation_error`, an embedded pair) at
    this state is below ``tol``, the largest absolute error of any term relative to the largest. At the ladder's
    top, its finest rule with the last estimate. ``max_cost``:
    climb only to rules with at most this many times the nodes of the default rule; when none of them meets
    ``tol``, the finest of them (GaussHermite, KinkAware, SparseGrid: their errors fall fast with n) or the
    first (QMC: four times the points only halve its error)."""
    _check_tol(tol)
    rule = make_rule(rule)
    g = activation(g)
    K, M = np.shape(R)[-2:]
    noise = bool(np.any(np.asarray(sigma) != 0))
    d = K + M + int(noise)
    base = quadrature_rule(None, d, g)
    if start is not None:
        quad = start
    else:  # the default tolerance starts at the default rule, an explicit one at the ladder's bottom
        quad = base if max_cost is not None else _cheapest(base)
    budget = None if max_cost is None else max_cost * _cost(base, K + M, noise)
    args = (Q, R, T, S, U, P, v, v_star, b)
    last, first = None, None
    while True:
        est = expectation_error(rule, *args, sigma=sigma, sigma_F=sigma_F, g=g, quadrature=quad)
        if est is None:
            return quad, last
        first = (quad, est) if first is None else first
        if est < tol:
            return quad, est
        last = est
        nxt = _next_rung(quad, g)
        if budget is not None and nxt is not None and _cost(nxt, K + M, noise) > budget:
            # the cost limit cannot meet tol: a deterministic rule keeps its finest affordable member (its error
            # falls fast with n); QMC its first (4x the points halve its error only: not worth the cost)
            return first if isinstance(quad, QMC) else (quad, est)
        if nxt is None or _too_big(nxt, d):
            return quad, est
        quad = nxt


def _cheapest(quad):
    """The bottom of quad's ladder (GaussHermite(12), KinkAware(16)): where an explicit ``expectation_tol`` starts
    climbing, so that a looser tolerance than the default's costs fewer nodes (the default rule is only where the
    default tolerance starts)."""
    if isinstance(quad, GaussHermite) and quad.n > _GH_LADDER[0]:
        return dataclasses.replace(quad, n=_GH_LADDER[0], n_noise=None if quad.n_noise is None else
                                   max(quad.n_noise - quad.n + _GH_LADDER[0], 1))
    if isinstance(quad, KinkAware) and quad.n > _KINK_LADDER[0]:
        return dataclasses.replace(quad, n=_KINK_LADDER[0])
    return quad


def _cost(quad, n: int, noise: bool) -> float:
    """The number of evaluation points of a rule for n fields (KinkAware: its outer nodes times the pieces'
    points; QMC: points times scrambles)."""
    if isinstance(quad, QMC):
        return float(quad.n * quad.scrambles)
    if isinstance(quad, KinkAware):
        return float(len(quad.nodes(n, noise)[1]) * 3 * (n + 1))
    if isinstance(quad, GaussHermite) and quad.n ** (n + int(noise)) > 4e6:
        return float(quad.n ** (n + int(noise)))
    return float(len(quad.nodes(n, noise)[1]))


def accuracy_note(est, tol) -> str | None:
    """The AccuracyWarning text when an estimate is above the tolerance (None when met or unknown)."""
    if est is None or est <= tol:
        return None
    return (f"numerical expectations estimated at {est:.2g} of the largest ODE term, above expectation_tol={tol:g} "
            f"(no rule within the default cost, {DEFAULT_COST_FACTOR:g} x the default rule's nodes, meets it); pass "
            "expectation_tol= explicitly to climb further, or quadrature= for a finer rule")


def _too_big(quad, d):
    """Whether a rule has more than 2e6 nodes (the ladder stops there)."""
    if isinstance(quad, GaussHermite):
        return quad.n ** d > 4e6
    if isinstance(quad, KinkAware):
        return quad.outer == "sphere" and quad.radial * 2 * quad.n ** max(d - 2, 1) > 2e6
    if isinstance(quad, QMC):
        return quad.n * quad.scrambles > 2**21
    return False
