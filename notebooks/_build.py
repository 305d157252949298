"""Build the notebooks of notebooks/ (outputs stripped) from the cell sources below.

    python notebooks/_build.py [NAME.ipynb ...]

Every notebook reads PEPITA_NB_SIZE ("small" for CI: tiny sizes, same story; anything else: the
full sizes) and, when PEPITA_NB_FIGDIR is set, saves its figures there as PNG.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = '''\
import os
import numpy as np
import matplotlib.pyplot as plt
import theory

SIZE = os.environ.get("PEPITA_NB_SIZE", "full")
SMALL = SIZE == "small"
FIGDIR = os.environ.get("PEPITA_NB_FIGDIR")


def save(fig, name):
    """Keep a copy of the figure when PEPITA_NB_FIGDIR is set."""
    if FIGDIR:
        fig.savefig(os.path.join(FIGDIR, name), dpi=90, bbox_inches="tight")


print("size:", SIZE)'''

NOTEBOOKS = {}

# --------------------------------------------------------------------------- 1 quickstart
NOTEBOOKS["01_quickstart.ipynb"] = [
    new_markdown_cell("""\
# Quickstart: one rule, its ODE against a simulation

A two-layer erf student (K hidden units) learns a teacher (M units) online, one fresh Gaussian
input per step. In the limit of large input dimension D its order parameters (Q, R, S, v) follow
deterministic ODEs in the time t = steps / D (THEORY.md section 4). Here we simulate the network
with `simulate.run` and integrate the ODE with `theory.integrate` from the *measured* initial
order parameters of the same weights, and compare the generalisation error eps_g."""),
    new_code_cell(SETUP),
    new_code_cell('''\
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
print(ode)'''),
    new_markdown_cell("""\
The simulation's eps_g comes from the closed form of its measured order parameters (band: mean
+- standard error over the replicas' independent data streams) and from a held-out test set
(dots): the two agree, which checks the formula. The ODE (dashed) tracks the mean; finite-D
fluctuations move the plateau escape, the most sensitive part of the curve."""),
    new_code_cell('''\
fig, ax = plt.subplots(figsize=(6, 4))
pos = t > 0
m, s = sim.mean("eg"), sim.sem("eg")
ax.fill_between(t[pos], (m - s)[pos], (m + s)[pos], alpha=0.3, label=f"simulation, D={D}, {REPLICAS} replicas")
ax.plot(sim.t[pos], sim.mean("eg_test")[pos], ".", ms=4, label="simulation, test set")
ax.plot(ode.t[pos], ode.eg[pos], "k--", label="ODE")
ax.set(xscale="log", yscale="log", xlabel="t = steps / D", ylabel="generalisation error", title="bp, K = M = 2")
ax.legend()
save(fig, "01_eg.png")'''),
    new_code_cell('''\
# the order parameters themselves: R (student-teacher overlaps) over time
fig, ax = plt.subplots(figsize=(6, 4))
for k in range(2):
    for n in range(2):
        ax.plot(sim.t[pos], sim.mean("R")[pos, k, n], "-", label=f"R[{k},{n}] sim")
        ax.plot(ode.t[pos], ode.R[pos, k, n], "k--", lw=0.8)
ax.set(xscale="log", xlabel="t", ylabel="R", title="specialisation: each unit picks a teacher unit")
ax.legend(fontsize=8)
save(fig, "01_R.png")'''),
]

# --------------------------------------------------------------------------- 2 four rules
NOTEBOOKS["02_four_rules.ipynb"] = [
    new_markdown_cell("""\
# The four rules side by side: bp, fa, afa and PEPITA against their ODEs

The setting of the PEPITA theory paper's Fig. 2 (Srinivasan et al., ICLR 2024): D = 500, erf,
K = M = 2. `simulate.compare` simulates each rule from the same initial weights and integrates
its ODE from their measured order parameters. PEPITA's ODE is the exact one (numerical Gaussian
expectations); AFA is its first-order approximation. The alignment angles (THEORY.md section 5)
show how the second layer v aligns with the teacher (or a sign-flipped, equivalent teacher) and
how the feedback each rule uses aligns with v."""),
    new_code_cell(SETUP),
    new_code_cell('''\
import simulate
from simulate._plots import plot_angles, plot_directions, plot_eg

D = 200 if SMALL else 500
REPLICAS = 3 if SMALL else 16
T_MAX = 30.0 if SMALL else 300.0
t = np.concatenate([[0.0], np.geomspace(0.05, T_MAX, 25 if SMALL else 60)])
init = simulate.Initialisation(K=2, M=2, D=D, seed=0)
cmp = simulate.compare(init, ("bp", "fa", "afa", "pepita"), t, eta=1.0, sigma_F=1.0,
                       replicas=REPLICAS, seed=0, progress=False, n_test=2000)
print(cmp.summary())'''),
    new_code_cell('''\
fig = plot_eg(cmp)
save(fig, "02_eg.png")'''),
    new_code_cell('''\
fig = plot_angles(cmp)
save(fig, "02_angles.png")'''),
    new_markdown_cell("""\
