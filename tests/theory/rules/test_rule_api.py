"""The rule API: every registered rule's views against its one-sample definition, and a rule
written here, in a test file, through every entry point of the toolkit.

1. For every registered rule and variant (built-in or not, including the one defined below), each
   view equals ``Rule.local_update``: the numerical expectations (against Monte Carlo of the update),
   the closed forms where declared (against the numerical expectations, and compiled against numpy),
   one step of the full simulation (against an explicit D-dimensional update written here), one
   step of the reduced sampler (against the same), the compiled update (against the definition,
   sample by sample) and one step of the compiled reduced kernel (against the torch step).
2. Sign-symmetric feedback (Liao, Leibo & Poggio 2016), delta_k = sign(v_k) g'(lambda_k) e, defined
   here and not in the package, runs through integrate, sweep, both simulation engines, compare and
   the command line, and its simulation matches its ODE with the thresholds of the built-in rules
   (tests/simulate/test_compare.py), approaching it like 1/sqrt(D) (slow).
3. A rule whose update cannot be traced symbolically runs on the generic paths.
"""

from __future__ import annotations

import inspect
import itertools
import math

import numpy as np
import pytest
import torch

import simulate
import theory
from simulate.engines.full import FullStep
from simulate.engines.reduced.step import ReducedStep
from tests.helpers import (
    ACTIVATIONS,
    REPLICAS,
    STEP_CONFIGS,
    T_REC,
    _deviations,
    _explicit_step,  # noqa: F401
    _kernel_and_torch_step,
    _max_t,
    _per_replica_state,
    _square_root,
    _weights,
    random_state,
)
from theory import _internal
from theory.expectations.closed import closed_form_terms
from theory.expectations.montecarlo import monte_carlo_terms
from theory.expectations.numerical import GaussHermite, numerical_terms
from theory.rules._facts import rule_facts


# (its source is also the user's script of the command-line test)
@theory.register_rule
class SignSymmetry(theory.Rule):
    """Sign-symmetric feedback: the backward pass uses sign(v) in place of v."""

    name = "sign-symmetry"
    closed_form = "feedback"

    def feedback(self, x):
        return x.xp.sign(x.v)

    def update(self, x):
        return theory.LocalUpdate(delta=self.feedback(x) * x.dg(x.lam) * x.e[..., None])


def _variants():
    """Every registered rule with every combination of its variants."""
    out = []
    for name, cls in theory.registered_rules().items():
        choices = {k: f.metadata["variant"].choices for k, f in cls.options().items() if "variant" in f.metadata}
        for combo in itertools.product(*choices.values()):
            out.append(theory.make_rule(name, **dict(zip(choices, combo))))
    return out


VARIANTS = _variants()
CLOSED = [r for r in VARIANTS if rule_facts(r, 2, 2).closed_form]  # derived from the update (theory.rules._facts)


def _id(rule):
    return rule.key


def test_registry_holds_the_builtins_and_the_user_rule():
    names = list(theory.registered_rules())
    assert names[:4] == list(theory.RULES) and "sign-symmetry" in names
    keys = [r.key for r in VARIANTS]
    assert {"bp", "fa", "afa", "afa-clean", "pepita", "pepita-clean-errmod", "sign-symmetry"} <= set(keys)
    assert len(keys) == len(set(keys))


# ----------------------------------------------------------------------------- 1. views
def _args(st):
    return (st.Q, st.R, st.T, st.S, st.U, st.P, st.v, st.v_star, st.b)


@pytest.mark.parametrize("rule", VARIANTS, ids=_id)
def test_numerical_terms_are_the_expectation_of_the_update(rule, rng):
    st = random_state(rng, 2, 2)
    mc, se = monte_carlo_terms(st, rule, n_samples=200_000, rng=rng, sigma_F=0.8)
    num, err = numerical_terms(rule, *_args(st), sigma_F=0.8, return_error=True)
    for name, a, b, s, e in zip(("X", "DD", "EH"), num, mc, se, err):
        assert np.ptp(b) > 0, f"{name}: constant, the comparison would be vacuous"
        bad = np.abs(a - b) > 5 * (s + e) + 1e-12
        assert not bad.any(), f"{rule.label} {name}: {a[bad]} vs Monte Carlo {b[bad]} +- {s[bad]}"


