"""Shared pieces of the conformance suite (issue 21): the cases, the views, the one-sample definition.

Cases. Every registered rule (:func:`theory.registered_rules`) with every combination of its variants,
plus the twin rules defined here (a traceable user rule and its untraceable copy), crossed with the
activations erf, relu, linear, tanh and the options of :data:`OPTIONS` (noise, weight decay, batch,
feedback mirroring, a learning-rate schedule, a frozen second layer).

Views of the right-hand side (:func:`rhs_views`), each forced through :class:`theory.Dynamics`:

    closed        the closed forms in numpy          (Dynamics.closed_form, use_jit=False)
    closed-jit    the closed forms compiled          (Dynamics.compiled() with quadrature None)
    numerical     numerical expectations, numpy assembly (quadrature=..., use_jit=False; KinkAware's
                  expectations are compiled, their assembly numpy)
    numerical-jit the compiled numerical right-hand side (quadrature=..., Dynamics.compiled())

The one-sample definition (:func:`definition_step`) is THEORY.md section 3 written out in numpy on
explicit D-dimensional weights, from :meth:`theory.Rule.local_update` and nothing else of the package:

    w_k <- w_k - (eta / sqrt D) delta_k xp - (eta kappa / D) w_k,   xp = x + alpha f / sqrt D
    v_k <- v_k - (eta_v / D) e_out h_k          (averaged over the B samples of a mini-batch)
    f   <- (1 - eta_F kappa_F / D) f + (eta_F / sqrt D) yhat(xi) xi   (mirroring, after the step;
                                                                        then |f| restored with mirror_norm)
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import torch

import theory
from tests.helpers import random_state
from theory.expectations.numerical import GaussHermite, KinkAware
from theory.rules._facts import check_declaration

ACTIVATIONS = ("erf", "relu", "linear", "tanh")

#: the options of the conformance cross product (HyperParams fields); t = T_EVAL for the schedule
OPTIONS = {
    "plain": dict(eta=0.7, eta_v=0.4, sigma_F=0.9),
    "noise": dict(eta=0.7, eta_v=0.4, sigma=0.3, sigma_F=-0.8),
    "decay": dict(eta=0.7, eta_v=0.4, weight_decay=0.15, sigma_F=0.9),
    "batch": dict(eta=0.7, eta_v=0.4, batch=3, sigma_F=0.9),
    "mirror": dict(eta=0.7, eta_v=0.4, eta_F=0.5, kappa_F=0.2, sigma_F=0.9),
    "mirror-norm": dict(eta=0.7, eta_v=0.4, eta_F=0.5, mirror_norm=True, sigma_F=0.9),
    "schedule": dict(eta=theory.PowerLaw(0.8, 5.0, 1.5), eta_v=0.4, sigma_F=0.9),
    "frozen": dict(eta=0.7, train_second_layer=False, sigma_F=0.9),
}
#: the time at which right-hand sides and steps are evaluated (a schedule's rate differs from eta(0) there)
T_EVAL = 2.0


def rate_by_hand(r, t):
    """A rate at time t, written from the schedule's definition (PowerLaw: eta0 / (1 + t / t0)^p)."""
    if isinstance(r, theory.PowerLaw):
        return r.eta0 / (1.0 + t / r.t0) ** r.p
    assert isinstance(r, (int, float)), f"rate_by_hand knows numbers and PowerLaw, got {r!r}"
    return float(r)


# ---------------------------------------------------------------------------------------- twin rules
def _called_directly(name):
    """numpy's or torch's function ``name`` for arrays and tensors, called directly (not through x.xp): the
    symbolic tracer cannot follow it."""

    def f(a):
        return getattr(torch, name)(a) if torch.is_tensor(a) else getattr(np, name)(a)

    return f


_sign_untraceable, _tanh_untraceable = _called_directly("sign"), _called_directly("tanh")


class SignFeedback(theory.Rule):
    """Sign-symmetric feedback written with x.xp (traceable): delta_k = sign(v_k) g'(lambda_k) e."""

    name = "conformance-sign-feedback"
    closed_form = "feedback"

    def feedback(self, x):
        return x.xp.sign(x.v)

    def update(self, x):
        return theory.LocalUpdate(delta=self.feedback(x) * x.dg(x.lam) * x.e[..., None])


class SignFeedbackUntraceable(theory.Rule):
    """The same rule with np.sign / torch.sign called directly (untraceable: no compiled view), declaring nothing."""

    name = "conformance-sign-feedback-untraceable"

    def feedback(self, x):
        return _sign_untraceable(x.v)

    def update(self, x):
        return theory.LocalUpdate(delta=self.feedback(x) * x.dg(x.lam) * x.e[..., None])


