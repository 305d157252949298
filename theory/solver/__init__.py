"""Integration of the ODEs: one driver loop over pluggable steppers.

integrate.py    integrate (error control, accuracy control of numerical views) -> Trajectory.
driver.py       the driver loop (status, Ctrl-C, progress) and its steppers (scipy, batched numpy, compiled).
dop853.py       the DOP853 tableau and its compiled stepper.
divergence.py   when a run counts as diverged (shared with simulate).

Internal: the public names are re-exported by :mod:`theory`.
"""
