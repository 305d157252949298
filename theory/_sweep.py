"""Parameter sweeps: many learning curves integrated at once, summarised in a tidy table.

``sweep(states, rule, t, eta=..., ...)`` integrates the order-parameter ODE (THEORY.md section 4)
at many parameter points. The right-hand side is evaluated for all points of a batch in one
vectorised call (the closed forms of bp, fa and afa carry leading batch dimensions), and the
batched DOP853 integrator of :mod:`theory._batched` gives every point its own adaptive step,
time and error control, so each row equals a single :func:`theory.integrate` call to the
tolerance.

Points
------
Every sweepable parameter (``states``, ``rule``, ``presynaptic``, ``error``, ``g``,
``train_second_layer``, ``eta``, ``eta_v``, ``sigma``, ``sigma_F``, ``weight_decay`` and the extra
``tags`` columns) is either a scalar, shared by all points, or a 1-D sequence. Sequences are
zipped (they must have the same length L). ``grid={name: values}`` adds Cartesian axes: the points
are the product of the L zipped points with every grid axis, in C order (the last grid axis varies
fastest). A grid axis replaces the argument's scalar (default) value; a name may not be both a
sequence argument and a grid axis.

Table columns (``SweepResult.table``, one row per point)
--------------------------------------------------------
point, state (index into ``SweepResult.states``), K, M, rule, presynaptic, error, activation,
train_second_layer, eta, eta_v, sigma, sigma_F, weight_decay, the tags, then

- status (0 finished, 1 interrupted, -1 diverged, -2 step size too small), message, t_end
  (last time reached, steps / D), nfev (right-hand-side evaluations of the point), n_steps;
- eg_initial, eg_final (eg at the last requested time; NaN unless status == 0), eg_min;
- t_target: first time eg <= eg_target (linear interpolation of ln eg in t between output
  times; NaN when never reached; only with ``eg_target``);
- plateau_length, plateau_start, plateau_end, plateau_eg, plateau_escaped: see below;
- angle_<name> for each alignment angle of THEORY.md section 5 at the last recorded time.

Plateau (the symmetric, unspecialised plateau of committee machines), on the output grid:

    s(t) = d ln eg / d ln t          (finite differences over the output times t > 0)
    onset = first output time with s < -slope_tol  (learning has started)
    flat  = output times after the onset with |s| <= slope_tol

A maximal run of consecutive flat times is a plateau when either it is followed by learning
(it ends before the last output time and its last eg >= (1 + margin) eg_final: escaped), or it
lasts to the end while the student is still unspecialised there: every hidden unit is equally
correlated with all teacher units (the symmetric phase), i.e. max_k (max_n |r_kn| - min_n |r_kn|)
< spec_tol with r_kn = R_kn / sqrt(Q_kk T_nn) (not escaped; its length is then a lower bound;
never for M = 1, which has no symmetry to break). The reported plateau is the longest such run:
plateau_length = plateau_end - plateau_start (steps / D), plateau_eg its median eg; length 0 and
NaN times when there is none. Defaults slope_tol = 0.1, margin = 0.1, spec_tol = 0.2; the grid
must resolve the plateau (the default log-spaced times do).

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
import itertools
import math
import os
from types import SimpleNamespace
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ._activations import activation
from ._batched import BatchSolution, solve_batched
from ._integrate import BLOWUP, Dynamics, default_times, run_params
from ._observables import alignment_angles, generalisation_error, specialisation
from ._rules import Rule, make_rule
from ._state import OrderParams, field_covariance, unpack
from ._trajectory import Trajectory

__all__ = ["sweep", "SweepResult", "Table", "PLATEAU_DEFAULTS"]

#: Parameters of the plateau definition (see the module docstring).
PLATEAU_DEFAULTS = dict(slope_tol=0.1, margin=0.1, spec_tol=0.2)

_NUMERIC = ("eta", "eta_v", "sigma", "sigma_F", "weight_decay")
_STATIC = ("rule", "presynaptic", "error", "g", "train_second_layer")
_SWEEPABLE = ("states",) + _STATIC + _NUMERIC


# ====================================================================== Table
class Table:
    """A small tidy table: named 1-D numpy columns of equal length (pandas is optional).

    ``table["eta"]`` is a column, ``table[3]`` a row (dict), ``table[mask]`` / ``table[1:5]`` a
    sub-table; ``len(table)``, ``table.columns``, ``table.rows()``, ``table.to_pandas()``,
    ``table.to_csv(path)``, ``Table.from_csv(path)``.
    """

    def __init__(self, columns: Mapping[str, Any]):
        cols = {}
        n = None
        for k, val in columns.items():
            a = np.asarray(val)
            if a.ndim != 1:
                raise ValueError(f"Table: column {k!r} must be 1-D, got shape {a.shape}")
            if n is None:
                n = a.shape[0]
            elif a.shape[0] != n:
                raise ValueError(f"Table: column {k!r} has length {a.shape[0]}, expected {n}")
            cols[str(k)] = a
        self._cols = cols
        self._n = 0 if n is None else n

    @property
    def columns(self) -> list[str]:
        return list(self._cols)

    def __len__(self) -> int:
        return self._n

    def __contains__(self, name) -> bool:
        return name in self._cols

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._cols[key]
        if isinstance(key, (int, np.integer)):
            return {k: _py(v[key]) for k, v in self._cols.items()}
        return Table({k: v[key] for k, v in self._cols.items()})

    def rows(self) -> Iterator[dict]:
        for i in range(self._n):
            yield self[i]

    def to_dict(self) -> dict[str, np.ndarray]:
        return dict(self._cols)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self._cols)

    def to_csv(self, path) -> None:
        import csv

        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(self.columns)
            for r in self.rows():
                w.writerow([repr(x) if isinstance(x, float) else x for x in r.values()])

    @classmethod
    def from_csv(cls, path) -> "Table":
        import csv

        with open(path, newline="") as fh:
            rd = csv.reader(fh)
            header = next(rd)
            data = list(rd)
        cols = {}
        for j, name in enumerate(header):
            raw = [r[j] for r in data]
            for conv in (int, float):
                try:
                    cols[name] = np.array([conv(x) for x in raw])
                    break
                except ValueError:
                    continue
            else:
                cols[name] = np.array([{"True": True, "False": False}.get(x, x) for x in raw])
        return cls(cols)

    def __eq__(self, other):
        return NotImplemented

    def __repr__(self) -> str:
        head = ", ".join(self.columns[:12]) + (", ..." if len(self._cols) > 12 else "")
        return f"Table({self._n} rows; columns: {head})"


def _py(x):
    return x.item() if isinstance(x, np.generic) else x


# ====================================================================== points
_GRID_ONLY = object()  # marks a required parameter that may come from the grid instead


def _is_seq(name, val) -> bool:
    if name == "states":
        if isinstance(val, OrderParams):
            return False
        if isinstance(val, (list, tuple)):
            return True
        raise TypeError(f"sweep: states must be a theory.OrderParams or a sequence of them, got {type(val).__name__}")
    if val is None or isinstance(val, (str, Rule, bool)):
        return False
    if isinstance(val, (list, tuple)):
        return True
    a = np.asarray(val, dtype=object)
    if a.ndim == 0:
        return False
    if a.ndim > 1:
        raise ValueError(f"sweep: {name} must be a scalar or a 1-D sequence, got shape {a.shape}")
    return True


def _points(params: dict[str, Any], tags: dict[str, Any], grid: Mapping[str, Sequence] | None):
    """Expand zipped sequences and grid axes into per-point columns (lists of length n_points)."""
    grid = dict(grid or {})
    for k in grid:
        if k not in params:
            raise ValueError(f"sweep: unknown grid axis {k!r}; sweepable parameters are {_SWEEPABLE}")
    zipped: dict[str, list] = {}
    scalars: dict[str, Any] = {}
    for k, val in list(params.items()) + list(tags.items()):
        if k in grid:
            if val is not _GRID_ONLY and _is_seq(k, val):
                raise ValueError(f"sweep: {k!r} is given both as an argument and as a grid axis")
            continue
        if val is _GRID_ONLY:
            raise ValueError(f"sweep: {k} is required (as an argument or as a grid axis)")
        if _is_seq(k, val):
            zipped[k] = list(val)
        else:
            scalars[k] = val
    lengths = {k: len(v) for k, v in zipped.items()}
    if any(n == 0 for n in lengths.values()):
        raise ValueError(f"sweep: empty sequence for {[k for k, n in lengths.items() if n == 0]}")
    if len(set(lengths.values())) > 1:
        raise ValueError(f"sweep: zipped sequences must have the same length, got {lengths}")
    L = next(iter(lengths.values()), 1)
    axes = []
    for k, vals in grid.items():
        vals = list(vals) if not isinstance(vals, np.ndarray) else list(vals.ravel())
        if len(vals) == 0:
            raise ValueError(f"sweep: grid axis {k!r} is empty")
        axes.append((k, vals))
    cols: dict[str, list] = {k: [] for k in list(params) + list(tags)}
    for combo in itertools.product(range(L), *[range(len(v)) for _, v in axes]):
        i = combo[0]
        for k, v in zipped.items():
            cols[k].append(v[i])
        for (k, vals), j in zip(axes, combo[1:]):
            cols[k].append(vals[j])
        for k, v in scalars.items():
            cols[k].append(v)
    return cols


def _check_number(name, x, *, nonneg=True) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"sweep: {name} must be a number, got {x!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"sweep: {name} must be finite, got {x}")
    if nonneg and x < 0:
        raise ValueError(f"sweep: {name} must be >= 0, got {x}")
    return x


# ====================================================================== chunks
@dataclasses.dataclass(frozen=True, eq=False)
class _Chunk:
    """Everything a worker needs to integrate a batch of points (picklable, numpy only)."""

    rule: Rule
    g: str
    quadrature: Any
    train_second_layer: bool
    K: int
    M: int
    y0: np.ndarray
    T: np.ndarray
    U: np.ndarray
    P: np.ndarray
    v_star: np.ndarray
    b: np.ndarray | None
    eta: np.ndarray
    eta_v: np.ndarray
    sigma: np.ndarray
    sigma_F: np.ndarray
    weight_decay: np.ndarray
    t: np.ndarray
    rtol: float
    atol: float
    batched_noise: bool  # sigma, sigma_F may differ within the chunk (closed forms)

    def dynamics(self, idx) -> Dynamics:
        take = lambda a: None if a is None else a[idx]  # noqa: E731
        sig = self.sigma[idx] if self.batched_noise else float(self.sigma[0])
        sigF = self.sigma_F[idx] if self.batched_noise else float(self.sigma_F[0])
        return Dynamics(
            rule=self.rule, K=self.K, M=self.M, T=take(self.T), U=take(self.U), P=take(self.P),
            v_star=take(self.v_star), b=take(self.b), eta=take(self.eta), eta_v=take(self.eta_v),
            sigma=sig, sigma_F=sigF, weight_decay=take(self.weight_decay),
            train_second_layer=self.train_second_layer, g=activation(self.g), quadrature=self.quadrature,
        )

    def diagnose(self, y, idx, at_output):
        """Per row: None, or why the state diverged (as :func:`theory.integrate` checks)."""
        out = [None] * len(y)
        bad = ~np.all(np.isfinite(y), axis=-1)
        Q, R, S, v = unpack(y, self.K, self.M)
        with np.errstate(invalid="ignore"):
            big = np.max(np.concatenate([np.abs(np.diagonal(Q, axis1=-2, axis2=-1)), np.abs(v), np.abs(S)], -1), -1)
        for j in np.nonzero(bad)[0]:
            out[j] = "non-finite order parameters"
        for j in np.nonzero(~bad & (big > BLOWUP))[0]:
            out[j] = f"order parameters exploded (max |Q_kk|, |v_k|, |S_k| = {big[j]:.3g} > {BLOWUP:g})"
        if at_output:
            ok = np.nonzero(~bad & ~(big > BLOWUP))[0]
            if ok.size:
                sel = idx[ok]
                om = field_covariance(Q[ok], R[ok], self.T[sel], S[ok], self.U[sel], self.P[sel])
                om = 0.5 * (om + np.swapaxes(om, -1, -2))
                scale = np.maximum(1.0, np.abs(np.diagonal(om, axis1=-2, axis2=-1)).max(-1))
                lo = np.linalg.eigvalsh(om)[..., 0]
                # Omega is singular at a perfect fit (student = teacher): allow the integration error
                tol = 1e-7 + 100 * (self.rtol + self.atol)
                for j, l_, s_ in zip(ok, lo, scale):
                    if l_ < -tol * s_:
                        out[j] = f"Omega is no longer positive semi-definite (smallest eigenvalue {l_:.3g})"
        return out


def _run_chunk(chunk: _Chunk) -> BatchSolution:
    """Integrate one chunk (runs in the worker)."""
    return solve_batched(_factory(chunk), chunk.y0, chunk.t, rtol=chunk.rtol, atol=chunk.atol, diagnose=chunk.diagnose)


def _factory(chunk: _Chunk, compiled: bool = True, pool: concurrent.futures.ThreadPoolExecutor | None = None):
    """subset(idx) -> the batched right-hand side of the chunk's points idx.

    For the closed forms (bp, fa, afa with erf) and numba available, a compiled loop over the
    points calls the single-state compiled right-hand side of :mod:`theory._closed_jit` (the same
    formulas as :mod:`theory._closed`, held against them by the tests), releasing the GIL so that
    ``pool`` threads can share the batch (no OpenMP: safe to fork and to call from many threads);
    otherwise the numpy right-hand side of :class:`theory.Dynamics` evaluates the whole batch.
    """
    kernel = _batch_kernel() if (compiled and chunk.batched_noise) else None
    if kernel is not None:
        c_kind = {"bp": 0, "fa": 1, "afa": 2}[chunk.rule.name]
        K, M = chunk.K, chunk.M
        bmat = np.zeros((len(chunk.y0), K)) if chunk.b is None else np.ascontiguousarray(chunk.b, dtype=float)
        nthreads = 1 if pool is None else pool._max_workers

        def subset(idx):
            c = lambda a: np.ascontiguousarray(a[idx], dtype=float)  # noqa: E731
            arrays = (c(chunk.T), c(chunk.U), c(chunk.P), c(chunk.v_star), c(bmat), c(chunk.eta), c(chunk.eta_v),
                      c(chunk.sigma), c(chunk.sigma_F), c(chunk.weight_decay))
            flags = (c_kind, chunk.rule.modulated, bool(chunk.train_second_layer))

            def one(y, lo, hi):
                return kernel(y[lo:hi], K, M, *(a[lo:hi] for a in arrays), *flags)

            def f(y):
                y = np.ascontiguousarray(y, dtype=float)
                b = len(y)
                try:
                    if nthreads == 1 or b < 64:
                        return one(y, 0, b)
                    cuts = np.linspace(0, b, nthreads + 1).astype(int)
                    futs = [pool.submit(one, y, lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:])]
                    return np.concatenate([fu.result() for fu in futs])
                except ArithmeticError:
                    # the compiled code raises on 1/0 where numpy gives inf/nan; let numpy mark the bad rows
                    return chunk.dynamics(idx).rhs(y)

            return f

        return subset

    def subset(idx):
        return chunk.dynamics(idx).rhs

    return subset


_KERNEL: list = []


def _batch_kernel():
    """The compiled batched closed-form right-hand side, or None without numba."""
    if not _KERNEL:
        try:
            import numba

            from ._closed_jit import HAVE_NUMBA, closed_form_rhs_flat
        except ImportError:  # pragma: no cover
            HAVE_NUMBA = False
        if not HAVE_NUMBA:
            _KERNEL.append(None)
        else:
            one = closed_form_rhs_flat

            @numba.njit(nogil=True, cache=True)
            def kernel(y, K, M, T, U, P, v_star, b, eta, eta_v, sigma, sigma_F, kappa, c_kind, modulated, train_v):
                out = np.empty_like(y)
                for i in range(y.shape[0]):
                    out[i] = one(y[i], K, M, T[i], U[i], P[i], v_star[i], c_kind, b[i], eta[i], eta_v[i], sigma[i],
                                 sigma_F[i], kappa[i], modulated, train_v)
                return out

            _KERNEL.append(kernel)
    return _KERNEL[0]


# ====================================================================== result
@dataclasses.dataclass(frozen=True, eq=False)
class SweepResult:
    """A sweep's results.

    table : one row per point (see the module docstring for the columns).
    t : (n_t,) output times (steps / D). eg : (n_points, n_t) generalisation error (NaN after a
    point stopped). states : the distinct initial states (``table["state"]`` indexes them).
    ``curves()`` gives the long table (one row per point and recorded time), ``trajectory(i)``
    point i as a :class:`theory.Trajectory`.
    """

    table: Table
    t: np.ndarray
    eg: np.ndarray
    states: tuple
    _Y: list  # per point: (n_t, n) flat order parameters (NaN after the point stopped)
    _params: list  # per point: the Trajectory params dict
    _angles: list  # per point: dict name -> (n_t,) degrees

    def __len__(self) -> int:
        return len(self.table)

    def trajectory(self, i: int) -> Trajectory:
        """Point i as a :class:`Trajectory` (its recorded times only)."""
        row = self.table[i]
        s0 = self.states[row["state"]]
        n = int(np.sum(np.isfinite(self._Y[i][:, 0])))
        Q, R, S, v = unpack(self._Y[i][:n], s0.K, s0.M)
        Q = 0.5 * (Q + np.swapaxes(Q, -1, -2))
        return Trajectory(t=self.t[:n], Q=Q, R=R, S=S, v=v, state0=s0, params=dict(self._params[i]),
                          status=int(row["status"]), message=row["message"], nfev=int(row["nfev"]))

    def curves(self, with_params: bool = True) -> Table:
        """Long table: one row per point and recorded time with t, eg, the angles and the order
        parameters (Q[k,l], R[k,n], S[k], v[k]; points of different K, M leave others NaN), plus
        the point's parameter columns when ``with_params``."""
        names = ["Q", "R", "S", "v"]
        ang_keys = sorted({k for a in self._angles for k in a})
        op_keys: list[str] = []
        per_point = []
        for i in range(len(self.table)):
            s0 = self.states[self.table["state"][i]]
            n = int(np.sum(np.isfinite(self._Y[i][:, 0])))
            parts = dict(zip(names, unpack(self._Y[i][:n], s0.K, s0.M)))
            flat = {}
            for nm, arr in parts.items():
                for idx in np.ndindex(arr.shape[1:]):
                    key = f"{nm}[{','.join(map(str, idx))}]"
                    flat[key] = arr[(slice(None),) + idx]
                    if key not in op_keys:
                        op_keys.append(key)
            per_point.append((n, flat))
        out: dict[str, list] = {"point": [], "t": [], "eg": [], **{f"angle_{k}": [] for k in ang_keys}, **{k: [] for k in op_keys}}
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
            pcols = [c for c in self.table.columns if c in _PARAM_COLUMNS or c in self._tag_names]
            pt = table["point"]
            for c in pcols:
                table[c] = self.table[c][pt]
        return Table(table)

    @property
    def _tag_names(self):
        return tuple(self._params[0].get("tags", ())) if self._params else ()


