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
# # Exact PEPITA against AFA as sigma_F grows
#
# AFA is the first-order Taylor expansion of PEPITA's postsynaptic term,
# g(lambda) - g(lambda - sigma_F S e) ~ sigma_F S g'(lambda) e. The expansion is good when
# sigma_F S e is small. Here both ODEs (PEPITA's by numerical Gaussian expectations) are
# integrated from the same random initial condition for several sigma_F. Where sigma_F S e is no
# longer small the two part ways, and exact PEPITA can even run away where AFA still learns.

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
SIGMA_FS = [0.3, 2.0] if SMALL else [0.1, 0.3, 1.0, 2.0, 3.0]
T_MAX = 20.0 if SMALL else 300.0
t = np.concatenate([[0.0], np.geomspace(0.05, T_MAX, 20 if SMALL else 60)])
s0 = theory.random_state(2, 2, D=500, seed=0)
curves = {}
for sF in SIGMA_FS:
    for rule in ("afa", "pepita"):
        curves[rule, sF] = theory.integrate(s0, rule, t, eta=1.0, sigma_F=sF, throw=False)
        print(rule, sF, curves[rule, sF].message, f"eg(T) = {curves[rule, sF].eg[-1]:.4g}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
cyc = plt.rcParams["axes.prop_cycle"].by_key()["color"]
for c, sF in zip(cyc, SIGMA_FS):
    for rule, ls in (("pepita", "-"), ("afa", "--")):
        tr = curves[rule, sF]
        axes[0].plot(tr.t[1:], tr.eg[1:], ls, color=c, label=f"{rule}, sigma_F = {sF:g}")
axes[0].set(xscale="log", yscale="log", xlabel="t", ylabel="eps_g", title="exact PEPITA (solid) vs AFA (dashed)")
axes[0].legend(fontsize=7)
# diverged runs (status < 0) have no final error: left out of the right panel
fin = {r: [curves[r, sF].eg[-1] if curves[r, sF].status == 0 else np.nan for sF in SIGMA_FS] for r in ("afa", "pepita")}
axes[1].plot(SIGMA_FS, fin["pepita"], "o-", label="pepita")
axes[1].plot(SIGMA_FS, fin["afa"], "s--", label="afa")
axes[1].set(
    xscale="log",
    yscale="log",
    xlabel="sigma_F",
    ylabel=f"eps_g at t = {T_MAX:g}",
    title="where the approximation departs",
)
axes[1].legend()
fig.tight_layout()
save(fig, "04_pepita_afa.png")

# %%
# relative difference of the final errors, and the feedback alignment of each rule
for sF in SIGMA_FS:
    p, a = curves["pepita", sF], curves["afa", sF]
    if p.status or a.status:
        print(f"sigma_F = {sF:4g}: pepita: {p.message}; afa: {a.message}")
        continue
    print(
        f"sigma_F = {sF:4g}: eg pepita {p.eg[-1]:.3g}, afa {a.eg[-1]:.3g}, rel. diff "
        f"{abs(p.eg[-1] / a.eg[-1] - 1):.2g}; "
        f"feedback angle pepita {p.angles['feedback'][-1]:.1f} deg, afa {a.angles['feedback'][-1]:.1f} deg"
    )
