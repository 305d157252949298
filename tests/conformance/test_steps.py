"""Conformance 2: one step of every simulation engine equals the one-sample definition (THEORY.md section 3).

For every rule and variant (helpers.RULES), activation and option (helpers.OPTIONS: noise, weight decay, a
batch of 3, feedback mirroring with and without the norm kept, a power-law schedule evaluated at t = 2, a
frozen second layer), one step of

- the full D-dimensional engine (simulate.engines.full.FullStep, float64) on given inputs x,
- the reduced exact sampler's torch step (simulate.engines.reduced.step.ReducedStep) on given draws (eps, chi^2 or the
  Wishart factor, zeta), and its mirroring step,
- the reduced sampler's numba kernel (simulate.engines.reduced.kernel via _NumbaChain), whose draws are recomputed
  by ChunkSampler.draw (the kernel draws inside),

equals :func:`helpers.definition_step` (numpy, written from Rule.local_update only) applied to the same
samples: for the reduced engines the D-dimensional inputs are rebuilt from the draws
(:func:`helpers.inputs_from_draws`: fields A eps, orthogonal parts with Gram matrix L L^T), so the comparison
is exact, sample by sample (to rounding: 1e-10 of the step's increment), not in distribution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import theory
from simulate.engines.full import FullStep
from simulate.engines.reduced.backends import _NumbaChain
from simulate.engines.reduced.kernel import ChunkSampler
from simulate.engines.reduced.step import ReducedStep

from .helpers import (
    ACTIVATIONS,
    IGNORE_UNTRACEABLE,
    OPTIONS,
    RULES,
    T_EVAL,
    UNTRACEABLE,
    assert_state_equal,
    bartlett,
    compiled_ok,
    definition_step,
    engine_square_root,
    gram_vectors,
    hyper_for,
    inputs_from_draws,
    random_net,
    rule_id,
)

K, M, D = 3, 2, 40
R_FULL = 2  # replicas of the full engine (each its own inputs)
STEP = round(T_EVAL * D)  # the step index: t = step / D = T_EVAL


def t64(a):
    return torch.as_tensor(np.array(a, dtype=np.float64))


def _draws(rng, B, r, noise):
    """Draws of one reduced step: eps (B, r), the Bartlett factor L (B, B) of the orthogonal parts' Gram
    matrix (B = 1: sqrt of a chi^2_{D-r}), zeta (B,)."""
    eps = rng.standard_normal((B, r))
    gam = rng.gamma(0.5 * (D - r - np.arange(B)))
    offd = rng.standard_normal(B * (B - 1) // 2)
    zeta = rng.standard_normal(B) if noise else np.zeros(B)
    return eps, bartlett(gam, offd), zeta


# ------------------------------------------------------------------------------------------- engines
def full_step(net, rule, hyper, X, zeta, xi):
    """The full engine's step on inputs X (R_, B, D), zeta (R_, B), xi (R_, D): new (W, v, f) per replica."""
    R_, B = X.shape[:2]
    W = t64(np.broadcast_to(net.W, (R_,) + net.W.shape)).clone()
    Wt = W.transpose(1, 2)
    v = t64(np.broadcast_to(net.v, (R_, K))).clone()
    f = t64(np.broadcast_to(net.f, (R_, D))).clone() if hyper.mirroring else t64(net.f)
    step = FullStep(rule, hyper, v_star=t64(net.v_star), b=t64(net.b), f=f, K=K, M=M)
    xs = t64(X / math.sqrt(D))
    Ws = t64(net.W_star)
    if B == 1:
        xs, z = xs[:, 0], t64(zeta[:, 0])
    else:
        z = t64(zeta)
    step(W, Wt, v, xs, xs @ Ws.T, z, T_EVAL)
    if hyper.mirroring:
        step.mirror(W, Wt, v, t64(xi / math.sqrt(D)), T_EVAL)
    return W.numpy(), v.numpy(), f.numpy()


def check_full(rule, g, option, seed):
    hyper = hyper_for(option, g)
    net = random_net(seed, K, M, D)
    rng = np.random.default_rng(seed + 1)
    B = hyper.batch
    X, zeta, xi = (
        rng.standard_normal((R_FULL, B, D)),
        rng.standard_normal((R_FULL, B)),
        rng.standard_normal((R_FULL, D)),
    )
    if hyper.sigma == 0:
        zeta[:] = 0.0
    W, v, f = full_step(net, rule, hyper, X, zeta, xi)
    assert np.abs(W - net.W).max() > 1e-6, "no increment: the comparison would be vacuous"
    for r in range(R_FULL):
        want = definition_step(net, rule, hyper, X[r], zeta[r], T_EVAL, xi[r])
        for name, got, ref, old in (("W", W[r], want.W, net.W), ("v", v[r], want.v, net.v),
                                    ("f", f[r] if f.ndim == 2 else f, want.f, net.f)):
            inc = np.abs(ref - old).max()
            err = np.abs(got - ref).max()
            assert err <= 1e-10 * max(inc, 1e-12) + 1e-14, \
                f"full engine, {rule.label} {g} {option}: {name} off by {err:.3g} (increment {inc:.3g})"
        if not hyper.train_second_layer:
            assert np.array_equal(v[r], net.v)


