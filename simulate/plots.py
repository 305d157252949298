"""Figures of simulations and ODEs: the functions of :mod:`theory.plots`, under the name the documentation and
the command line use (drawing needs no simulation, so they live in theory, which never imports simulate).

    plots.learning_curves(data)     eps_g(t): simulation mean +- sem (band), ODE (dashed), test-set eg
    plots.angles(data, names)       alignment angles (THEORY.md section 5), one panel per angle
    plots.directions(cmp)           K = 2: directions in the plane of v, the feedback, v* and s v*
    plots.fig2(cmp)                 Figure 2 of the ICLR 2024 PEPITA paper (Srinivasan and others)
    plots.phase_diagrams(table, over)   summaries of a sweep table over one or two of its parameters

See :mod:`theory.plots` for what each draws and the conventions (colours, legends, labels).
"""

from theory.plots import *  # noqa: F403  (the public figures, listed in __all__)
from theory.plots import __all__  # noqa: F401
