"""Parameter sweeps: many learning curves integrated at once, summarised in a tidy table.

``sweep(states, rule, t, eta=..., ...)`` integrates the order-parameter ODE (THEORY.md section 4)
at many parameter points. The right-hand side is evaluated for all points of a batch in one
call (the closed forms of the feedback family carry leading batch dimensions, and their compiled
form loops over the points), and the batched stepper of :mod:`theory.solver.driver` gives every point
its own adaptive step, time and error control, so each row equals a single :func:`theory.integrate`
call to the tolerance. Points are expanded as :mod:`theory.sweeps.points` says.

Table columns (``SweepResult.table``, one row per point)
--------------------------------------------------------
point, state (index into ``SweepResult.states``), K, M, rule, presynaptic, error, the rules' other
options (empty for rules without them), activation, train_second_layer, eta, eta_v,
sigma, sigma_F, weight_decay, the tags, then

- status (0 finished, 1 interrupted, -1 diverged, -2 step size too small), message, t_end
  (last time reached, steps / D), nfev (right-hand-side evaluations of the point), n_steps;
- eg_initial, eg_final (eg at the last requested time; NaN unless status == 0), eg_min;
- t_target: first time eg <= eg_target (:func:`theory.crossing_time`; only with ``eg_target``);
- plateau_status ("escaped", "censored": still on the plateau at the end, its length a lower bound; "none":
  no plateau detected; "diverged", "interrupted", "failed": the curve stopped early), plateau_length,
  plateau_start, plateau_end, plateau_eg (:func:`theory.plateau`; NaN unless escaped or censored, never a
  length 0 for a point without a plateau), plateau_escaped;
- angle_<name> for each alignment angle of THEORY.md section 5 at the last recorded time.

Executors
---------
With ``executor`` (any ``concurrent.futures.Executor``: ``ProcessPoolExecutor``, Dask's
``Client.get_executor()``, ...), the points are split into chunks of ``chunk_size`` and each chunk
is integrated, batched, by one task. The table does not depend on the executor nor on the chunking
(each point's steps depend on that point only).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np

from .. import _checks as checks
from .._checks import LoadError
from .._codegen.rule import HAVE_NUMBA, numerical_params, ode_params
from .._hyper import HYPER_FIELDS, HyperBatch, HyperParams, hyper_params, record, rule_option_names
from .._observables import alignment_angles, generalisation_error, specialisation
from .._provenance import provenance
from .._state import OrderParams, mirror_part, unpack
from ..expectations.numerical import (
    AccuracyWarning,
    accuracy_note,
    accuracy_target,
    expectation_error,
    node_rule,
    select_at,
)
from ..ode.dynamics import Dynamics
from ..ode.views import closed_form_applies, rhs_view
from ..results.io import FORMAT, json_default
from ..results.labelled import to_attrs, xarray
from ..results.summaries import PLATEAU_DEFAULTS, crossing_time, plateau, unspecialised_spread
from ..results.trajectory import Trajectory
from ..rules._base import Rule, make_rule
from ..solver.divergence import state_check
from ..solver.driver import MAX_STEPS, BatchedStepper, BatchSolution, CompiledStepper, drive_segments
from ..solver.integrate import default_times, watched_indices
from .points import GRID_ONLY, expand

__all__ = ["sweep", "SweepResult"]

#: output times per compiled call of a sweep (Ctrl-C and the progress bar act between calls)
SWEEP_SEGMENT = 25
#: points per chunk of a numerical (non-closed-form) group: each compiled parameter row holds the quadrature's
#: nodes (GaussHermite(20) at K = M = 2: ~1 MB), so 64 rows stay near 64 MB
NUMERICAL_CHUNK = 64


# ====================================================================== chunks
@dataclasses.dataclass(frozen=True, eq=False)
class _Chunk:
    """Everything a worker needs to integrate a batch of points of one rule (picklable, numpy only)."""

    rule: Rule
    hyper: HyperBatch
    quadrature: Any
    K: int
    M: int
    y0: np.ndarray
    T: np.ndarray
    U: np.ndarray
    P: np.ndarray
    v_star: np.ndarray
    b: np.ndarray | None
    t: np.ndarray
    rtol: float
    atol: float
    mirror: bool = False

    @property
    def closed_form(self) -> bool:
        return self.dynamics(np.arange(len(self.y0))).closed_form

    def dynamics(self, idx) -> Dynamics:
        take = lambda a: None if a is None else a[idx]  # noqa: E731
        hyper = self.hyper.take(idx)
        if not closed_form_applies(self.rule, self.hyper.g, self.quadrature, self.K, self.M):
            # the numerical engine takes one (sigma, sigma_F) per call: points are grouped by them
            hyper = dataclasses.replace(hyper, sigma=float(self.hyper.sigma[0]), sigma_F=float(self.hyper.sigma_F[0]))
        return Dynamics(rule=self.rule, hyper=hyper, K=self.K, M=self.M, T=take(self.T), U=take(self.U), P=take(self.P),
                        v_star=take(self.v_star), b=take(self.b), quadrature=self.quadrature, mirror=self.mirror)

    @property
    def diagnose(self):
        """The driver's diagnose(y, idx, at_output): per row None, or why the state diverged, and its
        check of non-finite derivatives (theory.solver.divergence.StateCheck, as theory.integrate)."""
        return state_check(self.K, self.M, self.T, self.U, self.P, rtol=self.rtol, atol=self.atol, per_point=True)

    @property
    def view(self):
        """The view that serves the chunk's points (theory.ode.views.rhs_view)."""
        return rhs_view(self.rule, self.hyper.g, self.quadrature, self.K, self.M,
                        noise=bool(np.any(np.asarray(self.hyper.sigma) != 0)), mirror=self.mirror)

    def compiled_rhs(self):
        """The compiled single-state right-hand side that serves the chunk (closed forms or numerical expectations,
        theory.ode.views.rhs_view), or None (numpy)."""
        return self.view.single

    def compiled_params(self) -> np.ndarray:
        """(B, p) parameter rows of the compiled right-hand side, one per point (theory._codegen.rule.ode_params; for
        numerical expectations followed by the quadrature's node block, numerical_params)."""
        rows = [ode_params(self.K, self.M, self.T[i], self.U[i], float(self.P[i]), self.v_star[i],
                           None if self.b is None else self.b[i], self.hyper.point(i), self.rule.modulated, self.mirror)
                for i in range(len(self.y0))]
        view = self.view
        if not view.closed:
            nodes, weights = node_rule(self.rule, self.hyper.g, self.K, self.M, self.hyper.sigma, view.quadrature)
            rows = [numerical_params(p, nodes, weights) for p in rows]
        return np.stack(rows)


