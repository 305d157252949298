# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fixed points: the plateau, its escape, the degenerate solutions, bifurcations
#
# The learning ODEs (THEORY.md section 4) have fixed points: states x* of the order parameters
# where dx/dt = 0. The *plateau* is the symmetric (unspecialised) one, where every student unit is
# the same; it is a saddle, whose unstable exponent lambda_u (specialisation, R_ii - R_ik) sets how
# long learning stays on it. Starting D^-1/2 away from it (what random weights at dimension D give)
# the escape takes t = const + ln D / (2 lambda_u). `theory.symmetric_plateau` finds it,
# `FixedPoint.escape` predicts the escape, `theory.continuation` follows a fixed point in one
# hyper-parameter and locates its folds and branch points. The same from the command line:
# `pepita-dynamics fixed-points --rules bp,afa --continue sigma_F=0.5:3.5`.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import theory

SIZE = os.environ.get("PEPITA_NB_SIZE", "full")
SMALL = SIZE == "small"
FIGDIR = os.environ.get("PEPITA_NB_FIGDIR")


def save(fig, name):
    """Keep a copy of the figure when PEPITA_NB_FIGDIR is set."""
    if FIGDIR:
        fig.savefig(os.path.join(FIGDIR, name), dpi=90, bbox_inches="tight")


print("size:", SIZE)

# %% [markdown]
# ## The plateau of bp, AFA and PEPITA against sigma_F
#
# bp does not see sigma_F. AFA's plateau (its feedback sigma_F S is the same for both units) is
# followed by continuation in sigma_F; PEPITA (numerical expectations) is solved at a few values,
# from AFA's plateau (its first-order expansion) or the previous PEPITA point as the guess.

# %%
KW = {"eta": 0.5}
bp = theory.symmetric_plateau("bp", **KW)
afa = theory.symmetric_plateau("afa", sigma_F=1.0, **KW)
branch = theory.continuation(afa, "sigma_F", (0.5 if SMALL else 0.2, 4.0), max_points=150, ds_max=0.3 if SMALL else 0.1)
print(bp)
print(afa)
print(branch)

pepita, afa_at, previous = {}, {}, None
for sf in ((1.0,) if SMALL else (0.25, 0.5, 1.0, 1.5, 2.0, 2.5)):
    i = int(np.argmin(np.abs(branch.values - sf) + 1e3 * (branch.s < 0) * (branch.values > 3)))
    afa_sf = afa_at[sf] = theory.fixed_point(branch.states[i], "afa", sigma_F=sf, **KW)
    for guess in ([afa_sf.state] if previous is None else [afa_sf.state, previous.state]):
        try:
            previous = pepita[sf] = theory.symmetric_plateau("pepita", guess=guess, sigma_F=sf, **KW)
            break
        except theory.FixedPointError as exc:
            print(f"pepita at sigma_F = {sf}: {str(exc)[:80]}...")
