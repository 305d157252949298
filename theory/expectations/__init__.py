"""The expectations the ODE needs (THEORY.md section 4), by the three ways they are computed.

closed.py       closed forms of the feedback family (erf, relu, linear g) and the ODE assembly.
numerical.py    Gaussian quadratures with controlled accuracy, for any rule and activation.
montecarlo.py   Monte Carlo estimates straight from a rule's one-sample update (the reference).
mirror.py       the feedback-mirroring terms (P, U).

Internal: the public names are re-exported by :mod:`theory`.
"""