@dataclasses.dataclass(frozen=True, eq=False)
class _Job:
    """A batch of points of one rule, integrated together over the whole time span (picklable).

    ``hypers`` are the points' full HyperParams (schedules included); the job stops and restarts at
    their common schedule breakpoints, building one :class:`_Chunk` per interval.
    """

    chunk: _Chunk  # its hyper: the points at t[0] (the HyperBatch of hypers on the first interval)
    hypers: tuple
    breaks: tuple
    max_steps: int = MAX_STEPS

    def chunk_on(self, a, b, points) -> _Chunk:
        take = lambda x: None if x is None else x[points]  # noqa: E731
        ch = self.chunk
        return dataclasses.replace(ch, hyper=HyperBatch.of([self.hypers[i].on(a, b) for i in points]), y0=ch.y0[points],
                                   T=ch.T[points], U=ch.U[points], P=ch.P[points], v_star=ch.v_star[points],
                                   b=take(ch.b))

    def run(self, pool=None, progress=False, desc="sweep") -> BatchSolution:
        ch = self.chunk

        def stepper_on(a, b, points):
            seg = self.chunk_on(a, b, points)
            compiled = seg.compiled_rhs()
            if compiled is not None:
                return CompiledStepper(compiled, seg.compiled_params(), watched_indices(seg.K, seg.M), rtol=ch.rtol,
                                       atol=ch.atol, max_steps=self.max_steps, pool=pool, segment=SWEEP_SEGMENT)
            return BatchedStepper(_factory(seg, pool=pool), rtol=ch.rtol, atol=ch.atol, time_dependent=True,
                                  max_steps=self.max_steps)

        return drive_segments(stepper_on, ch.y0, ch.t, self.breaks, diagnose=ch.diagnose, progress=progress, desc=desc)


def _run_job(job: _Job) -> BatchSolution:
    """Integrate one job (runs in the worker)."""
    return job.run()


def _factory(chunk: _Chunk, compiled: bool = True, pool: concurrent.futures.ThreadPoolExecutor | None = None):
    """subset(idx) -> the batched right-hand side of the chunk's points idx.

    For rules with compiled closed forms, a compiled loop over the points calls the rule's
    compiled single-state right-hand side (theory._codegen.rule; the same formulas as theory.expectations.closed,
    held against them by the tests), releasing the GIL so that ``pool`` threads can share the batch
    (no OpenMP: safe to fork and to call from many threads); otherwise the numpy right-hand side
    of :class:`theory.Dynamics` evaluates the whole batch.
    """
    view = chunk.view if compiled else None
    kernel = view.rows if view is not None and view.closed else None
    if kernel is not None:
        rows = chunk.compiled_params()
        nthreads = 1 if pool is None else pool._max_workers

        def subset(idx):
            pm = np.ascontiguousarray(rows[idx])

            def one(y, t, lo, hi):
                out = np.empty((hi - lo, y.shape[1]))
                kernel(t[lo:hi], y[lo:hi], pm[lo:hi], out)
                return out

            def f(y, t=0.0):
                y = np.ascontiguousarray(y, dtype=float)
                b = len(y)
                t = np.array(np.broadcast_to(np.asarray(t, dtype=float), (b,)))
                if nthreads == 1 or b < 64:
                    return one(y, t, 0, b)
                cuts = np.linspace(0, b, nthreads + 1).astype(int)
                futs = [pool.submit(one, y, t, lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:])]
                return np.concatenate([fu.result() for fu in futs])

            return f

        return subset

    def subset(idx):
        return chunk.dynamics(idx).rhs

    return subset


def _batch_kernel():
    """Whether compiled batched right-hand sides exist (numba installed): True, or None."""
    return True if HAVE_NUMBA else None


