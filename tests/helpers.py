"""Helpers the test modules share (states, weights, statistical criteria); fixtures are in conftest.py."""

import math

import numpy as np
import scipy.stats
import sympy
import torch

import simulate
import theory
from simulate.engines.reduced import kernel as _reduced_kernel
from simulate.engines.reduced.step import ReducedStep


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


# (moved from test_numerical)
def args(st):
    return (st.Q, st.R, st.T, st.S, st.U, st.P, st.v, st.v_star, st.b)


# (moved from test_numerical)
def maxabs(a, b):
    return max(np.abs(x - y).max() for x, y in zip(a, b))


# (moved from test_numerical)
def linear_closed_forms(rule, K, M, sigma, sigma_F):
    """X, DD, EH for linear g as polynomials in the order parameters, derived with sympy.

    The one-sample update is Rule.local_update itself, run on sympy symbols; for linear g every
    integrand is a quadratic form in (lambda, nu, phi, zeta), whose expectation replaces
    z_a z_b by Omega_ab, zeta^2 by 1 and cross terms with zeta by 0 (Isserlis at order two).
    """
    n = K + M
    Om = sympy.Matrix(n + 1, n + 1, lambda i, j: sympy.Symbol(f"O{min(i, j)}_{max(i, j)}"))
    v = np.array(sympy.symbols(f"v0:{K}"), dtype=object)
    vs = np.array(sympy.symbols(f"vs0:{M}"), dtype=object)
    b = np.array(sympy.symbols(f"b0:{K}"), dtype=object)
    z = np.array(sympy.symbols(f"z0:{n + 1}"), dtype=object)
    zeta = sympy.Symbol("zeta")
    S = np.array([Om[k, n] for k in range(K)], dtype=object)
    Ov = np.array([Om[u, n] for u in range(n + 1)], dtype=object)
    up = rule.local_update(z[None, :K], z[None, K:n], np.array([zeta], dtype=object), v=v, v_star=vs, S=S, b=b,
                           sigma=sigma, sigma_F=sigma_F, g="linear")
    xi = z + up.alpha[0] * Ov

    def expect(expr):
        poly = sympy.Poly(sympy.expand(expr), *z, zeta)
        out = 0
        for mon, coef in poly.terms():
            a = [i for i, p in enumerate(mon) for _ in range(p)]
            if len(a) == 0:
                out += coef
            elif len(a) == 2 and n + 1 not in a:
                out += coef * Om[a[0], a[1]]
            elif a == [n + 1, n + 1]:
                out += coef
            else:  # degree one, or zeta times a field: mean zero
                assert len(a) <= 2, "linear g must give quadratic integrands"
        return out

    X = [[expect(up.delta[0, k] * xi[u]) for u in range(n + 1)] for k in range(K)]
    DD = [[expect(up.delta[0, k] * up.delta[0, l]) for l in range(K)] for k in range(K)]
    EH = [expect(up.e_out[0] * up.h[0, k]) for k in range(K)]
    syms = [Om[i, j] for i in range(n + 1) for j in range(i, n + 1)] + list(v) + list(vs) + list(b)
    f = sympy.lambdify(syms, (X, DD, EH), "numpy")

    def evaluate(st):
        om = st.omega
        vals = [om[i, j] for i in range(n + 1) for j in range(i, n + 1)] + list(st.v) + list(st.v_star) + list(st.b)
        return tuple(np.array(a, dtype=float) for a in f(*vals))

    return evaluate


# (moved from test_compare)
REPLICAS = 24


# (moved from test_compare)
T_REC = np.array([0.0, 0.5, 1.0, 2.0, 3.0])


# (moved from test_compare)
FAMILY_ALPHA = 1e-4


# (moved from test_compare)
def _deviations(res: simulate.SimulationResult, trajs):
    """Per-replica deviations (R, n, p) of (Q, R, S, v, eg) from the ODE(s)."""
    def flat(obj, lead):
        parts = [np.reshape(np.asarray(getattr(obj, k)), lead + (-1,)) for k in ("Q", "R", "S", "v")]
        return np.concatenate(parts + [np.reshape(obj.eg, lead + (1,))], axis=-1)

    sim = flat(res, res.Q.shape[:2])
    if len(trajs) == 1:
        ode = flat(trajs[0], trajs[0].Q.shape[:1])[None]
    else:
        ode = np.stack([flat(tr, tr.Q.shape[:1]) for tr in trajs])
    n = min(sim.shape[1], ode.shape[1])
    return sim[:, :n] - ode[:, :n]


# (moved from test_compare)
def _max_t(dev):
    """max over times > 0 and parameters of |mean(d)| / sem(d), and the Bonferroni t threshold."""
    d = dev[:, 1:]  # t = 0 is the shared measured initial state: deviation 0
    R = d.shape[0]
    mean, sem = d.mean(0), d.std(0, ddof=1) / np.sqrt(R)
    live = sem > 0  # e.g. v when the second layer is frozen: identical in sim and ODE
    tstat = np.abs(mean[live]) / sem[live]
    thresh = scipy.stats.t.ppf(1 - FAMILY_ALPHA / (2 * live.sum()), df=R - 1)
    return float(tstat.max()), float(thresh)


# (moved from test_reduced)
def _weights(K, M, D, seed):
    rng = np.random.default_rng(seed)
    return dict(W=rng.standard_normal((K, D)), W_star=rng.standard_normal((M, D)), f=rng.standard_normal(D),
                v=rng.standard_normal(K), v_star=np.ones(M), b=rng.standard_normal(K))


