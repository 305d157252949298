"""Parameter sweeps: many curves integrated at once, summarised in a tidy table.

sweep.py    sweep -> SweepResult (pandas table, curves, xarray, save/load).
points.py   sweep points: scalars shared, sequences zipped, grid axes crossed.

Internal: the public names are re-exported by :mod:`theory`.
"""
