"""The exact order-parameter chain driven through a run's recording steps.

:func:`run_chain` runs a :class:`simulate.RunSpec` on a backend (:mod:`.backends`) through the
engines' one driver (:mod:`simulate.engines.driver`): from the initial state at step 0 to the last
recording step, a divergence check after every chunk (|Q_kk|, S, v: the policy of the ODEs), a
record at every recording step, and on Ctrl-C the state where it stopped (a chunk boundary: every
replica at the same step) as the last record. :func:`reduced_chain` is its raw door: an
OrderParams (or any object with per-replica Q, R, S, v) in, numpy records out, the seed used as given.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from theory import HyperParams, OrderParams, _internal

from ..._spec import Records, ReplicaStates, RunSpec, specify
from ..driver import Recorder, Stepper, drive
from . import ReducedEngine
from .backends import open_chain, resolve_backend

__all__ = ["run_chain", "reduced_chain"]


class ChainStepper(Stepper):
    """The driver's stepper of a chain backend: advance, check, record (float64 copies of the state)."""

    keeps_interrupted_state = True

    def __init__(self, chain, spec: RunSpec):
        self.chain, self.chunk = chain, chain.chunk
        R, K, M = spec.replicas, spec.K, spec.M
        shapes = dict(Q=(R, K, K), R=(R, K, M), S=(R, K), v=(R, K))
        if spec.hyper.mirroring:
            shapes.update(U=(R, M), P=(R,))
        self.names = tuple(shapes)
        self.recorder = Recorder(shapes)

    def advance(self, n, next_n):
        self.chain.advance(n)

    def why_diverged(self):
        Q, _, S, v = self.chain.state()[:4]
        return _internal.divergence.why_replicas(np.diagonal(Q, axis1=-2, axis2=-1), S, v)

    def record(self, step):
        self.recorder.add(step, **dict(zip(self.names, self.chain.state())))


def run_chain(spec: RunSpec, *, seed: int, backend: str = "auto", block: int = 256) -> Records:
    """The chain of ``spec`` (module docstring), its draws seeded by ``seed``, on ``backend`` (resolved as
    :func:`.backends.resolve_backend`). Records with eg_test None; info: backend, wall_s, replica_steps."""
    hp = spec.hyper
    backend = resolve_backend(backend, spec.device, spec.dtype, spec.rule, hp.g, spec.K, spec.M)
    chain = open_chain(spec, seed=seed, backend=backend, block=block)
    stepper = ChainStepper(chain, spec)
    wall = time.perf_counter()
    try:
        outcome = drive(stepper, spec.steps, spec.D,
                        progress=f"reduced {spec.rule.label} D={spec.D}" if spec.progress else None)
    finally:
        chain.close()
    info = dict(backend=backend, wall_s=time.perf_counter() - wall, replica_steps=outcome.step * spec.replicas)
    rec = stepper.recorder.records(outcome, info=info)
    rec.Q = 0.5 * (rec.Q + np.swapaxes(rec.Q, -1, -2))
    return rec


def _as_state(state0, replicas: int, where: str):
    """An OrderParams as it is; any other object with Q, R, S, v (shared, or with a leading replica axis), T, U,
    P, v_star (and b) as :class:`simulate.ReplicaStates` of ``replicas`` replicas."""
    if isinstance(state0, OrderParams):
        return state0
    per = {}
    for name, nd in (("Q", 2), ("R", 2), ("S", 1), ("v", 1)):
        a = np.asarray(getattr(state0, name), dtype=np.float64)
        if a.ndim == nd + 1 and a.shape[0] != replicas:
            raise ValueError(f"{where}: initial {name} has {a.shape[0]} replicas, expected replicas={replicas}")
        per[name] = np.broadcast_to(a, (replicas,) + a.shape[-nd:]).copy()
    return ReplicaStates(**per, T=state0.T, U=state0.U, P=state0.P, v_star=state0.v_star, b=getattr(state0, "b", None))


def reduced_chain(state0, rule, t, params: HyperParams | None = None, *, D: int, replicas: int = 1, device=None,
                  dtype=torch.float64, seed: int = 0, block: int = 256, progress: bool = False, backend: str = "auto",
                  threads: int | None = None, **options) -> dict:
    """Run the exact order-parameter chain; return raw records (numpy, float64).

    ``state0`` is a :class:`theory.OrderParams` or any object with Q, R, S, v, T, U, P, v_star, b
    (Q, R, S, v may carry a leading replica axis: per-replica initial conditions): the state at
    step 0. ``t`` are the recording times in steps / D (steps = round(t D), which must differ: the
    records are one per requested time). ``params`` / ``**options``: a :class:`theory.HyperParams` and
    its fields and the rule's options as keyword arguments, as :func:`theory.integrate`. ``backend``:
    "auto" (default: "numba" on the CPU in float64 for rules with a compiled view and the activations
    erf, tanh, relu, linear; "torch" otherwise), "numba" (compiled kernel, CPU, float64) or "torch"
    (reference, any rule, device and dtype; ``block`` steps of draws at a time). ``threads``: threads
    of the numba backend (default: the CPUs this process may use); results do not depend on it.
    ``seed`` seeds the chain's draws directly. Returns a dict with t (= steps / D), steps, Q
    (R_, n, K, K), R, S, v, U (R_, n, M) and P (R_, n) under mirroring (else None), status, message,
    wall_s, replica_steps, backend, rule, hyper, D. Feedback mirroring (eta_F > 0) runs on both backends.
    :func:`simulate.run_reduced` is the same chain with a
    :class:`simulate.SimulationResult` out.
    """
    where = "reduced"
    replicas = _internal.checks.integer("replicas", replicas, where=where, min=1)
    spec = specify(_as_state(state0, replicas, where), rule, t, params, ReducedEngine(backend=backend, block=block),
                   options=options, where=where, extra=_internal.checks.parameters(reduced_chain), D=D,
                   replicas=replicas, device=device, dtype=dtype, seed=seed, n_test=0, progress=progress,
                   threads=threads)
    if len(spec.steps) < np.size(t):
        raise ValueError(f"t: two requested times round to the same step at D={spec.D} (steps = round(t D)); space "
                         f"them by more than 1/D")
    rec = run_chain(spec, seed=seed, backend=backend, block=block)
    return dict(t=rec.steps / spec.D, steps=rec.steps, status=rec.status, message=rec.message, rule=spec.rule,
                hyper=spec.hyper, D=spec.D, Q=rec.Q, R=rec.R, S=rec.S, v=rec.v, U=rec.U, P=rec.P, **rec.info)

