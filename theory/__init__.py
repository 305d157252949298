"""Order-parameter ODEs of two-layer committee machines learning a teacher under any learning rule.

Public API (the notation is THEORY.md's; see docs/notation.md):

Rules (the extension point: write a rule once, by its one-sample update; it runs everywhere)
    Rule, LocalUpdate, Sample   the base class, what ``Rule.update`` returns, what it sees.
    variant                a rule option with a fixed set of values (presynaptic, error, ...).
    register_rule          make a rule's name usable everywhere a rule name is accepted.
    registered_rules, make_rule, load_rule, rule_from_params, RULES (the built-in names).
    compiled_rule          the rule's compiled view, generated from its definition (or why none).
    rule_facts, RuleFacts  what the views know of a rule (closed form, modulated input), derived from its update.
    UntraceableRuleWarning warned once when a rule's update cannot be traced (it then runs on the generic paths).

State and parameters
    OrderParams            Q, R, T, S, U, P, v, v_star, b; validated, with Omega and a flat vector.
    random_state           measured order parameters of random weights at dimension D.
    state_from_weights     measured order parameters of given weights.
    HyperParams            eta, eta_v, sigma, sigma_F, weight_decay, train_second_layer, g, batch; validated.
    Constant, PowerLaw, Piecewise, Interpolated, Schedule, parse_schedule   learning-rate schedules eta(t).
    Activation, activation g and g' for "erf", "relu", "tanh", "linear".

ODEs
    integrate              integrate a rule's ODE with error control -> Trajectory.
    rhs, Dynamics, make_dynamics   the right-hand side.
    jacobian, Jacobian     its derivative by the state or hyper-parameters (Ridders), labelled, with its error.
    Trajectory             times, order parameters, eg, angles, status, parameters; save/load.
    fixed_point, FixedPoint, FixedPointError, Escape   a fixed point (Newton), its stability and plateau escape.
    symmetric_plateau, specialised_solution, degenerate_solution, teacher_constants   finders of fixed points.
    continuation, Branch, Bifurcation, plot_bifurcation   continuation in one hyper-parameter, bifurcations.
    DivergenceError        raised when a run diverges (carries the partial trajectory).
    optimal_protocol, OptimalProtocol   schedules of eta, eta_v, sigma_F, eta_F minimising the error, with baselines.

Numerical expectations (rules without closed forms, any activation)
    GaussHermite, SparseGrid, QMC, KinkAware   quadrature rules for integrate(..., quadrature=...).
    numerical_terms        E[delta_k xi_u], E[delta_k delta_l], E[e_out h_k] by quadrature.
    AccuracyWarning        a numerical view estimated above its expectation_tol within the default cost.

Sweeps and summaries
    sweep                  many parameter points integrated at once (batched) -> SweepResult.
    SweepResult            .table: a pandas DataFrame, one row per point; curves(), save(), to_xarray().
    plateau, plateau_split, crossing_time, PLATEAU_DEFAULTS   learning-curve summaries.

Observables
    generalisation_error, alignment_angles, angle, specialisation.

Gaussian integrals (erf)
    I2, J2, I3, I4, tilt.

Errors: DivergenceError, LoadError (a file that is not a result, or is damaged), TooLarge (a request that
would not fit in memory, refused up front).

Figures: plots (a module: learning curves, angles, directions, Fig. 2 of the PEPITA paper, phase diagrams of
sweeps; Trajectory.plot, SweepResult.plot and simulate's results use it); explorer (a module: explore(), sliders
for eta, sigma_F, sigma, K, M and a rule menu redrawing the learning curve and angles in a notebook).

Files: labelled (xarray Datasets and netCDF files: labelled.load, labelled.to_dataset).

The package is laid out by concept (each subpackage's docstring lists its modules): rules/, activations/,
expectations/ (closed forms, quadratures, Monte Carlo, mirroring), ode/ (right-hand side, views,
derivatives), solver/ (driver, steppers), sweeps/, analysis/ (fixed points, continuation), results/,
_codegen/ (compiled views generated from a rule). What simulate shares with theory beyond this API
(checks, files, the divergence policy, the compiled ABI, option resolution) is in theory._internal.
"""

