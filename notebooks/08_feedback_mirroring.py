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
# # Feedback mirroring: PEPITA and AFA whose top-down projection learns
#
# The ICLR 2024 PEPITA paper trains the top-down projection F = sigma_F f / sqrt D by weight
# mirroring. Here f learns from noise alongside the rule (docs/extensions.md section 4): at each step
# a fresh input xi drives the student and f <- f + (eta_F / sqrt D) yhat_xi xi, with |f|^2 / D kept at
# its initial value (`mirror_norm=True`). By Stein's lemma F is pushed towards (W2 W1)^T, so the AFA
# feedback sigma_F S turns towards v, the backprop feedback. With f learning, U and P join the ODE's
# state. We compare PEPITA and AFA with and without mirroring (D = 500, K = M = 2): eps_g, the
# feedback angle and the end-to-end angle of F with (W2 W1)^T, theory against simulation; then the
# plateau length against eta_F from a sweep of the ODE.

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
REPLICAS = 4 if SMALL else 16
T_MAX = 40.0 if SMALL else 200.0
SIGMA_F, ETA, ETA_F = 0.5, 1.0, 0.2
t = np.concatenate([[0.0], np.geomspace(0.05, T_MAX, 25 if SMALL else 60)])
init = simulate.Initialisation(K=2, M=2, D=D, seed=1)
state0 = init.order_params()
runs = {}
for rule in ("afa", "pepita"):
    for eta_F in (0.0, ETA_F):
        hp = theory.HyperParams(eta=ETA, sigma_F=SIGMA_F, eta_F=eta_F, mirror_norm=True)
        sim = simulate.run(init, rule, t, hp, replicas=REPLICAS, n_test=0, progress=False, seed=2)
        ode = theory.integrate(sim.initial_state(), rule, t, hp, rtol=1e-6, atol=1e-8)
        runs[rule, eta_F] = (sim, ode)
        print(f"{rule:7s} eta_F = {eta_F:3g}: eg(t = {T_MAX:g}) ODE {ode.eg[-1]:.4f}, simulation "
              f"{sim.mean('eg')[-1]:.4f} +- {sim.sem('eg')[-1]:.4f}; end-to-end angle ODE "
              f"{ode.angles['end_to_end'][-1]:.1f} deg")

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
pos = t > 0
for (rule, eta_F), (sim, ode) in runs.items():
    c = {"afa": "C0", "pepita": "C1"}[rule]
    ls = "-" if eta_F else "--"
    label = f"{rule}, " + (f"eta_F = {eta_F:g}" if eta_F else "fixed F")
    axes[0].plot(ode.t[pos], ode.eg[pos], ls, color=c, label=label + " (ODE)")
    axes[0].errorbar(sim.t[pos], sim.mean("eg")[pos], sim.sem("eg")[pos], fmt="o" if eta_F else "s", color=c, ms=3,
                     mfc="none" if not eta_F else c, lw=0.8)
    for ax, name in zip(axes[1:], ("feedback", "end_to_end")):
        ax.plot(ode.t[pos], ode.angles[name][pos], ls, color=c, label=label)
        ax.plot(sim.t[pos], sim.mean(name)[pos], "o" if eta_F else "s", color=c, ms=3, mfc="none" if not eta_F else c)
axes[0].set(xscale="log", yscale="log", xlabel="t = steps / D", ylabel="generalisation error",
            title=f"D = {D}: lines ODE, markers simulation")
axes[1].set(xscale="log", xlabel="t = steps / D", ylabel="degrees", title="feedback angle (sigma_F S, v)")
axes[2].set(xscale="log", xlabel="t = steps / D", ylabel="degrees", title="end-to-end angle (F, (W2 W1)^T)")
axes[0].legend(fontsize=7)
save(fig, "08_mirroring.png")

# %% [markdown]
# Mirroring turns F towards (W2 W1)^T within a few units of time (the end-to-end angle falls from
# about 90 degrees), and the feedback sigma_F S follows v. Without it, both rules sit on a plateau at
# eps_g of about 0.3 until the feedback aligns by itself. A sweep of the ODE over eta_F measures the
# escape: the first time eps_g falls below 0.2, under the plateau (`eg_target`, column t_target),
# next to the table's `plateau_length` (`theory.plateau`, whose slope criterion catches only the
# flattest part of this plateau) and the final error.

# %%
ETA_FS = [0.0, 0.2] if SMALL else [0.0, 0.02, 0.05, 0.1, 0.2, 0.5]
sw = theory.sweep(
    state0,
    t=t,
    eta=ETA,
    sigma_F=SIGMA_F,
    mirror_norm=True,
    grid={"rule": ["afa", "pepita"], "eta_F": ETA_FS},
    eg_target=0.2,
    rtol=1e-6,
    atol=1e-8,
    progress=False,
)
print(sw.table[["rule", "eta_F", "plateau_length", "plateau_eg", "t_target", "eg_final", "angle_end_to_end"]]
      .to_string(index=False, float_format=lambda x: f"{x:.4g}"))
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for rule, c in (("afa", "C0"), ("pepita", "C1")):
    rows = sw.table[sw.table.rule == rule]
    axes[0].plot(rows.eta_F, rows.t_target, "o-", color=c, label=rule)
    axes[1].plot(rows.eta_F, rows.eg_final, "o-", color=c, label=rule)
axes[0].set(xlabel="eta_F", ylabel="t where eps_g first falls below 0.2 (steps / D)",
            title="plateau escape against the mirroring rate")
axes[1].set(xlabel="eta_F", ylabel=f"eps_g at t = {T_MAX:g}", yscale="log", title="final error")
axes[0].legend()
save(fig, "08_plateau_vs_eta_F.png")
