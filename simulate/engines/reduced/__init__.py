"""Engine "reduced": the exact finite-D sampler in order-parameter space (docs/maths/sampler.md).

The Gram matrix of the K + M + 1 vectors (w_k, w*_m, f) evolves as a Markov chain with the law of
the full simulation's order parameters at any D; a step costs O((K + M + 1)^3), independent of D.
It needs no weights: it starts from a measured :class:`theory.OrderParams` (or one per replica).

Modules:
    step       :class:`~step.ReducedStep`: one step of the chain (the maths: why it is exact, the square root).
    backends   the "numba" (compiled, CPU) and "torch" (reference, any device) backends; which one a run takes.
    chain      the chain driven through a run's recording steps (:func:`~chain.run_chain`), and
               :func:`~chain.reduced_chain`, its raw door (numpy records).
    empirical  :func:`~empirical.empirical_eg`: the Monte Carlo test error from recorded order parameters.
    kernel     the numba kernel of the chain (a chunk of steps for a block of replicas, draws inside).
    rng        counter-based random numbers of the kernel (Philox4x64-10, ziggurat, Gamma).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from theory import _internal

from ..._spec import STREAM_DATA, STREAM_TEST, Records, RunSpec, derived_seed
from ..base import Engine

__all__ = ["ReducedEngine", "BACKENDS"]

BACKENDS = ("auto", "numba", "torch")


@dataclasses.dataclass(frozen=True)
class ReducedEngine(Engine):
    """Engine "reduced" (module docstring): no weights needed, float64 by default (the increments are O(1/D)).

    backend: "auto" (the compiled numba kernel on the CPU in float64 for rules with a compiled view,
    else torch), "numba" or "torch" (:mod:`.backends`); block: the torch backend's steps of draws at a
    time. Default n_test: 0 when the activation's eps_g has a closed form (eg_test would only
    re-estimate eg), else 1000 fresh fields per record (:func:`.empirical.empirical_eg`).
    The chain's draws use the stream ``derived_seed(seed, STREAM_DATA)``, eg_test ``STREAM_TEST``.
    """

    backend: str = "auto"
    block: int = 256

    name = "reduced"
    needs_weights = False
    dtype = torch.float64

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: must be one of {BACKENDS}, got {self.backend!r}")
        _internal.checks.integer("block", self.block, where="reduced", min=1)

    def n_test(self, hyper) -> int:
        return 0 if hyper.g.i2 is not None else 1000

    def memory(self, **_) -> float:
        return 0.0  # the state is O(replicas (K + M + 1)^2): the records dominate

    def check(self, spec: RunSpec) -> None:
        from .backends import resolve_backend

        r, B = spec.K + spec.M + 1, spec.hyper.batch
        if spec.D < r:
            raise ValueError(f"D: must be >= K + M + 1 = {r} (the number of vectors whose Gram matrix is tracked), "
                             f"got {spec.D}")
        if B > 1 and spec.D < r + B:
            raise ValueError(f"D: {B} samples per step need D >= K + M + 1 + batch = {r + B}, got {spec.D}")
        resolve_backend(self.backend, spec.device, spec.dtype, spec.rule, spec.hyper.g, spec.K, spec.M)

    def run(self, spec: RunSpec) -> Records:
        from .chain import run_chain
        from .empirical import eg_test

        rec = run_chain(spec, seed=derived_seed(spec.seed, STREAM_DATA), backend=self.backend, block=self.block)
        if spec.n_test == 0:
            return rec
        rng = np.random.default_rng(derived_seed(spec.seed, STREAM_TEST))
        est = eg_test(rec.Q, rec.R, rec.S, rec.v, spec.state, n_test=spec.n_test, g=spec.hyper.g, rng=rng)
        info = rec.info | {"eg_test": "Monte Carlo over n_test fresh fields z ~ N(0, Omega) per record"}
        return dataclasses.replace(rec, eg_test=est, info=info)
