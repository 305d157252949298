"""The compiled erf of the quadrature's node loops (theory._codegen.special) and the update loop that uses it
(theory._codegen.template.update's erf case): held to mpmath, to libm, and to the rule's own update."""

from __future__ import annotations

import ast
import math

import mpmath as mp
import numba
import numpy as np
import pytest

import theory
from theory._codegen import rule as R
from theory._codegen import special


@numba.njit(cache=False)
def _erf_all(x, out):
    for i in range(x.size):
        out[i] = special.erf(x[i])


def _erf(x):
    x = np.ascontiguousarray(x, dtype=float)
    out = np.empty_like(x)
    _erf_all(x, out)
    return out


def _ulp(got, ref):
    """|got - ref| in units of the last place of ref (mpmath at 40 digits, or float64)."""
    ref = np.asarray(ref, dtype=float)
    return np.abs(np.asarray(got) - ref) / np.spacing(np.maximum(np.abs(ref), np.finfo(float).tiny))


def test_the_coefficients_are_derived():
    """The tuples in the module are what derive() computes with mpmath, digit for digit: not copied."""
    assert special.derive() == (special._SMALL, special._TAIL)
    assert (len(special._SMALL) - 1, len(special._TAIL) - 1) == special.DEGREES
    with pytest.raises(AssertionError):  # the check can fail: other degrees give other polynomials
        assert special.derive(degrees=(10, 30)) == (special._SMALL, special._TAIL)


def test_within_3_ulp_of_mpmath():
    """Random points over the whole range, dense ones at the seams (CUT, TOP) and near 0, against erf at 40
    digits rounded to float64: the module docstring's 2.6 ulp (from the exact value) plus that rounding."""
    rng = np.random.default_rng(3)
    x = np.concatenate([
        rng.uniform(-7.0, 7.0, 3000),
        rng.normal(0.0, 1.0, 2000),
        special.CUT + np.linspace(-1e-3, 1e-3, 401),
        special.TOP + np.linspace(-1e-3, 1e-3, 101),
        np.geomspace(1e-300, 1e-3, 200),
    ])
    x = np.concatenate([x, -x])
    with mp.workdps(40):
        ref = np.array([float(mp.erf(mp.mpf(float(v)))) for v in x])
    err = _ulp(_erf(x), ref)
    assert err.max() <= 3.0, (err.max(), x[err.argmax()])
    assert np.mean(err > 1.0) < 0.05


def test_within_3_ulp_of_libm_on_a_dense_grid():
    x = np.linspace(-6.5, 6.5, 1_000_001)
    ref = np.array([math.erf(v) for v in x[::7]])
    err = _ulp(_erf(x[::7]), ref)
    assert err.max() <= 3.0
    assert np.mean(err > 1.0) < 0.01  # mostly within libm's own rounding


def test_special_values():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 6.0, -6.0, 30.0, -1e300, 5e-324])
    y = _erf(x)
    assert np.isnan(y[0]) and y[1] == 1.0 and y[2] == -1.0
    assert y[3] == 0.0 and not np.signbit(y[3]) and y[4] == 0.0 and np.signbit(y[4])  # -0 kept
    assert y[5] == 1.0 and y[6] == -1.0 and y[7] == 1.0 and y[8] == -1.0  # erfc(6) = 2e-17 < ulp(1) / 2
    assert y[9] == math.erf(5e-324)
    grid = np.linspace(-6.5, 6.5, 20001)
    d = np.diff(_erf(grid))
    assert np.all(d[np.abs(grid[1:]) < 5.5] >= 0.0)  # monotone across the seam at CUT
    assert d.min() >= -np.spacing(0.5)  # near 6 (1 - erf < 1e-15) the tail's error flips the last bit, no more


def test_the_python_function_is_the_compiled_one():
    """Without numba the same function runs as Python: the same numbers (float64 operations in the same order)."""
    x = np.random.default_rng(4).uniform(-7, 7, 300)
    np.testing.assert_array_equal([special.erf.py_func(v) for v in x], _erf(x))


