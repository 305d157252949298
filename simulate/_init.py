"""Initial weights of a simulation, shared with the theory (THEORY.md sections 1, 2 and 6).

The draw is the one of :func:`theory.random_state`:

    teacher  w*_m ~ N(0, I_D),        v*_m = v_star (default 1)
    student  w_k  ~ N(0, w_std^2 I_D), v_k  ~ N(0, v_std^2)
    f ~ N(0, I_D) (top-down projection direction), b_k ~ N(0, 1) (FA feedback)

made in float64 by the same function as :func:`theory.random_state` (numpy's generator seeded with
``seed``; replica 0 is random_state's student) and only then cast and moved, so one (K, M, D, seed) is
one initial state in the ODEs, the simulations and the command line, and float32/float64 and CPU/CUDA
runs start from the same weights. The ODE starts from the
*measured* overlaps of these weights (float64), so that finite-D initial overlaps such as
S_k(0) ~ 1/sqrt D are part of the initial condition, not noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from theory import state_from_weights
from theory._internal import checks, draw_weights

__all__ = ["Initialisation", "Weights", "resolve_device"]


def resolve_device(device=None) -> torch.device:
    """None -> "cuda" when available, else "cpu"; strings and torch.device pass through."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: cannot interpret {device!r} as a torch device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    return dev


def _check_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, str):
        dtype = {
            "float32": torch.float32,
            "float64": torch.float64,
            "float": torch.float32,
            "double": torch.float64,
        }.get(dtype, dtype)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


@dataclasses.dataclass(frozen=True, eq=False)
class Weights:
    """The weights of R replicas of a student and of the teacher.

    W (R, K, D) first layers; W_star (M, D) teacher; v (R, K) second layers; v_star (M,) teacher
    second layer; f (D,) top-down projection direction (F = sigma_F f / sqrt D); b (K,) FA feedback.
    The teacher, f and b are shared by all replicas; with independent initialisation only the
    student (W, v) differs between replicas.
    """

    W: torch.Tensor
    W_star: torch.Tensor
    v: torch.Tensor
    v_star: torch.Tensor
    f: torch.Tensor
    b: torch.Tensor

    def __post_init__(self):
        if self.W.ndim != 3:
            raise ValueError(f"Weights: W must be (R, K, D), got shape {tuple(self.W.shape)}")
        R, K, D = self.W.shape
        M = self.W_star.shape[0]
        expected = dict(W_star=(M, D), v=(R, K), v_star=(M,), f=(D,), b=(K,))
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Weights: {name} must have shape {shape}, got {got}")

    @property
    def replicas(self) -> int:
        return self.W.shape[0]

    @property
    def shared(self) -> bool:
        """Whether every replica starts from the same student (W and v are views of one)."""
        return self.W.stride(0) == 0 and self.v.stride(0) == 0

    @property
    def K(self) -> int:
        return self.W.shape[1]

    @property
    def D(self) -> int:
        return self.W.shape[2]

    @property
    def M(self) -> int:
        return self.W_star.shape[0]

    def to(self, device=None, dtype=None) -> Weights:
        """The same weights cast to ``dtype`` and moved to ``device`` (a shared student stays one view)."""
        mv = lambda a: a.to(device=device, dtype=dtype).contiguous()  # noqa: E731
        if self.shared:
            W, v = mv(self.W[:1]).expand(self.W.shape), mv(self.v[:1]).expand(self.v.shape)
        else:
            W, v = mv(self.W), mv(self.v)
        return Weights(W=W, W_star=mv(self.W_star), v=v, v_star=mv(self.v_star), f=mv(self.f), b=mv(self.b))

    def order_params(self, r: int | None = None):
        """Measured :class:`theory.OrderParams` (float64) of replica r, or a list over replicas when r is None."""
        if r is None:
            return [self.order_params(i) for i in range(self.replicas)]
        as_np = lambda a: a.detach().to("cpu", torch.float64).numpy()  # noqa: E731
        return state_from_weights(
            as_np(self.W[r]), as_np(self.W_star), as_np(self.v[r]), as_np(self.v_star), as_np(self.f), as_np(self.b)
        )


@dataclasses.dataclass(frozen=True)
class Initialisation:
    """How to draw the initial weights of a K-unit student and an M-unit teacher at dimension D.

    ``weights(replicas)`` gives torch tensors; ``order_params(replicas)`` their measured overlaps.
    The same (K, M, D, seed, w_std, v_std, v_star) always gives the same weights.
    """

    K: int
    M: int
    D: int
    seed: int = 0
    w_std: float = 1.0
    v_std: float = 1.0
    v_star: float = 1.0

    def __post_init__(self):
        where = "Initialisation"
        for name in ("K", "M", "D"):
            object.__setattr__(self, name, checks.integer(name, getattr(self, name), where=where, min=1))
        object.__setattr__(self, "seed", checks.integer("seed", self.seed, where=where, min=0))
        for name in ("w_std", "v_std"):
            object.__setattr__(self, name, checks.number(name, getattr(self, name), where=where, min=0.0))
        vs = np.asarray(self.v_star, dtype=float)
        if vs.ndim > 1 or (vs.ndim == 1 and vs.shape != (self.M,)) or not np.all(np.isfinite(vs)):
            raise ValueError(
                f"Initialisation: v_star must be a finite scalar or a vector of length M={self.M}, got {self.v_star!r}"
            )
        if vs.ndim == 1:
            object.__setattr__(self, "v_star", tuple(float(x) for x in vs))
        else:
            object.__setattr__(self, "v_star", float(vs))

    def weights(self, replicas: int = 1, *, independent: bool = False, device=None, dtype=torch.float32) -> Weights:
        """Draw the weights (see the module docstring) for ``replicas`` students.

        independent=False: every replica starts from the same student; True: each gets its own.
        The draw is ``theory._internal.draw_weights`` (numpy, float64; replica 0 is the student of
        ``theory.random_state`` with the same K, M, D, seed), then cast and moved.
        Shared students are views of one (no copies).
        """
        replicas = checks.integer("replicas", replicas, where="Initialisation.weights", min=1)
        dev = resolve_device(device)
        dtype = _check_dtype(dtype)
        nW = replicas if independent else 1
        checks.memory(f"initial weights of {nW} students at D = {self.D}", 8.0 * (nW * self.K + self.M + 1) * self.D,
                      where="Initialisation.weights")
        w = {k: torch.from_numpy(a) for k, a in draw_weights(self.K, self.M, self.D, self.seed, self.w_std, self.v_std,
                                                              self.v_star, replicas=nW).items()}
        K, D = self.K, self.D
        W, v, W_star, f, b, v_star = w["W"], w["v"], w["W_star"], w["f"], w["b"], w["v_star"]
        mv = lambda a: a.to(device=dev, dtype=dtype).contiguous()  # noqa: E731
        W, v = mv(W), mv(v)
        if not independent:  # one student for all replicas: a view, not R copies (an engine copies what it updates)
            W = W.expand(replicas, K, D)
            v = v.expand(replicas, K)
        return Weights(W=W, W_star=mv(W_star), v=v, v_star=mv(v_star), f=mv(f), b=mv(b))

    def order_params(self, replicas: int = 1, independent: bool = False):
        """The measured float64 :class:`theory.OrderParams`: one (shared init) or a list per replica."""
        w = self.weights(replicas, independent=independent, device="cpu", dtype=torch.float64)
        return w.order_params() if independent else w.order_params(0)