for sf, fp in pepita.items():
    print(f"pepita sigma_F = {sf}: eg = {fp.eg:.6f}, lambda_u = {fp.eigenvalues[0].real:.4g} "
          f"(afa's {afa_at[sf].eigenvalues[0].real:.4g}), "
          f"accuracy {fp.accuracy:.1e}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
first = branch.n_unstable == branch.n_unstable[np.argmin(np.abs(branch.values - 1.0))]  # the plateau's own branch
axes[0].plot(branch.values[first], branch.eigenvalues[first, 0].real, "C1-", label="afa (continuation)")
axes[0].plot(branch.values[~first], branch.eigenvalues[~first, 0].real, "C1:", label="afa, past the fold")
axes[0].plot(list(pepita), [fp.eigenvalues[0].real for fp in pepita.values()], "C3o", label="pepita")
axes[0].axhline(bp.eigenvalues[0].real, color="C0", label="bp")
axes[0].set(yscale="log", xlabel="sigma_F", ylabel="unstable exponent lambda_u", title="plateau: escape rate")
axes[0].legend(fontsize=8)
theory.plot_bifurcation(branch, ax=axes[1], labels=["afa"], colors=["C1"])
axes[1].plot(list(pepita), [fp.eg for fp in pepita.values()], "C3o", label="pepita")
axes[1].axhline(bp.eg, color="C0", label="bp")
axes[1].legend(fontsize=8)
fig.tight_layout()
save(fig, "10_plateau_sigma_F.png")

# %% [markdown]
# ## Predicted escape times against D
#
# From the plateau's weights plus a Gaussian perturbation of size D^-1/2 (every mode excited, as
# finite-D weights do), the prediction `FixedPoint.escape` (linear growth at lambda_u, then the
# unstable manifold integrated) against the ODE integrated from the same start, and for bp the
# median escape time of the exact finite-D sampler (`simulate.run_reduced`, error bars: the 95 %
# order-statistic interval). The prediction is late by the nonlinear effect of the stable
# components, which vanishes like ln D / sqrt D; the slope is 1 / (2 lambda_u) per ln D.
# AFA and PEPITA's plateaus are much flatter (lambda_u ~ 5e-4 at sigma_F = 1): their escapes take
# ~10^4 time units.

# %%
import simulate
from theory import crossing_time


def near(fp, D, seed=0):
    """The fixed point's order parameters realised by weights (teacher w*_m = e_m, f = e_M+1, T = I, U = 0, P = 1),
    plus a Gaussian perturbation of the student's weights of size D^-1/2 per coordinate."""
    st = fp.state
    M = st.M
    C = st.Q - st.R @ st.R.T - np.outer(st.S, st.S)
    w, V = np.linalg.eigh(C)
    W0 = np.hstack([st.R, st.S[:, None], V * np.sqrt(np.clip(w, 0, None))])
    W = W0 + np.random.default_rng(seed).standard_normal(W0.shape) / np.sqrt(D)
    Ws = np.eye(M, W0.shape[1])
    f = np.eye(W0.shape[1])[M]
    return st.replace(Q=W @ W.T, R=W @ Ws.T, S=W @ f)


DS = np.geomspace(200, 1e4, 3) if SMALL else np.geomspace(200, 1e6, 8)
escape = {}
for name, fp, kw in (("bp", bp, KW), ("afa", afa, dict(KW, sigma_F=1.0))):
    rows = []
    for D in DS:
        s0 = near(fp, D)
        esc = fp.escape(s0, t_max=50.0 / fp.eigenvalues[0].real)  # the unstable manifold, integrated up to t_max
        tr = theory.integrate(s0, name, np.concatenate([[0.0], np.geomspace(1e-2, 20 * esc.time, 3000)]), **kw)
        rows.append((esc.time, crossing_time(tr.t, tr.eg, esc.level)))
    escape[name] = np.array(rows)
    slope = np.polyfit(np.log(DS), escape[name][:, 1], 1)[0]
    print(f"{name}: predicted {np.round(escape[name][:, 0], 1)}, ODE {np.round(escape[name][:, 1], 1)}; "
          f"slope {slope:.4g} per ln D against 1/(2 lambda_u) = {0.5 / fp.eigenvalues[0].real:.4g}")

SIM_DS, REPLICAS = ((200, 500), 16) if SMALL else ((500, 2000, 10000), 64)
sim = []
for D in SIM_DS:
    s0 = near(bp, D)
    level = 0.5 * bp.eg
    res = simulate.run_reduced(s0, "bp", np.arange(0.0, bp.escape(s0).time + 60.0, 0.25), D=D, replicas=REPLICAS,
                               seed=1, **KW)
    t_esc = np.sort(simulate.plateau_escape_times(res, threshold=level))
    h = 1.96 * np.sqrt(REPLICAS) / 2
    lo, hi = t_esc[max(int(REPLICAS / 2 - h), 0)], t_esc[min(int(np.ceil(REPLICAS / 2 + h)), REPLICAS - 1)]
    sim.append((D, np.median(t_esc), lo, hi))
    print(f"bp sampler, D = {D}: median escape {np.median(t_esc):.2f} [{lo:.2f}, {hi:.2f}], "
          f"predicted {bp.escape(s0).time:.2f}")
sim = np.array(sim)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, name in zip(axes, escape):
    ax.plot(DS, escape[name][:, 0], "o-", label="predicted (FixedPoint.escape)")
    ax.plot(DS, escape[name][:, 1], "k--", label="ODE from the same start")
    ax.set(xscale="log", xlabel="D", ylabel="escape time (steps / D)", title=f"{name}: plateau escape")
axes[0].errorbar(sim[:, 0], sim[:, 1], yerr=[sim[:, 1] - sim[:, 2], sim[:, 3] - sim[:, 1]], fmt="s", color="C3",
                 label=f"exact sampler, median of {REPLICAS}")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
save(fig, "10_escape_vs_D.png")

# %% [markdown]
# ## The degenerate solutions (the ICLR 2024 paper's Fig. 2c)
#
# g is odd, so the student w_k = s_k w*_k, v_k = s_k v*_k computes the teacher's function for every
# sign pattern s: v anti-aligned with v* (s = (-1, -1)) is as good as the teacher. With the constants
# of random weights at D = 500 (f slightly correlated with the teacher, so AFA's feedback
# sigma_F S = sigma_F s U is not zero there) these are fixed points of every rule; their stability
# differs. bp: all stable (symmetry images of each other). AFA and PEPITA: saddles for every s.
# AFA from random weights ends at a marginal fixed point near one of them, with one unit's feedback
# dead (S_k = 0).

# %%
constants = theory.random_state(2, 2, D=500, seed=0)
SIGNS = ((1, 1), (-1, 1), (1, -1), (-1, -1))
rules = ("bp", "afa") if SMALL else ("bp", "afa", "pepita")
deg = {}
for rule in rules:
    for s in SIGNS:
        fp = deg[rule, s] = theory.degenerate_solution(rule, signs=s, constants=constants, sigma_F=1.0, **KW)
        print(f"{rule:7s} s = {s}: angle(v, v*) = {fp.angles['teacher']:6.1f} deg, unstable {fp.n_unstable}, "
              f"marginal {fp.n_marginal}, leading exponents {np.round(fp.eigenvalues[:2].real, 5)}")

T_END = 3e3 if SMALL else 1e5
tr = theory.integrate(constants, "afa", theory.default_times(T_END, 200), sigma_F=1.0, **KW)
end = theory.fixed_point(tr, "afa", point="end", sigma_F=1.0, throw=False, **KW)
print(f"afa from random weights, t = {T_END:g}: eg = {tr.eg[-1]:.3g}, v = {np.round(tr.v[-1], 3)}, "
      f"S = {np.round(tr.S[-1], 4)}; fixed point there: {end}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
pos = tr.t > 0
for key in ("teacher", "degenerate:-+", "degenerate:+-", "degenerate:--"):
    axes[0].plot(tr.t[pos], tr.angles[key][pos], label=key.replace("teacher", "angle(v, v*)"))
axes[0].set(xscale="log", xlabel="t", ylabel="angle (degrees)", title="afa from random weights: v against s * v*")
axes[0].legend(fontsize=8)
x = np.arange(len(SIGNS))
for j, rule in enumerate(rules):
    axes[1].bar(x + 0.25 * j, [deg[rule, s].eigenvalues[0].real for s in SIGNS], 0.25, label=rule)
axes[1].axhline(0, color="k", lw=0.8)
axes[1].set_xticks(x + 0.25, [str(s) for s in SIGNS])
axes[1].set(xlabel="signs s", ylabel="leading exponent", title="teacher solutions: stable below 0")
axes[1].legend(fontsize=8)
fig.tight_layout()
save(fig, "10_degenerate.png")

# %% [markdown]
# ## Bifurcations
#
# Continuation in one hyper-parameter, with the stability along the branch (solid stable, dashed
# unstable) and the special points located by Brent's method: AFA's plateau ends at a fold in
# sigma_F (beyond it there is no symmetric plateau: the feedback runs away), and bp's specialised
# solution (frozen v) loses stability at a critical learning rate (a branch point).

# %%
spec = theory.specialised_solution("bp", eta=0.5, train_second_layer=False)
eta_branch = theory.continuation(spec, "eta", (0.5, 4.0), direction="up")
print(eta_branch)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
theory.plot_bifurcation(branch, ax=axes[0], labels=["afa plateau"], colors=["C1"])
theory.plot_bifurcation(eta_branch, y="R[0,0]", ax=axes[1], labels=["bp specialised (v frozen)"])
fig.tight_layout()
save(fig, "10_bifurcations.png")