# ----------------------------------------------------------------------------- the update's erf loop
def _shared_and_per_sample(rule, K=2, M=2, n=257, seed=5):
    """update_batch with one state for all samples (sv = 0: the erf loop) and with that state repeated per
    sample (the generic loop, libm's erf), and the rule's own numpy update."""
    rng = np.random.default_rng(seed)
    lam, nu, zeta = 1.7 * rng.standard_normal((n, K)), 1.7 * rng.standard_normal((n, M)), rng.standard_normal(n)
    v, S, b, vs = rng.standard_normal(K), rng.standard_normal(K), rng.standard_normal(K), rng.standard_normal(M)
    shared = R.update_batch(rule, "erf", lam, nu, zeta, v, vs, S, b, 0.2, 0.9)
    rep = [np.tile(a, (n, 1)) for a in (v, vs, S, b)]
    per = R.update_batch(rule, "erf", lam, nu, zeta, rep[0], rep[1], rep[2], rep[3], 0.2, 0.9)
    ref = rule.local_update(lam, nu, zeta, v=v, v_star=vs, S=S, b=b, sigma=0.2, sigma_F=0.9, g="erf")
    return shared, per, (ref.delta, ref.alpha, ref.e_out, ref.h, ref.e)


class Nested(theory.Rule):
    """A user rule without closed forms: a second forward pass on a modulated field, as pepita's, in the hidden
    update too (g of g)."""

    name = "nested-test"
    reads = ("S",)

    def update(self, x):
        lam2 = x.lam - 0.5 * x.e[..., None] * x.S
        return theory.LocalUpdate(delta=(x.g(lam2) - x.g(x.lam)) * x.dg(x.g(lam2)), alpha=x.e)


@pytest.mark.parametrize("rule", [theory.make_rule("pepita"), Nested()], ids=lambda r: r.label)
def test_the_erf_loop_is_the_generic_loop_and_the_update(rule):
    src = R.compiled_rule(rule, 2, 2).path.read_text()
    assert "g_erf(" in src  # no closed form (derived): the module has the loop
    shared, per, ref = _shared_and_per_sample(rule)
    for name, a, p, r in zip(("delta", "alpha", "e_out", "h", "e"), shared, per, ref):
        scale = max(1.0, np.abs(r).max())
        np.testing.assert_allclose(a, p, rtol=0, atol=1e-14 * scale, err_msg=name)
        np.testing.assert_allclose(a, np.broadcast_to(r, a.shape), rtol=0, atol=1e-13 * scale, err_msg=name)


@pytest.mark.parametrize("name", ["bp", "fa", "afa"])
def test_closed_form_rules_have_no_erf_loop(name):
    """Where the erf expectations have closed forms, the quadrature is a cross-check and its module keeps only
    the generic loop (the ERF_LOOP switch, from the derived closed_form fact): the shared state still matches."""
    rule = theory.make_rule(name)
    src = R.compiled_rule(rule, 2, 2).path.read_text()
    (update,) = [f for f in ast.parse(src).body if isinstance(f, ast.FunctionDef) and f.name == "update"]
    names = {n.id for n in ast.walk(update) if isinstance(n, ast.Name)}
    assert not names & {"g_erf", "dg_erf", "ERF_LOOP"} and [type(s) for s in update.body[1:]] == [ast.For]
    shared, per, ref = _shared_and_per_sample(rule)
    for a, p in zip(shared, per):
        np.testing.assert_array_equal(a, p)


def test_switches_are_resolved_at_generation():
    """``if ERF_LOOP and ...:`` keeps its body and the rest of its test, or becomes its else; unknown switches and
    non-booleans are refused."""
    from theory._codegen import template

    code = ast.parse("delta[0, t] = g_scalar(lam[0, t], gk) * dg_scalar(nu[0, t], gk)").body
    on = template.specialise(template.update, code, {"ERF_LOOP": True})
    (branch,) = [s for s in on.body if isinstance(s, ast.If)]
    assert ast.unparse(branch.test) == "sv == 0 and gk == 0"
    assert "g_erf(lam[0, t], gk) * dg_erf(nu[0, t], gk)" in ast.unparse(branch.body[0])
    assert "g_scalar(lam[0, t], gk)" in ast.unparse(branch.orelse[0])
    off = template.specialise(template.update, code)  # the default: SWITCHES' value, False
    assert [type(s) for s in off.body[1:]] == [ast.For] and "g_erf" not in ast.unparse(off.body[1])
    with pytest.raises(ValueError, match="switches"):
        template.specialise(template.update, code, {"FAST": True})
    with pytest.raises(ValueError, match="switches"):
        template.specialise(template.update, code, {"ERF_LOOP": 1})
