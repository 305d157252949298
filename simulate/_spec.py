"""One simulation run, specified once: :class:`RunSpec` (what an engine receives) and :class:`Records`
(what it returns).

:func:`specify` validates a call of :func:`simulate.run` once and builds its RunSpec: the initial
state measured once (a :class:`theory.OrderParams`, or :class:`ReplicaStates` when every replica
starts from its own student), the rule and :class:`theory.HyperParams` resolved once, the recording
steps converted once (:func:`recording_steps`: steps = round(t D), coinciding steps recorded once),
and the D-dimensional weights only for an engine that needs them. The engines (``simulate.engines``)
consume it and return Records; nothing downstream re-validates.

The data streams of a run derive from its seed (:func:`derived_seed`, one stream per purpose:
:data:`STREAM_DATA`, :data:`STREAM_TEST`); the initial weights use ``Initialisation.seed``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from theory import HyperParams, OrderParams, Rule, _internal

from ._init import Initialisation, Weights, _check_dtype, resolve_device

__all__ = ["RunSpec", "Records", "ReplicaStates", "specify", "recording_steps", "derived_seed", "STREAM_DATA",
           "STREAM_TEST"]

#: streams derived from the run seed (the initial weights use Initialisation.seed directly)
STREAM_DATA, STREAM_TEST = 1, 2


def derived_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for an independent stream ``stream`` of the run seed ``seed`` (numpy SeedSequence)."""
    a, b = np.random.SeedSequence(int(seed), spawn_key=(int(stream),)).generate_state(2, np.uint32)
    return (int(a) << 31) ^ int(b)


def recording_steps(t, D: int, *, where: str) -> np.ndarray:
    """The recording steps of times t (steps / D): round(t D); times that round to one step record it once."""
    t = _internal.checks.times(t, where=where)
    return np.unique(np.round(t * D).astype(np.int64))


# --------------------------------------------------------------------------- the initial state
@dataclasses.dataclass(frozen=True, eq=False)
class ReplicaStates:
    """Initial order parameters of replicas that start from different students.

    Q (R_, K, K), R (R_, K, M), S (R_, K), v (R_, K) per replica; the constants T (M, M), U (M,),
    P (), v_star (M,), b (K,) or None are shared, or carry a leading replica axis (R_, ...).
    """

    Q: np.ndarray
    R: np.ndarray
    S: np.ndarray
    v: np.ndarray
    T: np.ndarray
    U: np.ndarray
    P: Any
    v_star: np.ndarray
    b: np.ndarray | None = None

    def __post_init__(self):
        Q, R = np.shape(self.Q), np.shape(self.R)
        if len(Q) != 3 or len(R) != 3 or Q[:2] != R[:2] or Q[1] != Q[2]:
            raise ValueError(f"ReplicaStates: Q must be (R_, K, K) and R (R_, K, M), got shapes {Q} and {R}")
        for name, tail in (("S", Q[1:2]), ("v", Q[1:2])):
            if np.shape(getattr(self, name)) != Q[:1] + tail:
                raise ValueError(f"ReplicaStates: {name} must have shape {Q[:1] + tail}, "
                                 f"got {np.shape(getattr(self, name))}")

    @classmethod
    def stack(cls, states: list[OrderParams]) -> ReplicaStates:
        """The replicas' states of a list of OrderParams (constants taken from the first: they are shared)."""
        s0 = states[0]
        per = {k: np.stack([np.asarray(getattr(s, k), dtype=np.float64) for s in states]) for k in ("Q", "R", "S", "v")}
        return cls(**per, T=s0.T, U=s0.U, P=s0.P, v_star=s0.v_star, b=s0.b)

    @property
    def replicas(self) -> int:
        return np.shape(self.Q)[0]

    @property
    def K(self) -> int:
        return np.shape(self.R)[-2]

    @property
    def M(self) -> int:
        return np.shape(self.R)[-1]


def _measure(init: Initialisation, replicas: int, independent: bool, needs_weights: bool, device, dtype):
    """(state, weights): the initial state measured once, in float64, from one draw of the weights; the weights
    on ``device`` in ``dtype`` when the engine needs them, else None."""
    w64 = init.weights(replicas, independent=independent, device="cpu", dtype=torch.float64)
    state = ReplicaStates.stack(w64.order_params()) if independent else w64.order_params(0)
    return state, (w64.to(device, dtype) if needs_weights else None)


