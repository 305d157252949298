"""Benchmark: ReLU closed forms and the compiled numerical-expectation engine (issue #12).

Prints, in one run on this machine, each figure next to the previous path ("today's") measured in the
same run, and the accuracy of each path where it is not exact:

1. relu bp, K = M = 2, theory.random_state(2, 2, D=500), eta = 0.5, to t = 300 at rtol 1e-8: the compiled
   closed forms (target < 50 ms) against the numpy numerical engine with the former relu default
   GaussHermite(32) (its time per call times the same number of calls: the curve takes tens of
   minutes) and that quadrature's error against the closed forms along the curve.
2. exact PEPITA (erf), K = M = 2 to t = 300, expectation error ~1e-5 (GaussHermite(16, prune=1e-8),
   its error measured against GaussHermite(40)): compiled engine (target < 0.3 s) against the numpy
   engine with the same nodes and with GaussHermite(16) (the former 1e-5 setting, 2 s at the time).
3. exact PEPITA (erf), K = M = 4 to t = 100 with the default QMC rule, sigma_F = 0.5 (at sigma_F = 1,
   eta = 0.3 this state runs away near t = 25, in the numpy and the compiled engine alike): compiled
   (target < 10 s) against numpy (its time per call times the same number of calls).
4. relu PEPITA, K = M = 2 to t = 300, sigma_F = 0.5 (at sigma_F = 1 this state runs away near t = 15,
   with every quadrature): the kink-aware rule KinkAware(n) (exact along lines) for several n, its error
   against KinkAware(96, outer="sphere") and the error of GaussHermite(32); target < 2 s at 1e-6. The former
   default KinkAware(16) (Gauss-Hermite across the lines) against the default KinkAware(24, outer="sphere")
   (a polar rule across the lines, issue 21).

Run: PYTHONPATH=. python benchmarks/bench_relu.py [--quick]
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

import theory
from theory.expectations.closed import closed_form_terms
from theory.expectations.numerical import GaussHermite, KinkAware, numerical_terms
from theory.ode.dynamics import make_dynamics


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def numpy_rhs_time(state, rule, t_end, n_calls=None, **kw):
    """Time of the numpy engine's ODE to t_end (scipy DOP853 on the uncompiled right-hand side)."""
    dyn = dataclasses.replace(make_dynamics(state, rule, **kw), use_jit=False)
    import scipy.integrate

    y0 = state.to_vector()
    t0 = time.perf_counter()
    sol = scipy.integrate.solve_ivp(lambda t, y: dyn.rhs(y), (0, t_end), y0, method="DOP853", rtol=1e-8, atol=1e-10)
    return time.perf_counter() - t0, sol.nfev, sol.y[:, -1]


def term_error(states, rule, quad, ref, g, sigma_F=1.0):
    err, scale = 0.0, 0.0
    for s in states:
        a = (s.Q, s.R, s.T, s.S, s.U, s.P, s.v, s.v_star, s.b)
        x = numerical_terms(rule, *a, g=g, quadrature=quad, sigma_F=sigma_F)
        y = ref(s) if callable(ref) else numerical_terms(rule, *a, g=g, quadrature=ref, sigma_F=sigma_F)
        err = max(err, max(np.abs(p - q).max() for p, q in zip(x, y)))
        scale = max(scale, max(np.abs(q).max() for q in y))
    return err, err / scale