def _reduced_inputs(net, step, rng, hyper, U=None, P=None):
    """Draws for a ReducedStep and the inputs X they stand for."""
    st = net.state()
    tt = lambda a: t64(a)[None]  # noqa: E731
    A = engine_square_root(step, tt(st.Q), tt(st.R), tt(st.S), U, P)
    eps, L, zeta = _draws(rng, hyper.batch, K + M + 1, hyper.sigma > 0)
    return eps, L, zeta, inputs_from_draws(net, A, eps, L, rng)


def check_reduced_torch(rule, g, option, seed):
    hyper = hyper_for(option, g)
    net = random_net(seed, K, M, D)
    st = net.state()
    rng = np.random.default_rng(seed + 2)
    step = ReducedStep(rule, hyper, D=D, T=st.T, U=st.U, P=st.P, v_star=st.v_star, b=st.b, device=torch.device("cpu"),
                       dtype=torch.float64)
    tt = lambda a: t64(a)[None]  # noqa: E731
    Q, R, S, v = tt(st.Q), tt(st.R), tt(st.S), tt(st.v)
    UP = (tt(st.U), tt(np.float64(st.P))) if hyper.mirroring else (None, None)
    eps, L, zeta, X = _reduced_inputs(net, step, rng, hyper, *UP)
    if hyper.batch == 1:
        Q1, R1, S1, v1 = step(Q, R, S, v, tt(eps[0]), tt(L[0, 0] ** 2), tt(zeta[0]), t=T_EVAL, U=UP[0], P=UP[1])
    else:
        Q1, R1, S1, v1 = step.batch_step(Q, R, S, v, tt(eps), tt(L @ L.T), tt(zeta), t=T_EVAL, U=UP[0], P=UP[1])
    got = dict(Q=Q1[0], R=R1[0], S=S1[0], v=v1[0])
    xi = None
    if hyper.mirroring:
        # the learning step alone (the definition without mirroring), then xi from the mirroring draws
        learned = definition_step(net, rule, hyper.replace(eta_F=0.0), X, zeta, T_EVAL)
        A_m = engine_square_root(step, Q1, R1, S1, *UP)
        eps_m, L_m, _ = _draws(rng, 1, K + M + 1, False)
        xi = inputs_from_draws(learned, A_m, eps_m, L_m, rng)[0]
        S2, U2, P2 = step.mirror_step(
            Q1, R1, S1, UP[0], UP[1], v1, tt(eps_m[0]), tt(L_m[0, 0] ** 2), t=T_EVAL, P0=UP[1]
        )
        got.update(S=S2[0], U=U2[0], P=P2[0])
    want = definition_step(net, rule, hyper, X, zeta, T_EVAL, xi).state()
    assert_state_equal({k: a.numpy() for k, a in got.items()}, want, st, f"reduced torch, {rule.label} {g} {option}")