# --------------------------------------------------------------------------- the specification
@dataclasses.dataclass(frozen=True, eq=False)
class RunSpec:
    """Everything an engine needs: the validated parameters of one simulation run.

    state: the measured initial state at step 0, a :class:`theory.OrderParams` (every replica starts
    from it) or :class:`ReplicaStates`; rule: :class:`theory.Rule`; hyper: :class:`theory.HyperParams`;
    steps: (n,) strictly increasing recording steps (>= 0, round(t D)); D: the input dimension;
    replicas: the number of data streams; seed: the run seed (data streams from :func:`derived_seed`);
    device, dtype: where and in what the engine computes; n_test: size of the empirical test error's
    sample (0: none); progress: show a progress bar; threads: CPU threads of the engine (None: its
    default); weights: the initial :class:`Weights` (on device, in dtype) for an engine that simulates
    them, else None; init: the :class:`Initialisation` the state was measured from (None when the run
    started from an OrderParams); engine: the engine's name (recorded in the result).
    """

    state: OrderParams | ReplicaStates
    rule: Rule
    hyper: HyperParams
    steps: np.ndarray
    D: int
    replicas: int = 1
    seed: int = 0
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float64
    n_test: int = 0
    progress: bool = False
    threads: int | None = None
    weights: Weights | None = None
    init: Initialisation | None = None
    engine: str = "full"

    def __post_init__(self):
        steps = np.asarray(self.steps)
        if (
            steps.ndim != 1
            or steps.size < 1
            or steps.dtype.kind not in "iu"
            or steps[0] < 0
            or np.any(np.diff(steps) <= 0)
        ):
            raise ValueError(f"RunSpec: steps must be a non-empty strictly increasing array of integers >= 0, "
                             f"got {self.steps!r}")
        if self.D < 1 or self.replicas < 1 or self.n_test < 0:
            raise ValueError(f"RunSpec: needs D >= 1, replicas >= 1, n_test >= 0, got D = {self.D}, replicas = "
                             f"{self.replicas}, n_test = {self.n_test}")
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"RunSpec: dtype must be torch.float32 or torch.float64, got {self.dtype!r}")
        if isinstance(self.state, ReplicaStates) and self.state.replicas != self.replicas:
            raise ValueError(f"RunSpec: the state holds {self.state.replicas} replicas, expected "
                             f"replicas={self.replicas}")
        w = self.weights
        if w is not None and (w.replicas, w.K, w.M, w.D) != (self.replicas, self.K, self.M, self.D):
            raise ValueError(f"RunSpec: weights of (replicas, K, M, D) = {(w.replicas, w.K, w.M, w.D)}, expected "
                             f"{(self.replicas, self.K, self.M, self.D)}")

    @property
    def K(self) -> int:
        return int(np.shape(self.state.R)[-2])

    @property
    def M(self) -> int:
        return int(np.shape(self.state.R)[-1])

    @property
    def independent(self) -> bool:
        """Whether each replica starts from its own student (state is :class:`ReplicaStates`)."""
        return isinstance(self.state, ReplicaStates)


@dataclasses.dataclass
class Records:
    """What an engine returns: order parameters (float64 numpy) at steps[:n] and the run status.

    Q (R_, n, K, K), R (R_, n, K, M), S (R_, n, K), v (R_, n, K), eg_test (R_, n) or None;
    under feedback mirroring U (R_, n, M) and P (R_, n), else None. info: what the engine adds to
    the result's params (its backend, wall time, ...).
    """

    steps: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    S: np.ndarray
    v: np.ndarray
    eg_test: np.ndarray | None
    status: int = 0
    message: str = "finished"
    U: np.ndarray | None = None
    P: np.ndarray | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n = len(self.steps)
        for name in ("Q", "R", "S", "v", "eg_test", "U", "P"):
            a = getattr(self, name)
            if a is not None and (np.ndim(a) < 2 or np.shape(a)[1] != n):
                raise ValueError(f"Records: {name} must have shape (replicas, {n}, ...) for {n} recorded steps, "
                                 f"got {np.shape(a)}")


# --------------------------------------------------------------------------- validation, once
def _dimension(init, D, engine, independent, where) -> int:
    """The input dimension of a run from its ``init`` (an Initialisation, or an OrderParams with D)."""
    if isinstance(init, Initialisation):
        if D is not None and _internal.checks.integer("D", D, where=where) != init.D:
            raise ValueError(f"{where}: D = {D} differs from init.D = {init.D}")
        return init.D
    if not isinstance(init, OrderParams):
        raise TypeError(f"{where}: init must be a simulate.Initialisation (or, for an engine that needs no weights, a "
                        f"theory.OrderParams with D), got {type(init).__name__}")
    if engine.needs_weights:
        raise TypeError(f"{where}: init must be a simulate.Initialisation for engine {engine.name!r}, which simulates "
                        f"the D-dimensional weights; a theory.OrderParams (with D) starts only an engine that needs "
                        f"no weights, such as 'reduced'")
    if independent:
        raise ValueError(f"{where}: independent_init needs an Initialisation to draw the replicas' students; "
                         f"init is one theory.OrderParams")
    if D is None:
        raise ValueError(f"{where}: D, the dimension, is needed when init is a theory.OrderParams")
    return _internal.checks.integer("D", D, where=where, min=1)