# (moved from test_reduced)
def _square_root(step, Q, R, S):
    """The r x r matrix A with z = A eps used by the step, rows ordered (nu, phi, lambda)."""
    r = step.M + 1 + Q.shape[-1]
    E = torch.eye(r, dtype=Q.dtype)
    lam, nu, phi = step.fields(Q.expand(r, -1, -1), R.expand(r, -1, -1), S.expand(r, -1), E)
    return torch.cat([nu, phi[:, None], lam], -1).T.numpy()  # column j = A e_j


# (moved from test_reduced)
ACTIVATIONS = ["erf", "tanh", "relu", "linear"]


# (moved from test_reduced)
def _per_replica_state(K, M, D, R_, seed):
    """Per-replica (Q, R, S, v) from random weights, and shared constants, as an object for reduced_chain."""
    import types

    rng = np.random.default_rng(seed)
    W, W_star, f = rng.standard_normal((R_, K, D)), rng.standard_normal((M, D)), rng.standard_normal(D)
    return types.SimpleNamespace(
        Q=W @ W.transpose(0, 2, 1) / D,
        R=W @ W_star.T / D,
        S=W @ f / D,
        v=rng.standard_normal((R_, K)),
        T=W_star @ W_star.T / D,
        U=W_star @ f / D,
        P=f @ f / D,
        v_star=rng.standard_normal(M),
        b=rng.standard_normal(K),
    )


# (moved from test_reduced)
def _kernel_and_torch_step(state, rule, *, D, g, R_, seed=4, **cfg):
    """One step of the numba chain and of ReducedStep with the same draws: the (Q, R, S, v) increments of each."""
    from simulate.engines.reduced.backends import _NumbaChain

    K, M = state.R.shape[-2:]
    r = K + M + 1
    consts = dict(D=D, T=state.T, U=state.U, P=state.P, v_star=state.v_star, b=state.b)
    hyper = theory.HyperParams(g=g, **cfg)
    x0 = [np.broadcast_to(np.asarray(getattr(state, k), dtype=float), (R_,) + sh).copy()
          for k, sh in (("Q", (K, K)), ("R", (K, M)), ("S", (K,)), ("v", (K,)))]
    chain = _NumbaChain(rule, hyper, [a.copy() for a in x0], replicas=R_, r=r, seed=seed, threads=2, **consts)
    chain.advance(1)
    mine = [a - a0 for a, a0 in zip(chain.state(), x0)]
    chain.close()
    # the chain's draws, again, from a sampler with the same seed
    eps, gam, zeta = _reduced_kernel.ChunkSampler(seed, R_, r, D, noise=cfg["sigma"] != 0).draw(1)[:3]
    # the same draws, replica by replica, for the torch step: replica j*B + t reads [j, 0, ..., t]
    per_replica = lambda a: np.moveaxis(a[:, 0], -1, 1).reshape((-1,) + a.shape[2:-1])[:R_]  # noqa: E731
    tt = lambda a: torch.as_tensor(np.ascontiguousarray(a))  # noqa: E731
    step = ReducedStep(rule, hyper, device="cpu", dtype=torch.float64, **consts)
    z = per_replica(zeta) if zeta.shape[-1] else np.zeros(R_)
    ref = step(*(tt(a) for a in x0), tt(per_replica(eps)), tt(2.0 * per_replica(gam)), tt(z))
    return mine, [a.numpy() - a0 for a, a0 in zip(ref, x0)]


# (moved from test_reduced)
STEP_CONFIGS = [dict(eta=0.7, eta_v=0.4, sigma=0.3, sigma_F=-0.8, weight_decay=0.2, train_second_layer=True),
                dict(eta=1.3, eta_v=1.3, sigma=0.0, sigma_F=1.2, weight_decay=0.0, train_second_layer=False)]


# (moved from test_reduced)
def _assert_same_law(full, red, replicas=300):
    """The final eg and the first two entries of Q, R, S, v of two results agree in law: a two-sample KS test
    (Bonferroni over the quantities) and the means within 4.5 standard errors."""
    quantities = [("eg", full.eg[:, -1], red.eg[:, -1])] + [
        (
            f"{k}{j}",
            getattr(full, k)[:, -1].reshape(replicas, -1)[:, j],
            getattr(red, k)[:, -1].reshape(replicas, -1)[:, j],
        )
        for k in ("Q", "R", "S", "v")
        for j in range(2)
    ]
    for label, a, b in quantities:
        assert scipy.stats.ks_2samp(a, b).pvalue > 1e-3 / len(quantities), label
        se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
        assert abs(a.mean() - b.mean()) < 4.5 * se, label


# (moved from test_rule_api)
def _explicit_step(rule, w, x, zeta, hyper):
    """One D-dimensional step written out from THEORY.md section 3 with the rule's local_update (numpy)."""
    D = x.shape[-1]
    W, Ws, f, v, vs, b = (w[k] for k in ("W", "W_star", "f", "v", "v_star", "b"))
    lam, nu = W @ x / math.sqrt(D), Ws @ x / math.sqrt(D)
    up = rule.local_update(lam, nu, np.float64(zeta), v=v, v_star=vs, S=W @ f / D, b=b, sigma=hyper.sigma,
                           sigma_F=hyper.sigma_F, g=hyper.g)
    xp = x + up.alpha * f / math.sqrt(D)
    W1 = (1 - hyper.eta * hyper.weight_decay / D) * W - (hyper.eta / math.sqrt(D)) * np.outer(up.delta, xp)
    v1 = v - (hyper.eta_v / D) * up.e_out * up.h if hyper.train_second_layer else v
    return W1, v1
