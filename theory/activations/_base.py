"""Activation functions g and their derivatives, for numpy arrays and torch tensors alike.

A learning rule is written once in terms of ``g`` and ``g'``; the same code then runs on numpy
arrays (numerical expectations) and on torch tensors (simulations). Dispatch is on the type of
the argument, so ``theory`` never has to import torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import scipy.special

__all__ = ["Activation", "activation", "ACTIVATIONS"]

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _is_torch(z) -> bool:
    return type(z).__module__.startswith("torch")


def _erf(z):
    if _is_torch(z):
        import torch

        return torch.special.erf(z)
    return scipy.special.erf(z)


def _exp(z):
    if _is_torch(z):
        return z.exp()
    return np.exp(z)


def _tanh(z):
    if _is_torch(z):
        return z.tanh()
    return np.tanh(z)


def _relu(z):
    if _is_torch(z):
        return z.clamp(min=0)
    return np.maximum(z, 0.0)


def _heaviside(z):
    if _is_torch(z):
        return (z > 0).to(z.dtype)
    return (np.asarray(z) > 0).astype(np.result_type(z, np.float64))


# --- closed-form I2(C11, C12, C22) = E[g(a) g(b)] where one exists -----------------------------


def _i2_erf(c11, c12, c22):
    return (2.0 / np.pi) * np.arcsin(c12 / np.sqrt((1.0 + c11) * (1.0 + c22)))


def _i2_linear(c11, c12, c22):
    return np.asarray(c12, dtype=float) + 0.0 * (c11 + c22)


def _i2_relu(c11, c12, c22):
    # Arc-cosine kernel of order one (Cho & Saul 2009).
    norm = np.sqrt(c11 * c22)
    cos = np.clip(np.divide(c12, norm, out=np.zeros(np.broadcast(c11, c12, c22).shape), where=norm > 0), -1.0, 1.0)
    theta = np.arccos(cos)
    return norm / (2.0 * np.pi) * (np.sin(theta) + (np.pi - theta) * cos)


@dataclasses.dataclass(frozen=True)
class Activation:
    """An activation g with its derivative g'.

    ``g`` and ``dg`` accept numpy arrays or torch tensors and return the same kind.
    ``i2`` is the closed form of I2 = E[g(a) g(b)] over a centred Gaussian with covariance
    [[C11, C12], [C12, C22]] when one is known, else None (numerical quadrature then applies).
    ``closed_forms`` says whether the committee-machine integrals I2, J2, I3, I4 have closed forms
    (erf: Saad & Solla; relu: arc-cosine kernels and orthant probabilities, theory.activations.relu; linear:
    polynomial). ``piecewise_linear``: g is piecewise linear (the kink-aware quadrature applies).
    """

    name: str
    g: Callable
    dg: Callable
    i2: Callable | None = None
    closed_forms: bool = False
    piecewise_linear: bool = False
    code: int | None = None
    integrals_module: str | None = None

    @property
    def integrals(self):
        """The namespace of this activation's closed-form integrals (I2_matrix, J2_matrix, I3_tensor, I4_tensor,
        dgg_tensor, dg_mean; numpy, vectorised), named by ``integrals_module`` ("module" or "module:attribute")."""
        if self.integrals_module is None:
            raise ValueError(f"closed forms: no closed-form integrals for activation {self.name!r}; expected one of "
                             f"{sorted(n for n, a in ACTIVATIONS.items() if a.integrals_module)}")
        import importlib

        mod, _, attr = self.integrals_module.partition(":")
        ns = importlib.import_module(mod)
        return getattr(ns, attr) if attr else ns

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"

    def __reduce__(self):
        # registered activations travel by name (their g, dg are lambdas): sweeps send them to worker processes
        if ACTIVATIONS.get(self.name) is self:
            return activation, (self.name,)
        return object.__reduce__(self)


#: The activations known by name (g="erf", "relu", "tanh", "linear"): g, g' and the closed forms each has.
ACTIVATIONS: dict[str, Activation] = {
    "erf": Activation(
        "erf",
        g=lambda z: _erf(z / _SQRT2),
        dg=lambda z: _SQRT_2_OVER_PI * _exp(-0.5 * z * z),
        i2=_i2_erf,
        closed_forms=True,
        code=0,
        integrals_module="theory.activations.erf",
    ),
    "linear": Activation("linear", g=lambda z: z, dg=lambda z: 1.0 + 0.0 * z, i2=_i2_linear, closed_forms=True,
                         piecewise_linear=True, code=3, integrals_module="theory.activations.linear"),
    "relu": Activation("relu", g=_relu, dg=_heaviside, i2=_i2_relu, closed_forms=True, piecewise_linear=True, code=2,
                       integrals_module="theory.activations.relu"),
    "tanh": Activation("tanh", g=_tanh, dg=lambda z: 1.0 - _tanh(z) ** 2, code=1),
}


def activation(g: str | Activation) -> Activation:
    """Look up an activation by name ("erf", "relu", "tanh", "linear"), or pass one through."""
    if isinstance(g, Activation):
        return g
    try:
        return ACTIVATIONS[g]
    except (KeyError, TypeError):
        raise ValueError(
            f"activation: unknown activation {g!r}; expected one of {sorted(ACTIVATIONS)}"
        ) from None