_PARAM_COLUMNS = ("state", "K", "M", "rule", "presynaptic", "error", "activation", "train_second_layer",
                  "eta", "eta_v", "sigma", "sigma_F", "weight_decay")


# ====================================================================== summaries
def plateau(t, eg, spread_end, *, slope_tol=0.1, margin=0.1, spec_tol=0.2):
    """(length, start, end, median eg, escaped) of the plateau of one curve (module docstring)."""
    none = (0.0, np.nan, np.nan, np.nan, False)
    keep = (t > 0) & np.isfinite(eg) & (eg > 0)
    t, eg = t[keep], eg[keep]
    if t.size < 3:
        return none
    s = np.gradient(np.log(eg), np.log(t))
    down = np.nonzero(s < -slope_tol)[0]
    if down.size == 0:
        return none
    flat = np.abs(s) <= slope_tol
    flat[: down[0]] = False
    eg_final = eg[-1]
    best = none
    i = 0
    n = t.size
    while i < n:
        if not flat[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and flat[j + 1]:
            j += 1
        if j < n - 1:
            ok, escaped = eg[j] >= (1 + margin) * eg_final, True
        else:
            ok, escaped = bool(spread_end < spec_tol), False
        if ok and t[j] - t[i] > best[0]:
            best = (float(t[j] - t[i]), float(t[i]), float(t[j]), float(np.median(eg[i : j + 1])), escaped)
        i = j + 1
    return best


def _t_target(t, eg, target):
    hit = np.nonzero(eg <= target)[0]
    if hit.size == 0:
        return np.nan
    i = hit[0]
    if i == 0:
        return float(t[0])
    l0, l1 = np.log(eg[i - 1]), np.log(eg[i])
    if not np.isfinite(l0) or l1 == l0 or not np.isfinite(l1):
        return float(t[i])
    return float(t[i - 1] + (t[i] - t[i - 1]) * (np.log(target) - l0) / (l1 - l0))


# ====================================================================== sweep
def sweep(
    states=_GRID_ONLY,
    rule: Any = "bp",
    t=None,
    *,
    eta=_GRID_ONLY,
    eta_v=None,
    sigma=0.0,
    sigma_F=1.0,
    weight_decay=0.0,
    train_second_layer=True,
    presynaptic=None,
    error=None,
    g="erf",
    grid: Mapping[str, Sequence] | None = None,
    tags: Mapping[str, Any] | None = None,
    quadrature=None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    eg_target: float | None = None,
    plateau_options: Mapping[str, float] | None = None,
    executor: concurrent.futures.Executor | None = None,
    chunk_size: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> SweepResult:
    """Integrate the order-parameter ODE at many parameter points; one table row per point.

    Parameters
    ----------
    states : initial :class:`OrderParams`, or a sequence of them (zipped with the other sequences).
    rule, presynaptic, error, g, train_second_layer, eta, eta_v, sigma, sigma_F, weight_decay :
        as in :func:`theory.integrate`; each a scalar or a 1-D sequence (zipped).
    t : output times shared by all points (steps / D); default :func:`theory.default_times`.
    grid : {parameter: values}: Cartesian axes crossed with the zipped points.
    tags : {column: scalar or sequence}: extra columns carried into the table (zipped like the
        parameters), e.g. the seed or w_std each state was drawn with.
    quadrature : the numerical engine's option (non-erf activations and pepita), shared by all.
    rtol, atol : tolerances of each point's error control (DOP853, as in :func:`theory.integrate`).
    eg_target : adds the column t_target, the first time eg <= eg_target.
    plateau_options : overrides of PLATEAU_DEFAULTS (slope_tol, margin, spec_tol).
    executor, chunk_size : run chunks of at most chunk_size points as tasks of a
        ``concurrent.futures.Executor`` (default chunk: the points split evenly over the workers,
        at most 1024 per chunk); without an executor, chunks run here one after another.
    threads : without an executor, threads sharing each batched right-hand side of the compiled
        closed forms (default: the CPU count, at most 8). Executor tasks use one thread each.
    progress : tqdm progress bar (over time for a serial run, over chunks with an executor).

    A diverged point gets status -1 and a message, the others carry on. Ctrl-C keeps what was
    computed (unfinished points get status 1).
    """
    params = dict(states=states, rule=rule, presynaptic=presynaptic, error=error, g=g,
                  train_second_layer=train_second_layer, eta=eta, eta_v=eta_v, sigma=sigma,
                  sigma_F=sigma_F, weight_decay=weight_decay)
    tags = dict(tags or {})
    for k in tags:
        if k in params or k in _PARAM_COLUMNS or not isinstance(k, str):
            raise ValueError(f"sweep: tag {k!r} clashes with a parameter column")
    if grid is not None and not isinstance(grid, Mapping):
        raise TypeError("sweep: grid must be a mapping {parameter: values}")
    cols = _points(params, tags, grid)
    npts = len(cols["eta"])

    # ---- options
    t = default_times() if t is None else np.asarray(t, dtype=float).ravel()
    if t.size < 1 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0) or t[0] < 0:
        raise ValueError("sweep: t must be a non-empty, finite, strictly increasing array of times >= 0")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"sweep: rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    if eg_target is not None and not (float(eg_target) > 0):
        raise ValueError(f"sweep: eg_target must be > 0, got {eg_target}")
    popts = dict(PLATEAU_DEFAULTS)
    for k, val in dict(plateau_options or {}).items():
        if k not in popts:
            raise ValueError(f"sweep: unknown plateau option {k!r}; expected {sorted(popts)}")
        popts[k] = _check_number(f"plateau_options[{k!r}]", val)
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"sweep: chunk_size must be a positive integer, got {chunk_size}")
    if executor is not None and not isinstance(executor, concurrent.futures.Executor) and not hasattr(executor, "submit"):
        raise TypeError(f"sweep: executor must be a concurrent.futures.Executor, got {type(executor).__name__}")

    # ---- validate each point, identify distinct states
    state_list: list[OrderParams] = []
    state_ids: dict[int, int] = {}
    sidx = np.empty(npts, dtype=int)
    rules: list[Rule] = []
    for i in range(npts):
        s = cols["states"][i]
        if not isinstance(s, OrderParams):
            raise TypeError(f"sweep: states must be theory.OrderParams, got {type(s).__name__} at point {i}")
        if id(s) not in state_ids:
            state_ids[id(s)] = len(state_list)
            state_list.append(s)
        sidx[i] = state_ids[id(s)]
        r = make_rule(cols["rule"][i], presynaptic=cols["presynaptic"][i], error=cols["error"][i])
        if r.name == "fa" and s.b is None:
            raise ValueError(f"sweep: rule 'fa' needs the feedback vector b; state {sidx[i]} (point {i}) has none")
        rules.append(r)
        cols["g"][i] = activation(cols["g"][i]).name
        if not isinstance(cols["train_second_layer"][i], (bool, np.bool_)):
            raise ValueError(f"sweep: train_second_layer must be True or False, got {cols['train_second_layer'][i]!r}")
    num = {}
    for k in _NUMERIC:
        vals = cols[k]
        if k == "eta_v":
            vals = [cols["eta"][i] if v is None else v for i, v in enumerate(vals)]
        num[k] = np.array([_check_number(f"{k} (point {i})", v, nonneg=(k != "sigma_F")) for i, v in enumerate(vals)])

    # ---- group points that can share one batched right-hand side
    closed = [activation(cols["g"][i]).closed_forms and rules[i].name != "pepita" and quadrature in (None, "closed")
              for i in range(npts)]
    groups: dict[tuple, list[int]] = {}
    for i in range(npts):
        s = state_list[sidx[i]]
        key = (rules[i], cols["g"][i], bool(cols["train_second_layer"][i]), s.K, s.M, s.b is not None, closed[i])
        if not closed[i]:
            key = key + (num["sigma"][i], num["sigma_F"][i])
        groups.setdefault(key, []).append(i)

    if chunk_size is None:
        workers = getattr(executor, "_max_workers", None) or (os.cpu_count() or 1) if executor is not None else 1
        chunk_size = min(1024, max(1, math.ceil(npts / workers)))
    chunks: list[tuple[list[int], _Chunk]] = []
    for key, members in groups.items():
        r, gname, tsl, K, M, has_b, cl = key[:7]
        for c0 in range(0, len(members), chunk_size):
            pts = members[c0 : c0 + chunk_size]
            ss = [state_list[sidx[i]] for i in pts]
            chunks.append((pts, _Chunk(
                rule=r, g=gname, quadrature=quadrature, train_second_layer=tsl, K=K, M=M,
                y0=np.stack([s.to_vector() for s in ss]), T=np.stack([s.T for s in ss]), U=np.stack([s.U for s in ss]),
                P=np.array([s.P for s in ss]), v_star=np.stack([s.v_star for s in ss]),
                b=np.stack([s.b for s in ss]) if has_b else None,
                eta=num["eta"][pts], eta_v=num["eta_v"][pts], sigma=num["sigma"][pts], sigma_F=num["sigma_F"][pts],
                weight_decay=num["weight_decay"][pts], t=t, rtol=float(rtol), atol=float(atol), batched_noise=cl,
            )))

    # ---- run
    sols: list[BatchSolution | None] = [None] * len(chunks)
    interrupted = False
    if executor is None:
        nthreads = max(1, min(os.cpu_count() or 1, 8)) if threads is None else int(threads)
        pool = concurrent.futures.ThreadPoolExecutor(nthreads) if nthreads > 1 else None
        try:
            for ci, (pts, ch) in enumerate(chunks):
                desc = f"sweep {ch.rule.label} ({ci + 1}/{len(chunks)}, {len(pts)} points)"
                sols[ci] = solve_batched(_factory(ch, pool=pool), ch.y0, t, rtol=ch.rtol, atol=ch.atol,
                                         diagnose=ch.diagnose, progress=progress, desc=desc)
                if np.any(sols[ci].status == 1):
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if pool is not None:
                pool.shutdown()
    else:
        futures = {executor.submit(_run_chunk, ch): ci for ci, (_, ch) in enumerate(chunks)}
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

    return _assemble(cols, tags, sidx, state_list, rules, num, chunks, sols, t, eg_target, popts, quadrature,
                     rtol, atol, interrupted)