class ModulatedActivity(theory.Rule):
    """A rule outside the closed-form family, traceable: delta_k = g(lambda_k) tanh(e), xp = x - 0.5 F e."""

    name = "conformance-modulated-activity"
    reads = ("S",)

    def update(self, x):
        return theory.LocalUpdate(delta=x.g_lam * x.xp.tanh(x.e)[..., None], alpha=-0.5 * x.sigma_F * x.e)


class ModulatedActivityUntraceable(theory.Rule):
    """Its untraceable twin (np.tanh called directly)."""

    name = "conformance-modulated-activity-untraceable"
    reads = ("S",)

    def update(self, x):
        return theory.LocalUpdate(delta=x.g_lam * _tanh_untraceable(x.e)[..., None], alpha=-0.5 * x.sigma_F * x.e)


TWINS = [(SignFeedback, SignFeedbackUntraceable), (ModulatedActivity, ModulatedActivityUntraceable)]
# The twins are not registered: registering is global, and other test modules that run every registered
# rule (tests/theory/rules/test_rule_api.py needs a compiled view of each) would pick up the untraceable ones.
# SignFeedback's closed_form declaration is checked here as register_rule would check it.
check_declaration(SignFeedback)
UNTRACEABLE = {c.name for _, c in TWINS}
#: for the tests that run the untraceable twins: their one-time UntraceableRuleWarning is expected
IGNORE_UNTRACEABLE = "ignore::theory.rules._facts.UntraceableRuleWarning"


def rule_cases():
    """Every registered rule with every combination of its variants, and the twins, as rule instances."""
    out = []
    for name, cls in theory.registered_rules().items():
        choices = {k: f.metadata["variant"].choices for k, f in cls.options().items() if "variant" in f.metadata}
        for combo in itertools.product(*choices.values()):
            out.append(theory.make_rule(name, **dict(zip(choices, combo))))
    return out + [cls() for pair in TWINS for cls in pair]


RULES = rule_cases()


def rule_id(rule) -> str:
    return rule.key


def closed_family(rule, K: int = 2, M: int = 1) -> bool:
    """Whether the rule is in the closed-form family (derived from its traced update, theory.rules._facts; then delta
    is of degree 1 in zeta and 3 noise nodes integrate every term exactly). The views are chosen by Dynamics."""
    from theory.rules._facts import rule_facts

    return rule_facts(rule, K, M).closed_form


# --------------------------------------------------------------------------------------- RHS views
def state_for(seed: int, K: int = 2, M: int = 1):
    """A random O(1) state (tests/conftest.random_state) from a seeded generator."""
    return random_state(np.random.default_rng(1000 + seed), K, M)


def hyper_for(option: str, g: str) -> theory.HyperParams:
    return theory.HyperParams(g=g, **OPTIONS[option])


def fine_quadrature(rule, g: str, noise: bool, K: int = 2, M: int = 1):
    """An explicit fine rule per activation (not the defaults, which other work changes): relu KinkAware(96)
    (KinkAware(32, outer="sphere") on the numpy line rule for a rule without the compiled kink-aware kernel:
    untraceable, or with integrands that are not piecewise quadratic); linear GaussHermite(4) for the closed-form family
    (exact for its quadratics); otherwise GaussHermite(48) for the closed-form family (3 noise nodes integrate
    it exactly: its terms are polynomials of degree 2 in zeta) and GaussHermite(32) ((24, 16 noise nodes)
    with noise) for the others."""
    closed = closed_family(rule, K, M)
    if g == "relu":
        return KinkAware(96) if kink_kernel(rule, K, M) else KinkAware(32, outer="sphere")
    if g == "linear" and closed:
        return GaussHermite(4)
    if closed:
        return GaussHermite(48, n_noise=3)
    return GaussHermite(24, n_noise=16) if noise else GaussHermite(32)


def finer_quadrature(quad):
    """The reference against which a fine rule's accuracy is measured (where no closed form exists)."""
    if isinstance(quad, KinkAware):
        return KinkAware(128, prune=1e-14)
    n_noise = quad.n_noise if quad.n_noise in (None, 3) else quad.n_noise + 8
    return GaussHermite(quad.n + 16, n_noise=n_noise)


def stated(rule, g: str, quad) -> float:
    """The stated accuracy of the fine rule ``quad`` (:func:`fine_quadrature`), relative to the largest term
    of the right-hand side, from theory.expectations.numerical's docstring: KinkAware(48) 4e-6 .. 1e-4 (so at 96 at
    least
    as good); relu GaussHermite(32) ~1e-2 (its 1/n convergence: at 48 at least as good); tanh GaussHermite(20)
    1e-3 (pepita) .. 1e-2 (bp); erf bp/fa/afa GaussHermite(32) ~3e-6; erf pepita GaussHermite(20) 3e-7 .. 1e-5;
    linear g with GaussHermite(4): exact (rounding). The same figures for user rules of the same family."""
    if isinstance(quad, KinkAware):
        return 1e-4
    if g == "relu":
        return 1e-2
    if g == "tanh":
        return 1e-2
    if g == "linear" and quad.n == 4:
        return 1e-10
    return 3e-6 if quad.n_noise == 3 else 1e-5


