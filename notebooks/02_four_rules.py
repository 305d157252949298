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
#
# **Size.** With `PEPITA_NB_SIZE=small` (how the documentation and the tests run it) this notebook uses
# D = 200, 3 replicas and t up to 30; otherwise D = 500, 16 replicas, t up to 300. The paper's own
# learning rate (0.05) and horizon (t = 10^4), at full size, are on the page "Reproduce Srinivasan et
# al. 2024, Fig. 2" of the documentation, with the command that made the figure.

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
from simulate import plots

D = 200 if SMALL else 500
REPLICAS = 3 if SMALL else 16
T_MAX = 30.0 if SMALL else 300.0
t = np.concatenate([[0.0], np.geomspace(0.05, T_MAX, 25 if SMALL else 60)])
init = simulate.Initialisation(K=2, M=2, D=D, seed=0)
cmp = simulate.compare(init, ("bp", "fa", "afa", "pepita"), t, eta=1.0, sigma_F=1.0,
                       replicas=REPLICAS, seed=0, progress=False, n_test=2000)
print(cmp.summary())

# %% [markdown]
# `simulate.plots.fig2` draws the panels of the paper's Fig. 2 from the comparison. Colour is the
# rule; a solid line with its band is the simulation (mean +- standard error over the replicas), a
# dashed line the ODE, dots the test-set eps_g, a dotted line the ODE's plateau escape. Next to the
# learning curves: how v aligns with the teacher v* and how each rule's feedback aligns with v (bp's
# feedback is v itself: 0 degrees). Below, for K = 2, the directions in the plane of v (replicas thin,
# ODE dashed), of the feedback, of v* and of the degenerate solutions s * v*; a direction that turns
# past 180 degrees leaves the panel at one edge and comes back at the other.

# %%
fig = plots.fig2(cmp)
save(fig, "02_fig2.png")

# %% [markdown]
# Each panel is a function of its own, drawing into a new figure or into axes of yours (`ax=`), and
# taking a Comparison, a `simulate.SimulationResult` or a `theory.Trajectory`: here all four
# alignment angles (THEORY.md section 5), and the learning curves of the ODEs alone.

# %%
fig = plots.angles(cmp)
save(fig, "02_angles.png")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
plots.learning_curves({key: trs[0] for key, trs in cmp.trajectories.items()}, ax=ax)
save(fig, "02_ode_eg.png")
