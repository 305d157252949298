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
# # The four rules side by side: bp, fa, afa and PEPITA against their ODEs
#
# The setting of the PEPITA theory paper's Fig. 2 (Srinivasan et al., ICLR 2024): D = 500, erf,
# K = M = 2. `simulate.compare` simulates each rule from the same initial weights and integrates
# its ODE from their measured order parameters. PEPITA's ODE is the exact one (numerical Gaussian
# expectations); AFA is its first-order approximation. The alignment angles (THEORY.md section 5)
# show how the second layer v aligns with the teacher (or a sign-flipped, equivalent teacher) and
# how the feedback each rule uses aligns with v.

# %%
import os

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
import simulate
from simulate._plots import plot_angles, plot_directions, plot_eg

D = 200 if SMALL else 500
REPLICAS = 3 if SMALL else 16
T_MAX = 30.0 if SMALL else 300.0
t = np.concatenate([[0.0], np.geomspace(0.05, T_MAX, 25 if SMALL else 60)])
init = simulate.Initialisation(K=2, M=2, D=D, seed=0)
cmp = simulate.compare(init, ("bp", "fa", "afa", "pepita"), t, eta=1.0, sigma_F=1.0,
                       replicas=REPLICAS, seed=0, progress=False, n_test=2000)
print(cmp.summary())

# %%
fig = plot_eg(cmp)
save(fig, "02_eg.png")

# %%
fig = plot_angles(cmp)
save(fig, "02_angles.png")

# %% [markdown]
# For K = 2 every vector of the second layer lives in a plane: the directions of v (replicas thin,
# ODE dashed), of the feedback, of the teacher v* and of the degenerate solutions s * v*.

# %%
fig = plot_directions(cmp)
save(fig, "02_directions.png")
