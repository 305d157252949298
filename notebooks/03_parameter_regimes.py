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
# # Parameter regimes: phase diagrams from sweeps
#
# `theory.sweep` integrates many parameter points at once (one vectorised right-hand side for the
# whole batch, each point with its own adaptive step) and returns a tidy table, one row per point,
# with the parameters and summaries: final eps_g, the plateau (time spent on the symmetric,
# unspecialised plateau; see `theory.sweeps.sweep` for the precise definition), the time to reach a
# target eps_g, and the final alignment angles.

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
import time

ETAS = np.geomspace(0.1, 3.0, 4 if SMALL else 16)
W_STDS = np.array([0.1, 0.5, 1.0]) if SMALL else np.geomspace(0.05, 2.0, 10)
SEEDS = range(2 if SMALL else 6)
T_MAX = 300.0 if SMALL else 1000.0
t = np.concatenate([[0.0], np.geomspace(1e-2, T_MAX, 80 if SMALL else 200)])

states, seeds, wstds = [], [], []
for w in W_STDS:
    for s in SEEDS:
        states.append(theory.random_state(2, 2, D=1000, seed=s, w_std=w))
        seeds.append(s)
        wstds.append(w)
t0 = time.perf_counter()
res = theory.sweep(states, "bp", t, grid={"eta": ETAS}, tags={"seed": seeds, "w_std": wstds},
                   eg_target=1e-3, progress=False)
print(f"{len(res)} learning curves in {time.perf_counter() - t0:.1f} s; statuses:", np.unique(res.table["status"]))
res.table.head(3)


# %%
def grid_median(table, col, x="eta", y="w_std"):
    """Median of `col` over the other parameters, on the (y, x) grid (NaN where no point has a value)."""
    z = table.pivot_table(index=y, columns=x, values=col, aggfunc="median", dropna=False)
    return z.columns.to_numpy(), z.index.to_numpy(), z.to_numpy(dtype=float)


def heatmap(ax, xs, ys, z, xlabel, ylabel, title, fig):
    """A grid of cells labelled by the parameter values (the grids are log-spaced)."""
    im = ax.imshow(z, origin="lower", aspect="auto")
    step_x, step_y = max(1, len(xs) // 6), max(1, len(ys) // 6)
    ax.set_xticks(range(0, len(xs), step_x), [f"{v:.2g}" for v in xs[::step_x]])
    ax.set_yticks(range(0, len(ys), step_y), [f"{v:.2g}" for v in ys[::step_y]])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    fig.colorbar(im, ax=ax)


tab = res.table
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for ax, (col, title, log) in zip(
    axes,
    [
        ("eg_final", "final eps_g", True),
        ("plateau_length", "plateau length (steps/D)", False),
        ("t_target", "time to eps_g = 1e-3", True),
    ],
):
    xs, ys, z = grid_median(tab, col)
    heatmap(
        ax, xs, ys, np.log10(z) if log else z, "eta", "initial weight std w_std", ("log10 " if log else "") + title, fig
    )
fig.suptitle("bp, K = M = 2: phase diagrams (median over initial seeds; blank: never reached)")
fig.tight_layout()
save(fig, "03_phase_bp.png")

# %% [markdown]
# Small initial weights give long plateaus (the student needs a long time to break the symmetry
# between its hidden units), and the plateau shortens as eta grows. The long table holds every
# curve; here a few learning curves at w_std = the smallest value, coloured by eta.

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for i, row in tab[(tab["w_std"] == W_STDS[0]) & (tab["seed"] == 0)].iterrows():  # the index is the point's number
    ax.plot(res.t[1:], res.eg[i, 1:], label=f"eta = {row['eta']:.2g}")
    if row["plateau_length"] > 0:
        ax.axvspan(row["plateau_start"], row["plateau_end"], alpha=0.05, color="k")
ax.set(xscale="log", yscale="log", xlabel="t", ylabel="eps_g", title=f"w_std = {W_STDS[0]:g}: plateaus shaded")
ax.legend(fontsize=8)
save(fig, "03_curves.png")
long = res.curves()
print(long, "(one row per point and time)")

# %% [markdown]
# ## AFA: the strength of the top-down projection
#
# AFA's feedback is sigma_F S, where S grows from its O(1/sqrt D) initial value thanks to the
# modulated presynaptic input. A sweep over sigma_F and eta shows where it learns.

# %%
SIGMA_FS = np.array([0.1, 0.5, 1.0, 2.0]) if SMALL else np.geomspace(0.05, 3.0, 12)
ETAS_A = np.geomspace(0.1, 3.0, 3 if SMALL else 12)
s0 = theory.random_state(2, 2, D=500, seed=0)
afa = theory.sweep(s0, "afa", t, grid={"sigma_F": SIGMA_FS, "eta": ETAS_A}, progress=False)
ta = afa.table
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for ax, (col, title, f) in zip(
    axes, [("eg_final", "log10 final eps_g", np.log10), ("angle_feedback", "final feedback angle (deg)", None)]
):
    xs, ys, z = grid_median(ta, col, x="eta", y="sigma_F")
    heatmap(ax, xs, ys, f(z) if f else z, "eta", "sigma_F", title, fig)
fig.suptitle("afa (modulated input), K = M = 2")
fig.tight_layout()
save(fig, "03_phase_afa.png")
print("failed points:", int(np.sum(ta["status"] != 0)), set(ta["message"][ta["status"] != 0]))

# %% [markdown]
# Large sweeps can be spread over processes or a cluster: pass any `concurrent.futures.Executor`
# (`ProcessPoolExecutor`, Dask's `Client.get_executor()`, ...) as `executor=`; the table is the same.

# %%
import concurrent.futures

with concurrent.futures.ProcessPoolExecutor(2) as ex:
    again = theory.sweep(s0, "afa", t, grid={"sigma_F": SIGMA_FS[:2], "eta": ETAS_A[:2]}, executor=ex, progress=False)
same = ta[ta["sigma_F"].isin(SIGMA_FS[:2]) & ta["eta"].isin(ETAS_A[:2])]
print(np.allclose(again.table["eg_final"], same["eg_final"], equal_nan=True))