For K = 2 every vector of the second layer lives in a plane: the directions of v (replicas thin,
ODE dashed), of the feedback, of the teacher v* and of the degenerate solutions s * v*."""),
    new_code_cell('''\
fig = plot_directions(cmp)
save(fig, "02_directions.png")'''),
]

# --------------------------------------------------------------------------- 3 regimes
NOTEBOOKS["03_parameter_regimes.ipynb"] = [
    new_markdown_cell("""\
# Parameter regimes: phase diagrams from sweeps

`theory.sweep` integrates many parameter points at once (one vectorised right-hand side for the
whole batch, each point with its own adaptive step) and returns a tidy table, one row per point,
with the parameters and summaries: final eps_g, the plateau (time spent on the symmetric,
unspecialised plateau; see `theory._sweep` for the precise definition), the time to reach a
target eps_g, and the final alignment angles."""),
    new_code_cell(SETUP),
    new_code_cell('''\
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
res = theory.sweep(states, "bp", t, grid=dict(eta=ETAS), tags=dict(seed=seeds, w_std=wstds),
                   eg_target=1e-3, progress=False)
print(f"{len(res)} learning curves in {time.perf_counter() - t0:.1f} s; statuses:", np.unique(res.table["status"]))
res.table.head(3)'''),
    new_code_cell('''\
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
for ax, (col, title, log) in zip(axes, [("eg_final", "final eps_g", True), ("plateau_length", "plateau length (steps/D)", False),
                                        ("t_target", "time to eps_g = 1e-3", True)]):
    xs, ys, z = grid_median(tab, col)
    heatmap(ax, xs, ys, np.log10(z) if log else z, "eta", "initial weight std w_std", ("log10 " if log else "") + title, fig)
fig.suptitle("bp, K = M = 2: phase diagrams (median over initial seeds; blank: never reached)")
fig.tight_layout()
save(fig, "03_phase_bp.png")'''),
    new_markdown_cell("""\
Small initial weights give long plateaus (the student needs a long time to break the symmetry
between its hidden units), and the plateau shortens as eta grows. The long table holds every
curve; here a few learning curves at w_std = the smallest value, coloured by eta."""),
    new_code_cell('''\
fig, ax = plt.subplots(figsize=(6, 4))
for i, row in tab[(tab["w_std"] == W_STDS[0]) & (tab["seed"] == 0)].iterrows():  # the index is the point's number
    ax.plot(res.t[1:], res.eg[i, 1:], label=f"eta = {row['eta']:.2g}")
    if row["plateau_length"] > 0:
        ax.axvspan(row["plateau_start"], row["plateau_end"], alpha=0.05, color="k")
ax.set(xscale="log", yscale="log", xlabel="t", ylabel="eps_g", title=f"w_std = {W_STDS[0]:g}: plateaus shaded")
ax.legend(fontsize=8)
save(fig, "03_curves.png")
long = res.curves()
print(long, "(one row per point and time)")'''),
    new_markdown_cell("""\
## AFA: the strength of the top-down projection

AFA's feedback is sigma_F S, where S grows from its O(1/sqrt D) initial value thanks to the
modulated presynaptic input. A sweep over sigma_F and eta shows where it learns."""),
    new_code_cell('''\
SIGMA_FS = np.array([0.1, 0.5, 1.0, 2.0]) if SMALL else np.geomspace(0.05, 3.0, 12)
ETAS_A = np.geomspace(0.1, 3.0, 3 if SMALL else 12)
s0 = theory.random_state(2, 2, D=500, seed=0)
afa = theory.sweep(s0, "afa", t, grid=dict(sigma_F=SIGMA_FS, eta=ETAS_A), progress=False)
ta = afa.table
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for ax, (col, title, f) in zip(axes, [("eg_final", "log10 final eps_g", np.log10), ("angle_feedback", "final feedback angle (deg)", None)]):
    xs, ys, z = grid_median(ta, col, x="eta", y="sigma_F")
    heatmap(ax, xs, ys, f(z) if f else z, "eta", "sigma_F", title, fig)
fig.suptitle("afa (modulated input), K = M = 2")
fig.tight_layout()
save(fig, "03_phase_afa.png")
print("failed points:", int(np.sum(ta["status"] != 0)), set(ta["message"][ta["status"] != 0]))'''),
    new_markdown_cell("""\
Large sweeps can be spread over processes or a cluster: pass any `concurrent.futures.Executor`
(`ProcessPoolExecutor`, Dask's `Client.get_executor()`, ...) as `executor=`; the table is the same."""),
    new_code_cell('''\
import concurrent.futures

with concurrent.futures.ProcessPoolExecutor(2) as ex:
    again = theory.sweep(s0, "afa", t, grid=dict(sigma_F=SIGMA_FS[:2], eta=ETAS_A[:2]), executor=ex, progress=False)
same = ta[ta["sigma_F"].isin(SIGMA_FS[:2]) & ta["eta"].isin(ETAS_A[:2])]
print(np.allclose(again.table["eg_final"], same["eg_final"], equal_nan=True))'''),
]

