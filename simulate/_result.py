"""The record of a batched simulation: per-replica order parameters and observables over time.

Field names follow :class:`theory.Trajectory` (t, Q, R, S, v, eg, angles, params, status,
message) with a leading replica axis: Q (R_, n, K, K), R (R_, n, K, M), S (R_, n, K),
v (R_, n, K), eg and eg_test (R_, n), angles[name] (R_, n). Time is steps / D.
"""

from __future__ import annotations

import dataclasses
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import theory
from theory import OrderParams, _internal, alignment_angles, generalisation_error, rule_from_params

__all__ = ["SimulationResult", "run_params"]

_CONSTANTS = ("T", "U", "P", "v_star", "b")
#: the dataclass fields of the constants U and P (their values at t[0]; ``U``, ``P`` are the properties)
_FIELD = {"U": "U0", "P": "P0"}


def _as_fields(constants: dict) -> dict:
    """Constants keyed T, U, P, v_star, b as the dataclass fields (U0, P0)."""
    return {_FIELD.get(k, k): c for k, c in constants.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class SimulationResult:
    """Order parameters of ``R_`` replicas measured at times t (steps / D) of a simulation.

    Q (R_, n, K, K), R (R_, n, K, M), S (R_, n, K), v (R_, n, K): measured overlaps (float64),
    Q = W W^T / D, R = W W*^T / D, S = W f / D.
    T (M, M), U0 (M,), P0 (), v_star (M,), b (K,): constants (U0, P0: U and P at t[0]); with independent
    initial weights they carry a leading replica axis (R_, ...).
    eg (R_, n): closed-form generalisation error of the measured order parameters.
    eg_test (R_, n): 1/2 mean over a fixed held-out set of n_test Gaussian inputs of
    (yhat - sum_m v*_m g(nu_m))^2 (noise-free teacher), i.e. the same quantity estimated directly.
    angles: dict name -> (R_, n) degrees, as :func:`theory.alignment_angles`.
    status: 0 finished, 1 interrupted (Ctrl-C), -1 diverged; message says when and why.
    U_t (R_, n, M), P_t (R_, n): under feedback mirroring (f learns), U and P measured over time; None
    otherwise. ``U`` and ``P`` mean what they mean on :class:`theory.Trajectory`: the series U_t, P_t
    under mirroring, else the constants U0, P0. ``mean("U")``, ``mean("P")`` work in both cases.
    """

    t: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    S: np.ndarray
    v: np.ndarray
    T: np.ndarray
    U0: np.ndarray
    P0: Any
    v_star: np.ndarray
    b: np.ndarray | None
    eg: np.ndarray
    eg_test: np.ndarray
    angles: dict[str, np.ndarray]
    params: dict[str, Any]
    status: int = 0
    message: str = "finished"
    U_t: np.ndarray | None = None
    P_t: np.ndarray | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_records(cls, t, Q, R, S, v, constants: dict, eg_test, params, status=0, message="finished", U=None,
                     P=None) -> SimulationResult:
        """Build a result, computing eg and the angles from the order parameters (U (R_, n, M) and
        P (R_, n) over time under mirroring)."""
        obs = _observable_view(Q, R, S, v, constants, U, P)
        eg = generalisation_error(obs, params.get("activation", "erf"))
        angles = alignment_angles(obs, rule_from_params(params), params.get("sigma_F", 1.0))
        return cls(t=np.asarray(t, dtype=float), Q=Q, R=R, S=S, v=v, eg=eg, eg_test=np.asarray(eg_test, dtype=float),
                   angles=angles, params=params, status=status, message=message, U_t=U, P_t=P, **_as_fields(constants))

    @classmethod
    def from_run(cls, spec, rec) -> SimulationResult:
        """The result of an engine's :class:`simulate.Records` for its :class:`simulate.RunSpec`: times
        steps / D, the constants of the initial state (with a replica axis when the replicas started from
        different students), and the params of :func:`run_params`."""
        constants = {k: getattr(spec.state, k) for k in _CONSTANTS}
        if spec.independent:
            ndim = dict(T=2, U=1, P=0, v_star=1, b=1)
            constants = {
                k: None if c is None else _per_replica(c, spec.replicas, ndim[k]) for k, c in constants.items()
            }
        eg_test = rec.eg_test if rec.eg_test is not None else np.full(rec.Q.shape[:2], np.nan)
        return cls.from_records(rec.steps / spec.D, rec.Q, rec.R, rec.S, rec.v, constants, eg_test,
                                run_params(spec, rec), status=rec.status, message=rec.message, U=rec.U, P=rec.P)

    # ------------------------------------------------------------------ shapes
    @property
    def replicas(self) -> int:
        return self.Q.shape[0]

    @property
    def K(self) -> int:
        return self.R.shape[-2]

    @property
    def M(self) -> int:
        return self.R.shape[-1]

    @property
    def samples(self) -> np.ndarray:
        """Samples seen per replica at each recorded time: steps x batch size (t = steps / D)."""
        return np.round(np.asarray(self.t) * self.params["D"]).astype(np.int64) * int(self.params.get("batch", 1))

    @property
    def independent_init(self) -> bool:
        return np.ndim(self.T) == 3

    @property
    def success(self) -> bool:
        return self.status == 0

    def __len__(self) -> int:
        return len(self.t)

    # ------------------------------------------------------------------ statistics
    @property
    def mirrored(self) -> bool:
        """Whether f learned (feedback mirroring): U_t and P_t hold U and P over time."""
        return self.U_t is not None

    @property
    def U(self) -> np.ndarray:
        """U = W* f / D: the series U_t (R_, n, M) under feedback mirroring, else the constant U0."""
        return self.U0 if self.U_t is None else self.U_t

    @property
    def P(self):
        """P = |f|^2 / D: the series P_t (R_, n) under feedback mirroring, else the constant P0."""
        return self.P0 if self.P_t is None else self.P_t

    def _constant(self, k: str):
        return getattr(self, _FIELD.get(k, k))

    def _get(self, name: str) -> np.ndarray:
        if name in ("t", "Q", "R", "S", "v", "eg", "eg_test"):
            return np.asarray(getattr(self, name))
        if name in ("U", "P"):
            if self.mirrored:
                return np.asarray(getattr(self, f"{name}_t"))
            c = np.asarray(self._constant(name), dtype=float)
            c = c if self.independent_init else np.broadcast_to(c, (self.replicas,) + c.shape)
            return np.broadcast_to(c[:, None], (self.replicas, len(self.t)) + c.shape[1:])
        key = name[len("angle:"):] if name.startswith("angle:") else name
        if key in self.angles:
            return self.angles[key]
        raise ValueError(
            f"SimulationResult: unknown quantity {name!r}; expected Q, R, S, v, U, P, eg, eg_test or an angle "
            f"{sorted(self.angles)}"
        )

    def mean(self, name: str) -> np.ndarray:
        """Mean over replicas of a per-replica quantity ("eg", "Q", ... or an angle name)."""
        x = self._get(name)
        if self.replicas == 1:
            return x[0]
        with warnings.catch_warnings():  # a quantity that was not recorded (eg_test with n_test = 0) is all nan
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(x, axis=0)

    def sem(self, name: str) -> np.ndarray:
        """Standard error of the replica mean, std(ddof=1) / sqrt(R_) (nan for one replica)."""
        x = self._get(name)
        if self.replicas < 2:
            return np.full(x.shape[1:], np.nan)
        n = np.sum(np.isfinite(x), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nanstd(x, axis=0, ddof=1) / np.sqrt(n)

    def constants(self, r: int = 0) -> dict:
        """T, U, P, v_star, b of replica r."""
        out = {}
        for k in _CONSTANTS:
            val = self._constant(k)
            if val is not None and self.independent_init:
                val = np.asarray(val)[r]
            out[k] = val
        return out

    def state(self, i: int = -1, r: int = 0) -> OrderParams:
        """The measured :class:`theory.OrderParams` of replica r at the i-th recorded time."""
        c = self.constants(r)
        if self.mirrored:
            c.update(U=self.U_t[r, i], P=self.P_t[r, i])
        return OrderParams(Q=self.Q[r, i], R=self.R[r, i], S=self.S[r, i], v=self.v[r, i], T=c["T"], U=c["U"],
                           P=float(c["P"]), v_star=c["v_star"], b=c["b"])

    def initial_state(self, r: int = 0) -> OrderParams:
        """The measured order parameters of replica r at t[0] (the ODE's initial condition)."""
        return self.state(0, r)

    def __repr__(self) -> str:
        return (
            f"SimulationResult(rule={self.params.get('rule_label', self.params.get('rule'))}, K={self.K}, M={self.M}, "
            f"D={self.params.get('D')}, replicas={self.replicas}, t=[{self.t[0]:g}..{self.t[-1]:g}] ({len(self.t)} "
            f"points), "
            f"mean eg[-1]={self.mean('eg')[-1]:.4g}, status={self.status} ({self.message!r}))"
        )

    def plot(self, what: str = "eg", **kw):
        """The learning curve (``what="eg"``: mean +- sem over the replicas, :func:`simulate.plots.learning_curves`)
        or the alignment angles (``"angles"``, :func:`simulate.plots.angles`); keywords go to that function.
        Returns the Figure."""
        from theory.plots import plot_result

        return plot_result(self, what, **kw)

    # ------------------------------------------------------------------ persistence
    def to_xarray(self):
        """An xarray Dataset: Q (replica, t, k, l), R (replica, t, k, m), S, v (replica, t, k), eg, eg_test
        (replica, t), angles (replica, t, angle), samples (t), the constants (with a replica axis when
        the initial weights are independent) and every parameter, the status and the provenance in its
        attributes."""
        lab = theory.labelled
        xr = lab.xarray()
        data = lab.order_parameter_vars(("replica", "t"), self.Q, self.R, self.S, self.v, self.eg, self.angles)
        data["eg_test"] = (("replica", "t"), self.eg_test)
        lead = ("replica",) if self.independent_init else ()
        for k, dims in (("T", ("m", "n")), ("U", ("m",)), ("P", ()), ("v_star", ("m",)), ("b", ("k",))):
            if self._constant(k) is not None:
                data[k] = (lead + dims, np.asarray(self._constant(k)))
        if self.mirrored:
            data.update(U_t=(("replica", "t", "m"), self.U_t), P_t=(("replica", "t"), self.P_t))
        coords = dict(replica=np.arange(self.replicas), t=self.t, k=np.arange(self.K), l=np.arange(self.K),
                      m=np.arange(self.M), n=np.arange(self.M), angle=list(self.angles))
        if "D" in self.params:
            coords["samples"] = ("t", self.samples)
        return xr.Dataset(data, coords=coords, attrs=lab.to_attrs("SimulationResult", params=self.params,
                                                                  status=self.status, message=self.message))

    @classmethod
    def from_xarray(cls, ds) -> SimulationResult:
        """The result a Dataset of :meth:`to_xarray` holds (theory.LoadError when it holds something else)."""
        meta = theory.labelled.from_attrs(ds, "SimulationResult")
        a = lambda name: np.asarray(ds[name].values)  # noqa: E731
        _check_loaded("SimulationResult.from_xarray", {k: a(k) for k in _SERIES if k in ds}, meta)
        try:
            consts = {k: (a(k) if k in ds else None) for k in _CONSTANTS}
            consts["P"] = consts["P"] if consts["P"].ndim else float(consts["P"])
            angles = {str(n): a("angles")[..., i] for i, n in enumerate(ds["angle"].values)} if "angles" in ds else {}
            return cls(
                t=a("t"),
                Q=a("Q"),
                R=a("R"),
                S=a("S"),
                v=a("v"),
                eg=a("eg"),
                eg_test=a("eg_test"),
                angles=angles,
                params=meta["params"],
                status=int(meta["status"]),
                message=meta["message"],
                U_t=a("U_t") if "U_t" in ds else None,
                P_t=a("P_t") if "P_t" in ds else None,
                **_as_fields(consts),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise theory.LoadError(f"SimulationResult.from_xarray: damaged ({type(exc).__name__}: {exc})") from None

    def save(self, path) -> Path:
        """Save to an .npz: arrays, constants, eg, eg_test, angles ("angle_<name>") and JSON metadata;
        or, for a path ending in .nc, to netCDF through :meth:`to_xarray` (needs xarray)."""
        path = Path(path)
        if path.suffix == ".nc":
            return theory.labelled.write_netcdf(self.to_xarray(), path)
        meta = dict(params=self.params, status=self.status, message=self.message,
                    units={"t": "steps / D", "angles": "degrees"}, angle_names=list(self.angles))
        arrays = dict(t=self.t, Q=self.Q, R=self.R, S=self.S, v=self.v, eg=self.eg, eg_test=self.eg_test)
        if self.mirrored:
            arrays.update(U_t=self.U_t, P_t=self.P_t)
        for k in _CONSTANTS:
            if self._constant(k) is not None:
                arrays[f"const_{k}"] = np.asarray(self._constant(k))
        for i, (k, val) in enumerate(self.angles.items()):
            arrays[f"angle_{i}"] = val
        return _internal.io.save_npz(path, "SimulationResult", meta, arrays)

    @classmethod
    def load(cls, path) -> SimulationResult:
        """Read a saved result (.npz, or .nc for netCDF); :class:`theory.LoadError` when the file is not
        one, or is damaged."""
        if _internal.io.file_path(path, "SimulationResult.load").suffix == ".nc":
            return cls.from_xarray(theory.labelled.read_netcdf(path, "SimulationResult"))
        need = ("t", "Q", "R", "S", "v", "eg", "eg_test", "const_T", "const_U", "const_P", "const_v_star")
        meta, z = _internal.io.load_npz(path, "SimulationResult", need)
        what = f"SimulationResult.load: {str(path)!r}"
        _check_loaded(what, z, meta)
        try:
            consts = {k: (z[f"const_{k}"] if f"const_{k}" in z else None) for k in _CONSTANTS}
            consts["P"] = consts["P"] if consts["P"].ndim else float(consts["P"])
            angles = {name: z[f"angle_{i}"] for i, name in enumerate(meta["angle_names"])}
            return cls(
                t=z["t"],
                Q=z["Q"],
                R=z["R"],
                S=z["S"],
                v=z["v"],
                eg=z["eg"],
                eg_test=z["eg_test"],
                angles=angles,
                params=meta["params"],
                status=meta["status"],
                message=meta["message"],
                U_t=z["U_t"] if "U_t" in z else None,
                P_t=z["P_t"] if "P_t" in z else None,
                **_as_fields(consts),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise theory.LoadError(f"{what}: damaged ({type(exc).__name__}: {exc})") from None


#: The time series of a saved simulation (beside its constants and angles).
_SERIES = ("t", "Q", "R", "S", "v", "eg", "eg_test", "U_t", "P_t")


def _check_loaded(what: str, arrays: dict, meta: dict) -> None:
    """What every SimulationResult loader (npz, netCDF) checks: the order parameters as a Trajectory's, with a
    replica axis (shapes, finite values, U_t and P_t exactly when the run mirrors f), eg and eg_test shaped
    (replicas, n). eg_test may hold NaN (not measured), eg too after a replica stopped."""
    if "Q" not in arrays or "R" not in arrays or np.ndim(arrays["Q"]) != 4 or np.ndim(arrays["R"]) != 4:
        raise theory.LoadError(f"{what}: damaged (Q and R must be arrays (replica, t, k, l) and (replica, t, k, m))")
    Rn, n, M = np.shape(arrays["Q"])[0], np.shape(arrays["Q"])[1], np.shape(arrays["R"])[-1]
    _internal.io.check_order_params(what, arrays, meta.get("params"), M, lead=(Rn,))
    for name in ("eg", "eg_test"):
        if name not in arrays:
            raise theory.LoadError(f"{what}: damaged (no array {name})")
    _internal.io.check_arrays(what, arrays, dict(eg=(Rn, n), eg_test=(Rn, n)))


def run_params(spec, rec) -> dict[str, Any]:
    """The params of a simulation's result, from its :class:`simulate.RunSpec` and the engine's Records: the
    rule and hyper-parameters (as theory records them), K, M, D, the initialisation (when the run drew its
    weights), replicas, device, dtype, seeds, n_test, engine, the recorded steps and samples, units,
    provenance, and what the engine adds (``rec.info``: its backend, wall time, ...)."""
    hyper, steps = spec.hyper, [int(s) for s in rec.steps]
    out = dict(**_internal.run_params(spec.rule, hyper), K=spec.K, M=spec.M, D=spec.D)
    if spec.init is not None:
        i = spec.init
        out.update(init_seed=i.seed, w_std=i.w_std, v_std=i.v_std, v_star=i.v_star)
    out.update(replicas=spec.replicas, independent_init=spec.independent, device=str(spec.device),
               dtype=str(spec.dtype).replace("torch.", ""), seed=spec.seed, n_test=spec.n_test, engine=spec.engine,
               steps=steps, samples=[s * hyper.batch for s in steps], units={"t": "steps / D", "angles": "degrees"},
               provenance=theory.provenance(str(spec.device)))
    return out | dict(rec.info)


def _per_replica(c, replicas: int, ndim: int) -> np.ndarray:
    """A constant with a leading replica axis (broadcast when it is shared)."""
    c = np.asarray(c, dtype=float)
    return c if c.ndim > ndim else np.broadcast_to(c, (replicas,) + c.shape).copy()


def _observable_view(Q, R, S, v, constants, U=None, P=None):
    """An object with Q, R, S, v (R_, n, ...) and constants broadcast against them, for theory's observables
    (U, P over time instead of the constants under mirroring)."""
    independent = np.ndim(constants["T"]) == 3
    c = {}
    for k in _CONSTANTS:
        val = constants[k]
        if val is not None:
            val = np.asarray(val, dtype=float)
            if independent:
                val = val[:, None, ...]  # (R_, 1, ...) against (R_, n, ...)
        c[k] = val
    if U is not None:
        c.update(U=U, P=P)
    return types.SimpleNamespace(Q=Q, R=R, S=S, v=v, **c)