@pytest.mark.parametrize("rule", CLOSED, ids=_id)
def test_closed_forms_equal_the_numerical_expectations(rule, rng):
    st = random_state(rng, 2, 1)  # K != M; d = 3 fields, where GaussHermite(40) is accurate to ~1e-10
    for sigma, sigma_F in ((0.0, 1.0), (0.4, -1.3)):
        cf = closed_form_terms(rule, *_args(st), sigma=sigma, sigma_F=sigma_F)
        num = numerical_terms(rule, *_args(st), sigma=sigma, sigma_F=sigma_F, quadrature=GaussHermite(40, n_noise=3))
        scale = max(np.abs(x).max() for x in cf)
        assert max(np.abs(a - b).max() for a, b in zip(cf, num)) < 1e-8 * max(1.0, scale), rule.label
    # the compiled single-state right-hand side (generated from the rule) against the numpy one
    kw = dict(eta=0.7, eta_v=0.3, sigma=0.2, sigma_F=-0.8, weight_decay=0.05)
    fast = theory.make_dynamics(st, rule, **kw)
    ref = theory.make_dynamics(st, rule, **kw)
    object.__setattr__(ref, "use_jit", False)
    assert fast.compiled() is not None and ref.compiled() is None
    y = st.to_vector()
    np.testing.assert_allclose(fast.rhs(y), ref.rhs(y), rtol=1e-12, atol=1e-14)




@pytest.mark.parametrize("rule", VARIANTS, ids=_id)
def test_full_simulation_step_is_the_update(rule):
    K, M, D = 3, 2, 40
    hyper = theory.HyperParams(eta=0.8, eta_v=0.5, sigma=0.3, sigma_F=0.9, weight_decay=0.1)
    w = _weights(K, M, D, 3)
    rng = np.random.default_rng(4)
    x, zeta = rng.standard_normal(D), rng.standard_normal()
    W1, v1 = _explicit_step(rule, w, x, zeta, hyper)
    t = lambda a: torch.as_tensor(np.array(a, dtype=float))  # noqa: E731
    W, v = t(w["W"])[None].clone(), t(w["v"])[None].clone()
    step = FullStep(rule, hyper, v_star=t(w["v_star"]), b=t(w["b"]), f=t(w["f"]), K=K, M=M)
    xs = t(x)[None] / math.sqrt(D)
    step(W, W.transpose(1, 2), v, xs, xs @ t(w["W_star"]).T, t([zeta]))
    np.testing.assert_allclose(W[0].numpy(), W1, rtol=0, atol=1e-13)
    np.testing.assert_allclose(v[0].numpy(), v1, rtol=0, atol=1e-13)


