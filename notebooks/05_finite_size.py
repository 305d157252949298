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
# # Finite-size effects
#
# At finite D the order parameters fluctuate around the ODE, by O(1/sqrt D). The exact
# order-parameter sampler (`simulate.run(..., engine="reduced")`) has the law of the full
# simulation at a cost that does not depend on D, so large D and many replicas are cheap.
# `simulate.finite_size_study` measures the distribution of bp's plateau escape times and the
# spread of eps_g across replicas against D.

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
import simulate

DS = (50, 200, 800) if SMALL else (10**3, 10**4, 10**5)
rows = simulate.finite_size_study("bp", Ds=DS, replicas=16 if SMALL else 400, t_max=100.0 if SMALL else 200.0,
                                  dt=0.5, spread_times=(1.0, 10.0), progress=False)
for r in rows:
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if not k.startswith("eg_ode")})

# %%
Ds = np.array([r["D"] for r in rows], dtype=float)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for q, m in (("escape_q0.1", "v"), ("escape_q0.5", "o"), ("escape_q0.9", "^")):
    vals = np.array([r[q] for r in rows], dtype=float)
    ok = np.isfinite(vals)  # inf: fewer than that fraction escaped by t_max
    axes[0].plot(Ds[ok], vals[ok], m + "-", label=q.replace("escape_", "quantile "))
ode_esc = [r["ode_escape"] for r in rows]
axes[0].plot(Ds, ode_esc, "k--", label="ODE from each D's initial state")
axes[0].set(xscale="log", xlabel="D", ylabel="plateau escape time (steps/D)", title="bp: escape times")
axes[0].legend(fontsize=8)
for s in (1.0, 10.0):
    sd = np.array([r[f"eg_std@{s:g}"] for r in rows])
    axes[1].plot(Ds, sd, "o-", label=f"std of eps_g at t = {s:g}")
    axes[1].plot(Ds, sd[0] * np.sqrt(Ds[0] / Ds), "k:", lw=0.8)
axes[1].set(xscale="log", yscale="log", xlabel="D", ylabel="std across replicas", title="spread ~ 1/sqrt(D) (dotted)")
axes[1].legend(fontsize=8)
fig.tight_layout()
save(fig, "05_finite_size.png")