# --------------------------------------------------------------------------- 4 pepita vs afa
NOTEBOOKS["04_pepita_vs_afa.ipynb"] = [
    new_markdown_cell("""\
# Exact PEPITA against AFA as sigma_F grows

AFA is the first-order Taylor expansion of PEPITA's postsynaptic term,
g(lambda) - g(lambda - sigma_F S e) ~ sigma_F S g'(lambda) e. The expansion is good when
sigma_F S e is small. Here both ODEs (PEPITA's by numerical Gaussian expectations) are
integrated from the same random initial condition for several sigma_F. Where sigma_F S e is no
longer small the two part ways, and exact PEPITA can even run away where AFA still learns."""),
    new_code_cell(SETUP),
    new_code_cell('''\
SIGMA_FS = [0.3, 2.0] if SMALL else [0.1, 0.3, 1.0, 2.0, 3.0]
T_MAX = 20.0 if SMALL else 300.0
t = np.concatenate([[0.0], np.geomspace(0.05, T_MAX, 20 if SMALL else 60)])
s0 = theory.random_state(2, 2, D=500, seed=0)
curves = {}
for sF in SIGMA_FS:
    for rule in ("afa", "pepita"):
        curves[rule, sF] = theory.integrate(s0, rule, t, eta=1.0, sigma_F=sF, throw=False)
        print(rule, sF, curves[rule, sF].message, f"eg(T) = {curves[rule, sF].eg[-1]:.4g}")'''),
    new_code_cell('''\
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
axes[1].set(xscale="log", yscale="log", xlabel="sigma_F", ylabel=f"eps_g at t = {T_MAX:g}", title="where the approximation departs")
axes[1].legend()
fig.tight_layout()
save(fig, "04_pepita_afa.png")'''),
    new_code_cell('''\
# relative difference of the final errors, and the feedback alignment of each rule
for sF in SIGMA_FS:
    p, a = curves["pepita", sF], curves["afa", sF]
    if p.status or a.status:
        print(f"sigma_F = {sF:4g}: pepita: {p.message}; afa: {a.message}")
        continue
    print(f"sigma_F = {sF:4g}: eg pepita {p.eg[-1]:.3g}, afa {a.eg[-1]:.3g}, rel. diff {abs(p.eg[-1] / a.eg[-1] - 1):.2g}; "
          f"feedback angle pepita {p.angles['feedback'][-1]:.1f} deg, afa {a.angles['feedback'][-1]:.1f} deg")'''),
]

# --------------------------------------------------------------------------- 5 finite size
NOTEBOOKS["05_finite_size.ipynb"] = [
    new_markdown_cell("""\
# Finite-size effects

At finite D the order parameters fluctuate around the ODE, by O(1/sqrt D). The exact
order-parameter sampler (`simulate.run(..., engine="reduced")`) has the law of the full
simulation at a cost that does not depend on D, so large D and many replicas are cheap.
`simulate.finite_size_study` measures the distribution of bp's plateau escape times and the
spread of eps_g across replicas against D."""),
    new_code_cell(SETUP),
    new_code_cell('''\
import simulate

DS = (50, 200, 800) if SMALL else (10**3, 10**4, 10**5)
rows = simulate.finite_size_study("bp", Ds=DS, replicas=16 if SMALL else 400, t_max=100.0 if SMALL else 200.0,
                                  dt=0.5, spread_times=(1.0, 10.0), progress=False)
for r in rows:
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if not k.startswith("eg_ode")})'''),
    new_code_cell('''\
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
save(fig, "05_finite_size.png")'''),
]