@pytest.mark.parametrize("rule", VARIANTS, ids=_id)
def test_reduced_step_is_the_update(rule):
    K, M, D = 3, 2, 40
    hyper = theory.HyperParams(eta=0.7, eta_v=0.4, sigma=0.2, sigma_F=0.8, weight_decay=0.3)
    w = _weights(K, M, D, 1)
    s0 = theory.state_from_weights(w["W"], w["W_star"], w["v"], w["v_star"], w["f"], w["b"])
    rng = np.random.default_rng(2)
    x, zeta = rng.standard_normal(D), rng.standard_normal()
    W1, v1 = _explicit_step(rule, w, x, zeta, hyper)
    s1 = theory.state_from_weights(W1, w["W_star"], v1, w["v_star"], w["f"], w["b"])
    step = ReducedStep(
        rule, hyper, D=D, T=s0.T, U=s0.U, P=s0.P, v_star=s0.v_star, b=s0.b, device="cpu", dtype=torch.float64
    )
    t = lambda a: torch.as_tensor(np.array(a, dtype=float))[None]  # noqa: E731
    Q, R, S, v = t(s0.Q), t(s0.R), t(s0.S), t(s0.v)
    A = _square_root(step, Q, R, S)
    lam, nu, phi = w["W"] @ x / math.sqrt(D), w["W_star"] @ x / math.sqrt(D), w["f"] @ x / math.sqrt(D)
    eps = np.linalg.solve(A, np.concatenate([nu, [phi], lam]))
    Q1, R1, S1, v1r = step(Q, R, S, v, t(eps), t(x @ x - eps @ eps), t(zeta))
    for got, ref in ((Q1, s1.Q), (R1, s1.R), (S1, s1.S), (v1r, s1.v)):
        np.testing.assert_allclose(got[0].numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rule", VARIANTS, ids=_id)
def test_compiled_update_is_the_update(rule):
    comp = theory.compiled_rule(rule, 3, 2)
    assert comp.ok, comp.reason
    rng = np.random.default_rng(20)
    n, K, M = 200, 3, 2
    lam, nu, zeta = 1.5 * rng.standard_normal((n, K)), 1.5 * rng.standard_normal((n, M)), rng.standard_normal(n)
    v, S, b, v_star = (rng.standard_normal((n, k)) for k in (K, K, K, M))
    for g in ACTIVATIONS:
        ref = rule.local_update(lam, nu, zeta, v=v, v_star=v_star, S=S, b=b, sigma=0.3, sigma_F=-0.7, g=g)
        got = _internal.compiled.update_batch(rule, g, lam, nu, zeta, v, v_star, S, b, 0.3, -0.7)
        for name, a, r in zip(("delta", "alpha", "e_out", "h", "e"), got, ref):
            r = np.broadcast_to(r, a.shape)
            np.testing.assert_allclose(
                a, r, rtol=0, atol=1e-13 * max(1.0, np.abs(r).max()), err_msg=f"{rule.label} {g} {name}"
            )


@pytest.mark.parametrize("rule", VARIANTS, ids=_id)
def test_compiled_kernel_step_is_the_torch_step(rule):
    K, M, D, R_ = 3, 2, 40, 37
    state = _per_replica_state(K, M, D, R_, seed=VARIANTS.index(rule))
    for cfg in STEP_CONFIGS:
        mine, ref = _kernel_and_torch_step(state, rule, D=D, g="erf", R_=R_, **cfg)
        for name, a, b in zip("QRSv", mine, ref):
            if name == "v" and not cfg["train_second_layer"]:
                continue
            assert np.abs(b).max() > 1e-6, f"{name}: no increment, the comparison would be vacuous"
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max(), err_msg=f"{rule.label} {name}")


# ----------------------------------------------------------------------------- 2. a user's rule everywhere
def test_user_rule_in_integrate_and_sweep():
    st = theory.random_state(2, 2, D=500, seed=1)
    t = theory.default_times(100.0, 40)
    tr = theory.integrate(st, "sign-symmetry", t, eta=1.0)
    assert tr.status == 0 and tr.params["rule"] == "sign-symmetry" and tr.eg[-1] < tr.eg[0]
    assert theory.make_dynamics(st, "sign-symmetry", eta=1.0).compiled() is not None  # the compiled closed form
    scipy_path = theory.integrate(st, SignSymmetry(), t, eta=1.0, method="RK45", rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tr.eg, scipy_path.eg, rtol=0, atol=1e-7)
    numerical = theory.integrate(st, "sign-symmetry", t[:12], eta=1.0, quadrature=GaussHermite(24))
    np.testing.assert_allclose(numerical.eg, tr.eg[:12], rtol=0, atol=1e-5)
    assert "feedback" in tr.angles  # the feedback vector sign(v) against v
    np.testing.assert_allclose(tr.angles["feedback"], theory.angle(np.sign(tr.v), tr.v))
    res = theory.sweep(st, ["sign-symmetry", "bp"], t, eta=1.0, progress=False)
    assert list(res.table["rule"]) == ["sign-symmetry", "bp"] and np.all(res.table["status"] == 0)
    assert np.abs(res.eg[0] - tr.eg).max() < 1e-7


def test_user_rule_in_both_engines_and_compare(tmp_path):
    init = simulate.Initialisation(2, 2, 200, seed=1)
    kw = dict(eta=1.0, replicas=4, n_test=0, progress=False, device="cpu")
    full = simulate.run(init, "sign-symmetry", [0.0, 1.0, 2.0], **kw)
    red = simulate.run(init, SignSymmetry(), [0.0, 1.0, 2.0], engine="reduced", **kw)
    assert full.status == 0 and red.status == 0 and full.params["rule"] == red.params["rule"] == "sign-symmetry"
    assert red.params["engine"] == "reduced"
    res = simulate.run_reduced(init, "sign-symmetry", [0.0, 1.0], eta=1.0, replicas=8, backend="numba")
    assert res.params["backend"] == "numba"
    cmp = simulate.compare(init, ["bp", "sign-symmetry"], [0.0, 0.5, 1.0], **kw)
    assert cmp.rules == ["bp", "sign-symmetry"] and "feedback" in cmp.results["sign-symmetry"].angles
    cmp.save(tmp_path)
    back = simulate.Comparison.load(tmp_path)
    np.testing.assert_allclose(back.ode_eg("sign-symmetry"), cmp.ode_eg("sign-symmetry"))


