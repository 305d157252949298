"""The parameter vector ``p`` of the compiled right-hand sides, declared once.

Every compiled kernel (theory._codegen.closed, theory._codegen.quadrature and the modules generated per rule
by theory._codegen.rule) reads its hyper-parameters from one flat float64 vector ``p``:

    p = [header (HEADER entries, the fields of FIELDS in order), T (M*M, row by row), U (M), v_star (M), b (K)
         (, the node block of a numerical right-hand side: N, d, nodes (N, d), weights (N))]

:data:`FIELDS` is the only declaration of the header. :data:`PARAM` (a named tuple of offsets, which numba
reads as compile-time constants: ``p[PARAM.sigma_F]``) and :func:`header` (packing) are generated from it,
so a new hyper-parameter is one line here, one value where :func:`theory._codegen.rule.ode_params` fills it in,
and the kernels that read it.

A rate (eta, eta_v, eta_F) takes four entries, the piece (kind, a, b, c) of theory._schedules.Piece.
"""

from __future__ import annotations

import collections

import numpy as np

__all__ = ["FIELDS", "PARAM", "HEADER", "header", "constants"]

#: (name, length, meaning) of each header entry of p, in order
FIELDS = (
    ("K", 1, "student hidden units"),
    ("M", 1, "teacher hidden units"),
    ("eta", 4, "first-layer learning rate: its schedule piece (kind, a, b, c)"),
    ("eta_v", 4, "second-layer learning rate: its schedule piece"),
    ("sigma", 1, "output noise"),
    ("sigma_F", 1, "top-down projection scale"),
    ("kappa", 1, "weight decay"),
    ("modulated", 1, "1 when the presynaptic input is xt = x - F e"),
    ("train_v", 1, "1 when the second layer learns"),
    ("gk", 1, "the activation's compiled code (theory.activations._base.Activation.code), -1 for none"),
    ("P", 1, "f . f / D (a constant unless mirroring)"),
    ("batch", 1, "mini-batch size B"),
    ("eta_F", 4, "mirroring rate of f: its schedule piece"),
    ("kappa_F", 1, "mirroring decay"),
    ("mirror", 1, "1 when the state holds U and P (feedback mirroring)"),
    ("mirror_norm", 1, "1 when |f| is held fixed under mirroring"),
)

_offsets = {}
_o = 0
for _name, _len, _ in FIELDS:
    _offsets[_name] = _o
    _o += _len

#: offsets of the header fields in p (``p[PARAM.sigma_F]``; a rate's piece is p[PARAM.eta : PARAM.eta + 4])
PARAM = collections.namedtuple("Param", list(_offsets))(**_offsets)
#: the header's length; the constants (T, U, v_star, b) follow it
HEADER = _o
_LENGTH = {name: n for name, n, _ in FIELDS}
del _o, _name, _len


def header(**values) -> np.ndarray:
    """The header of p from a value for every field of :data:`FIELDS` (a number, or a sequence of the field's
    length); a missing, unknown or wrongly sized field is an error that names it."""
    missing = [name for name in _LENGTH if name not in values]
    unknown = sorted(set(values) - set(_LENGTH))
    if missing or unknown:
        raise ValueError(f"parameter layout: missing fields {missing}, unknown fields {unknown}")
    out = np.empty(HEADER)
    for name, n in _LENGTH.items():
        val = np.atleast_1d(np.asarray(values[name], dtype=float))
        if val.shape != (n,):
            raise ValueError(f"parameter layout: field {name!r} takes {n} value(s), got shape {val.shape}")
        off = getattr(PARAM, name)
        out[off : off + n] = val
    return out


def constants(K: int, M: int) -> dict[str, slice]:
    """Where the constants T, U, v_star, b sit in p (slices), after the header."""
    o = HEADER
    return dict(
        T=slice(o, o + M * M),
        U=slice(o + M * M, o + M * M + M),
        v_star=slice(o + M * M + M, o + M * M + 2 * M),
        b=slice(o + M * M + 2 * M, o + M * M + 2 * M + K),
    )