def main(quick=False):
    st = theory.random_state(2, 2, D=500, seed=0)
    t300 = np.linspace(0, 300, 61)

    print("== 1. relu bp, K = M = 2, D = 500 init, eta = 0.5, t = 0..300, rtol 1e-8 ==")
    theory.integrate(st, "bp", [0, 1], eta=0.5, g="relu")  # compile
    tr, dt = timed(lambda: theory.integrate(st, "bp", t300, eta=0.5, g="relu"))
    dyn = dataclasses.replace(make_dynamics(st, "bp", eta=0.5, g="relu", quadrature=GaussHermite(32)), use_jit=False)
    _, t_call = timed(lambda: dyn.rhs(st.to_vector()))
    err, rel = term_error(
        [tr.state(i) for i in range(0, len(tr.t), 20)],
        "bp",
        GaussHermite(32),
        lambda s: closed_form_terms(theory.make_rule("bp"), s.Q, s.R, s.T, s.S, s.U, s.P, s.v, s.v_star, s.b, g="relu"),
        "relu",
    )
    print(f"  closed forms (compiled): {dt * 1e3:.1f} ms, nfev {tr.nfev}, eg(300) = {tr.eg[-1]:.8f}")
    print(
        f"  former path (numpy, GaussHermite(32), 32^4 nodes): {t_call:.2f} s per call -> ~{t_call * tr.nfev:.0f} s "
        f"for "
        f"the same nfev; ratio ~{t_call * tr.nfev / dt:.0f}x; its expectation error {err:.1e} (relative {rel:.1e})"
    )

    print("== 2. exact pepita (erf), K = M = 2, D = 1000 init, eta = 1, t = 0..300, rtol 1e-8 ==")
    st2 = theory.random_state(2, 2, D=1000, seed=0)
    q = GaussHermite(16, prune=1e-8)
    theory.integrate(st2, "pepita", [0, 1], eta=1.0, quadrature=q)
    tr2, dt2 = timed(lambda: theory.integrate(st2, "pepita", t300, eta=1.0, quadrature=q))
    states = [tr2.state(i) for i in range(0, len(tr2.t), 10)]
    err, rel = term_error(states, "pepita", q, GaussHermite(40), "erf")
    print(f"  compiled {q}: {dt2:.3f} s, nfev {tr2.nfev}, eg(300) = {tr2.eg[-1]:.8f}; expectation error {err:.1e} "
          f"(relative to the largest term {rel:.1e})")
    t_np = 30.0 if quick else 300.0
    for qq in (q, GaussHermite(16)):
        dtn, nf, _ = numpy_rhs_time(st2, "pepita", t_np, eta=1.0, quadrature=qq)
        print(f"  numpy {qq}: {dtn:.2f} s to t = {t_np:g} (nfev {nf}); ratio {dtn * 300 / t_np / dt2:.1f}x")

    print(
        "== 3. exact pepita (erf), K = M = 4, D = 1000 init, eta = 0.3, sigma_F = 0.5, t = 0..100, default QMC(2^14 "
        "x 8), "
        "rtol 1e-6 =="
    )
    st4 = theory.random_state(4, 4, D=1000, seed=0)
    t_end4 = 10.0 if quick else 100.0
    kw4 = dict(eta=0.3, sigma_F=0.5, rtol=1e-6, atol=1e-8)
    theory.integrate(st4, "pepita", [0, 0.1], **kw4)
    tr4, dt4 = timed(lambda: theory.integrate(st4, "pepita", np.linspace(0, t_end4, 11), **kw4))
    dyn4 = dataclasses.replace(make_dynamics(st4, "pepita", eta=0.3, sigma_F=0.5), use_jit=False)
    _, t_call = timed(lambda: dyn4.rhs(st4.to_vector()))
    print(f"  compiled: {dt4:.2f} s to t = {t_end4:g}, nfev {tr4.nfev} ({dt4 / tr4.nfev * 1e3:.1f} ms per call), "
          f"eg = {tr4.eg[-1]:.6f}")
    print(f"  numpy: {t_call * 1e3:.0f} ms per call -> {t_call * tr4.nfev:.1f} s for the same nfev; "
          f"ratio {t_call * tr4.nfev / dt4:.1f}x")

    print("== 4. relu pepita, K = M = 2, D = 500 init, eta = 0.5, sigma_F = 0.5, t = 0..300, rtol 1e-8 ==")
    ref_q = KinkAware(96, prune=1e-14, outer="sphere", radial=10)
    kw = dict(eta=0.5, sigma_F=0.5, g="relu")
    quads = [KinkAware(16), KinkAware(24, outer="sphere")] if quick else \
        [KinkAware(12), KinkAware(16), KinkAware(24), KinkAware(32), KinkAware(16, outer="sphere"),
         KinkAware(24, outer="sphere"), KinkAware(32, outer="sphere")]
    for qk in quads:
        theory.integrate(st, "pepita", [0, 0.5], quadrature=qk, **kw)
        trk, dtk = timed(lambda: theory.integrate(st, "pepita", t300, quadrature=qk, **kw))
        states = [trk.state(i) for i in range(0, len(trk.t), 20)]
        err, rel = term_error(states, "pepita", qk, ref_q, "relu", sigma_F=0.5)
        print(f"  {qk}: {dtk:.2f} s, nfev {trk.nfev}, eg(300) = {trk.eg[-1]:.8f}; expectation error {err:.1e} "
              f"(relative {rel:.1e}) against {ref_q}")
    err, rel = term_error(states, "pepita", GaussHermite(32), ref_q, "relu", sigma_F=0.5)
    print(f"  former default GaussHermite(32): expectation error {err:.1e} (relative {rel:.1e})")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
