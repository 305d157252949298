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
# # erf against ReLU: the four rules, theory against simulation
#
# ReLU is the activation of the PEPITA papers' experiments. Its ODEs are exact here too: bp, fa and
# afa have closed forms (arc-cosine kernels and Gaussian orthant probabilities, up to the
# four-variable one, `theory.activations.relu`), and exact PEPITA, which has none, runs on the compiled
# numerical engine with the kink-aware rule (`theory.KinkAware`: exact along lines between the
# kinks of g and g', Gauss-Hermite across). The same initial weights, the same rates, the two
# activations: the simulations (thin lines, replicas; their mean solid) against the ODEs (dashed).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

SIZE = os.environ.get("PEPITA_NB_SIZE", "full")
SMALL = SIZE == "small"
FIGDIR = os.environ.get("PEPITA_NB_FIGDIR")


def save(fig, name):
    """Keep a copy of the figure when PEPITA_NB_FIGDIR is set."""
    if FIGDIR:
        fig.savefig(os.path.join(FIGDIR, name), dpi=90, bbox_inches="tight")


print("size:", SIZE)

# %%
import time

import simulate

D = 200 if SMALL else 500
REPLICAS = 2 if SMALL else 12
T_MAX = 20.0 if SMALL else 300.0
RULES = ("bp", "fa", "afa", "pepita")
t = np.concatenate([[0.0], np.geomspace(0.05, T_MAX, 20 if SMALL else 50)])
init = simulate.Initialisation(K=2, M=2, D=D, seed=0)
runs = {}
for g in ("erf", "relu"):
    t0 = time.perf_counter()
    runs[g] = simulate.compare(init, RULES, t, eta=0.5, sigma_F=1.0, g=g, replicas=REPLICAS, seed=0,
                               progress=False, n_test=1000)
    print(f"{g}: {time.perf_counter() - t0:.1f} s")
    print(runs[g].summary())

# %%
fig, axes = plt.subplots(2, 4, figsize=(15, 6.5), sharex=True)
for row, g in enumerate(("erf", "relu")):
    for col, rule in enumerate(RULES):
        ax = axes[row, col]
        cmp = runs[g]
        res = cmp.results[rule]
        mean, sem = res.mean("eg"), res.sem("eg")
        ax.fill_between(res.t[1:], (mean - sem)[1:], (mean + sem)[1:], color="C0", alpha=0.3)
        ax.loglog(res.t[1:], mean[1:], color="C0", lw=1.5, label="simulation (mean +- sem)")
        ax.loglog(cmp.ode_t(rule)[1:], cmp.ode_eg(rule)[1:], "k--", lw=1.2, label="ODE")
        ax.set_title(f"{rule}, g = {g}")
        if col == 0:
            ax.set_ylabel("generalisation error")
        if row == 1:
            ax.set_xlabel("t (steps / D)")
axes[0, 0].legend(fontsize=8)
fig.tight_layout()
save(fig, "09_eg.png")

# %% [markdown]
# The table below puts numbers on the figure: the final error of each ODE and simulation, and the
# largest distance between the simulations' mean and the ODE, next to the simulations' standard
# error. Where the simulation leaves the ODE, it is around the plateau escape (finite-D
# fluctuations), for relu as for erf (THEORY.md section 6).

# %%
for g in ("erf", "relu"):
    for rule in RULES:
        res, eg_ode = runs[g].results[rule], runs[g].ode_eg(rule)
        dev = np.abs(res.mean("eg") - eg_ode).max()
        print(f"{g:5s} {rule:7s} eg(T) ODE {eg_ode[-1]:.5f}  simulation {res.mean('eg')[-1]:.5f}  "
              f"max |mean - ODE| {dev:.4f} (largest standard error {res.sem('eg').max():.4f})")
