"""Order-parameter ODEs of two-layer erf committee machines under bp, fa, afa and pepita.

Public API (the notation is THEORY.md's; see docs/notation.md):

State and rules
    OrderParams            Q, R, T, S, U, P, v, v_star, b; validated, with Omega and a flat vector.
    random_state           measured order parameters of random weights at dimension D.
    state_from_weights     measured order parameters of given weights.
    Rule, make_rule        the four rules and their variants, defined by one sample's update.
    Activation, activation g and g' for "erf", "relu", "tanh", "linear".

ODEs
    integrate              integrate a rule's ODE with error control -> Trajectory.
    rhs                    the right-hand side at one state.
    Trajectory             times, order parameters, eg, angles, status, parameters; save/load.
    DivergenceError        raised when a run diverges (carries the partial trajectory).

Numerical expectations (pepita, and any activation)
    GaussHermite, SparseGrid, QMC   quadrature rules for integrate(..., quadrature=...).
    numerical_terms        E[delta_k xi_u], E[delta_k delta_l], E[e_out h_k] by quadrature.

Sweeps
    sweep                  many parameter points integrated at once (batched) -> SweepResult.
    SweepResult, Table     one row per point (parameters and summaries); long table by curves().

Observables
    generalisation_error, alignment_angles, angle, specialisation.

Gaussian integrals (erf)
    I2, J2, I3, I4, tilt.
"""

from ._activations import ACTIVATIONS, Activation, activation
from ._init import random_state, state_from_weights
from ._integrals import I2, I3, I4, J2, tilt
from ._numerical import QMC, GaussHermite, SparseGrid, numerical_terms
from ._integrate import Dynamics, default_times, integrate, make_dynamics, rhs
from ._observables import alignment_angles, angle, generalisation_error, specialisation
from ._rules import RULES, LocalUpdate, Rule, make_rule
from ._state import OrderParams
from ._sweep import SweepResult, Table, sweep
from ._trajectory import DivergenceError, Trajectory

__all__ = [
    "ACTIVATIONS", "Activation", "activation",
    "random_state", "state_from_weights",
    "I2", "I3", "I4", "J2", "tilt",
    "GaussHermite", "QMC", "SparseGrid", "numerical_terms",
    "Dynamics", "default_times", "integrate", "make_dynamics", "rhs",
    "alignment_angles", "angle", "generalisation_error", "specialisation",
    "RULES", "LocalUpdate", "Rule", "make_rule",
    "OrderParams",
    "DivergenceError", "Trajectory",
    "sweep", "SweepResult", "Table",
]
