"""The result of an ODE integration: times, order parameters, observables, parameters and status."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import LoadError
from .._observables import alignment_angles, generalisation_error, specialisation
from .._state import OrderParams
from ..rules._base import rule_from_params
from .io import check_order_params, file_path, load_npz, save_npz

__all__ = ["Trajectory", "DivergenceError", "STATUS"]

#: status codes, as in scipy's solve_ivp: 0 reached the last time, negative a failure.
STATUS = {0: "finished", 1: "interrupted", -1: "diverged", -2: "step size too small / solver failure"}


class DivergenceError(RuntimeError):
    """The integration diverged. ``.trajectory`` holds what was computed up to then."""

    def __init__(self, message: str, trajectory: Trajectory):
        super().__init__(message)
        self.trajectory = trajectory


@dataclasses.dataclass(frozen=True, eq=False)
class Trajectory:
    """Order parameters over time, as integrated by :func:`theory.integrate`.

    Time is in units of steps / D. Arrays are stacked along the first axis (one row per time):
    Q (n, K, K), R (n, K, M), S (n, K), v (n, K); the constants T, U, P, v_star and b are those
    of ``state0``, except under feedback mirroring (eta_F > 0), where f learns: then ``U_t`` (n, M)
    and ``P_t`` (n,) hold U and P over time, and ``U``, ``P`` return them. ``eg`` (n,) is the generalisation error
    and ``angles`` the named alignment
    angles in degrees (see :func:`theory.alignment_angles`). ``status`` is 0 when the last
    requested time was reached, 1 when interrupted, -1 on divergence, -2 on solver failure;
    ``message`` says why. ``params`` holds every parameter of the run.
    """

    t: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    S: np.ndarray
    v: np.ndarray
    state0: OrderParams
    params: dict[str, Any]
    status: int = 0
    message: str = "finished"
    nfev: int = 0
    U_t: np.ndarray | None = None
    P_t: np.ndarray | None = None

    # constants, for observables that read them like attributes of a state
    @property
    def T(self):
        return self.state0.T

    @property
    def mirrored(self) -> bool:
        """Whether f learned (feedback mirroring): U and P are then series over time."""
        return self.U_t is not None

    @property
    def U(self):
        """U_m = w*_m . f / D: (n, M) over time under mirroring, else the constant (M,) of state0."""
        return self.state0.U if self.U_t is None else self.U_t

    @property
    def P(self):
        """P = f . f / D: (n,) over time under mirroring, else the constant of state0."""
        return self.state0.P if self.P_t is None else self.P_t

    @property
    def v_star(self):
        return self.state0.v_star

    @property
    def b(self):
        return self.state0.b

    @property
    def K(self) -> int:
        return self.state0.K

    @property
    def M(self) -> int:
        return self.state0.M

    @property
    def samples_per_D(self) -> np.ndarray:
        """Samples seen divided by D at each time: t times the batch size (t = steps / D)."""
        return np.asarray(self.t) * int(self.params.get("batch", 1))

    @property
    def success(self) -> bool:
        return self.status == 0

    def __len__(self) -> int:
        return len(self.t)

    @functools.cached_property
    def eg(self) -> np.ndarray:
        """Generalisation error at each time."""
        return _read_only(generalisation_error(self, self.params.get("activation", "erf")))

    @functools.cached_property
    def angles(self) -> dict[str, np.ndarray]:
        """Alignment angles (degrees) at each time."""
        rule = rule_from_params(self.params)
        return {k: _read_only(a) for k, a in alignment_angles(self, rule, self.params.get("sigma_F", 1.0)).items()}

    @functools.cached_property
    def specialisation(self) -> np.ndarray:
        """R_kn / sqrt(Q_kk T_nn), shape (n, K, M)."""
        return _read_only(specialisation(self))

    @classmethod
    def from_flat(cls, t, y, state0: OrderParams, **meta) -> Trajectory:
        """The trajectory of flat states y (n, ...) = (Q, R, S, v[, U, P]) at times t (Q symmetrised;
        U, P as U_t, P_t when y holds them), with ``meta``: params, status, message, nfev."""
        from .._state import mirror_part, unpack

        Q, R, S, v = unpack(y, state0.K, state0.M)
        mir = mirror_part(y, state0.K, state0.M)
        return cls(t=t, Q=0.5 * (Q + np.swapaxes(Q, -1, -2)), R=R, S=S, v=v, state0=state0,
                   U_t=None if mir is None else mir[0].copy(), P_t=None if mir is None else mir[1].copy(), **meta)

    def state(self, i: int = -1) -> OrderParams:
        """The order parameters at the i-th recorded time."""
        mir = {} if self.U_t is None else dict(U=self.U_t[i], P=float(self.P_t[i]))
        return self.state0.replace(Q=self.Q[i], R=self.R[i], S=self.S[i], v=self.v[i], **mir)

    def __repr__(self) -> str:
        return (
            f"Trajectory(rule={self.params.get('rule_label', self.params.get('rule'))}, K={self.K}, M={self.M}, "
            f"t=[{self.t[0]:g}..{self.t[-1]:g}] ({len(self.t)} points), eg[-1]={self.eg[-1]:.4g}, "
            f"status={self.status} ({self.message!r}), nfev={self.nfev})"
        )

    def plot(self, what: str = "eg", **kw):
        """The learning curve eps_g(t) (``what="eg"``, :func:`theory.plots.learning_curves`) or the alignment
        angles (``"angles"``, :func:`theory.plots.angles`); keywords go to that function. Returns the Figure."""
        from ..plots import plot_result

        return plot_result(self, what, **kw)

    # ------------------------------------------------------------------ persistence
    def to_xarray(self):
        """An xarray Dataset: Q (t, k, l), R (t, k, m), S, v (t, k), eg (t), angles (t, angle), the
        constants T (m, n), U (m), P, v_star (m), b (k), and every parameter, the status and the
        provenance in its attributes (theory.results.labelled)."""
        from .labelled import order_parameter_vars, to_attrs, xarray

        xr = xarray()
        s0 = self.state0
        data = order_parameter_vars(("t",), self.Q, self.R, self.S, self.v, self.eg, self.angles)
        data.update(T=(("m", "n"), s0.T), U=(("m",), s0.U), P=((), s0.P), v_star=(("m",), s0.v_star))
        if self.mirrored:
            data.update(U_t=(("t", "m"), self.U_t), P_t=(("t",), self.P_t))
        data.update({f"state0_{k}": (dims, getattr(s0, k)) for k, dims in (("Q", ("k", "l")), ("R", ("k", "m")),
                                                                            ("S", ("k",)), ("v", ("k",)))})
        if s0.b is not None:
            data["b"] = (("k",), s0.b)
        coords = dict(t=self.t, k=np.arange(self.K), l=np.arange(self.K), m=np.arange(self.M), n=np.arange(self.M),
                      angle=list(self.angles))
        return xr.Dataset(data, coords=coords, attrs=to_attrs("Trajectory", params=self.params, status=self.status,
                                                              message=self.message, nfev=self.nfev))

    @classmethod
    def from_xarray(cls, ds) -> Trajectory:
        """The Trajectory a Dataset of :meth:`to_xarray` holds (LoadError when it holds something else)."""
        from .labelled import from_attrs

        meta = from_attrs(ds, "Trajectory")
        a = lambda name: np.asarray(ds[name].values)  # noqa: E731
        names = ("t", "Q", "R", "S", "v", "U_t", "P_t")
        check_order_params(
            "Trajectory.from_xarray", {k: a(k) for k in names if k in ds}, meta.get("params"), a("T").shape[0]
        )
        try:
            s0 = OrderParams(Q=a("state0_Q"), R=a("state0_R"), T=a("T"), v=a("state0_v"), v_star=a("v_star"),
                             S=a("state0_S"), U=a("U"), P=float(a("P")), b=a("b") if "b" in ds else None)
            traj = cls(t=a("t"), Q=a("Q"), R=a("R"), S=a("S"), v=a("v"), state0=s0, params=meta["params"],
                       status=int(meta["status"]), message=meta["message"], nfev=int(meta["nfev"]),
                       U_t=a("U_t") if "U_t" in ds else None, P_t=a("P_t") if "P_t" in ds else None)
        except (KeyError, ValueError, TypeError) as exc:
            raise LoadError(f"Trajectory.from_xarray: damaged ({type(exc).__name__}: {exc})") from None
        if "angles" in ds:
            traj.__dict__["angles"] = {str(n): _read_only(a("angles")[:, i]) for i, n in enumerate(ds["angle"].values)}
        return traj

    def save(self, path) -> Path:
        """Save to an .npz holding the arrays, the initial state and the parameters (as JSON), or,
        for a path ending in .nc, to netCDF through :meth:`to_xarray` (needs xarray)."""
        path = Path(path)
        if path.suffix == ".nc":
            from .labelled import write_netcdf

            return write_netcdf(self.to_xarray(), path)
        s0 = self.state0
        meta = dict(
            params=self.params, status=self.status, message=self.message, nfev=self.nfev, units={"t": "steps / D"}
        )
        arrays = dict(t=self.t, Q=self.Q, R=self.R, S=self.S, v=self.v, eg=self.eg)
        if self.mirrored:
            arrays.update(U_t=self.U_t, P_t=self.P_t)
        for k, val in s0.as_dict().items():
            if val is not None:
                arrays[f"state0_{k}"] = np.asarray(val)
        for k, val in self.angles.items():
            arrays[f"angle_{k}"] = val
        return save_npz(path, "Trajectory", meta, arrays)

    @classmethod
    def load(cls, path) -> Trajectory:
        """Read a saved trajectory (.npz, or .nc for netCDF); :class:`theory.LoadError` when the file is
        not one, or is damaged."""
        if file_path(path, "Trajectory.load").suffix == ".nc":
            from .labelled import read_netcdf

            return cls.from_xarray(read_netcdf(path, "Trajectory"))
        need = ("t", "Q", "R", "S", "v", "state0_Q", "state0_R", "state0_T", "state0_v", "state0_v_star", "state0_P")
        meta, z = load_npz(path, "Trajectory", need)
        what = f"Trajectory.load: {str(path)!r}"
        check_order_params(what, z, meta.get("params"), np.shape(z["state0_R"])[-1])
        try:
            s0 = {k[len("state0_"):]: z[k] for k in z if k.startswith("state0_")}
            s0["P"] = float(s0["P"])
            traj = cls(
                t=z["t"],
                Q=z["Q"],
                R=z["R"],
                S=z["S"],
                v=z["v"],
                state0=OrderParams(**s0),
                params=meta["params"],
                status=meta["status"],
                message=meta["message"],
                nfev=meta["nfev"],
                U_t=z["U_t"] if "U_t" in z else None,
                P_t=z["P_t"] if "P_t" in z else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LoadError(f"{what}: damaged ({type(exc).__name__}: {exc})") from None
        # the angles as computed when saved (the rule's class need not be registered here)
        traj.__dict__["angles"] = {k[len("angle_"):]: _read_only(z[k]) for k in z if k.startswith("angle_")}
        return traj


def _read_only(a):
    """Observables are computed once per trajectory (cached), so hand them out read-only."""
    a = np.asarray(a)
    a.setflags(write=False)
    return a
