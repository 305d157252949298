"""The entry point of the simulations: :func:`run` (and its alias :func:`run_reduced`) over the engines.

``run`` validates its arguments once into a :class:`simulate.RunSpec` (simulate._spec), hands it
to an engine of :data:`ENGINES` (or an engine object), and turns the engine's
:class:`simulate.Records` into a :class:`simulate.SimulationResult`
(:meth:`SimulationResult.from_run`). The built-in engines are listed here; a user adds one with
:func:`register_engine`.
"""

from __future__ import annotations

from collections.abc import Callable

from theory import DivergenceError, HyperParams, Rule, _internal

from ._result import SimulationResult
from ._spec import Records, RunSpec, specify
from .engines import CallableEngine, Engine
from .engines.full import FullEngine
from .engines.reduced import ReducedEngine

__all__ = ["run", "run_reduced", "ENGINES", "register_engine"]

#: The simulation engines by name ("full", "reduced", and any added with register_engine): each runs a RunSpec.
ENGINES: dict[str, Engine] = {"full": FullEngine(), "reduced": ReducedEngine()}


def register_engine(name: str, fn: Callable[[RunSpec], Records] | Engine) -> None:
    """Make ``run(..., engine=name)`` call ``fn(spec) -> Records``.

    ``fn`` is a plain function (it then receives the weights, float32 by default, n_test 10,000 by
    default) or a :class:`simulate.engines.Engine` that declares its own needs and defaults.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"register_engine: name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"register_engine: fn must be callable as fn(spec) -> Records, got {type(fn).__name__}")
    ENGINES[name] = fn if isinstance(fn, Engine) else CallableEngine(name=name, fn=fn)


def _engine(engine, where: str) -> Engine:
    if isinstance(engine, Engine):
        return engine
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"{where}: unknown engine {engine!r}; expected one of {sorted(ENGINES)}")
    return ENGINES[engine]


def _finish(spec: RunSpec, rec: Records, throw: bool) -> SimulationResult:
    res = SimulationResult.from_run(spec, rec)
    if rec.status < 0 and throw:
        last = res.t[-1] if len(res) else float("nan")
        raise DivergenceError(f"simulate.run: {rec.message}; last recorded time {last:.6g}", res)
    return res


def run(
    init,
    rule: str | Rule,
    t,
    params: HyperParams | None = None,
    *,
    replicas: int = 8,
    independent_init: bool = False,
    D: int | None = None,
    device=None,
    dtype=None,
    seed: int = 0,
    n_test: int | None = None,
    engine: str | Engine = "full",
    progress: bool = True,
    throw: bool = True,
    threads: int | None = None,
    **options,
) -> SimulationResult:
    """Simulate ``replicas`` copies of the network learning online with ``rule``.

    Parameters
    ----------
    init : :class:`Initialisation` (K, M, D and the seed of the initial weights: drawn once, in
        float64, and measured for the initial state); or, for an engine that needs no weights
        ("reduced"), a :class:`theory.OrderParams` together with ``D``.
    rule : a registered rule's name or a :class:`theory.Rule` (as :func:`theory.integrate`).
    t : recording times in steps / D; recorded at steps round(t D) (times that round to one step
        record it once). Every run starts from the initial state at step 0.
    params, **options : a :class:`theory.HyperParams`, its fields (eta, eta_v, sigma, sigma_F,
        weight_decay, train_second_layer, g, batch; feedback mirroring: eta_F, kappa_F, mirror_norm,
        t_pre) and the rule's options (presynaptic, error, ...) as keyword arguments, as
        :func:`theory.integrate`. An unknown keyword is an error. With mirroring each replica has
        its own f, and the result carries U_t, P_t.
    replicas : number of independent data streams, batched in one tensor (replicas, K, D).
    independent_init : False, every replica starts from the same weights; True, each replica
        draws its own student (W, v); the teacher, f and b are shared.
    D : the dimension, for an OrderParams ``init`` (with an Initialisation: init.D, or equal to it).
    device : None -> "cuda" when available else "cpu". dtype : torch.float32 or float64 (default:
        the engine's: float32 for "full", float64 for "reduced").
    seed : seed of the data streams (inputs, noise, test set), distinct from ``init.seed``.
        Same seed, same result (on a given device).
    n_test : size of the sample of the empirical test error (0 disables it). Default: the engine's;
        "full": 10,000 held-out inputs; "reduced": 0 when the activation's eps_g has a closed form
        (eg_test would only re-estimate eg by Monte Carlo), else 1000 fresh fields per record.
    engine : "full" (the D-dimensional simulation), "reduced" (the exact order-parameter sampler),
        another name of :data:`ENGINES`, or an engine object (simulate.engines).
    threads : CPU threads of the engine (full: drawing the Gaussian inputs, default
        torch.get_num_threads(), the arithmetic running with one intra-op thread, restored
        afterwards; reduced: the numba kernel's). Results do not depend on it.
    throw : on divergence raise :class:`theory.DivergenceError` carrying the partial result;
        with False return it with status -1. Ctrl-C returns what was recorded, status 1.
    """
    where = "run"
    eng = _engine(engine, where)
    spec = specify(init, rule, t, params, eng, options=options, where=where, extra=_internal.checks.parameters(run),
                   D=D, replicas=replicas, independent_init=independent_init, device=device, dtype=dtype, seed=seed,
                   n_test=n_test, progress=progress, threads=threads)
    return _finish(spec, eng.run(spec), throw)


def run_reduced(init, rule, t, params: HyperParams | None = None, *, replicas: int = 1, independent_init: bool = False,
                D: int | None = None, device=None, dtype=None, seed: int = 0, n_test: int | None = None,
                progress: bool = False, throw: bool = False, backend: str = "auto", threads: int | None = None,
                **options) -> SimulationResult:
    """``run(..., engine="reduced")``, the exact order-parameter sampler, with the defaults of a sampler.

    One code path with :func:`run`; only the defaults differ: replicas=1, progress=False,
    throw=False (a diverged run is returned with status -1). ``init``: an :class:`Initialisation`
    (its measured initial order parameters, as the full simulation's; with ``independent_init``
    each replica its own student) or a :class:`theory.OrderParams` with ``D``. ``backend``: "auto"
    (the compiled numba kernel on the CPU in float64 for rules with a compiled view, else torch),
    "numba" or "torch" (simulate.engines.reduced.backends); ``threads``: the numba kernel's. dtype
    float64 by default (the increments are O(1/D)). ``eg_test``: the Monte Carlo estimate of
    :func:`empirical_eg` over ``n_test`` fresh fields per record (default: 0 when the activation's
    eps_g has a closed form, else 1000). The other arguments as :func:`run`.
    """
    return run(init, rule, t, params, replicas=replicas, independent_init=independent_init, D=D, device=device,
               dtype=dtype, seed=seed, n_test=n_test, engine=ReducedEngine(backend=backend), progress=progress,
               throw=throw, threads=threads, **options)