def test_user_rule_matches_its_ode():
    """The statistical criterion of the built-in rules (tests/simulate/test_compare.py), D = 1000."""
    init = simulate.Initialisation(2, 2, 1000, seed=3)
    cmp = simulate.compare(init, [SignSymmetry()], T_REC, eta=1.0, replicas=REPLICAS, device="cpu", seed=11, n_test=0,
                           progress=False, rtol=1e-9, atol=1e-11)
    stat, thresh = _max_t(_deviations(cmp.results["sign-symmetry"], cmp.trajectories["sign-symmetry"]))
    assert stat < thresh, f"max |t| = {stat:.2f} >= {thresh:.2f}"
    # and the criterion tells it from bp: sign(v) != v
    wrong = theory.integrate(
        cmp.results["sign-symmetry"].initial_state(), "bp", cmp.results["sign-symmetry"].t, eta=1.0
    )
    assert _max_t(_deviations(cmp.results["sign-symmetry"], [wrong]))[0] > thresh


@pytest.mark.slow
def test_user_rule_deviation_shrinks_with_D():
    """As for the built-in rules: the deviation from the ODE falls like 1/sqrt(D)."""
    Ds = [250, 1000, 4000]
    t = np.array([0.0, 1.0, 2.0, 4.0])
    rms = []
    for Dn in Ds:
        init = simulate.Initialisation(2, 2, Dn, seed=5)
        res = simulate.run(init, "sign-symmetry", t, eta=1.0, replicas=16, independent_init=True, device="cpu", seed=2,
                           n_test=0, progress=False)
        trs = [theory.integrate(res.initial_state(r), "sign-symmetry", res.t, eta=1.0) for r in range(res.replicas)]
        dev = _deviations(res, trs)[:, 1:]
        rms.append(np.median(np.sqrt(np.mean(dev**2, axis=(1, 2)))))
    slope = np.polyfit(np.log(Ds), np.log(rms), 1)[0]
    assert -0.7 < slope < -0.3, (rms, slope)




