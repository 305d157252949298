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
# # Your own learning rule, everywhere
#
# A learning rule is defined once, by what it does to one sample: from the local fields
# lambda = w.x / sqrt D, nu = w*.x / sqrt D, the noise zeta and the current state (v, v*, S, b), it
# gives the postsynaptic term delta, the presynaptic input xp = x + alpha f / sqrt D, and the last
# layer's e_out and h (THEORY.md section 3). Every view of the toolkit is derived from that one
# definition: the ODE (closed forms where the rule declares them, numerical Gaussian expectations
# otherwise), the D-dimensional simulation, the exact reduced sampler and its compiled kernel.
#
# Here we add **sign-symmetric feedback** (Liao, Leibo & Poggio 2016): the backward pass uses
# sign(v) instead of v, delta_k = sign(v_k) g'(lambda_k) e.

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


@theory.register_rule
class SignSymmetry(theory.Rule):
    """Sign-symmetric feedback: delta_k = sign(v_k) g'(lambda_k) e."""

    name = "sign-symmetry"
    closed_form = "feedback"  # delta = feedback * g'(lambda) * e, e_out = e, h = g(lambda): erf closed forms apply

    def feedback(self, x):  # the vector the first layer's update uses in place of v (alignment angles)
        return x.xp.sign(x.v)

    def update(self, x):
        return theory.LocalUpdate(delta=self.feedback(x) * x.dg(x.lam) * x.e[..., None])


print(theory.registered_rules())

# %% [markdown]
# The built-in rules are written the same way (`theory/rules/`). PEPITA, for example, replaces the
# postsynaptic term by the difference of two forward passes and has two variants:

# %%
import inspect

print(inspect.getsource(type(theory.make_rule("pepita"))))

# %% [markdown]
# The compiled views are generated from `update`: the toolkit runs it on sympy symbols and compiles
# the resulting expressions with numba (cached on disk). This is the code the reduced sampler's kernel
# calls for our rule:

# %%
comp = theory.compiled_rule(SignSymmetry(), 2, 2)
print(comp.path.read_text().split("@numba.njit(COEF_SIG")[0])

# %% [markdown]
# Its ODE against bp and fa from the same initial overlaps, and its simulation (full D-dimensional
# and exact reduced sampler) against its ODE.

# %%
D = 200 if SMALL else 1000
T_MAX = 50.0 if SMALL else 300.0
t = np.concatenate([[0.0], np.geomspace(0.05, T_MAX, 40)])
init = simulate.Initialisation(K=2, M=2, D=D, seed=1)
cmp = simulate.compare(init, ["bp", "fa", "sign-symmetry"], t, eta=1.0, replicas=4 if SMALL else 16, seed=0,
                       n_test=0, progress=False)
red = simulate.run(init, "sign-symmetry", t, eta=1.0, replicas=64 if SMALL else 256, engine="reduced", n_test=0,
                   progress=False)
print(cmp.summary())

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
pos = t > 0
for key, c in zip(cmp.rules, ("C0", "C1", "C2")):
    res = cmp.results[key]
    m, s = res.mean("eg"), res.sem("eg")
    axes[0].fill_between(res.t[pos], (m - s)[pos], (m + s)[pos], color=c, alpha=0.3, label=f"{key} simulation")
    axes[0].plot(cmp.ode_t(key)[pos], cmp.ode_eg(key)[pos], "--", color=c, label=f"{key} ODE")
axes[0].plot(red.t[pos], red.mean("eg")[pos], ".", color="C2", ms=4, label="sign-symmetry, reduced sampler")
axes[0].set(
    xscale="log", yscale="log", xlabel="t = steps / D", ylabel="generalisation error", title=f"D = {D}, K = M = 2"
)
axes[0].legend(fontsize=7)
for key, c in zip(("fa", "sign-symmetry"), ("C1", "C2")):
    res = cmp.results[key]
    axes[1].plot(res.t[pos], res.mean("feedback")[pos], color=c, label=f"{key} simulation")
    axes[1].plot(cmp.ode_t(key)[pos], cmp.ode_angles(key)["feedback"][pos], "--", color=c, label=f"{key} ODE")
axes[1].set(xscale="log", ylim=(0, 180), xlabel="t = steps / D", ylabel="degrees", title="angle(feedback, v)")
axes[1].legend(fontsize=7)
fig.tight_layout()
save(fig, "06_your_own_rule.png")

# %% [markdown]
# Sweeps take it like any other rule, and so does the command line:
# `pepita-dynamics compare --rule my_rules.py:SignSymmetry`.

# %%
states = [theory.random_state(2, 2, D=1000, seed=s) for s in range(2 if SMALL else 10)]
res = theory.sweep(
    states,
    grid={"rule": ["bp", "sign-symmetry"], "eta": [0.5, 1.0, 2.0]},
    t=theory.default_times(300.0),
    eg_target=1e-3,
    progress=False,
)
tab = res.table
for rule in ("bp", "sign-symmetry"):
    for eta in (0.5, 1.0, 2.0):
        sel = tab[(tab["rule"] == rule) & (tab["eta"] == eta)]
        print(
            f"{rule:14s} eta={eta}: median eg(300) {np.median(sel['eg_final']):.3g}, "
            f"plateau length {np.median(sel['plateau_length']):.1f}, t(eg = 1e-3) {np.nanmedian(sel['t_target']):.1f}"
        )