# ====================================================================== result
@dataclasses.dataclass(frozen=True, eq=False)
class SweepResult:
    """A sweep's results.

    table : a pandas DataFrame, one row per point (see the module docstring for the columns); its
    ``attrs`` hold the units, the tolerances and the provenance (package and library versions).
    t : (n_t,) output times (steps / D). eg : (n_points, n_t) generalisation error (NaN after a
    point stopped). states : the distinct initial states (``table["state"]`` indexes them).
    ``curves()`` gives the long DataFrame (one row per point and recorded time), ``trajectory(i)``
    point i as a :class:`theory.Trajectory`; ``save(path)`` writes the table as CSV with a JSON
    sidecar of the parameters and provenance, ``to_xarray()`` the curves as a labelled Dataset.
    """

    table: Any
    t: np.ndarray
    eg: np.ndarray
    states: tuple
    _Y: list  # per point: (n_t, n) flat order parameters (NaN after the point stopped)
    _params: list  # per point: the Trajectory params dict
    _angles: list  # per point: dict name -> (n_t,) degrees
    _param_columns: tuple = ()

    def __len__(self) -> int:
        return len(self.table)

    def plot(self, over: Sequence[str] | None = None, values: Sequence[str] = ("eg_final", "plateau_length")):
        """Phase diagrams of the table (:func:`theory.plots.phase_diagrams`): one row of panels per rule, one
        panel per summary column in ``values``, over ``over`` (default: the parameters that vary, the first
        two as a heat map). Diverged, censored and plateau-less cells are marked. Returns the Figure."""
        from ..plots import phase_diagrams

        tab = self.table
        swept: list[str] = []
        for c in over if over is not None else self._param_columns:
            n = tab[c].nunique() if c in tab.columns and c not in ("rule", "state", "K", "M") else 0
            # a column that moves one-to-one with one already kept (eta_v = eta) adds nothing
            if n > 1 and not any(len(tab[[k, c]].drop_duplicates()) == n == tab[k].nunique() for k in swept):
                swept.append(c)
        if over is not None and not swept:
            raise ValueError(f"SweepResult.plot: over={list(over)!r} names no parameter that varies in the table")
        if not swept:
            raise ValueError("SweepResult.plot: no parameter varies across the points (nothing to draw a diagram of)")
        missing = [v for v in values if v not in tab.columns]
        if missing:
            raise ValueError(f"SweepResult.plot: values {missing} are not columns of the table")
        return phase_diagrams(tab, swept, values)

    def save(self, path) -> Path:
        """Write the table as CSV and, next to it (same name, .json), its attributes: units, tolerances,
        plateau options, the points' full parameters and the provenance. :meth:`read_table` reads both."""
        path = Path(path)
        self.table.to_csv(path, index=False)
        meta = dict(kind="SweepTable", format=FORMAT, attrs=self.table.attrs, t=self.t, points=self._params)
        path.with_suffix(".json").write_text(json.dumps(meta, default=json_default, indent=1))
        return path

    def to_xarray(self):
        """An xarray Dataset of the learning curves: eg (point, t), with every table column as a
        coordinate along ``point`` (so ``ds.eg.where(ds.rule == "bp")``, ``ds.groupby("eta")`` work) and
        the table's attributes (units, tolerances, provenance) as JSON attributes. Needs xarray."""
        xr = xarray()
        coords = {"t": self.t, "point": np.arange(len(self))}
        for c in self.table.columns:
            if c != "point":
                col = self.table[c]
                coords[c] = ("point", col.to_numpy(dtype=str) if col.dtype == object else col.to_numpy())
        return xr.Dataset({"eg": (("point", "t"), self.eg)}, coords=coords,
                          attrs=to_attrs("SweepResult", attrs=self.table.attrs, points=self._params))

    @staticmethod
    def read_table(path):
        """The DataFrame of :meth:`save` (its attrs restored from the .json beside it); LoadError otherwise."""
        import pandas as pd

        path = Path(path)
        if not path.is_file():
            raise LoadError(f"SweepResult.read_table: {str(path)!r}: no such file")
        try:
            frame = pd.read_csv(path)
            side = path.with_suffix(".json")
            if side.is_file():
                meta = json.loads(side.read_text())
                if meta.get("kind") != "SweepTable":
                    raise LoadError(f"SweepResult.read_table: {str(side)!r} holds a {meta.get('kind')}, "
                                    "not a SweepTable")
                frame.attrs.update(meta["attrs"], points=meta["points"], t=meta["t"])
        except LoadError:
            raise
        except (ValueError, KeyError, OSError, pd.errors.ParserError) as exc:
            raise LoadError(f"SweepResult.read_table: {str(path)!r}: not a sweep table "
                            f"({type(exc).__name__}: {exc})") from None
        if "point" not in frame.columns or "status" not in frame.columns:
            raise LoadError(f"SweepResult.read_table: {str(path)!r}: not a sweep table (no point/status columns)")
        points = frame.attrs.get("points")
        if points is not None and (not isinstance(points, list) or len(points) != len(frame)):
            got = len(points) if isinstance(points, list) else type(points).__name__
            raise LoadError(f"SweepResult.read_table: {str(path)!r} has {len(frame)} rows but its sidecar describes "
                            f"{got} points (truncated or mismatched files)")
        if points is not None and not np.array_equal(pd.to_numeric(frame["point"], errors="coerce"),
                                                     np.arange(len(frame))):
            raise LoadError(f"SweepResult.read_table: {str(path)!r}: the point column is not 0, 1, ..., "
                            f"{len(frame) - 1} (rows missing, reordered or damaged)")
        return frame

    def trajectory(self, i: int) -> Trajectory:
        """Point i as a :class:`Trajectory` (its recorded times only)."""
        row = self.table.iloc[int(i)]
        s0 = self.states[row["state"]]
        n = int(np.sum(np.isfinite(self._Y[i][:, 0])))
        return Trajectory.from_flat(self.t[:n], self._Y[i][:n], s0, params=dict(self._params[i]),
                                    status=int(row["status"]), message=row["message"], nfev=int(row["nfev"]))

    def curves(self, with_params: bool = True):
        """Long table: one row per point and recorded time with t, eg, the angles and the order
        parameters (Q[k,l], R[k,n], S[k], v[k]; points of different K, M leave others NaN), plus
        the point's parameter columns when ``with_params``."""
        names = ["Q", "R", "S", "v", "U", "P"]
        ang_keys = sorted({k for a in self._angles for k in a})
        op_keys: list[str] = []
        per_point = []
        for i in range(len(self.table)):
            s0 = self.states[self.table["state"][i]]
            n = int(np.sum(np.isfinite(self._Y[i][:, 0])))
            parts = dict(zip(names, unpack(self._Y[i][:n], s0.K, s0.M)))
            mir = mirror_part(self._Y[i][:n], s0.K, s0.M)
            if mir is not None:
                parts.update(U=mir[0], P=mir[1])
            flat = {}
            for nm, arr in parts.items():
                for idx in np.ndindex(arr.shape[1:]):
                    key = f"{nm}[{','.join(map(str, idx))}]" if idx else nm
                    flat[key] = arr[(slice(None),) + idx]
                    if key not in op_keys:
                        op_keys.append(key)
            per_point.append((n, flat))
        out: dict[str, list] = {"point": [], "t": [], "eg": [], **{f"angle_{k}": [] for k in ang_keys},
                                **{k: [] for k in op_keys}}
        for i, (n, flat) in enumerate(per_point):
            out["point"].append(np.full(n, i))
            out["t"].append(self.t[:n])
            out["eg"].append(self.eg[i, :n])
            for k in ang_keys:
                out[f"angle_{k}"].append(self._angles[i].get(k, np.full(len(self.t), np.nan))[:n])
            for k in op_keys:
                out[k].append(flat.get(k, np.full(n, np.nan)))
        table = {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}
        if with_params:
            pt = table["point"]
            for c in self._param_columns:
                table[c] = np.asarray(self.table[c])[pt]
        frame = _frame(table)
        frame.attrs.update(self.table.attrs)
        return frame


