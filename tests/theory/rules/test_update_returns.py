"""What a rule's update returns is validated once (theory.rules._validate), in every entry point, and a
non-finite update is a divergence status, never a LinAlgError (theory.solver.driver, theory.solver.divergence).

1. Malformed returns (a Python float, a (...,)-shaped or (..., K, 1) delta, None, a string, complex
   numbers) give a ValueError / TypeError naming the rule, the field, the expected and the actual
   shape in theory.rhs, theory.integrate, theory.sweep, simulate.run (both engines) and the
   symbolic tracing of theory.compiled_rule; what may broadcast (a scalar alpha, a (K,) delta)
   comes back with the exact shapes, in numpy, torch and the tracer's object arrays.
2. An update that returns NaN (everywhere, or only in a region the run enters) gives status -1 and
   a message naming the time and the derivatives, on every stepper (compiled, scipy, batched numpy),
   in integrate (throw=True raises theory.DivergenceError), sweep and both simulation engines.
3. Each check can fail: without the validation the malformed returns pass silently, and without the
   guard in the whitening of Omega the NaN rule crashes a sweep with a LinAlgError.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import simulate
import theory
from theory._codegen.rule import _symbolic_activation, trace
from theory.rules import _validate

# untraceable rules here run on the generic paths, which may say so with a warning (theory.rules._facts)
pytestmark = pytest.mark.filterwarnings("ignore:.*could not be traced")

K = M = 2
REPLICAS = 3  # != K, so that a (replicas,)-shaped delta cannot pass for a (K,) one


def _bp(x):
    return x.v * x.dg(x.lam) * x.e[..., None]


def _rule(name, update, cls_name=None):
    """A registered rule class whose update is ``update(x) -> LocalUpdate`` (no closed form declared)."""
    cls = type(
        cls_name or name.replace("-", "_").title(),
        (theory.Rule,),
        {"name": name, "update": lambda self, x: update(x), "feedback": lambda self, x: x.v},
    )
    return theory.register_rule(cls, replace=True)


MALFORMED = {
    # name: (update, error type, what the message must say)
    "float-delta": (lambda x: theory.LocalUpdate(delta=0.1), ValueError, r"delta as a Python float \(shape \(\)\)"),
    "flat-delta": (
        lambda x: theory.LocalUpdate(delta=x.e),
        ValueError,
        r"delta as shape \(\d+,\); expected \(\.\.\., K\)",
    ),
    "column-delta": (
        lambda x: theory.LocalUpdate(delta=_bp(x)[..., None]),
        ValueError,
        r"delta as shape \(\d+, 2, 1\); expected \(\.\.\., K\)",
    ),
    "none-delta": (
        lambda x: theory.LocalUpdate(delta=None),
        ValueError,
        r"delta = None; expected an array of shape \(\.\.\., K\)",
    ),
    "string-delta": (lambda x: theory.LocalUpdate(delta="abc"), TypeError, r"delta of (dtype <U3|type str)"),
    "column-e_out": (
        lambda x: theory.LocalUpdate(delta=_bp(x), e_out=x.e[..., None]),
        ValueError,
        r"e_out as shape \(\d+, 1\); expected \(\.\.\.\)",
    ),
    "wide-h": (
        lambda x: theory.LocalUpdate(delta=_bp(x), h=x.g(x.lam)[..., :1]),
        ValueError,
        r"h as shape \(\d+, 1\); expected \(\.\.\., K\).*K = 2 units",
    ),
}
RULES = {key: _rule(f"malformed-{key}", up) for key, (up, _, _) in MALFORMED.items()}
COMPLEX = _rule("malformed-complex", lambda x: theory.LocalUpdate(delta=_bp(x) * (1 + 1j)))


def _state():
    return theory.random_state(K, M, D=50, seed=0)


def _entry_points(name):
    """Every entry point that evaluates a rule's update, as (label, call)."""
    st = _state()
    init = simulate.Initialisation(K, M, 50, seed=1)
    sim = dict(eta=1.0, replicas=REPLICAS, n_test=0, progress=False, device="cpu")
    gh = theory.GaussHermite(4)
    return [
        ("rhs", lambda: theory.rhs(st, name, eta=1.0, quadrature=gh)),
        ("integrate", lambda: theory.integrate(st, name, [0.0, 0.5], eta=1.0, quadrature=gh, throw=False)),
        ("sweep", lambda: theory.sweep(st, name, [0.0, 0.5], eta=[1.0, 0.5], quadrature=gh, progress=False)),
        ("full", lambda: simulate.run(init, name, [0.0, 1.0], throw=False, **sim)),
        ("reduced", lambda: simulate.run(init, name, [0.0, 1.0], engine="reduced", throw=False, **sim)),
    ]


