"""Optimal training protocols from the ODEs: schedules of eta, eta_v, sigma_F, eta_F that minimise the error.

protocol.py        optimal_protocol, OptimalProtocol: the optimisation (scipy L-BFGS-B / SLSQP), its checks, its record.
families.py        the parametrised protocols: piecewise constant (the optimised one), constant, power law.
sensitivities.py   the flow of the ODE with forward sensitivities by the control parameters (DOP853 with
                   internal numerical differentiation: tangents carried along the nominal steps).
objectives.py      eg_final, time_to_target, eg_integral: their values and gradients from a flow.
baselines.py       the best constant and the best power law (a small search, the same objective).
analytic.py        the closed-form optimum of linear g, K = M = 1, bp with output noise (the test case).

Internal: the public names (optimal_protocol, OptimalProtocol) are re-exported by :mod:`theory`.
"""