# ====================================================================== sweep
def sweep(
    states=GRID_ONLY,
    rule: Any = "bp",
    t=None,
    params: HyperParams | None = None,
    *,
    grid: Mapping[str, Sequence] | None = None,
    tags: Mapping[str, Any] | None = None,
    quadrature=None,
    expectation_tol=None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    eg_target: float | None = None,
    plateau_options: Mapping[str, float] | None = None,
    executor: concurrent.futures.Executor | None = None,
    chunk_size: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    max_steps: int = MAX_STEPS,
    **options,
) -> SweepResult:
    """Integrate the order-parameter ODE at many parameter points; one table row per point.

    Parameters
    ----------
    states : initial :class:`OrderParams`, or a sequence of them (zipped with the other sequences).
    rule : a rule name or :class:`Rule`, or a sequence of them.
    t : output times shared by all points (steps / D); default :func:`theory.default_times`.
    params : a :class:`HyperParams` giving the defaults of every point.
    **options : the HyperParams fields (eta, eta_v, sigma, sigma_F, weight_decay,
        train_second_layer, g) and the rules' options (presynaptic, error, ...): each a scalar or
        a 1-D sequence (zipped). eta is required (here, in ``params`` or as a grid axis).
    grid : {parameter: values}: Cartesian axes crossed with the zipped points.
    tags : {column: scalar or sequence}: extra columns carried into the table (zipped like the
        parameters), e.g. the seed or w_std each state was drawn with.
    quadrature : the numerical engine's option (rules without closed forms, other activations).
    expectation_tol : the numerical views' accuracy, as in :func:`theory.integrate` (default
        DEFAULT_EXPECTATION_TOL within DEFAULT_COST_FACTOR): without ``quadrature`` each batch of points
        sharing a right-hand side gets the ladder's rule chosen at its first point's state; every point's
        estimate at its last recorded state is the column ``expectation_error`` (NaN for closed forms), and
        points above the tolerance give one :class:`theory.AccuracyWarning`.
    rtol, atol : tolerances of each point's error control (DOP853, as in :func:`theory.integrate`).
    eg_target : adds the column t_target, the first time eg <= eg_target.
    plateau_options : overrides of PLATEAU_DEFAULTS (slope_tol, margin, spec_tol).
    executor, chunk_size : run chunks of at most chunk_size points as tasks of a
        ``concurrent.futures.Executor`` (default chunk: the points split evenly over the workers,
        at most 1024 per chunk); without an executor, chunks run here one after another.
    threads : without an executor, threads sharing each batched right-hand side of the compiled
        closed forms (default: the CPU count, at most 8). Executor tasks use one thread each.
    progress : tqdm progress bar (over time for a serial run, over chunks with an executor).
    max_steps : accepted steps of a point before it stops with status -2 (as :func:`theory.integrate`).

    A diverged or failed point gets a negative status and a message, the others carry on. Ctrl-C
    keeps what was computed (unfinished points get status 1).
    """
    opt_names = rule_option_names()
    cols, tags = _expand_request(states, rule, t, params, options, grid, tags, opt_names)
    run = _settings(t, rtol, atol, eg_target, progress, plateau_options, chunk_size, threads, max_steps, executor)
    points = _validated_points(cols, tags, params, opt_names)
    for i, hp in enumerate(points.hypers):
        try:
            checks.learns_within(float(hp.t_pre), float(run.t[-1]))
        except ValueError as exc:
            raise ValueError(f"sweep: point {i}: {exc}") from None
    tol, max_cost = accuracy_target(expectation_tol, "sweep")
    chunk_size = run.chunk_size if run.chunk_size is not None else _default_chunk_size(len(points), executor)
    chunks = _chunks(_groups(points, quadrature), points, run, quadrature, tol, max_cost, chunk_size)
    if executor is None:
        sols, interrupted = _run_here(chunks, run.threads, run.progress)
    else:
        sols, interrupted = _run_on(executor, chunks, run.progress)
    return _assemble(points, chunks, sols, run, quadrature, interrupted, tol)


# ---------------------------------------------------------------------- the request
@dataclasses.dataclass(frozen=True, eq=False)
class _Settings:
    """A sweep's validated options (shared by all points)."""

    t: np.ndarray
    rtol: float
    atol: float
    eg_target: float | None
    progress: bool
    plateau: dict  # PLATEAU_DEFAULTS with the overrides
    chunk_size: int | None
    threads: int | None
    max_steps: int


