"""Batched high-dimensional simulations of the two-layer network, and their comparison with the ODEs.

Public API (notation of THEORY.md):

    Initialisation      K, M, D, seed, w_std, v_std, v_star -> .weights() (torch) and .order_params() (theory).
    Weights             W (R, K, D), W_star (M, D), v (R, K), v_star (M,), f (D,), b (K,).
    run                 simulate replicas of one rule -> SimulationResult (engine "full", or a registered one).
    SimulationResult    t, Q, R, S, v (replica axis first), eg, eg_test, angles, params, status; mean/sem; save/load.
    compare             simulations and ODEs of several rules from the same measured initial condition -> Comparison.
    Comparison          per-rule results, trajectories and agreement measures; .summary(), save/load.
    run_reduced         the exact order-parameter sampler (also run(..., engine="reduced")); empirical_eg.
    finite_size_study   plateau escape times and eg spread against D (reduced sampler); plateau_escape_times.
    register_engine     plug another simulation engine into run/compare: fn(spec) -> Records, or an engine object.
    RunSpec, Records    what an engine receives (the run, validated once) and what it returns.
    plots               figures (module): learning_curves, angles, directions, fig2 (the PEPITA paper's Fig. 2).

The command line ``pepita-dynamics`` lives in simulate._cli.
"""

import importlib

# Names are imported on first use (PEP 562): ``import simulate`` and the command line's ``--help`` and
# ``ode`` do not pay for torch; the first simulation does.
_WHERE = {
    "PEPITA_ODE_RULE": "_compare", "Agreement": "_compare", "Comparison": "_compare", "compare": "_compare",
    "ENGINES": "_run", "register_engine": "_run", "run": "_run", "run_reduced": "_run",
    "Records": "_spec", "RunSpec": "_spec",
    "Initialisation": "_init", "Weights": "_init",
    "SimulationResult": "_result",
    "empirical_eg": "engines.reduced.empirical",
    "finite_size_study": "_finite_size", "plateau_escape_times": "_finite_size",
}

__all__ = ["__version__", *_WHERE, "plots"]


def __getattr__(name):
    if name == "__version__":  # one version string: theory's
        from theory import __version__

        return __version__
    if name == "plots":  # a submodule: imported on first use, like the names above (it imports matplotlib)
        return importlib.import_module(f"{__name__}.plots")
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'simulate' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE) | {"plots"})