def builtin(rule) -> bool:
    """A rule of the package (theory.rules), whose numerical accuracy the docstrings state."""
    return type(rule).__module__.startswith("theory.rules")


#: two implementations of one view on the same nodes (numpy and numba): rounding only
SAME_NODES = 1e-11


def kink_kernel(rule, K, M) -> bool:
    """Whether the compiled kink-aware kernel serves the rule (derived: theory.rules._facts.RuleFacts.kinks_exact)."""
    return compiled_ok(rule, K, M) and theory.compiled_rule(rule, K, M).numerical_terms_kinks is not None


def compiled_ok(rule, K, M) -> bool:
    from theory._codegen.rule import HAVE_NUMBA

    return HAVE_NUMBA and theory.compiled_rule(rule, K, M).ok


def dynamics(st, rule, hyper, quadrature=None, use_jit=True):
    dyn = theory.make_dynamics(st, rule, hyper, quadrature=quadrature)
    return dyn if use_jit else dataclasses.replace(dyn, use_jit=False)


def state_vector(st, hyper):
    return st.to_vector(mirror=hyper.mirroring)


def rhs_views(st, rule, hyper, quadrature):
    """{view name: dy/dt at (st, T_EVAL)} for every view of the right-hand side that applies (module docstring)."""
    y, t = state_vector(st, hyper), T_EVAL
    out = {}
    base = dynamics(st, rule, hyper)
    if base.closed_form:
        out["closed"] = dataclasses.replace(base, use_jit=False).rhs(y, t)
        if base.compiled() is not None:
            out["closed-jit"] = base.rhs(y, t)
    num = dynamics(st, rule, hyper, quadrature)
    out["numerical"] = dataclasses.replace(num, use_jit=False).rhs(y, t)
    if num.compiled() is not None:
        out["numerical-jit"] = num.rhs(y, t)
    return out