@dataclasses.dataclass(frozen=True, eq=False)
class _Points:
    """A sweep's points, validated: the expanded columns and, per point, its state, rule and HyperParams."""

    cols: dict  # name -> per-point values (theory.sweeps.points.expand)
    tags: dict
    states: list  # the distinct initial states, in order of first use
    sidx: np.ndarray  # per point: index into states
    rules: list
    hypers: list

    def __len__(self) -> int:
        return len(self.sidx)

    def state(self, i) -> OrderParams:
        return self.states[self.sidx[i]]


def _expand_request(states, rule, t, params, options, grid, tags, opt_names) -> tuple[dict, dict]:
    """Check the request's names and kinds, expand it into per-point columns (theory.sweeps.points.expand) and
    refuse it when its curves would not fit in memory: (cols, tags)."""
    checks.reject_unknown([k for k in options if k not in HYPER_FIELDS],
                          tuple(opt_names) + HYPER_FIELDS + checks.parameters(sweep), where="sweep")
    sweepable = ("states", "rule") + HYPER_FIELDS + tuple(sorted(opt_names))
    if params is not None and not isinstance(params, HyperParams):
        raise TypeError(f"sweep: params must be a theory.HyperParams, got {type(params).__name__}")
    point_params: dict[str, Any] = dict(states=states, rule=rule)
    if params is None and "eta" not in options:
        point_params["eta"] = GRID_ONLY
    point_params.update(options)
    tags = dict(tags or {})
    for k in tags:
        if k in sweepable or k in _FIXED_COLUMNS or not isinstance(k, str):
            raise ValueError(f"sweep: tag {k!r} clashes with a parameter column")
    if grid is not None and not isinstance(grid, Mapping):
        raise TypeError("sweep: grid must be a mapping {parameter: values}")
    cols = expand(point_params, tags, grid, sweepable)
    npts = len(cols["rule"])
    if t is not None:
        t = checks.times(t, where="sweep")
    checks.memory(f"{npts} points x {np.size(t) if t is not None else 201} output times",
                  npts * (np.size(t) if t is not None else 201) * 8 * 64, where="sweep")
    return cols, tags


def _settings(t, rtol, atol, eg_target, progress, plateau_options, chunk_size, threads, max_steps,
              executor) -> _Settings:
    """The options shared by all points, validated (the executor only checked)."""
    t = default_times() if t is None else checks.times(t, where="sweep")
    rtol, atol = checks.tolerances(rtol, atol, where="sweep")
    if eg_target is not None:
        eg_target = checks.number("eg_target", eg_target, where="sweep")
        if not eg_target > 0:
            raise ValueError(f"sweep: eg_target must be > 0, got {eg_target}")
    progress = checks.boolean("progress", progress, where="sweep")
    popts = dict(PLATEAU_DEFAULTS)
    for k, val in dict(plateau_options or {}).items():
        if k not in popts:
            raise ValueError(f"sweep: unknown plateau option {k!r}; expected {sorted(popts)}")
        popts[k] = checks.number(f"plateau_options[{k!r}]", val, min=0.0, where="sweep")
    if chunk_size is not None:
        chunk_size = checks.integer("chunk_size", chunk_size, where="sweep", min=1)
    if threads is not None:
        threads = checks.integer("threads", threads, where="sweep", min=1)
    max_steps = checks.integer("max_steps", max_steps, where="sweep", min=1)
    is_executor = isinstance(executor, concurrent.futures.Executor) or hasattr(executor, "submit")
    if executor is not None and not is_executor:
        raise TypeError(f"sweep: executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    return _Settings(t=t, rtol=rtol, atol=atol, eg_target=eg_target, progress=progress, plateau=popts,
                     chunk_size=chunk_size, threads=threads, max_steps=max_steps)


def _validated_points(cols, tags, params, opt_names) -> _Points:
    """Each point's state (the distinct states numbered once), rule and HyperParams; a bad point is named."""
    state_list: list[OrderParams] = []
    state_ids: dict[int, int] = {}
    npts = len(cols["rule"])
    sidx = np.empty(npts, dtype=int)
    rules: list[Rule] = []
    hypers: list[HyperParams] = []
    hyper_keys = [k for k in HYPER_FIELDS if k in cols]
    rule_keys = [k for k in cols if k in opt_names]
    for i in range(npts):
        s = cols["states"][i]
        if not isinstance(s, OrderParams):
            raise TypeError(f"sweep: states must be theory.OrderParams, got {type(s).__name__} at point {i}")
        if id(s) not in state_ids:
            state_ids[id(s)] = len(state_list)
            state_list.append(s)
        sidx[i] = state_ids[id(s)]
        try:
            r = make_rule(cols["rule"][i], **{k: cols[k][i] for k in rule_keys})
            hv = {k: cols[k][i] for k in hyper_keys}
            hp = hyper_params(params, hv)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"sweep: point {i}: {exc}") from None
        if "b" in r.reads and s.b is None:
            raise ValueError(f"sweep: rule {r.name!r} needs the feedback vector b; state {sidx[i]} (point {i}) "
                             "has none")
        rules.append(r)
        hypers.append(hp)
    return _Points(cols=cols, tags=tags, states=state_list, sidx=sidx, rules=rules, hypers=hypers)


# ---------------------------------------------------------------------- chunks by view
class _Group(NamedTuple):
    """What the points of one group share: one batched right-hand side (a view, theory.ode.views) serves them."""

    rule: Rule
    activation: str
    train_second_layer: bool
    K: int
    M: int
    has_b: bool
    closed: bool
    breaks: tuple  # the schedules' breakpoints: the segments of the run
    mirror: bool
    sigma: float | None = None  # numerical views: one (sigma, sigma_F) per call
    sigma_F: float | None = None


