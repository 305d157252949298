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
# # Quickstart: one rule, its ODE against a simulation
#
# A two-layer erf student (K hidden units) learns a teacher (M units) online, one fresh Gaussian
# input per step. In the limit of large input dimension D its order parameters (Q, R, S, v) follow
# deterministic ODEs in the time t = steps / D (THEORY.md section 4). Here we simulate the network
# with `simulate.run` and integrate the ODE with `theory.integrate` from the *measured* initial
# order parameters of the same weights, and compare the generalisation error eps_g.

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

D = 200 if SMALL else 1000
REPLICAS = 4 if SMALL else 16
T_MAX = 60.0 if SMALL else 300.0
t = np.concatenate([[0.0], np.geomspace(0.05, T_MAX, 40)])

init = simulate.Initialisation(K=2, M=2, D=D, seed=1)
sim = simulate.run(init, "bp", t, eta=1.0, replicas=REPLICAS, seed=0, progress=False)
state0 = sim.initial_state()          # the measured order parameters of the initial weights
ode = theory.integrate(state0, "bp", t, eta=1.0)
print(sim)
print(ode)

# %% [markdown]
# The simulation's eps_g comes from the closed form of its measured order parameters (band: mean
# +- standard error over the replicas' independent data streams) and from a held-out test set
# (dots): the two agree, which checks the formula. The ODE (dashed) tracks the mean; finite-D
# fluctuations move the plateau escape, the most sensitive part of the curve.

# %%
fig, ax = plt.subplots(figsize=(6, 4))
pos = t > 0
m, s = sim.mean("eg"), sim.sem("eg")
ax.fill_between(t[pos], (m - s)[pos], (m + s)[pos], alpha=0.3, label=f"simulation, D={D}, {REPLICAS} replicas")
ax.plot(sim.t[pos], sim.mean("eg_test")[pos], ".", ms=4, label="simulation, test set")
ax.plot(ode.t[pos], ode.eg[pos], "k--", label="ODE")
ax.set(xscale="log", yscale="log", xlabel="t = steps / D", ylabel="generalisation error", title="bp, K = M = 2")
ax.legend()
save(fig, "01_eg.png")

# %%
# the order parameters themselves: R (student-teacher overlaps) over time
fig, ax = plt.subplots(figsize=(6, 4))
for k in range(2):
    for n in range(2):
        ax.plot(sim.t[pos], sim.mean("R")[pos, k, n], "-", label=f"R[{k},{n}] sim")
        ax.plot(ode.t[pos], ode.R[pos, k, n], "k--", lw=0.8)
ax.set(xscale="log", xlabel="t", ylabel="R", title="specialisation: each unit picks a teacher unit")
ax.legend(fontsize=8)
save(fig, "01_R.png")