# ----------------------------------------------------------------------------- 1. malformed returns
@pytest.mark.parametrize("key", list(MALFORMED))
def test_malformed_return_is_refused_in_every_entry_point(key):
    _, err, what = MALFORMED[key]
    name = f"malformed-{key}"
    for label, call in _entry_points(name):
        with pytest.raises(err, match=rf"rule '{name}': update returned {what}"):
            call()
    # tracing: the same error, and compiled_rule reports it as the reason there is no compiled view
    with pytest.raises(err, match=rf"rule '{name}': update returned {what}"):  # traced: one sample, (1, K) fields
        trace(RULES[key](), K, M)
    comp = theory.compiled_rule(RULES[key](), K, M)
    assert not comp.ok and f"rule '{name}': update returned" in comp.reason


def test_complex_update_is_refused():
    name = "malformed-complex"
    for label, call in _entry_points(name):
        with pytest.raises(
            TypeError,
            match=rf"rule '{name}': update returned delta of dtype (complex128|torch.complex\d+); "
            "expected real numbers",
        ):
            call()


def test_update_returns_not_a_local_update():
    cls = _rule("malformed-tuple", lambda x: (_bp(x),))
    with pytest.raises(TypeError, match="update must return a theory.LocalUpdate, got tuple"):
        theory.rhs(_state(), cls(), eta=1.0, quadrature=theory.GaussHermite(4))


def _broadcasting_rule():
    """delta constant per unit (K,), alpha a scalar, e_out a Python float, h from g(lambda): all legitimate."""
    return _rule("broadcasting", lambda x: theory.LocalUpdate(delta=x.xp.tanh(x.v) * 0.5, alpha=0.25, e_out=1.5))()


@pytest.mark.parametrize("kind", ["numpy", "torch", "symbolic"])
def test_broadcastable_returns_come_back_with_the_exact_shapes(kind, rng):
    rule = _broadcasting_rule()
    n = 5
    lam, nu, zeta, v, vs = rng.standard_normal((n, K)), rng.standard_normal((n, M)), rng.standard_normal(n), \
        rng.standard_normal(K), rng.standard_normal(M)
    if kind == "torch":
        lam, nu, zeta, v, vs = (torch.as_tensor(a) for a in (lam, nu, zeta, v, vs))
    if kind == "symbolic":
        traced, _ = trace(rule, K, M)  # (1, K) fields: the tracer's own shapes are checked in trace
        assert len(traced["delta"]) == K and len(traced["h"]) == K
        up = rule.local_update(np.array(lam, dtype=object), np.array(nu, dtype=object), np.array(zeta, dtype=object),
                               v=np.array(v, dtype=object), v_star=np.array(vs, dtype=object), g=_symbolic_activation())
    else:
        up = rule.local_update(lam, nu, zeta, v=v, v_star=vs)
    shapes = dict(delta=(n, K), alpha=(n,), e_out=(n,), h=(n, K), e=(n,))
    for field, shape in shapes.items():
        val = getattr(up, field)
        assert tuple(val.shape) == shape, (kind, field, val.shape)
        if kind == "torch":
            assert torch.is_tensor(val) and val.dtype == torch.float64
        elif kind == "numpy":
            assert isinstance(val, np.ndarray) and val.dtype == np.float64
    np.testing.assert_allclose(
        np.asarray(up.delta, float), np.broadcast_to(0.5 * np.tanh(np.asarray(v, float)), (n, K))
    )
    np.testing.assert_allclose(np.asarray(up.alpha, float), 0.25)
    np.testing.assert_allclose(np.asarray(up.e_out, float), 1.5)


