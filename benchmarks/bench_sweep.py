"""Benchmark: 1,000 K = M = 2 bp learning curves to t = 1000 with theory.sweep, against one-at-a-time
theory.integrate and against the numpy-vectorised DOP853 (the previous sweep engine) in the same run,
with the floor set by the right-hand side (one evaluation's time x the evaluations / threads).

Also against JAX + diffrax (optional, skipped when absent: pip install jax diffrax): the same ODE in
jax.numpy, vmapped, Dopri8 at the same tolerances, on N_JAX random points of the grid (extrapolated).

Grid: 10 learning rates eta in [0.2, 2] x 100 initial conditions (random weights at D = 1000:
50 seeds x w_std in {0.3, 1.0}); 201 output times (0 and 200 log-spaced in [1e-2, 1e3]); DOP853 at
rtol 1e-8, atol 1e-10 (and the sweep again at rtol 1e-6). The one-at-a-time baseline integrates
N_BASELINE points chosen at random from the grid (after a warm-up call, so compilation is not
counted) and is extrapolated to the 1,000 points: said so in the output.

    PYTHONPATH=. python benchmarks/bench_sweep.py
"""

import os
import time

import numpy as np

import theory

N_BASELINE = 20
N_JAX = 100  # points of the JAX + diffrax baseline (vmapped, its cost grows with the points: extrapolated)


def main():
    etas = np.linspace(0.2, 2.0, 10)
    states, seeds, wstds = [], [], []
    for w in (0.3, 1.0):
        for s in range(50):
            states.append(theory.random_state(2, 2, D=1000, seed=s, w_std=w))
            seeds.append(s)
            wstds.append(w)
    n = len(states) * len(etas)
    print(f"bench_sweep: {n} K=M=2 bp curves to t=1000 on {os.cpu_count()} CPUs")

    # warm-up (numba compilation is cached on disk; not part of the figures)
    theory.sweep(states[:2], "bp", eta=[1.0, 0.5], progress=False)
    theory.integrate(states[0], "bp", eta=1.0)

    res = {}
    for rtol in (1e-8, 1e-6):
        t0 = time.perf_counter()
        res[rtol] = theory.sweep(states, "bp", grid=dict(eta=etas), tags=dict(seed=seeds, w_std=wstds),
                                 rtol=rtol, atol=rtol * 1e-2, progress=False)
        dt = time.perf_counter() - t0
        tab = res[rtol].table
        print(f"  sweep rtol={rtol:g}: {dt:.2f} s for {n} curves ({1e3 * dt / n:.2f} ms/curve); "
              f"status 0: {np.sum(tab['status'] == 0)}/{n}; mean nfev/curve {tab['nfev'].mean():.0f}")
        res[rtol] = (res[rtol], dt)

    # the previous engine of sweeps: DOP853 vectorised over the points in numpy (still the path of right-hand
    # sides that exist only in Python), on the same points
    import theory.sweeps.sweep as sw

    compiled_rhs = sw._Chunk.compiled_rhs
    sw._Chunk.compiled_rhs = lambda self: None
    try:
        t0 = time.perf_counter()
        old = theory.sweep(states, "bp", grid=dict(eta=etas), tags=dict(seed=seeds, w_std=wstds), rtol=1e-8, atol=1e-10,
                           progress=False)
        dt_numpy = time.perf_counter() - t0
    finally:
        sw._Chunk.compiled_rhs = compiled_rhs
    print(
        f"  numpy-vectorised DOP853 on the same points (the previous sweep engine): {dt_numpy:.2f} s -> compiled "
        f"stepper {dt_numpy / res[1e-8][1]:.1f}x faster; max |eg difference| "
        f"{np.nanmax(np.abs(old.eg - res[1e-8][0].eg)):.2g}"
    )

    # the floor: one compiled right-hand-side evaluation, times the evaluations, over the threads
    import numba

    from theory._codegen.rule import RHS_TYPE, function_pointer

    @numba.njit(numba.void(RHS_TYPE, numba.float64[::1], numba.float64[::1], numba.float64[::1], numba.int64))
    def repeat(f, y, p, dy, m):
        for _ in range(m):
            f(0.0, y, p, dy)

    rhs, p = theory.make_dynamics(states[0], "bp", eta=1.0).compiled()
    y, dy = states[0].to_vector(), np.empty(states[0].to_vector().size)
    fp = function_pointer(rhs)
    repeat(fp, y, p, dy, 10)
    t0 = time.perf_counter()
    repeat(fp, y, p, dy, 200_000)
    us = (time.perf_counter() - t0) / 200_000 * 1e6
    nfev = res[1e-8][0].table["nfev"].sum()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"  floor: one K=M=2 bp right-hand side {us:.2f} us x {nfev} evaluations / {cpus} threads = "
          f"{us * 1e-6 * nfev / cpus:.2f} s (the sweep at rtol 1e-8: {res[1e-8][1]:.2f} s; target 1 s)")

    rng = np.random.default_rng(0)
    pick = rng.choice(n, N_BASELINE, replace=False)
    sw, dt_sweep = res[1e-8]
    t0 = time.perf_counter()
    dev = 0.0
    for i in pick:
        row = sw.table.iloc[int(i)]
        tr = theory.integrate(states[row["state"]], "bp", eta=row["eta"], rtol=1e-8, atol=1e-10)
        dev = max(dev, float(np.abs(tr.eg - sw.eg[i]).max()))
    dt_one = (time.perf_counter() - t0) / N_BASELINE
    print(f"  one at a time (theory.integrate, rtol=1e-8): {1e3 * dt_one:.1f} ms/curve measured on {N_BASELINE} "
          f"random points -> extrapolated {dt_one * n:.1f} s for {n} curves")
    print(f"  speed-up of the sweep (rtol 1e-8): {dt_one * n / dt_sweep:.1f}x; max |eg_sweep - eg_integrate| on those "
          f"points: {dev:.2g}")
    print(f"  target: {n} curves under 1 s -> {'met' if dt_sweep < 1 else 'NOT met'} at rtol 1e-8 "
          f"({dt_sweep:.2f} s), {'met' if res[1e-6][1] < 1 else 'NOT met'} at rtol 1e-6 ({res[1e-6][1]:.2f} s)")
    jax_baseline(states, sw, dt_sweep)
    tab = sw.table
    print(f"  median plateau length {np.nanmedian(tab['plateau_length'][tab['plateau_length'] > 0]):.1f} (steps/D), "
          f"points with a plateau {np.sum(tab['plateau_length'] > 0)}/{n}")