# --------------------------------------------------------------------------- 6 your own rule
NOTEBOOKS["06_your_own_rule.ipynb"] = [
    new_markdown_cell("""\
# Your own learning rule, everywhere

A learning rule is defined once, by what it does to one sample: from the local fields
lambda = w.x / sqrt D, nu = w*.x / sqrt D, the noise zeta and the current state (v, v*, S, b), it
gives the postsynaptic term delta, the presynaptic input xp = x + alpha f / sqrt D, and the last
layer's e_out and h (THEORY.md section 3). Every view of the toolkit is derived from that one
definition: the ODE (closed forms where the rule declares them, numerical Gaussian expectations
otherwise), the D-dimensional simulation, the exact reduced sampler and its compiled kernel.

Here we add **sign-symmetric feedback** (Liao, Leibo & Poggio 2016): the backward pass uses
sign(v) instead of v, delta_k = sign(v_k) g'(lambda_k) e."""),
    new_code_cell(SETUP),
    new_code_cell('''\
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


print(theory.registered_rules())'''),
    new_markdown_cell("""\
The built-in rules are written the same way (`theory/rules/`). PEPITA, for example, replaces the
postsynaptic term by the difference of two forward passes and has two variants:"""),
    new_code_cell('''\
import inspect
print(inspect.getsource(type(theory.make_rule("pepita"))))'''),
    new_markdown_cell("""\
The compiled views are generated from `update`: the toolkit runs it on sympy symbols and compiles
the resulting expressions with numba (cached on disk). This is the code the reduced sampler's kernel
calls for our rule:"""),
    new_code_cell('''\
comp = theory.compiled_rule(SignSymmetry(), 2, 2)
print(comp.path.read_text().split("@numba.njit(COEF_SIG")[0])'''),
    new_markdown_cell("""\
Its ODE against bp and fa from the same initial overlaps, and its simulation (full D-dimensional
and exact reduced sampler) against its ODE."""),
    new_code_cell('''\
D = 200 if SMALL else 1000
T_MAX = 50.0 if SMALL else 300.0
t = np.concatenate([[0.0], np.geomspace(0.05, T_MAX, 40)])
init = simulate.Initialisation(K=2, M=2, D=D, seed=1)
cmp = simulate.compare(init, ["bp", "fa", "sign-symmetry"], t, eta=1.0, replicas=4 if SMALL else 16, seed=0,
                       n_test=0, progress=False)
red = simulate.run(init, "sign-symmetry", t, eta=1.0, replicas=64 if SMALL else 256, engine="reduced", n_test=0,
                   progress=False)
print(cmp.summary())'''),
    new_code_cell('''\
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
pos = t > 0
for key, c in zip(cmp.rules, ("C0", "C1", "C2")):
    res = cmp.results[key]
    m, s = res.mean("eg"), res.sem("eg")
    axes[0].fill_between(res.t[pos], (m - s)[pos], (m + s)[pos], color=c, alpha=0.3, label=f"{key} simulation")
    axes[0].plot(cmp.ode_t(key)[pos], cmp.ode_eg(key)[pos], "--", color=c, label=f"{key} ODE")
axes[0].plot(red.t[pos], red.mean("eg")[pos], ".", color="C2", ms=4, label="sign-symmetry, reduced sampler")
axes[0].set(xscale="log", yscale="log", xlabel="t = steps / D", ylabel="generalisation error", title=f"D = {D}, K = M = 2")
axes[0].legend(fontsize=7)
for key, c in zip(("fa", "sign-symmetry"), ("C1", "C2")):
    res = cmp.results[key]
    axes[1].plot(res.t[pos], res.mean("feedback")[pos], color=c, label=f"{key} simulation")
    axes[1].plot(cmp.ode_t(key)[pos], cmp.ode_angles(key)["feedback"][pos], "--", color=c, label=f"{key} ODE")
axes[1].set(xscale="log", ylim=(0, 180), xlabel="t = steps / D", ylabel="degrees", title="angle(feedback, v)")
axes[1].legend(fontsize=7)
fig.tight_layout()
save(fig, "06_your_own_rule.png")'''),
    new_markdown_cell("""\
Sweeps take it like any other rule, and so does the command line:
`pepita-dynamics compare --rule my_rules.py:SignSymmetry`."""),
    new_code_cell('''\
states = [theory.random_state(2, 2, D=1000, seed=s) for s in range(2 if SMALL else 10)]
res = theory.sweep(states, grid=dict(rule=["bp", "sign-symmetry"], eta=[0.5, 1.0, 2.0]), t=theory.default_times(300.0),
                   eg_target=1e-3, progress=False)
tab = res.table
for rule in ("bp", "sign-symmetry"):
    for eta in (0.5, 1.0, 2.0):
        sel = tab[(tab["rule"] == rule) & (tab["eta"] == eta)]
        print(f"{rule:14s} eta={eta}: median eg(300) {np.median(sel['eg_final']):.3g}, "
              f"plateau length {np.median(sel['plateau_length']):.1f}, t(eg = 1e-3) {np.nanmedian(sel['t_target']):.1f}")'''),
]