def _assemble(cols, tags, sidx, state_list, rules, num, chunks, sols, t, eg_target, popts, quadrature, rtol, atol,
              interrupted):
    npts = len(sidx)
    nt = t.size
    status = np.ones(npts, dtype=int)
    message = ["interrupted before it ran"] * npts
    nfev = np.zeros(npts, dtype=np.int64)
    n_steps = np.zeros(npts, dtype=np.int64)
    Ys: list = [None] * npts
    eg = np.full((npts, nt), np.nan)
    angles_t: list = [dict() for _ in range(npts)]
    spread_end = np.full(npts, np.nan)
    for (pts, ch), sol in zip(chunks, sols):
        pts = np.asarray(pts)
        b = len(pts)
        Y = np.full((b, nt, ch.y0.shape[1]), np.nan) if sol is None else sol.y
        if sol is None:
            Y[:, 0] = ch.y0
        else:
            status[pts], nfev[pts], n_steps[pts] = sol.status, sol.nfev, sol.n_steps
            for j, p in enumerate(pts):
                message[p] = sol.message[j]
        Q, R, S, v = unpack(Y, ch.K, ch.M)
        Q = 0.5 * (Q + np.swapaxes(Q, -1, -2))
        ns = SimpleNamespace(Q=Q, R=R, S=S, v=v, T=ch.T[:, None], U=ch.U[:, None], P=ch.P[:, None],
                             v_star=ch.v_star[:, None], b=None if ch.b is None else ch.b[:, None])
        with np.errstate(invalid="ignore", divide="ignore"):
            eg[pts] = generalisation_error(ns, ch.g)
            for sF in np.unique(ch.sigma_F):
                sel = np.nonzero(ch.sigma_F == sF)[0]
                sub = SimpleNamespace(**{k: (None if val is None else val[sel]) for k, val in vars(ns).items()})
                ang = alignment_angles(sub, ch.rule, float(sF))
                for jj, j in enumerate(sel):
                    angles_t[pts[j]] = {k: a[jj] for k, a in ang.items()}
            sp = np.abs(specialisation(ns))  # (b, nt, K, M)
            spread = (sp.max(-1) - sp.min(-1)).max(-1) if ch.M > 1 else np.full(sp.shape[:2], np.nan)  # (b, nt)
        for j, p in enumerate(pts):
            Ys[p] = Y[j]
            nrec = int(np.sum(np.isfinite(Y[j, :, 0])))
            spread_end[p] = spread[j, nrec - 1]
    if interrupted:
        for i in range(npts):
            if status[i] == 0 and not np.isfinite(eg[i, -1]):
                status[i] = 1

    # ---- summary columns
    nrec = np.array([int(np.sum(np.isfinite(Ys[i][:, 0]))) for i in range(npts)])
    last = nrec - 1
    rows = np.arange(npts)
    table: dict[str, Any] = {
        "point": rows, "state": sidx,
        "K": np.array([state_list[s].K for s in sidx]), "M": np.array([state_list[s].M for s in sidx]),
        "rule": np.array([r.name for r in rules]), "presynaptic": np.array([r.presynaptic for r in rules]),
        "error": np.array([r.error for r in rules]), "activation": np.array(cols["g"]),
        "train_second_layer": np.array([bool(x) for x in cols["train_second_layer"]]),
        **{k: num[k] for k in _NUMERIC},
    }
    for k in tags:
        table[k] = np.array(cols[k])
    with np.errstate(invalid="ignore"):
        table.update(
            status=status, message=np.array(message), t_end=t[last], nfev=nfev, n_steps=n_steps,
            eg_initial=eg[:, 0], eg_final=np.where(status == 0, eg[:, -1], np.nan), eg_min=np.nanmin(eg, axis=1),
        )
    if eg_target is not None:
        table["t_target"] = np.array([_t_target(t[: nrec[i]], eg[i, : nrec[i]], float(eg_target)) for i in range(npts)])
    pl = [plateau(t[: nrec[i]], eg[i, : nrec[i]], spread_end[i], **popts) for i in range(npts)]
    for j, name in enumerate(("plateau_length", "plateau_start", "plateau_end", "plateau_eg", "plateau_escaped")):
        table[name] = np.array([p[j] for p in pl])
    ang_keys = sorted({k for a in angles_t for k in a})
    for k in ang_keys:
        table[f"angle_{k}"] = np.array([angles_t[i][k][last[i]] if k in angles_t[i] else np.nan for i in range(npts)])

    params = []
    for i in range(npts):
        r = rules[i]
        params.append(dict(
            **run_params(r, cols["g"][i], eta=float(num["eta"][i]), eta_v=float(num["eta_v"][i]),
                         sigma=float(num["sigma"][i]), sigma_F=float(num["sigma_F"][i]),
                         weight_decay=float(num["weight_decay"][i]),
                         train_second_layer=bool(cols["train_second_layer"][i])),
            quadrature=repr(quadrature), method="DOP853 (batched)", rtol=rtol, atol=atol,
            K=state_list[sidx[i]].K, M=state_list[sidx[i]].M, tags=tuple(tags),
        ))
    return SweepResult(table=Table(table), t=t, eg=eg, states=tuple(state_list), _Y=Ys, _params=params, _angles=angles_t)
