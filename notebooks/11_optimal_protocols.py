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
# # Optimal protocols: learning-rate and mirroring schedules computed from the ODEs
#
# The ODE makes eps_g(T) a differentiable function of the training protocol. `theory.optimal_protocol`
# parametrises each control (eta, eta_v, sigma_F, eta_F) on pieces of [0, T], takes the gradient from
# the forward sensitivities of the flow, and minimises with scipy's L-BFGS-B, after finding the best
# constant and the best power law with the same objective. Three questions:
#
# 1. the optimal eta(t) where it is known in closed form (linear g, K = M = 1, output noise: the greedy
#    protocol, eta* ~ 1 / (v^2 t) late, Saad & Rattray 1997), and for bp with erf through the plateau;
# 2. the optimal mirroring schedule eta_F(t) for PEPITA;
# 3. the optimal protocol against the best constant in simulation (the exact sampler at D = 1000 and
#    10000).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import theory
from theory.control.analytic import linear_optimal_eg, linear_optimal_eta

SIZE = os.environ.get("PEPITA_NB_SIZE", "full")
SMALL = SIZE == "small"
FIGDIR = os.environ.get("PEPITA_NB_FIGDIR")


def save(fig, name):
    """Keep a copy of the figure when PEPITA_NB_FIGDIR is set."""
    if FIGDIR:
        fig.savefig(os.path.join(FIGDIR, name), dpi=90, bbox_inches="tight")


print("size:", SIZE)

# %% [markdown]
# ## 1. The learning-rate schedule
#
# Linear g, K = M = 1, a frozen second layer and output noise sigma: eps_g obeys one scalar ODE whose
# right-hand side is a convex quadratic in eta, and the greedy rate is globally optimal
# (theory.control.analytic derives eps*(t) and eta*(t) with Lambert's W). The optimiser, which knows
# nothing of that, recovers it.

# %%
SIGMA, T_LIN = 0.5, 10.0 if SMALL else 40.0
st1 = theory.random_state(1, 1, D=1000, seed=3)
lin = theory.optimal_protocol(st1, "bp", T_LIN, {"eta": (0.0, 4.0)}, g="linear", sigma=SIGMA,
                              train_second_layer=False, pieces=8 if SMALL else 16, spacing="log")
print(lin.summary())
eg0, v = float(lin.trajectory.eg[0]), float(np.ravel(st1.v)[0])
print(f"analytic optimum eps_g(T) = {linear_optimal_eg(T_LIN, eg0, SIGMA, v):.6g}, found {lin.value:.6g}")

# %% [markdown]
# With erf and K = M = 2, bp through the Saad-Solla plateau: the optimum runs fast across the plateau
# and anneals afterwards.

# %%
T_BP = 20.0 if SMALL else 60.0
st2 = theory.random_state(2, 2, D=1000, seed=0)
bp = theory.optimal_protocol(st2, "bp", T_BP, {"eta": (0.05, 3.0)}, pieces=6 if SMALL else 12, sigma=0.1)
print(bp.summary())

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
t = lin.trajectory.t
axes[0].loglog(t[1:], lin.schedules["eta"](t[1:]), label="optimal (found)")
axes[0].loglog(t[1:], linear_optimal_eta(t[1:], eg0, SIGMA, v), "k:", label="analytic (Lambert W)")
axes[0].loglog(t[1:], 1 / (v**2 * t[1:]), "C7--", lw=0.8, label="1 / (v^2 t)")
axes[0].set(xlabel="t (steps / D)", ylabel="eta", title="linear, K = M = 1, sigma = 0.5")
axes[0].legend(fontsize=8)
curves = bp.curves()
for name, part in curves.groupby("protocol", sort=False):
    axes[1].plot(part["t"], part["eta"], label=name)
    axes[2].semilogy(part["t"], part["eg"], label=name)
axes[1].set(xlabel="t (steps / D)", ylabel="eta", title="bp, erf, K = M = 2")
gains = ", ".join(f"{k} x{g:.3g}" for k, g in bp.gains.items())
axes[2].set(xlabel="t (steps / D)", ylabel="eps_g", title=f"gains: {gains}")
axes[2].legend(fontsize=8)
fig.tight_layout()
save(fig, "11_eta.png")

# %% [markdown]
# ## 2. When and how strongly to mirror F: PEPITA's eta_F(t)
#
# With feedback mirroring (docs/extensions.md section 4) f learns from noise inputs towards the forward
# weights. The control is eta_F(t) in [0, 1] at a fixed eta; the baselines are the best constant
# mirroring rate and the best power law.

# %%
T_MIR = 20.0 if SMALL else 60.0
st_m = theory.random_state(1 if SMALL else 2, 1 if SMALL else 2, D=1000, seed=0)
mir = theory.optimal_protocol(st_m, "pepita", T_MIR, {"eta_F": (0.0, 1.0)}, eta=1.0, sigma_F=0.5,
                              pieces=4 if SMALL else 8)
print(mir.summary())

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for name, part in mir.curves().groupby("protocol", sort=False):
    axes[0].plot(part["t"], part["eta_F"], label=name)
    axes[1].semilogy(part["t"], part["eg"], label=name)
axes[0].set(xlabel="t (steps / D)", ylabel="eta_F", title="pepita: mirroring schedule")
axes[1].set(xlabel="t (steps / D)", ylabel="eps_g")
axes[1].legend(fontsize=8)
fig.tight_layout()
save(fig, "11_eta_F.png")

# %% [markdown]
# ## 3. In simulation
#
# The schedules are the package's schedule objects, so `simulate.run` takes them as they are. The exact
# order-parameter sampler (`engine="reduced"`) simulates the network at D = 1000 and 10000 from the same
# initial overlaps; the same seed gives every protocol the same data streams, so the gains are compared
# replica by replica.

# %%
import simulate

t_sim = np.linspace(0, T_BP, 11)
rows = []
for D in (1000,) if SMALL else (1000, 10000):
    finals = {}
    for name, prot in bp.protocols().items():
        params = theory.control.protocol.protocol_params(bp.hyper, prot.schedules, where="notebook")
        sim = simulate.run(st2, "bp", t_sim, params, engine="reduced", D=D, replicas=8 if SMALL else 32, seed=1,
                           progress=False)
        finals[name] = np.asarray(sim.eg)[:, -1]
    for name in ("constant", "power_law"):
        gap = finals[name] - finals["optimal"]
        rows.append((D, name, finals[name].mean() / finals["optimal"].mean(), gap.mean(),
                     gap.std(ddof=1) / np.sqrt(gap.size)))
for D, name, gain, gap, sem in rows:
    print(f"D = {D:6d}: {name:<10} eps_g(T) x{gain:.3f} of the optimum's (difference {gap:.2e} +- {sem:.1e})")
print("in the ODE:", {k: round(g, 4) for k, g in bp.gains.items()})