# --------------------------------------------------------------------------- 7 mini-batches and schedules
NOTEBOOKS["07_batches_and_schedules.ipynb"] = [
    new_markdown_cell("""\
# Mini-batches and learning-rate schedules

Every experiment of the PEPITA papers trains with mini-batches and a decaying learning rate. A step
that averages the updates of B samples keeps the first-order terms of the ODE and divides the
second-order ones (the eta^2 E[delta delta] term, which carries the output noise) by B
(docs/extensions.md). Time stays t = steps / D, so a run of length t sees B t D samples.

How do the plateau and the final error of bp, afa and pepita move with B? Theory (the ODEs, a
sweep over B) and simulation (the exact finite-D sampler, which costs the same at any D) on one
figure."""),
    new_code_cell(SETUP),
    new_code_cell('''\
import simulate

D = 200 if SMALL else 500
REPLICAS = 8 if SMALL else 64
T_MAX = 60.0 if SMALL else 400.0
SIGMA = 0.1  # output noise: it sets the final error, which a larger batch averages down
BATCHES = [1, 8] if SMALL else [1, 2, 4, 8, 16, 32]
RULES = ["bp", "afa", "pepita"]
t = np.concatenate([[0.0], np.geomspace(0.05, T_MAX, 40 if SMALL else 120)])
init = simulate.Initialisation(K=2, M=2, D=D, seed=0)
state0 = init.order_params()

# one sweep per rule: bp and afa use their closed forms; pepita's expectations with output noise are
# 5-dimensional (fields and noise), a coarser Gauss-Hermite rule keeps them to seconds (error ~1e-4)
tables = {rule: theory.sweep(state0, rule, t, eta=1.0, sigma=SIGMA, grid=dict(batch=BATCHES), progress=False,
                             quadrature=theory.GaussHermite(8, n_noise=6) if rule == "pepita" else None).table
          for rule in RULES}
print("ODE: plateau length and eg(t_max) against B")
for rule in RULES:
    for B, length, eg in zip(BATCHES, tables[rule]["plateau_length"], tables[rule]["eg_final"]):
        print(f"  {rule:7s} B={B:3d}: plateau {length:6.1f}  eg(t_max) {eg:.3g}")'''),
    new_code_cell('''\
sims = {}
for rule in RULES:
    for B in BATCHES[:: 2 if not SMALL else 1]:
        res = simulate.run(init, rule, t, eta=1.0, sigma=SIGMA, batch=B, replicas=REPLICAS, engine="reduced",
                           n_test=0, progress=False, seed=1)
        sp = np.abs(res.state(-1).R) / np.sqrt(np.outer(np.diag(res.state(-1).Q), np.diag(res.state(-1).T)))
        length = theory.plateau(res.t, res.mean("eg"), (sp.max(-1) - sp.min(-1)).max())[0]
        sims[rule, B] = (length, res.mean("eg")[-1], res.sem("eg")[-1])
        print(f"simulation {rule:7s} B={B:3d}: plateau {length:6.1f}  eg(t_max) {sims[rule, B][1]:.3g} +- {sims[rule, B][2]:.1g}")'''),
    new_code_cell('''\
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for rule, c in zip(RULES, ("C0", "C1", "C2")):
    axes[0].plot(BATCHES, tables[rule]["plateau_length"], "-", color=c, label=f"{rule} ODE")
    axes[1].plot(BATCHES, tables[rule]["eg_final"], "-", color=c, label=f"{rule} ODE")
    Bs = [B for (r, B) in sims if r == rule]
    axes[0].plot(Bs, [sims[rule, B][0] for B in Bs], "o", color=c, label=f"{rule} simulation")
    axes[1].errorbar(Bs, [sims[rule, B][1] for B in Bs], yerr=[sims[rule, B][2] for B in Bs], fmt="o", color=c,
                     label=f"{rule} simulation")
axes[0].set(xscale="log", xlabel="batch size B", ylabel="plateau length (steps / D)", title=f"D = {D}, sigma = {SIGMA}")
axes[1].set(xscale="log", yscale="log", xlabel="batch size B", ylabel=f"eg at t = {T_MAX:g}",
            title="error at t_max (the noise floor ~ eta sigma^2 / B)")
for ax in axes:
    ax.legend(fontsize=7)
fig.tight_layout()
save(fig, "07_batches.png")'''),
    new_markdown_cell("""\
A schedule is a function of t: here step decay (the papers' training) and 1/t annealing against a
constant rate, for bp with output noise: decaying the rate after the plateau lowers the noise floor
(eps_g ~ eta sigma^2 at constant rate, ~ 1/t under 1/t annealing; docs/extensions.md). The ODE stops
and restarts at each jump; the simulation uses eta(step / D)."""),
    new_code_cell('''\
T_S = 200.0 if SMALL else 1000.0
ts = np.concatenate([[0.0], np.geomspace(0.05, T_S, 60)])
schedules = {"constant": 1.0, "step decay": theory.Piecewise.step_decay(1.0, every=T_S / 4, factor=0.3, until=0.75 * T_S),
             "1/t": theory.PowerLaw(1.0, t0=T_S / 5, p=1.0)}
fig, ax = plt.subplots(figsize=(6, 4))
pos = ts > 0
for (label, eta), c in zip(schedules.items(), ("C0", "C3", "C2")):
    tr = theory.integrate(state0, "bp", ts, eta=eta, sigma=SIGMA)
    res = simulate.run(init, "bp", ts, eta=eta, sigma=SIGMA, replicas=REPLICAS, engine="reduced", n_test=0, progress=False)
    ax.plot(tr.t[pos], tr.eg[pos], "--", color=c, label=f"{label}, ODE")
    ax.plot(res.t[pos], res.mean("eg")[pos], ".", color=c, ms=4, label=f"{label}, simulation")
    print(f"{label:10s} {str(eta):55s} eg(t = {T_S:g}): ODE {tr.eg[-1]:.3g}, simulation {res.mean('eg')[-1]:.3g}")
ax.set(xscale="log", yscale="log", xlabel="t = steps / D", ylabel="generalisation error", title=f"bp, sigma = {SIGMA}")
ax.legend(fontsize=8)
save(fig, "07_schedule.png")'''),
]


# --------------------------------------------------------------------------- 8 feedback mirroring
NOTEBOOKS["08_feedback_mirroring.ipynb"] = [
    new_markdown_cell("""\
# Feedback mirroring: PEPITA and AFA whose top-down projection learns

The ICLR 2024 PEPITA paper trains the top-down projection F = sigma_F f / sqrt D by weight
mirroring. Here f learns from noise alongside the rule (docs/extensions.md section 4): at each step
a fresh input xi drives the student and f <- f + (eta_F / sqrt D) yhat_xi xi, with |f|^2 / D kept at
its initial value (`mirror_norm=True`). By Stein's lemma F is pushed towards (W2 W1)^T, so the AFA
feedback sigma_F S turns towards v, the backprop feedback. With f learning, U and P join the ODE's
state. We compare PEPITA and AFA with and without mirroring (D = 500, K = M = 2): eps_g, the
feedback angle and the end-to-end angle of F with (W2 W1)^T, theory against simulation; then the
plateau length against eta_F from a sweep of the ODE."""),
    new_code_cell(SETUP),
    new_code_cell('''\
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
              f"{ode.angles['end_to_end'][-1]:.1f} deg")'''),
    new_code_cell('''\
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
save(fig, "08_mirroring.png")'''),
    new_markdown_cell("""\
Mirroring turns F towards (W2 W1)^T within a few units of time (the end-to-end angle falls from
about 90 degrees), and the feedback sigma_F S follows v. Without it, both rules sit on a plateau at
eps_g of about 0.3 until the feedback aligns by itself. A sweep of the ODE over eta_F measures the
escape: the first time eps_g falls below 0.2, under the plateau (`eg_target`, column t_target),
next to the table's `plateau_length` (`theory.plateau`, whose slope criterion catches only the
flattest part of this plateau) and the final error."""),
    new_code_cell('''\
ETA_FS = [0.0, 0.2] if SMALL else [0.0, 0.02, 0.05, 0.1, 0.2, 0.5]
sw = theory.sweep(state0, t=t, eta=ETA, sigma_F=SIGMA_F, mirror_norm=True, grid=dict(rule=["afa", "pepita"], eta_F=ETA_FS),
                  eg_target=0.2, rtol=1e-6, atol=1e-8, progress=False)
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
save(fig, "08_plateau_vs_eta_F.png")'''),
]

