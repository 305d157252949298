"""Learning-curve summaries (theory.results.summaries) that must not depend on how long a curve was recorded."""

import numpy as np

import theory


def _curve(t):
    """A drop to a plateau at 0.02, escape near t = 200, then a converged floor at 1e-4 (flat, flatter than the
    plateau: the anchor of the old split, the global flattest point, moved there at long horizons)."""
    return 0.5 * np.exp(-t) + 0.02 / (1 + (t / 200.0) ** 6) + 1e-4


def test_plateau_split_does_not_depend_on_the_horizon():
    splits = []
    for horizon in (1e3, 1e4, 1e5):
        t = np.geomspace(0.01, horizon, int(100 * np.log10(horizon / 0.01)))
        splits.append(theory.plateau_split(t, _curve(t)))
    assert 150 < splits[0] < 260
    np.testing.assert_allclose(splits, splits[0], rtol=0.02)