def test_integer_returns_are_cast_to_float(rng):
    rule = _rule("integer-delta", lambda x: theory.LocalUpdate(delta=(x.lam > 0).astype(int)))()
    up = rule.local_update(rng.standard_normal((4, K)), rng.standard_normal((4, M)), rng.standard_normal(4),
                           v=np.ones(K), v_star=np.ones(M))
    assert up.delta.dtype == np.float64 and up.delta.shape == (4, K)


def test_the_malformed_checks_can_fail(monkeypatch):
    """Without the validation the malformed returns of section 1 pass silently where they used to."""
    passthrough = lambda name, values, lead, K, like: tuple(values[f] for f, _ in _validate.FIELDS)  # noqa: E731
    monkeypatch.setattr(_validate, "update_fields", passthrough)
    st = _state()
    out = theory.rhs(st, "malformed-float-delta", eta=1.0, quadrature=theory.GaussHermite(4))  # silently broadcast
    assert np.all(np.isfinite(out["Q"]))
    with pytest.raises(ValueError) as exc:  # numpy's broadcasting error, naming neither the rule nor the field
        theory.rhs(st, "malformed-column-delta", eta=1.0, quadrature=theory.GaussHermite(4))
    assert "malformed-column-delta" not in str(exc.value)
    assert trace(RULES["float-delta"](), K, M)[0]["delta"] == [0.1, 0.1]  # broadcast from a float


# ----------------------------------------------------------------------------- 2. non-finite updates
NAN_TRACED = _rule("nan-log", lambda x: theory.LocalUpdate(delta=_bp(x) * x.xp.log(-1.0 - x.lam**2)))
NAN_GENERIC = _rule("nan-clip", lambda x: theory.LocalUpdate(delta=x.v * x.dg(x.lam.clip(-50.0, 50.0)) * x.e[..., None]
                                                             * np.nan))
#: v_0 of _state() and the threshold below which the next rule is NaN (v_0 decreases under bp from _state())
_V0 = 0.20191
RARE = _rule("nan-below", lambda x: theory.LocalUpdate(delta=x.v * x.dg(x.lam.clip(-50.0, 50.0)) * x.e[..., None]
                                                       * np.sqrt(x.v[..., :1] - (_V0 - 0.005))))


def test_rare_rule_preconditions():
    st = _state()
    assert abs(st.v[0] - _V0) < 1e-4 and theory.rhs(st, "bp", eta=1.0)["v"][0] < -1e-3  # it enters the NaN region


@pytest.mark.parametrize("case", ["compiled", "scipy", "numpy"])
def test_nan_update_is_a_divergence_in_integrate(case):
    st = _state()
    t = [0.0, 0.5, 1.0]
    name, kw = {"compiled": ("nan-log", {}), "scipy": ("nan-log", dict(method="RK45")),
                "numpy": ("nan-clip", dict(quadrature=theory.GaussHermite(4)))}[case]
    tr = theory.integrate(st, name, t, eta=1.0, throw=False, **kw)
    assert tr.status == -1
    assert tr.message == "diverged at t = 0 (steps/D): the right-hand side became non-finite: dQ, dR, dS", tr.message
    with pytest.raises(
        theory.DivergenceError, match=r"at t = 0 \(steps/D\): the right-hand side became non-finite: dQ"
    ):
        theory.integrate(st, name, t, eta=1.0, **kw)


@pytest.mark.parametrize("method", [None, "RK45"])
def test_nan_in_a_region_the_run_enters(method):
    kw = {} if method is None else dict(method=method)
    tr = theory.integrate(_state(), "nan-below", np.linspace(0.0, 1.0, 11), eta=1.0, throw=False,
                          quadrature=theory.GaussHermite(4), **kw)
    assert tr.status == -1 and "the right-hand side became non-finite: dQ, dR, dS" in tr.message, tr.message
    t_stop = float(tr.message.split("t = ")[1].split(" ")[0])
    assert 0.2 < t_stop < 0.5 and tr.t[-1] <= t_stop  # v_0 reaches the threshold at ~0.3; what came before is kept
    assert np.all(np.isfinite(tr.Q))