def _groups(points: _Points, quadrature) -> dict[_Group, list[int]]:
    """The points, grouped by what their batched right-hand side needs (in order of first point)."""
    groups: dict[_Group, list[int]] = {}
    for i in range(len(points)):
        s, r, hp = points.state(i), points.rules[i], points.hypers[i]
        closed = closed_form_applies(r, hp.g, quadrature, s.K, s.M)
        key = _Group(r, hp.g.name, hp.train_second_layer, s.K, s.M, s.b is not None, closed, hp.breakpoints(),
                     hp.mirroring)
        if not closed:
            key = key._replace(sigma=hp.sigma, sigma_F=hp.sigma_F)
        groups.setdefault(key, []).append(i)
    return groups


def _default_chunk_size(npts: int, executor) -> int:
    """The points split evenly over the executor's workers (all here without one), at most 1024 per chunk."""
    workers = getattr(executor, "_max_workers", None) or (os.cpu_count() or 1) if executor is not None else 1
    return min(1024, max(1, math.ceil(npts / workers)))


def _chunks(groups, points: _Points, run: _Settings, quadrature, tol, max_cost,
            chunk_size) -> list[tuple[list[int], _Job]]:
    """Each group cut into chunks of at most chunk_size points: (the chunk's points, its job)."""
    chunks: list[tuple[list[int], _Job]] = []
    for key, members in groups.items():
        # numerical points carry the quadrature's node block in their compiled parameter rows: fewer per chunk
        size = chunk_size if key.closed else min(chunk_size, NUMERICAL_CHUNK)
        for c0 in range(0, len(members), size):
            pts = members[c0 : c0 + size]
            quad = quadrature
            if quadrature is None and not key.closed:  # numerical: the ladder's rule at the first point's state
                quad = select_at(key.rule, points.state(pts[0]), points.hypers[pts[0]], tol=tol, max_cost=max_cost)[0]
            chunks.append((pts, _job(key, pts, points, run, quad)))
    return chunks


def _job(key: _Group, pts, points: _Points, run: _Settings, quadrature) -> _Job:
    """The job integrating the points pts of one group (their states stacked) with the given quadrature."""
    ss = [points.state(i) for i in pts]
    hypers = points.hypers
    t = run.t
    return _Job(chunk=_Chunk(
        rule=key.rule, hyper=HyperBatch.of([hypers[i].on(t[0], t[0]) for i in pts]),
        quadrature=quadrature, K=key.K, M=key.M,
        y0=np.stack([s.to_vector(key.mirror) for s in ss]), T=np.stack([s.T for s in ss]),
        U=np.stack([s.U for s in ss]), P=np.array([s.P for s in ss]), v_star=np.stack([s.v_star for s in ss]),
        b=np.stack([s.b for s in ss]) if key.has_b else None, t=t, rtol=run.rtol, atol=run.atol, mirror=key.mirror,
    ), hypers=tuple(hypers[i] for i in pts), breaks=key.breaks, max_steps=run.max_steps)


# ---------------------------------------------------------------------- running the chunks
def _run_here(chunks, threads, progress) -> tuple[list, bool]:
    """Run the chunks here, one after another, each batched right-hand side shared by ``threads`` threads:
    (the solutions, None for chunks that did not run; whether Ctrl-C stopped the sweep)."""
    sols: list[BatchSolution | None] = [None] * len(chunks)
    interrupted = False
    nthreads = max(1, min(os.cpu_count() or 1, 8)) if threads is None else int(threads)
    pool = concurrent.futures.ThreadPoolExecutor(nthreads) if nthreads > 1 else None
    try:
        for ci, (pts, job) in enumerate(chunks):
            desc = f"sweep {job.chunk.rule.label} ({ci + 1}/{len(chunks)}, {len(pts)} points)"
            sols[ci] = job.run(pool=pool, progress=progress, desc=desc)
            if np.any(sols[ci].status == 1):
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if pool is not None:
            pool.shutdown()
    return sols, interrupted


def _run_on(executor, chunks, progress) -> tuple[list, bool]:
    """Run the chunks as tasks of ``executor`` (a progress bar over chunks): as :func:`_run_here`."""
    sols: list[BatchSolution | None] = [None] * len(chunks)
    interrupted = False
    futures = {executor.submit(_run_job, job): ci for ci, (_, job) in enumerate(chunks)}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chunks), desc="sweep chunks", leave=False)
    try:
        for fut in concurrent.futures.as_completed(futures):
            sols[futures[fut]] = fut.result()
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
        for fut in futures:
            fut.cancel()
    finally:
        if bar is not None:
            bar.close()
    return sols, interrupted


# ---------------------------------------------------------------------- the table
def _estimates(chunks, Ys, hypers, npts):
    """Each point's expectation error estimate at its last recorded state (NaN for closed forms)."""
    out = np.full(npts, np.nan)
    for pts, job in chunks:
        ch = job.chunk
        if ch.closed_form:
            continue
        for j, p in enumerate(pts):
            Y = Ys[p]
            last = int(np.sum(np.isfinite(Y[:, 0]))) - 1
            if last < 0 or not np.all(np.isfinite(Y[last])):
                continue
            Q, R, S, v = unpack(Y[last], ch.K, ch.M)
            mir = mirror_part(Y[last], ch.K, ch.M)
            U, P = (ch.U[j], ch.P[j]) if mir is None else mir
            hp = hypers[p]
            est = expectation_error(ch.rule, 0.5 * (Q + Q.T), R, ch.T[j], S, U, P, v, ch.v_star[j],
                                    None if ch.b is None else ch.b[j], sigma=hp.sigma, sigma_F=hp.sigma_F, g=hp.g,
                                    quadrature=ch.quadrature)
            out[p] = np.nan if est is None else est
    return out