def rel_err(a, b) -> float:
    """max |a - b| relative to the largest term of b (at least 1e-300)."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-300))


def assert_agree(views: dict, pairs, label: str):
    """Each (view a, view b, tolerance) in ``pairs`` that both exist agrees within the tolerance (relative
    to the largest term); returns the measured errors."""
    errs = {}
    for a, b, tol in pairs:
        if a in views and b in views:
            e = rel_err(views[a], views[b])
            errs[(a, b)] = e
            assert e <= tol, f"{label}: {a} vs {b} differ by {e:.3g} of the largest term (stated {tol:.1g})"
    return errs


def view_pairs(rule, g: str, quad):
    """(view, view, tolerance) of the conformance check for ``rule``, activation g and fine rule ``quad``."""
    tol = stated(rule, g, quad)
    return [("closed", "closed-jit", SAME_NODES), ("numerical", "numerical-jit", SAME_NODES),
            ("numerical", "closed", tol), ("numerical-jit", "closed-jit", tol)]


# ------------------------------------------------------------------------ the one-sample definition
@dataclasses.dataclass
class Net:
    """Explicit weights (numpy float64): W (K, D), W_star (M, D), v (K,), v_star (M,), f (D,), b (K,)."""

    W: np.ndarray
    W_star: np.ndarray
    v: np.ndarray
    v_star: np.ndarray
    f: np.ndarray
    b: np.ndarray

    @property
    def D(self):
        return self.W.shape[1]

    def state(self) -> theory.OrderParams:
        return theory.state_from_weights(self.W, self.W_star, self.v, self.v_star, self.f, self.b)

    def copy(self) -> Net:
        return Net(*(a.copy() for a in dataclasses.astuple(self)))


def random_net(seed: int, K=3, M=2, D=40) -> Net:
    rng = np.random.default_rng(seed)
    return Net(W=rng.standard_normal((K, D)), W_star=rng.standard_normal((M, D)), v=rng.standard_normal(K),
               v_star=rng.standard_normal(M), f=rng.standard_normal(D), b=rng.standard_normal(K))


def definition_step(net: Net, rule, hyper: theory.HyperParams, X, zeta, t, xi=None) -> Net:
    """One step of THEORY.md section 3 (module docstring) on samples X (B, D), noise zeta (B,), and the
    mirroring input xi (D,) when f learns; every rate read by :func:`rate_by_hand`."""
    D, B = net.D, X.shape[0]
    sq = math.sqrt(D)
    eta, eta_v = rate_by_hand(hyper.eta, t), rate_by_hand(hyper.eta_v, t)
    lam, nu = X @ net.W.T / sq, X @ net.W_star.T / sq
    S = net.W @ net.f / D
    up = rule.local_update(lam, nu, zeta, v=net.v, v_star=net.v_star, S=S, b=net.b, sigma=hyper.sigma,
                           sigma_F=hyper.sigma_F, g=hyper.g)
    K = net.W.shape[0]
    delta = np.broadcast_to(np.asarray(up.delta, float), (B, K))
    alpha = np.broadcast_to(np.asarray(up.alpha, float), (B,))
    e_out = np.broadcast_to(np.asarray(up.e_out, float), (B,))
    h = np.broadcast_to(np.asarray(up.h, float), (B, K))
    xp = X + alpha[:, None] * net.f / sq
    new = net.copy()
    new.W = net.W - (eta / sq) * (delta.T @ xp) / B - (eta * hyper.weight_decay / D) * net.W
    if hyper.train_second_layer:
        new.v = net.v - (eta_v / D) * (e_out[:, None] * h).sum(0) / B
    eta_F = rate_by_hand(hyper.eta_F, t)
    if eta_F > 0:
        yhat = new.v @ hyper.g.g(new.W @ xi / sq)
        f = (1.0 - eta_F * hyper.kappa_F / D) * net.f + (eta_F / sq) * yhat * xi
        if hyper.mirror_norm:
            f = f * math.sqrt((net.f @ net.f) / (f @ f))
        new.f = f
    return new


# ------------------------------------------------------------------ inputs from an engine's draws
def gram_vectors(net: Net) -> np.ndarray:
    """(D, r) the vectors whose Gram matrix the reduced engine tracks, in its order (w*, f, w)."""
    return np.concatenate([net.W_star, net.f[None], net.W]).T


def inputs_from_draws(net: Net, A, eps, L, rng):
    """Inputs X (B, D) whose fields (nu, phi, lambda) are A eps_s and whose parts orthogonal to the r
    vectors have Gram matrix L L^T: the D-dimensional samples a reduced-engine step with draws (eps, L)
    stands for (simulate.engines.reduced.step module docstring). eps (B, r); L (B, B) lower triangular."""
    V = gram_vectors(net)
    D, r = V.shape
    E = V @ np.linalg.inv(A).T / math.sqrt(D)  # orthonormal columns with V^T E / sqrt D = A
    assert np.allclose(E.T @ E, np.eye(r), atol=1e-9), "square root does not match the Gram matrix"
    B = eps.shape[0]
    N = rng.standard_normal((D, B))
    N -= E @ (E.T @ N)
    N, _ = np.linalg.qr(N - E @ (E.T @ N))
    return eps @ E.T + L @ N.T


def engine_square_root(step, Q, R, S, U=None, P=None):
    """The r x r matrix A (rows (nu, phi, lambda)) with z = A eps of a ReducedStep's fields (U, P given:
    the full Cholesky of mirroring, ReducedStep.fields_of), read off by applying it to unit vectors."""
    r = step.M + 1 + Q.shape[-1]
    E = torch.eye(r, dtype=torch.float64)
    ex = lambda a: a.expand((r,) + a.shape[1:])  # noqa: E731
    if U is None:
        lam, nu, phi = step.fields(ex(Q), ex(R), ex(S), E)
    else:
        lam, nu, phi = step.fields_of(ex(Q), ex(R), ex(S), ex(U), ex(P), E)
    return torch.cat([nu, phi[:, None], lam], -1).T.numpy()


def bartlett(gam, offd):
    """The lower Bartlett factor L (B, B) from its diagonal chi^2 / 2 variables gam (B,) and off-diagonal normals."""
    B = len(gam)
    L = np.diag(np.sqrt(2.0 * np.asarray(gam, float)))
    for i in range(B):
        for j in range(i):
            L[i, j] = offd[i * (i - 1) // 2 + j]
    return L


def assert_state_equal(got: dict, want: theory.OrderParams, before: theory.OrderParams, label: str, rtol=1e-10):
    """The engine's new order parameters equal those measured from the hand-updated weights, to ``rtol``
    of the step's increment (the increments are O(1/D); the check is vacuous if they all vanish)."""
    for name, a in got.items():
        b, b0 = np.asarray(getattr(want, name)), np.asarray(getattr(before, name))
        inc = np.abs(b - b0).max()
        tol = rtol * max(inc, 1e-12) + 1e-14 * max(1.0, np.abs(b).max())
        err = np.abs(np.asarray(a) - b).max()
        assert err <= tol, f"{label}: {name} off by {err:.3g} (increment {inc:.3g})"