# --------------------------------------------------------------------------- 9 erf against relu
NOTEBOOKS["09_erf_and_relu.ipynb"] = [
    new_markdown_cell("""\
# erf against ReLU: the four rules, theory against simulation

ReLU is the activation of the PEPITA papers' experiments. Its ODEs are exact here too: bp, fa and
afa have closed forms (arc-cosine kernels and Gaussian orthant probabilities, up to the
four-variable one, `theory._relu`), and exact PEPITA, which has none, runs on the compiled
numerical engine with the kink-aware rule (`theory.KinkAware`: exact along lines between the
kinks of g and g', Gauss-Hermite across). The same initial weights, the same rates, the two
activations: the simulations (thin lines, replicas; their mean solid) against the ODEs (dashed)."""),
    new_code_cell(SETUP),
    new_code_cell('''\
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
    print(runs[g].summary())'''),
    new_code_cell('''\
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
save(fig, "09_eg.png")'''),
    new_markdown_cell("""\
The table below puts numbers on the figure: the final error of each ODE and simulation, and the
largest distance between the simulations' mean and the ODE, next to the simulations' standard
error. Where the simulation leaves the ODE, it is around the plateau escape (finite-D
fluctuations), for relu as for erf (THEORY.md section 6)."""),
    new_code_cell('''\
for g in ("erf", "relu"):
    for rule in RULES:
        res, eg_ode = runs[g].results[rule], runs[g].ode_eg(rule)
        dev = np.abs(res.mean("eg") - eg_ode).max()
        print(f"{g:5s} {rule:7s} eg(T) ODE {eg_ode[-1]:.5f}  simulation {res.mean('eg')[-1]:.5f}  "
              f"max |mean - ODE| {dev:.4f} (largest standard error {res.sem('eg').max():.4f})")'''),
]