def test_user_rule_on_the_command_line(tmp_path, capsys):
    from simulate._cli import main

    script = tmp_path / "my_rules.py"  # a user's script: the rule of this file, under another name
    script.write_text(
        "import theory\n\n\n"
        + inspect.getsource(SignSymmetry)
        .replace('"sign-symmetry"', '"sign-symmetry-script"')
        .replace("class SignSymmetry", "class SignSymmetryScript")
    )
    out = tmp_path / "cmp"
    rc = main(["compare", "--rules", "bp", "--rule", f"{script}:SignSymmetryScript", "--D", "60", "--t-max", "1",
               "--n-times", "4", "--replicas", "2", "--n-test", "100", "--device", "cpu", "--out", str(out),
               "--no-progress", "--g", "erf"])
    assert rc == 0
    cmp = simulate.Comparison.load(out)
    assert cmp.rules == ["bp", "sign-symmetry-script"]
    assert "[sign-symmetry-script]" in (out / "summary.txt").read_text()
    rc = main(["ode", "--rule", f"{script}:SignSymmetryScript", "--rule", "pepita", "--t-max", "2", "--D", "100",
               "--out", str(tmp_path / "ode"), "--no-progress", "--g", "tanh"])
    assert rc == 0 and (tmp_path / "ode" / "ode_sign-symmetry-script.npz").exists()
    assert theory.Trajectory.load(tmp_path / "ode" / "ode_pepita.npz").params["activation"] == "tanh"
    capsys.readouterr()
    assert main(["ode", "--rule", f"{script}:Nothing", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "Nothing" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 3. the generic paths
class ClippedBP(theory.Rule):
    """bp, written with an array method sympy cannot trace (clip): the compiled views do not exist."""

    name = "clipped-bp"

    def feedback(self, x):
        return x.v

    def update(self, x):
        lam = x.lam.clip(-50.0, 50.0)
        return theory.LocalUpdate(delta=x.v * x.dg(lam) * x.e[..., None])


def test_untraceable_rule_runs_on_the_generic_paths():
    theory.register_rule(ClippedBP)
    comp = theory.compiled_rule(ClippedBP(), 2, 2)
    assert not comp.ok and "traced" in comp.reason
    st = theory.random_state(2, 2, D=100, seed=0)
    tr = theory.integrate(st, "clipped-bp", [0.0, 0.5, 1.0], eta=1.0)  # numerical expectations
    ref = theory.integrate(st, "bp", [0.0, 0.5, 1.0], eta=1.0)
    np.testing.assert_allclose(tr.eg, ref.eg, rtol=1e-3)
    kw = dict(D=100, eta=1.0, replicas=6, seed=3)
    a = simulate.run_reduced(st, "clipped-bp", [0.0, 1.0], **kw)
    b = simulate.run_reduced(st, "bp", [0.0, 1.0], backend="torch", **kw)
    assert a.params["backend"] == "torch"
    np.testing.assert_array_equal(a.Q, b.Q)  # the same draws and the same arithmetic: bit for bit
    with pytest.raises(ValueError, match="compiled view"):
        simulate.run_reduced(st, "clipped-bp", [0.0, 1.0], backend="numba", **kw)


# ----------------------------------------------------------------------------- the API's own errors
def test_registration_errors():
    with pytest.raises(TypeError, match="subclass of theory.Rule"):
        theory.register_rule(object)

    class Nameless(theory.Rule):
        def update(self, x):
            return theory.LocalUpdate(delta=x.lam)

    with pytest.raises(ValueError, match="name"):
        theory.register_rule(Nameless)

    class Clash(theory.Rule):
        name = "bp"

        def update(self, x):
            return theory.LocalUpdate(delta=x.lam)

    with pytest.raises(ValueError, match="already registered"):
        theory.register_rule(Clash)

    class Abstract(theory.Rule):
        name = "abstract-rule"

    with pytest.raises(TypeError, match="update"):
        theory.register_rule(Abstract)


def test_undeclared_reads_and_unknown_options_are_errors():
    class ReadsS(theory.Rule):
        name = "reads-s-undeclared"

        def update(self, x):
            return theory.LocalUpdate(delta=x.S * x.dg(x.lam) * x.e[..., None])

    theory.register_rule(ReadsS)
    st = theory.random_state(2, 2, D=100, seed=0)
    with pytest.raises(ValueError, match="declare"):
        theory.rhs(st, "reads-s-undeclared", eta=1.0)
    with pytest.raises(TypeError, match="did you mean 'sigma_F'"):
        theory.integrate(st, "bp", [0, 1], eta=1.0, sigma_f=3.0)
    with pytest.raises(TypeError, match="sigma_f"):
        simulate.run_reduced(st, "bp", [0, 1], D=100, eta=1.0, sigma_f=3.0)
    with pytest.raises(TypeError, match="replica"):
        simulate.run_reduced(st, "bp", [0, 1], D=100, eta=1.0, replica=64)
    with pytest.raises(TypeError, match="unknown option"):
        theory.sweep(st, "bp", [0, 1], eta=1.0, etaa=2.0, progress=False)
    with pytest.raises(ValueError, match="train_second_layer"):
        theory.HyperParams(eta=1.0, train_second_layer="False")
    with pytest.raises(ValueError, match="eta"):
        theory.integrate(st, "bp", [0, 1])


def test_hyper_params_object_is_accepted_everywhere():
    st = theory.random_state(2, 2, D=200, seed=0)
    hp = theory.HyperParams(eta=0.8, sigma_F=0.6)
    a = theory.integrate(st, "afa", [0.0, 1.0], hp)
    b = theory.integrate(st, "afa", [0.0, 1.0], eta=0.8, sigma_F=0.6)
    np.testing.assert_array_equal(a.Q, b.Q)
    c = theory.integrate(st, "afa", [0.0, 1.0], hp, eta=0.4)  # keywords override the object
    assert c.params["eta"] == 0.4 and c.params["eta_v"] == 0.4 and c.params["sigma_F"] == 0.6
    assert theory.sweep(st, "afa", [0.0, 1.0], hp, progress=False).table["eta"][0] == 0.8
    init = simulate.Initialisation(2, 2, 50)
    assert (
        simulate.run(init, "afa", [0.0, 1.0], hp, replicas=2, n_test=0, progress=False, device="cpu").params["eta"]
        == 0.8
    )