#: Columns of every sweep table that are not parameters or tags.
_FIXED_COLUMNS = ("point", "state", "K", "M", "activation", "status", "message", "t_end", "nfev", "n_steps",
                  "eg_initial", "eg_final", "eg_min", "t_target", "plateau_status", "plateau_length", "plateau_start",
                  "plateau_end", "plateau_eg", "plateau_escaped")
#: The HyperParams fields of the table, after activation and train_second_layer.
_HYPER_COLUMNS = ("eta", "eta_v", "sigma", "sigma_F", "weight_decay", "batch", "eta_schedule", "eta_v_schedule",
                  "eta_F", "eta_F_schedule", "kappa_F", "mirror_norm", "t_pre")


@dataclasses.dataclass(eq=False)
class _Curves:
    """Per point: how its run ended and its recorded curves (what the table summarises)."""

    status: np.ndarray
    message: list
    nfev: np.ndarray
    n_steps: np.ndarray
    Ys: list  # (n_t, n) flat order parameters, NaN after the point stopped
    eg: np.ndarray  # (n_points, n_t)
    angles: list  # dict name -> (n_t,) degrees
    spread_end: np.ndarray  # the unspecialised spread at the last recorded time (theory.plateau's spec test)

    @property
    def n_recorded(self) -> np.ndarray:
        return np.array([int(np.sum(np.isfinite(Y[:, 0]))) for Y in self.Ys])


def _assemble(points: _Points, chunks, sols, run: _Settings, quadrature, interrupted, tol) -> SweepResult:
    """The SweepResult of the chunks' solutions: the points' curves, the table and the per-point records."""
    npts, t = len(points), run.t
    curves = _curves(chunks, sols, npts, t.size)
    if interrupted:
        _mark_interrupted(curves)
    table = _parameter_columns(points)
    param_columns = tuple(c for c in table if c != "point") + tuple(points.tags)
    for k in points.tags:
        table[k] = np.array(points.cols[k])
    table.update(_summary_columns(curves, run))
    table["expectation_error"] = _estimates(chunks, curves.Ys, points.hypers, npts)
    _warn_inaccurate(table["expectation_error"], tol)
    prov = provenance()
    params = _point_records(points, chunks, run, quadrature, tol, table["expectation_error"], prov)
    frame = _frame(table)
    frame.attrs.update(units={"t": "steps / D", "angles": "degrees", "t_*, plateau_*": "steps / D"}, provenance=prov,
                       rtol=run.rtol, atol=run.atol, quadrature=repr(quadrature), plateau_options=dict(run.plateau),
                       eg_target=run.eg_target)
    return SweepResult(table=frame, t=t, eg=curves.eg, states=tuple(points.states), _Y=curves.Ys, _params=params,
                       _angles=curves.angles, _param_columns=param_columns)


def _curves(chunks, sols, npts, nt) -> _Curves:
    """Each point's outcome and curves (eg, angles, spread) from its chunk's solution; a chunk that did not run
    leaves its points at their initial states with status 1."""
    out = _Curves(status=np.ones(npts, dtype=int), message=["interrupted before it ran"] * npts,
                  nfev=np.zeros(npts, dtype=np.int64), n_steps=np.zeros(npts, dtype=np.int64), Ys=[None] * npts,
                  eg=np.full((npts, nt), np.nan), angles=[dict() for _ in range(npts)],
                  spread_end=np.full(npts, np.nan))
    for (pts, job), sol in zip(chunks, sols):
        ch = job.chunk
        pts = np.asarray(pts)
        Y = np.full((len(pts), nt, ch.y0.shape[1]), np.nan) if sol is None else sol.y
        if sol is None:
            Y[:, 0] = ch.y0
        else:
            out.status[pts], out.nfev[pts], out.n_steps[pts] = sol.status, sol.nfev, sol.n_steps
            for j, p in enumerate(pts):
                out.message[p] = sol.message[j]
        out.eg[pts], angles, spread = _observables(ch, Y)
        for j, p in enumerate(pts):
            out.angles[p] = angles[j]
            out.Ys[p] = Y[j]
            nrec = int(np.sum(np.isfinite(Y[j, :, 0])))
            out.spread_end[p] = spread[j, nrec - 1]
    return out


def _observables(ch: _Chunk, Y):
    """The observables of a chunk's curves Y (b, n_t, n): eg (b, n_t), per point the alignment angles
    {name: (n_t,)}, and the unspecialised spread (b, n_t) (NaN for M = 1)."""
    Q, R, S, v = unpack(Y, ch.K, ch.M)
    Q = 0.5 * (Q + np.swapaxes(Q, -1, -2))
    mir = mirror_part(Y, ch.K, ch.M)
    U, P = (ch.U[:, None], ch.P[:, None]) if mir is None else mir
    ns = SimpleNamespace(Q=Q, R=R, S=S, v=v, T=ch.T[:, None], U=U, P=P,
                         v_star=ch.v_star[:, None], b=None if ch.b is None else ch.b[:, None])
    angles: list = [dict() for _ in range(len(Y))]
    with np.errstate(invalid="ignore", divide="ignore"):
        eg = generalisation_error(ns, ch.hyper.g)
        for sF in np.unique(ch.hyper.sigma_F):  # the angles take one sigma_F per call
            sel = np.nonzero(ch.hyper.sigma_F == sF)[0]
            sub = SimpleNamespace(**{k: (None if val is None else val[sel]) for k, val in vars(ns).items()})
            ang = alignment_angles(sub, ch.rule, float(sF))
            for jj, j in enumerate(sel):
                angles[j] = {k: a[jj] for k, a in ang.items()}
        spread = unspecialised_spread(specialisation(ns)) if ch.M > 1 else np.full(Q.shape[:2], np.nan)  # (b, nt)
    return eg, angles, spread