def _rule_and_hyper(rule, params, options, state, *, where, extra):
    rule, hyper = _internal.resolve(rule, params, options, where=where, extra=extra)
    if "b" in rule.reads and getattr(state, "b", 1) is None:
        raise ValueError(f"{where}: rule {rule.name!r} needs the feedback vector b; build the state with "
                         f"OrderParams(..., b=...)")
    return rule, hyper


def _check_memory(engine, *, K, M, D, replicas, n_records, n_test, hyper, dtype, draws, where):
    """Refuse (theory.TooLarge) a run whose memory would exceed what is available, before allocating:
    the records, the float64 draw of ``draws`` students that measures the initial state, the engine's own."""
    records = replicas * n_records * (K * K + K * M + 2 * K + 1) * 8 * 2
    need = (draws * K + M + 1) * D * 8 * (draws > 0) + engine.memory(K=K, M=M, D=D, replicas=replicas, n_test=n_test,
                                                               hyper=hyper, itemsize=4 if dtype == torch.float32 else 8)
    what = f"{replicas} replicas at D = {D} ({engine.name} engine, {n_records} records)"
    _internal.checks.memory(what, need + records, where=where)


def specify(init, rule, t, params: HyperParams | None, engine, *, options: dict, where: str, extra=(), D=None,
            replicas=1, independent_init=False, device=None, dtype=None, seed=0, n_test=None, progress=False,
            threads=None) -> RunSpec:
    """Validate a run once and build its :class:`RunSpec` (the arguments as :func:`simulate.run`).

    ``init``: an :class:`Initialisation` (its weights are drawn once, in float64, and measured), a
    :class:`theory.OrderParams` with ``D``, or (for the reduced sampler's raw door) a
    :class:`ReplicaStates` with ``D``; the last two only for an engine that needs no weights.
    ``engine``: an engine object (``simulate.engines.Engine``): its needs and defaults.
    """
    if isinstance(init, ReplicaStates):  # a per-replica start given as such (no weights to draw)
        if engine.needs_weights:
            raise TypeError(f"{where}: engine {engine.name!r} needs an Initialisation, got per-replica order "
                            f"parameters")
        D = _internal.checks.integer("D", D, where=where, min=1)
    else:
        independent_init = _internal.checks.boolean("independent_init", independent_init, where=where)
        D = _dimension(init, D, engine, independent_init, where)
    replicas = _internal.checks.integer("replicas", replicas, where=where, min=1)
    if n_test is not None:
        n_test = _internal.checks.integer("n_test", n_test, where=where, min=0)
    seed = _internal.checks.integer("seed", seed, where=where, min=0)
    if threads is not None:
        threads = _internal.checks.integer("threads", threads, where=where, min=1)
    dev = resolve_device(device)
    dtype = _check_dtype(engine.dtype if dtype is None else dtype)
    rule, hyper = _rule_and_hyper(rule, params, options, init, where=where, extra=extra)
    n_test = engine.n_test(hyper) if n_test is None else n_test
    steps = recording_steps(t, D, where=where)
    _internal.checks.learns_within(float(hyper.t_pre), float(steps[-1]) / D, where=where)
    if dtype == torch.float32 and hyper.max_rate() > 1e30:
        raise ValueError(f"{where}: a learning rate of {hyper.max_rate():.3g} overflows float32; "
                         f"use dtype=torch.float64")
    K, M = np.shape(init.R)[-2:] if not isinstance(init, Initialisation) else (init.K, init.M)
    draws = (replicas if independent_init else 1) if isinstance(init, Initialisation) else 0
    _check_memory(engine, K=K, M=M, D=D, replicas=replicas, n_records=len(steps), n_test=n_test, hyper=hyper,
                  dtype=dtype, draws=draws, where=where)
    if isinstance(init, Initialisation):
        state, weights = _measure(init, replicas, independent_init, engine.needs_weights, dev, dtype)
    else:
        state, weights = init, None
    spec = RunSpec(state=state, rule=rule, hyper=hyper, steps=steps, D=D, replicas=replicas, seed=seed, device=dev,
                   dtype=dtype, n_test=n_test, progress=bool(progress), threads=threads, weights=weights,
                   init=init if isinstance(init, Initialisation) else None, engine=engine.name)
    engine.check(spec)
    return spec