def jax_baseline(states, sw, dt_sweep):
    """The same 1,000 curves with JAX + diffrax (Dopri8, the 8th-order Dormand-Prince pair of DOP853, PID
    step control, rtol 1e-8, atol 1e-10), the bp erf ODE written in jax.numpy from THEORY.md section 4
    (I2, I3, I4 closed forms; Q, R, S, v) and vmapped over the points. Optional: skipped when jax or
    diffrax is not installed (pip install jax diffrax). Prints the compile time and the run time
    apart, and the largest eg difference from the sweep (the two solve the same ODE)."""
    try:
        import diffrax
        import jax
        import jax.numpy as jnp
    except ImportError:
        print("  JAX + diffrax: not installed, skipped (optional: pip install jax diffrax)")
        return
    jax.config.update("jax_enable_x64", True)
    K, M = 2, 2
    rows = np.sort(np.random.default_rng(1).choice(len(sw.table), min(N_JAX, len(sw.table)), replace=False))
    tab = sw.table.iloc[rows]
    pts = [states[int(i)] for i in tab["state"]]
    y0 = jnp.asarray(np.stack([s.to_vector()[: K * K + K * M + 2 * K] for s in pts]))
    cst = jnp.asarray(
        np.stack([np.concatenate([np.ravel(s.T), np.ravel(s.U), [s.P], np.ravel(s.v_star)]) for s in pts])
    )
    eta = jnp.asarray(tab["eta"].to_numpy(dtype=float))
    assert np.allclose(pts[0].to_vector()[: K * K + K * M + 2 * K], np.concatenate(
        [np.ravel(pts[0].Q), np.ravel(pts[0].R), np.ravel(pts[0].S), np.ravel(pts[0].v)])), "state layout"

    def omega(y, c):
        Q, R, S = y[:4].reshape(K, K), y[4:8].reshape(K, M), y[8:10]
        T, U, P = c[:4].reshape(M, M), c[4:6], c[6]
        top = jnp.concatenate([Q, R, S[:, None]], 1)
        mid = jnp.concatenate([R.T, T, U[:, None]], 1)
        bot = jnp.concatenate([S, U, P[None]])[None, :]
        return jnp.concatenate([top, mid, bot], 0)  # (lambda_1..K, nu_1..M, phi)

    def i2(C, a, b):
        return 2 / jnp.pi * jnp.arcsin(C[a, b] / jnp.sqrt((1 + C[a, a]) * (1 + C[b, b])))

    def i3(C, a, b, c):
        l3 = (1 + C[a, a]) * (1 + C[c, c]) - C[a, c] ** 2
        return 2 / jnp.pi * (C[b, c] * (1 + C[a, a]) - C[a, b] * C[a, c]) / ((1 + C[a, a]) * jnp.sqrt(l3))

    def i4(C, a, b, c, d):
        l4 = (1 + C[a, a]) * (1 + C[b, b]) - C[a, b] ** 2
        l0 = (l4 * C[c, d] - C[b, c] * C[b, d] * (1 + C[a, a]) - C[a, c] * C[a, d] * (1 + C[b, b])
              + C[a, b] * C[a, c] * C[b, d] + C[a, b] * C[a, d] * C[b, c])
        l1 = (
            l4 * (1 + C[c, c])
            - C[b, c] ** 2 * (1 + C[a, a])
            - C[a, c] ** 2 * (1 + C[b, b])
            + 2 * C[a, b] * C[a, c] * C[b, c]
        )
        l2 = (
            l4 * (1 + C[d, d])
            - C[b, d] ** 2 * (1 + C[a, a])
            - C[a, d] ** 2 * (1 + C[b, b])
            + 2 * C[a, b] * C[a, d] * C[b, d]
        )
        return 4 / jnp.pi**2 / jnp.sqrt(l4) * jnp.arcsin(l0 / jnp.sqrt(l1 * l2))

    units = list(range(K + M))  # the output's units: students (weight v_j) and teachers (weight -v*_m)

    def rhs(t, y, args):
        c, e = args
        C = omega(y, c)
        w = jnp.concatenate([y[10:12], -c[7:9]])
        v = y[10:12]
        e_x = lambda k, x: sum(w[j] * i3(C, k, x, j) for j in units)  # noqa: E731  E[g'(lambda_k) x e]
        dQ = [[None] * K for _ in range(K)]
        for k in range(K):
            for l in range(K):
                e2 = sum(w[i] * w[j] * i4(C, k, l, i, j) for i in units for j in units)
                dQ[k][l] = -e * (v[k] * e_x(k, l) + v[l] * e_x(l, k)) + e**2 * v[k] * v[l] * e2
        dR = [-e * v[k] * e_x(k, K + n) for k in range(K) for n in range(M)]
        dS = [-e * v[k] * e_x(k, K + M) for k in range(K)]
        dv = [-e * sum(w[j] * i2(C, k, j) for j in units) for k in range(K)]
        return jnp.stack([dQ[k][l] for k in range(K) for l in range(K)] + dR + dS + dv)

    ts = jnp.asarray(np.asarray(sw.t, dtype=float))
    t_end = float(np.asarray(sw.t, dtype=float)[-1])
    ref = theory.make_dynamics(pts[0], "bp", eta=float(eta[0])).rhs(pts[0].to_vector())[: K * K + K * M + 2 * K]
    if not np.allclose(ref, np.array(rhs(0.0, y0[0], (cst[0], eta[0]))), rtol=1e-10, atol=1e-13):
        print("  JAX + diffrax: its right-hand side differs from theory's: skipped")
        return

    def solve(y, c, e):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(rhs), diffrax.Dopri8(), t0=0.0, t1=t_end, dt0=None, y0=y,
                                  args=(c, e), saveat=diffrax.SaveAt(ts=ts),
                                  stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10), max_steps=200_000)
        return sol.ys

    run = jax.jit(jax.vmap(solve))
    t0 = time.perf_counter()
    run(y0[:2], cst[:2], eta[:2]).block_until_ready()
    dt_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    ys = np.asarray(run(y0, cst, eta).block_until_ready())
    dt_jax = time.perf_counter() - t0
    C = np.asarray(jax.vmap(lambda yy, c: jax.vmap(lambda y: omega(y, c))(yy))(jnp.asarray(ys), cst))[
        ..., : K + M, : K + M
    ]
    a = np.concatenate([ys[..., 10:12], -np.broadcast_to(np.asarray(cst)[:, None, 7:9], ys.shape[:2] + (M,))], -1)
    d = 1 + np.diagonal(C, 0, -2, -1)
    eg = 0.5 * np.einsum(
        "...i,...ij,...j->...", a, 2 / np.pi * np.arcsin(C / np.sqrt(d[..., :, None] * d[..., None, :])), a
    )
    n_all = len(sw.table)
    print(
        f"  JAX {jax.__version__} + diffrax {diffrax.__version__} (Dopri8, vmapped, CPU): {dt_jax:.2f} s for "
        f"{len(pts)} "
        f"random points of the grid (compile {dt_compile:.1f} s apart) -> extrapolated "
        f"{dt_jax * n_all / len(pts):.1f} s "
        f"for {n_all}; the compiled sweep ({dt_sweep:.2f} s) is {dt_jax * n_all / len(pts) / dt_sweep:.1f}x faster; "
        f"max |eg difference| on those points {np.nanmax(np.abs(eg - sw.eg[rows])):.2g}"
    )


if __name__ == "__main__":
    main()
