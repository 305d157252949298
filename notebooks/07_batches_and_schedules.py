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
# # Mini-batches and learning-rate schedules
#
# Every experiment of the PEPITA papers trains with mini-batches and a decaying learning rate. A step
# that averages the updates of B samples keeps the first-order terms of the ODE and divides the
# second-order ones (the eta^2 E[delta delta] term, which carries the output noise) by B
# (docs/extensions.md). Time stays t = steps / D, so a run of length t sees B t D samples.
#
# How do the plateau and the final error of bp, afa and pepita move with B? Theory (the ODEs, a
# sweep over B) and simulation (the exact finite-D sampler, which costs the same at any D) on one
# figure.

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

# %%
import simulate

D = 200 if SMALL else 500
REPLICAS = 8 if SMALL else 64
T_MAX = 60.0 if SMALL else 400.0
SIGMA = 0.1  # output noise: it sets the final error, which a larger batch averages down
BATCHES = [1, 8] if SMALL else [1, 2, 4, 8, 16, 32]
RULES = ["bp", "afa", "pepita"]
t = np.concatenate([[0.0], np.geomspace(0.05, T_MAX, 40 if SMALL else 120)])
init = simulate.Initialisation(K=2, M=2, D=D, seed=0)
state0 = init.order_params()

# one sweep per rule: bp and afa use their closed forms; pepita's expectations with output noise are
# 5-dimensional (fields and noise), a coarser Gauss-Hermite rule keeps them to seconds (error ~1e-4)
tables = {rule: theory.sweep(state0, rule, t, eta=1.0, sigma=SIGMA, grid={"batch": BATCHES}, progress=False,
                             quadrature=theory.GaussHermite(8, n_noise=6) if rule == "pepita" else None).table
          for rule in RULES}
print("ODE: plateau length and eg(t_max) against B")
for rule in RULES:
    for B, length, eg in zip(BATCHES, tables[rule]["plateau_length"], tables[rule]["eg_final"]):
        print(f"  {rule:7s} B={B:3d}: plateau {length:6.1f}  eg(t_max) {eg:.3g}")

# %%
sims = {}
for rule in RULES:
    for B in BATCHES[:: 2 if not SMALL else 1]:
        res = simulate.run(init, rule, t, eta=1.0, sigma=SIGMA, batch=B, replicas=REPLICAS, engine="reduced",
                           n_test=0, progress=False, seed=1)
        sp = np.abs(res.state(-1).R) / np.sqrt(np.outer(np.diag(res.state(-1).Q), np.diag(res.state(-1).T)))
        length = theory.plateau(res.t, res.mean("eg"), (sp.max(-1) - sp.min(-1)).max())[0]
        sims[rule, B] = (length, res.mean("eg")[-1], res.sem("eg")[-1])
        print(
            f"simulation {rule:7s} B={B:3d}: plateau {length:6.1f}  eg(t_max) {sims[rule, B][1]:.3g} +- "
            f"{sims[rule, B][2]:.1g}"
        )

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for rule, c in zip(RULES, ("C0", "C1", "C2")):
    axes[0].plot(BATCHES, tables[rule]["plateau_length"], "-", color=c, label=f"{rule} ODE")
    axes[1].plot(BATCHES, tables[rule]["eg_final"], "-", color=c, label=f"{rule} ODE")
    Bs = [B for (r, B) in sims if r == rule]
    axes[0].plot(Bs, [sims[rule, B][0] for B in Bs], "o", color=c, label=f"{rule} simulation")
    axes[1].errorbar(Bs, [sims[rule, B][1] for B in Bs], yerr=[sims[rule, B][2] for B in Bs], fmt="o", color=c,
                     label=f"{rule} simulation")
axes[0].set(xscale="log", xlabel="batch size B", ylabel="plateau length (steps / D)", title=f"D = {D}, sigma = {SIGMA}")
axes[1].set(xscale="log", yscale="log", xlabel="batch size B", ylabel=f"eg at t = {T_MAX:g}",
            title="error at t_max (the noise floor ~ eta sigma^2 / B)")
for ax in axes:
    ax.legend(fontsize=7)
fig.tight_layout()
save(fig, "07_batches.png")

# %% [markdown]
# A schedule is a function of t: here step decay (the papers' training) and 1/t annealing against a
# constant rate, for bp with output noise: decaying the rate after the plateau lowers the noise floor
# (eps_g ~ eta sigma^2 at constant rate, ~ 1/t under 1/t annealing; docs/extensions.md). The ODE stops
# and restarts at each jump; the simulation uses eta(step / D).

# %%
T_S = 200.0 if SMALL else 1000.0
ts = np.concatenate([[0.0], np.geomspace(0.05, T_S, 60)])
schedules = {
    "constant": 1.0,
    "step decay": theory.Piecewise.step_decay(1.0, every=T_S / 4, factor=0.3, until=0.75 * T_S),
    "1/t": theory.PowerLaw(1.0, t0=T_S / 5, p=1.0),
}
fig, ax = plt.subplots(figsize=(6, 4))
pos = ts > 0
for (label, eta), c in zip(schedules.items(), ("C0", "C3", "C2")):
    tr = theory.integrate(state0, "bp", ts, eta=eta, sigma=SIGMA)
    res = simulate.run(
        init, "bp", ts, eta=eta, sigma=SIGMA, replicas=REPLICAS, engine="reduced", n_test=0, progress=False
    )
    ax.plot(tr.t[pos], tr.eg[pos], "--", color=c, label=f"{label}, ODE")
    ax.plot(res.t[pos], res.mean("eg")[pos], ".", color=c, ms=4, label=f"{label}, simulation")
    print(f"{label:10s} {eta!s:55s} eg(t = {T_S:g}): ODE {tr.eg[-1]:.3g}, simulation {res.mean('eg')[-1]:.3g}")
ax.set(xscale="log", yscale="log", xlabel="t = steps / D", ylabel="generalisation error", title=f"bp, sigma = {SIGMA}")
ax.legend(fontsize=8)
save(fig, "07_schedule.png")