def _mark_interrupted(curves: _Curves) -> None:
    """After Ctrl-C: a point that reports success but did not reach the last time is interrupted (status 1)."""
    for i in range(len(curves.status)):
        if curves.status[i] == 0 and not np.isfinite(curves.eg[i, -1]):
            curves.status[i] = 1


def _parameter_columns(points: _Points) -> dict[str, Any]:
    """The table's first columns: point, state, K, M, the rule and its options, the HyperParams fields."""
    rules, hypers, sidx = points.rules, points.hypers, points.sidx
    option_names = list(dict.fromkeys(["error"] + [k for r in rules for k in r.options() if k != "presynaptic"]))
    values = [h.as_dict() for h in hypers]
    return {
        "point": np.arange(len(points)), "state": sidx,
        "K": np.array([points.states[s].K for s in sidx]), "M": np.array([points.states[s].M for s in sidx]),
        "rule": np.array([r.name for r in rules]), "presynaptic": np.array([r.presynaptic for r in rules]),
        **{k: np.array([getattr(r, k, "") for r in rules]) for k in option_names},
        "activation": np.array([h.g.name for h in hypers]),
        "train_second_layer": np.array([h.train_second_layer for h in hypers]),
        **{k: np.array([d[k] for d in values]) for k in _HYPER_COLUMNS},
    }


def _summary_columns(curves: _Curves, run: _Settings) -> dict[str, Any]:
    """The outcome and summaries of each curve: status .. n_steps, eg_initial/final/min, t_target (with eg_target),
    the plateau (theory.plateau) and the alignment angles at the last recorded time."""
    t, eg, status = run.t, curves.eg, curves.status
    nrec = curves.n_recorded
    last = nrec - 1
    npts = len(status)
    with np.errstate(invalid="ignore"):
        cols: dict[str, Any] = dict(
            status=status, message=np.array(curves.message), t_end=t[last], nfev=curves.nfev, n_steps=curves.n_steps,
            eg_initial=eg[:, 0], eg_final=np.where(status == 0, eg[:, -1], np.nan), eg_min=np.nanmin(eg, axis=1),
        )
    if run.eg_target is not None:
        cols["t_target"] = np.array([crossing_time(t[: nrec[i]], eg[i, : nrec[i]], float(run.eg_target))
                                     for i in range(npts)])
    cols.update(_plateau_columns(t, eg, nrec, status, curves.spread_end, run.plateau))
    angles = curves.angles
    for k in sorted({k for a in angles for k in a}):
        cols[f"angle_{k}"] = np.array([angles[i][k][last[i]] if k in angles[i] else np.nan for i in range(npts)])
    return cols


#: plateau_status of a point whose integration did not finish, by its status.
_UNFINISHED = {1: "interrupted", -1: "diverged", -2: "failed"}


def _plateau_columns(t, eg, nrec, status, spread_end, options) -> dict[str, np.ndarray]:
    """plateau_status, plateau_length .. plateau_escaped per point (theory.plateau on its recorded times).

    plateau_status: "escaped" (a plateau followed by learning), "censored" (still on the plateau at the last
    time: the length is a lower bound), "none" (no plateau detected), or, for a point that did not finish,
    "diverged", "interrupted" or "failed". The length, start, end and eg are NaN unless escaped or censored: a
    point that never showed a plateau, or whose curve stopped early, has no plateau length (not 0)."""
    npts = len(status)
    pl = [plateau(t[: nrec[i]], eg[i, : nrec[i]], spread_end[i], **options) for i in range(npts)]
    found = np.array([not np.isnan(p[1]) for p in pl], dtype=bool)
    escaped = np.array([bool(p[4]) for p in pl], dtype=bool)
    finished = np.asarray(status) == 0
    state = np.where(escaped, "escaped", np.where(found, "censored", "none")).astype(object)
    for i in np.flatnonzero(~finished):
        state[i] = _UNFINISHED.get(int(status[i]), "failed")
    valid = finished & found
    cols: dict[str, np.ndarray] = {"plateau_status": state.astype(str)}
    for j, name in enumerate(("plateau_length", "plateau_start", "plateau_end", "plateau_eg")):
        cols[name] = np.where(valid, np.array([p[j] for p in pl], dtype=float), np.nan)
    cols["plateau_escaped"] = escaped & finished
    return cols


def _warn_inaccurate(errors, tol) -> None:
    """One AccuracyWarning (at sweep's caller) when some points' expectation error estimates exceed tol."""
    above = errors > tol
    if np.any(above):
        worst = int(np.nanargmax(errors))
        warnings.warn(AccuracyWarning(f"sweep: {int(above.sum())} of {len(errors)} points, e.g. point {worst}: "
                                      + accuracy_note(float(errors[worst]), tol)), stacklevel=4)


def _point_records(points: _Points, chunks, run: _Settings, quadrature, tol, errors, prov) -> list[dict]:
    """Per point: the Trajectory params dict (rule, HyperParams, quadrature, tolerances, units, provenance)."""
    quad_of = {p: job.chunk.quadrature for pts, job in chunks for p in pts}
    return [dict(**record(points.rules[i], points.hypers[i]), quadrature=repr(quad_of.get(i, quadrature)),
                 method="DOP853 (batched)", rtol=run.rtol, atol=run.atol, K=points.state(i).K, M=points.state(i).M,
                 tags=tuple(points.tags), units={"t": "steps / D", "angles": "degrees"}, provenance=prov,
                 expectation_tol=float(tol), expectation_error=None if np.isnan(errors[i]) else float(errors[i]),
                 **(points.state(i).origin or {}))
            for i in range(len(points))]


def _frame(columns: dict):
    """A pandas DataFrame of the table's columns (one row per point, in order; a default index equal to point)."""
    import pandas as pd

    return pd.DataFrame({k: np.asarray(v) for k, v in columns.items()})