# _diskcache first: numba's cache of the package's kernels, shared by every copy of the package
from . import _diskcache, _internal  # noqa: F401  (_internal: simulate's plumbing, not public)
from ._checks import LoadError, TooLarge
from ._codegen.rule import compiled_rule
from ._hyper import HyperParams
from ._init import random_state, state_from_weights
from ._observables import alignment_angles, angle, generalisation_error, specialisation
from ._provenance import provenance
from ._schedules import Constant, Interpolated, Piecewise, PowerLaw, Schedule, parse_schedule
from ._state import OrderParams
from ._version import __version__
from .activations._base import ACTIVATIONS, Activation, activation
from .activations.erf import I2, I3, I4, J2, tilt
from .analysis.continuation import Bifurcation, Branch, continuation, plot_bifurcation
from .analysis.fixed_points import (
                          Escape,
                          FixedPoint,
                          FixedPointError,
                          degenerate_solution,
                          fixed_point,
                          specialised_solution,
                          symmetric_plateau,
                          teacher_constants,
)
from .control.protocol import OptimalProtocol, optimal_protocol
from .expectations.numerical import QMC, AccuracyWarning, GaussHermite, KinkAware, SparseGrid, numerical_terms
from .ode.derivatives import Jacobian, jacobian
from .ode.dynamics import Dynamics, make_dynamics, rhs
from .results import labelled
from .results.summaries import PLATEAU_DEFAULTS, crossing_time, plateau, plateau_split
from .results.trajectory import DivergenceError, Trajectory
from .rules._base import (
                          RULES,
                          LocalUpdate,
                          Rule,
                          Sample,
                          load_rule,
                          make_rule,
                          register_rule,
                          registered_rules,
                          rule_from_params,
                          variant,
)
from .rules._facts import RuleFacts, UntraceableRuleWarning, rule_facts
from .solver.integrate import default_times, integrate
from .sweeps.sweep import SweepResult, sweep

__all__ = [
    "__version__",
    "provenance",
    "Rule",
    "LocalUpdate",
    "Sample",
    "variant",
    "register_rule",
    "registered_rules",
    "make_rule",
    "load_rule",
    "rule_from_params",
    "RULES",
    "compiled_rule",
    "rule_facts",
    "RuleFacts",
    "UntraceableRuleWarning",
    "OrderParams",
    "random_state",
    "state_from_weights",
    "HyperParams",
    "Schedule",
    "Constant",
    "PowerLaw",
    "Piecewise",
    "Interpolated",
    "parse_schedule",
    "ACTIVATIONS",
    "Activation",
    "activation",
    "integrate",
    "rhs",
    "jacobian",
    "Jacobian",
    "Dynamics",
    "make_dynamics",
    "default_times",
    "Trajectory",
    "DivergenceError",
    "fixed_point",
    "FixedPoint",
    "FixedPointError",
    "Escape",
    "symmetric_plateau",
    "specialised_solution",
    "degenerate_solution",
    "teacher_constants",
    "continuation",
    "Branch",
    "Bifurcation",
    "plot_bifurcation",
    "optimal_protocol",
    "OptimalProtocol",
    "GaussHermite",
    "QMC",
    "SparseGrid",
    "KinkAware",
    "numerical_terms",
    "AccuracyWarning",
    "sweep",
    "SweepResult",
    "plateau",
    "plateau_split",
    "crossing_time",
    "PLATEAU_DEFAULTS",
    "alignment_angles",
    "angle",
    "generalisation_error",
    "specialisation",
    "I2",
    "I3",
    "I4",
    "J2",
    "tilt",
    "LoadError",
    "TooLarge",
    "labelled",
    "plots",
    "explorer",
]


def __getattr__(name):
    if name in ("plots", "explorer"):  # submodules imported on first use (they import matplotlib, ipywidgets)
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'theory' has no attribute {name!r}")