def check_reduced_numba(rule, g, option, seed):
    hyper = hyper_for(option, g)
    if not compiled_ok(rule, K, M):
        assert rule.name in UNTRACEABLE, f"{rule.label}: no compiled view: {theory.compiled_rule(rule, K, M).reason}"
        pytest.skip("untraceable rule: no numba kernel (by design)")
    net = random_net(seed, K, M, D)
    st = net.state()
    r, B = K + M + 1, hyper.batch
    x0 = [np.asarray(a, dtype=float)[None].copy() for a in (st.Q, st.R, st.S, st.v)]
    if hyper.mirroring:
        x0 += [np.asarray(st.U, dtype=float)[None].copy(), np.array([st.P], dtype=float)]
    chain = _NumbaChain(rule, hyper, [a.copy() for a in x0], D=D, T=st.T, U=st.U, P=st.P, v_star=st.v_star, b=st.b,
                        replicas=1, r=r, seed=seed, threads=1, step0=STEP)
    chain.advance(1)
    out = chain.state()
    chain.close()
    sampler = ChunkSampler(seed, 1, r, D, noise=hyper.sigma > 0, batch=B)
    sampler.step = STEP  # the kernel drew the stream (seed, replica 0, step STEP)
    d = sampler.draw(1)
    eps = d.eps[0, 0, :, 0].reshape(B, r)
    if B == 1:
        L = np.sqrt(2.0 * d.gam[0, 0, :1, None])
        zeta = d.zeta[0, 0, :1] if hyper.sigma > 0 else np.zeros(1)
    else:
        L = bartlett(d.gam[0, 0, :, 0], d.offd[0, 0, :, 0])
        zeta = d.zeta[0, 0, :, 0] if hyper.sigma > 0 else np.zeros(B)
    # the kernel's square root is the torch step's (same construction): read it off the reference step (under
    # mirroring: the whole Gram matrix's factor, ReducedStep.fields_of)
    ref = ReducedStep(rule, hyper, D=D, T=st.T, U=st.U, P=st.P, v_star=st.v_star, b=st.b, device=torch.device("cpu"),
                      dtype=torch.float64)
    tt = lambda a: t64(a)[None]  # noqa: E731
    UP = (tt(st.U), tt(np.float64(st.P))) if hyper.mirroring else (None, None)
    A = engine_square_root(ref, tt(st.Q), tt(st.R), tt(st.S), *UP)
    X = inputs_from_draws(net, A, eps, L, np.random.default_rng(seed + 3))
    got = dict(Q=out[0][0], R=out[1][0], S=out[2][0], v=out[3][0])
    xi = None
    if hyper.mirroring:
        # the learning step alone, then xi rebuilt from the kernel's mirroring draws (stream PURPOSE_MIRROR) on the
        # factor of the learned state's Gram matrix
        learned = definition_step(net, rule, hyper.replace(eta_F=0.0), X, zeta, T_EVAL)
        ls = learned.state()
        A_m = engine_square_root(ref, tt(ls.Q), tt(ls.R), tt(ls.S), *UP)
        eps_m, gam_m = sampler.draw_mirror(STEP, 1)
        xi = inputs_from_draws(learned, A_m, eps_m[0, :, :, 0], np.sqrt(2.0 * gam_m[0, :, :1]),
                               np.random.default_rng(seed + 4))[0]
        got.update(U=out[4][0], P=out[5][0])
    want = definition_step(net, rule, hyper, X, zeta, T_EVAL, xi).state()
    assert_state_equal(got, want, st, f"reduced numba, {rule.label} {g} {option}")


ENGINES = {"full": check_full, "reduced-torch": check_reduced_torch, "reduced-numba": check_reduced_numba}


# ------------------------------------------------------------------------------------------- the cases
def _thin():
    """The default run: every rule and variant once per engine, activation and option rotating with it, so
    every activation and every option is met by several rules."""
    opts = list(OPTIONS)
    out = []
    for i, rule in enumerate(RULES):
        out.append((rule, ACTIVATIONS[i % len(ACTIVATIONS)], opts[i % len(opts)]))
        out.append((rule, ACTIVATIONS[(i + 2) % len(ACTIVATIONS)], opts[(i + 3) % len(opts)]))
    return out


def _ids(case):
    rule, g, opt = case
    return f"{rule_id(rule)}-{g}-{opt}"


THIN = _thin()
FULL = [(r, g, o) for r in RULES for g in ACTIVATIONS for o in OPTIONS]


@pytest.mark.filterwarnings(IGNORE_UNTRACEABLE)
@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("case", THIN, ids=_ids)
def test_engine_step_is_the_definition(case, engine):
    rule, g, option = case
    ENGINES[engine](rule, g, option, seed=7 + RULES.index(rule))


@pytest.mark.slow
@pytest.mark.filterwarnings(IGNORE_UNTRACEABLE)
@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("case", FULL, ids=_ids)
def test_engine_step_is_the_definition_all(case, engine):
    rule, g, option = case
    ENGINES[engine](rule, g, option, seed=11 + RULES.index(rule))


def test_inputs_from_draws_have_the_drawn_fields():
    """The rebuilt inputs carry the draws: fields A eps and orthogonal Gram matrix L L^T (the premise above)."""
    net = random_net(3, K, M, D)
    st = net.state()
    step = ReducedStep(theory.make_rule("bp"), theory.HyperParams(eta=1.0), D=D, T=st.T, U=st.U, P=st.P,
                       v_star=st.v_star, b=st.b, device=torch.device("cpu"), dtype=torch.float64)
    tt = lambda a: t64(a)[None]  # noqa: E731
    A = engine_square_root(step, tt(st.Q), tt(st.R), tt(st.S))
    rng = np.random.default_rng(5)
    eps, L, _ = _draws(rng, 3, K + M + 1, False)
    X = inputs_from_draws(net, A, eps, L, rng)
    V = gram_vectors(net)
    np.testing.assert_allclose(X @ V / math.sqrt(D), eps @ A.T, atol=1e-12)
    E = V @ np.linalg.inv(A).T / math.sqrt(D)
    perp = X - (X @ E) @ E.T
    np.testing.assert_allclose(perp @ perp.T, L @ L.T, atol=1e-10)
