"""Dynamical-systems analysis of the ODEs: fixed points, stability, escape times, continuation.

fixed_points.py   fixed_point (Newton on the derived Jacobian), FixedPoint, the finders, Escape.
continuation.py   pseudo-arclength continuation in one hyper-parameter, bifurcations, their plot.

Internal: the public names are re-exported by :mod:`theory`.
"""