def test_nan_update_marks_the_sweep_rows_diverged():
    st = _state()
    t = np.linspace(0.0, 1.0, 6)
    res = theory.sweep(st, ["nan-log", "bp", "nan-clip"], t, eta=1.0, quadrature=theory.GaussHermite(4),
                       progress=False)
    assert list(res.table["status"]) == [-1, 0, -1]
    for msg in res.table["message"][[0, 2]]:
        assert msg == "diverged at t = 0 (steps/D): the right-hand side became non-finite: dQ, dR, dS", msg
    rare = theory.sweep(st, "nan-below", t, eta=[1.0, 0.5], quadrature=theory.GaussHermite(4), progress=False)
    assert list(rare.table["status"]) == [-1, -1]
    for msg in rare.table["message"]:
        assert "the right-hand side became non-finite: dQ, dR, dS" in msg, msg


@pytest.mark.parametrize("engine", ["full", "reduced"])
def test_nan_update_is_a_divergence_in_simulations(engine):
    init = simulate.Initialisation(K, M, 50, seed=1)
    kw = dict(eta=1.0, replicas=REPLICAS, n_test=0, progress=False, device="cpu", engine=engine)
    for name in ("nan-log", "nan-clip"):
        res = simulate.run(init, name, [0.0, 1.0, 2.0], throw=False, **kw)
        assert res.status == -1 and "non-finite order parameters" in res.message and "t = 0" in res.message, res.message
        with pytest.raises(theory.DivergenceError, match="non-finite order parameters"):
            simulate.run(init, name, [0.0, 1.0, 2.0], **kw)


def test_rhs_at_a_nan_update_is_nan_not_an_error():
    out = theory.rhs(_state(), "nan-clip", eta=1.0, quadrature=theory.GaussHermite(4))
    assert np.all(np.isnan(out["Q"])) and np.all(np.isfinite(out["v"]))  # dv = -eta_v E[e g(lambda)] stays finite


def test_the_nan_guard_can_fail(monkeypatch):
    """Without the guard in the whitening of Omega a NaN stage state raises numpy's LinAlgError."""
    from theory.expectations import numerical as _numerical

    def unguarded(om, n):
        np.linalg.eigh(om[..., :n, :n])
        raise AssertionError("eigh accepted a non-finite matrix")

    bad = np.full((1, 2 * K + 1, 2 * K + 1), np.nan)
    assert np.all(np.isnan(_numerical._whiten(bad, 2 * K)))
    real = _numerical._whiten
    monkeypatch.setattr(
        _numerical, "_whiten", lambda om, n: unguarded(om, n) if not np.all(np.isfinite(om)) else real(om, n)
    )
    with pytest.raises(np.linalg.LinAlgError):
        theory.sweep(
            _state(), "nan-clip", [0.0, 0.5], eta=[1.0, 0.5], quadrature=theory.GaussHermite(4), progress=False
        )


def test_the_start_check_can_fail(monkeypatch):
    """Without the check of the initial derivatives the NaN rule stops only once its step has shrunk away
    (a different message), so the test of the message above tells them apart."""
    from theory.solver import driver as _driver

    monkeypatch.setattr(_driver, "_nonfinite_rows", lambda f, points, t0, rhs_check: [])
    res = theory.sweep(
        _state(), "nan-clip", [0.0, 0.5], eta=[1.0, 0.5], quadrature=theory.GaussHermite(4), progress=False
    )
    assert list(res.table["status"]) == [-1, -1]
    assert all("every trial step down to the smallest" in m for m in res.table["message"])


RARE_TRACED = _rule(
    "nan-below-traced", lambda x: theory.LocalUpdate(delta=_bp(x) * x.xp.sqrt(x.v[..., :1] - (_V0 - 0.005)))
)


@pytest.mark.slow
def test_nan_in_a_region_on_the_compiled_stepper():
    """The compiled DOP853 keeps no failed stage: the driver probes along the derivative to name the quantities
    (slow on a cold cache: the rule's numerical right-hand side is compiled)."""
    tr = theory.integrate(_state(), "nan-below-traced", np.linspace(0.0, 1.0, 11), eta=1.0, throw=False)
    assert tr.status == -1, tr.message
    assert "the right-hand side became non-finite: dQ, dR, dS, next to this state" in tr.message, tr.message
    assert 0.2 < float(tr.message.split("t = ")[1].split(" ")[0]) < 0.5