# --------------------------------------------------------------------------- 10 fixed points
NOTEBOOKS["10_fixed_points.ipynb"] = [
    new_markdown_cell("""\
# Fixed points: the plateau, its escape, the degenerate solutions, bifurcations

The learning ODEs (THEORY.md section 4) have fixed points: states x* of the order parameters
where dx/dt = 0. The *plateau* is the symmetric (unspecialised) one, where every student unit is
the same; it is a saddle, whose unstable exponent lambda_u (specialisation, R_ii - R_ik) sets how
long learning stays on it. Starting D^-1/2 away from it (what random weights at dimension D give)
the escape takes t = const + ln D / (2 lambda_u). `theory.symmetric_plateau` finds it,
`FixedPoint.escape` predicts the escape, `theory.continuation` follows a fixed point in one
hyper-parameter and locates its folds and branch points. The same from the command line:
`pepita-dynamics fixed-points --rules bp,afa --continue sigma_F=0.5:3.5`."""),
    new_code_cell(SETUP),
    new_markdown_cell("""\
## The plateau of bp, AFA and PEPITA against sigma_F

bp does not see sigma_F. AFA's plateau (its feedback sigma_F S is the same for both units) is
followed by continuation in sigma_F; PEPITA (numerical expectations) is solved at a few values,
from AFA's plateau (its first-order expansion) or the previous PEPITA point as the guess."""),
    new_code_cell('''\
KW = dict(eta=0.5)
bp = theory.symmetric_plateau("bp", **KW)
afa = theory.symmetric_plateau("afa", sigma_F=1.0, **KW)
branch = theory.continuation(afa, "sigma_F", (0.5 if SMALL else 0.2, 4.0), max_points=150, ds_max=0.3 if SMALL else 0.1)
print(bp)
print(afa)
print(branch)

pepita, afa_at, previous = {}, {}, None
for sf in ((1.0,) if SMALL else (0.25, 0.5, 1.0, 1.5, 2.0, 2.5)):
    i = int(np.argmin(np.abs(branch.values - sf) + 1e3 * (branch.s < 0) * (branch.values > 3)))
    afa_sf = afa_at[sf] = theory.fixed_point(branch.states[i], "afa", sigma_F=sf, **KW)
    for guess in ([afa_sf.state] if previous is None else [afa_sf.state, previous.state]):
        try:
            previous = pepita[sf] = theory.symmetric_plateau("pepita", guess=guess, sigma_F=sf, **KW)
            break
        except theory.FixedPointError as exc:
            print(f"pepita at sigma_F = {sf}: {str(exc)[:80]}...")
for sf, fp in pepita.items():
    print(f"pepita sigma_F = {sf}: eg = {fp.eg:.6f}, lambda_u = {fp.eigenvalues[0].real:.4g} "
          f"(afa's {afa_at[sf].eigenvalues[0].real:.4g}), "
          f"accuracy {fp.accuracy:.1e}")'''),
    new_code_cell('''\
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
first = branch.n_unstable == branch.n_unstable[np.argmin(np.abs(branch.values - 1.0))]  # the plateau's own branch
axes[0].plot(branch.values[first], branch.eigenvalues[first, 0].real, "C1-", label="afa (continuation)")
axes[0].plot(branch.values[~first], branch.eigenvalues[~first, 0].real, "C1:", label="afa, past the fold")
axes[0].plot(list(pepita), [fp.eigenvalues[0].real for fp in pepita.values()], "C3o", label="pepita")
axes[0].axhline(bp.eigenvalues[0].real, color="C0", label="bp")
axes[0].set(yscale="log", xlabel="sigma_F", ylabel="unstable exponent lambda_u", title="plateau: escape rate")
axes[0].legend(fontsize=8)
theory.plot_bifurcation(branch, ax=axes[1], labels=["afa"], colors=["C1"])
axes[1].plot(list(pepita), [fp.eg for fp in pepita.values()], "C3o", label="pepita")
axes[1].axhline(bp.eg, color="C0", label="bp")
axes[1].legend(fontsize=8)
fig.tight_layout()
save(fig, "10_plateau_sigma_F.png")'''),
    new_markdown_cell("""\
## Predicted escape times against D

From the plateau's weights plus a Gaussian perturbation of size D^-1/2 (every mode excited, as
finite-D weights do), the prediction `FixedPoint.escape` (linear growth at lambda_u, then the
unstable manifold integrated) against the ODE integrated from the same start, and for bp the
median escape time of the exact finite-D sampler (`simulate.run_reduced`, error bars: the 95 %
order-statistic interval). The prediction is late by the nonlinear effect of the stable
components, which vanishes like ln D / sqrt D; the slope is 1 / (2 lambda_u) per ln D.
AFA and PEPITA's plateaus are much flatter (lambda_u ~ 5e-4 at sigma_F = 1): their escapes take
~10^4 time units."""),
    new_code_cell('''\
import simulate
from theory import crossing_time


def near(fp, D, seed=0):
    """The fixed point's order parameters realised by weights (teacher w*_m = e_m, f = e_M+1, T = I, U = 0, P = 1),
    plus a Gaussian perturbation of the student's weights of size D^-1/2 per coordinate."""
    st = fp.state
    K, M = st.K, st.M
    C = st.Q - st.R @ st.R.T - np.outer(st.S, st.S)
    w, V = np.linalg.eigh(C)
    W0 = np.hstack([st.R, st.S[:, None], V * np.sqrt(np.clip(w, 0, None))])
    W = W0 + np.random.default_rng(seed).standard_normal(W0.shape) / np.sqrt(D)
    Ws = np.eye(M, W0.shape[1])
    f = np.eye(W0.shape[1])[M]
    return st.replace(Q=W @ W.T, R=W @ Ws.T, S=W @ f)


DS = np.geomspace(200, 1e4, 3) if SMALL else np.geomspace(200, 1e6, 8)
escape = {}
for name, fp, kw in (("bp", bp, KW), ("afa", afa, dict(KW, sigma_F=1.0))):
    rows = []
    for D in DS:
        s0 = near(fp, D)
        esc = fp.escape(s0, t_max=50.0 / fp.eigenvalues[0].real)  # the unstable manifold, integrated up to t_max
        tr = theory.integrate(s0, name, np.concatenate([[0.0], np.geomspace(1e-2, 20 * esc.time, 3000)]), **kw)
        rows.append((esc.time, crossing_time(tr.t, tr.eg, esc.level)))
    escape[name] = np.array(rows)
    slope = np.polyfit(np.log(DS), escape[name][:, 1], 1)[0]
    print(f"{name}: predicted {np.round(escape[name][:, 0], 1)}, ODE {np.round(escape[name][:, 1], 1)}; "
          f"slope {slope:.4g} per ln D against 1/(2 lambda_u) = {0.5 / fp.eigenvalues[0].real:.4g}")

SIM_DS, REPLICAS = ((200, 500), 16) if SMALL else ((500, 2000, 10000), 64)
sim = []
for D in SIM_DS:
    s0 = near(bp, D)
    level = 0.5 * bp.eg
    res = simulate.run_reduced(s0, "bp", np.arange(0.0, bp.escape(s0).time + 60.0, 0.25), D=D, replicas=REPLICAS,
                               seed=1, **KW)
    t_esc = np.sort(simulate.plateau_escape_times(res, threshold=level))
    h = 1.96 * np.sqrt(REPLICAS) / 2
    lo, hi = t_esc[max(int(REPLICAS / 2 - h), 0)], t_esc[min(int(np.ceil(REPLICAS / 2 + h)), REPLICAS - 1)]
    sim.append((D, np.median(t_esc), lo, hi))
    print(f"bp sampler, D = {D}: median escape {np.median(t_esc):.2f} [{lo:.2f}, {hi:.2f}], "
          f"predicted {bp.escape(s0).time:.2f}")
sim = np.array(sim)'''),
    new_code_cell('''\
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, name in zip(axes, escape):
    ax.plot(DS, escape[name][:, 0], "o-", label="predicted (FixedPoint.escape)")
    ax.plot(DS, escape[name][:, 1], "k--", label="ODE from the same start")
    ax.set(xscale="log", xlabel="D", ylabel="escape time (steps / D)", title=f"{name}: plateau escape")
axes[0].errorbar(sim[:, 0], sim[:, 1], yerr=[sim[:, 1] - sim[:, 2], sim[:, 3] - sim[:, 1]], fmt="s", color="C3",
                 label=f"exact sampler, median of {REPLICAS}")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
save(fig, "10_escape_vs_D.png")'''),
    new_markdown_cell("""\
## The degenerate solutions (the ICLR 2024 paper's Fig. 2c)

g is odd, so the student w_k = s_k w*_k, v_k = s_k v*_k computes the teacher's function for every
sign pattern s: v anti-aligned with v* (s = (-1, -1)) is as good as the teacher. With the constants
of random weights at D = 500 (f slightly correlated with the teacher, so AFA's feedback
sigma_F S = sigma_F s U is not zero there) these are fixed points of every rule; their stability
differs. bp: all stable (symmetry images of each other). AFA and PEPITA: saddles for every s.
AFA from random weights ends at a marginal fixed point near one of them, with one unit's feedback
dead (S_k = 0)."""),
    new_code_cell('''\
constants = theory.random_state(2, 2, D=500, seed=0)
SIGNS = ((1, 1), (-1, 1), (1, -1), (-1, -1))
rules = ("bp", "afa") if SMALL else ("bp", "afa", "pepita")
deg = {}
for rule in rules:
    for s in SIGNS:
        fp = deg[rule, s] = theory.degenerate_solution(rule, signs=s, constants=constants, sigma_F=1.0, **KW)
        print(f"{rule:7s} s = {s}: angle(v, v*) = {fp.angles['teacher']:6.1f} deg, unstable {fp.n_unstable}, "
              f"marginal {fp.n_marginal}, leading exponents {np.round(fp.eigenvalues[:2].real, 5)}")

T_END = 3e3 if SMALL else 1e5
tr = theory.integrate(constants, "afa", theory.default_times(T_END, 200), sigma_F=1.0, **KW)
end = theory.fixed_point(tr, "afa", point="end", sigma_F=1.0, throw=False, **KW)
print(f"afa from random weights, t = {T_END:g}: eg = {tr.eg[-1]:.3g}, v = {np.round(tr.v[-1], 3)}, "
      f"S = {np.round(tr.S[-1], 4)}; fixed point there: {end}")'''),
    new_code_cell('''\
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
pos = tr.t > 0
for key in ("teacher", "degenerate:-+", "degenerate:+-", "degenerate:--"):
    axes[0].plot(tr.t[pos], tr.angles[key][pos], label=key.replace("teacher", "angle(v, v*)"))
axes[0].set(xscale="log", xlabel="t", ylabel="angle (degrees)", title="afa from random weights: v against s * v*")
axes[0].legend(fontsize=8)
x = np.arange(len(SIGNS))
for j, rule in enumerate(rules):
    axes[1].bar(x + 0.25 * j, [deg[rule, s].eigenvalues[0].real for s in SIGNS], 0.25, label=rule)
axes[1].axhline(0, color="k", lw=0.8)
axes[1].set_xticks(x + 0.25, [str(s) for s in SIGNS])
axes[1].set(xlabel="signs s", ylabel="leading exponent", title="teacher solutions: stable below 0")
axes[1].legend(fontsize=8)
fig.tight_layout()
save(fig, "10_degenerate.png")'''),
    new_markdown_cell("""\
## Bifurcations

Continuation in one hyper-parameter, with the stability along the branch (solid stable, dashed
unstable) and the special points located by Brent's method: AFA's plateau ends at a fold in
sigma_F (beyond it there is no symmetric plateau: the feedback runs away), and bp's specialised
solution (frozen v) loses stability at a critical learning rate (a branch point)."""),
    new_code_cell('''\
spec = theory.specialised_solution("bp", eta=0.5, train_second_layer=False)
eta_branch = theory.continuation(spec, "eta", (0.5, 4.0), direction="up")
print(eta_branch)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
theory.plot_bifurcation(branch, ax=axes[0], labels=["afa plateau"], colors=["C1"])
theory.plot_bifurcation(eta_branch, y="R[0,0]", ax=axes[1], labels=["bp specialised (v frozen)"])
fig.tight_layout()
save(fig, "10_bifurcations.png")'''),
]


def build(names=None):
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        for i, cell in enumerate(cells):  # stable ids: a rebuild changes only the cells that changed
            cell["id"] = f"{name[:2]}-{i:02d}"
        nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
        nbformat.write(nb, HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    import sys

    build(sys.argv[1:])  # notebook names (default: all)
