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
    register_engine     plug another simulation engine into run/compare (e.g. the reduced sampler).

Figures live in simulate._plots; the command line ``pepita-dynamics`` in simulate._cli.
"""

from ._compare import PEPITA_ODE_RULE, Agreement, Comparison, compare
from ._engine import ENGINES, Records, RunSpec, register_engine, run
from ._init import Initialisation, Weights
from ._result import SimulationResult
from ._reduced import empirical_eg, run_reduced  # registers engine "reduced" for run/compare
from ._finite_size import finite_size_study, plateau_escape_times

__all__ = [
    "PEPITA_ODE_RULE", "Agreement", "Comparison", "compare",
    "ENGINES", "Records", "RunSpec", "register_engine", "run",
    "Initialisation", "Weights",
    "SimulationResult",
    "empirical_eg", "run_reduced", "finite_size_study", "plateau_escape_times",
]
