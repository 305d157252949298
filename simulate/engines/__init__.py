"""The simulation engines: each runs a :class:`simulate.RunSpec` and returns :class:`simulate.Records`.

Modules:
    base       :class:`Engine` (what an engine declares: needs_weights, its default dtype and n_test,
               its checks, its memory, ``run(spec)``) and :class:`CallableEngine` (a user's fn(spec) -> Records).
    driver     the one loop every built-in engine runs: chunks of steps cut at the recording steps, a
               divergence check after each chunk, records, progress, Ctrl-C (:func:`driver.drive` over a Stepper).
    full       engine "full": the D-dimensional weights, batched over replicas (FullStep, the input streams).
    reduced/   engine "reduced": the exact order-parameter chain (step, backends, chain, empirical,
               kernel, rng).

The registry of engines by name is :data:`simulate.ENGINES` (simulate._run).
"""

from .base import CallableEngine, Engine

__all__ = ["Engine", "CallableEngine"]
