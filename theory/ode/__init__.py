"""The ODE of a rule at fixed hyper-parameters: right-hand side, its views, its derivatives.

dynamics.py      Dynamics, make_dynamics, rhs: dy/dt for the flat state y = (Q, R, S, v[, U, P]).
views.py         rhs_view / update_view: which view of a rule serves a request (the one selector).
layout.py        the compiled kernels' parameter vector, declared once.
derivatives.py   Jacobians by the state and by hyper-parameters (Ridders), with their error.

Internal: the public names are re-exported by :mod:`theory`.
"""
