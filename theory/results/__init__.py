"""What a run returns and how it is kept: trajectories, summaries, files.

trajectory.py   Trajectory (times, order parameters, observables, parameters, status), DivergenceError.
summaries.py    the plateau, crossing and escape times, the plateau split.
io.py           saving and loading (.npz with JSON metadata), shared with simulate.
labelled.py     xarray Datasets and netCDF files.

Internal: the public names are re-exported by :mod:`theory`.
"""
