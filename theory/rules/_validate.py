"""What a rule's update returns, checked in one place (THEORY.md section 3).

:meth:`theory.Rule.local_update` hands every (delta, alpha, e_out, h, e) it returns through
:func:`update_fields`, so that every view (numerical expectations, compiled tracing, both
simulation engines) sees the same arrays, of exactly these shapes:

    delta (..., K), h (..., K), alpha (...), e_out (...), e (...)

where ``...`` are the sample dimensions: those of the derived error e = sum_k v_k g(lambda_k) - y
(the broadcast of the fields lambda, nu, zeta and of the state v, v_star), together with those of
S and b when the rule reads them. A field may broadcast to its shape (a scalar alpha, a delta
that does not depend on the sample: (K,)), but a per-unit field must carry the K axis last: a
Python float or a (...,)-shaped delta, a (..., K, 1) array, None for delta, strings or complex
numbers are refused with an error naming the rule, the field, the expected and the actual shape.
Integer and boolean values are cast to the floating type of the fields.

Three kinds of arrays are accepted, following the fields: numpy (cast to float64), torch (cast
to the fields' dtype and device), and the symbolic tracer's object arrays of sympy expressions
(theory._codegen.rule.trace; only the shapes and the absence of strings are checked there).

Cost: a handful of shape comparisons and broadcasting views per call, no pass over the values
(local_update is on hot paths: ~30k quadrature nodes a call, every step of a simulation).
Finiteness is not checked here: a non-finite update shows as a non-finite right-hand side or
state, which the ODE driver and the simulations report as a divergence (theory.solver.divergence).
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["FIELDS", "update_fields", "sample_shape"]

#: the fields of a LocalUpdate and whether each carries the K axis (per unit) last
FIELDS = (("delta", True), ("alpha", False), ("e_out", False), ("h", True), ("e", False))


def _kind(like) -> str:
    """"torch", "symbolic" (object arrays of sympy expressions) or "numpy", after the fields ``like``."""
    if type(like).__module__.startswith("torch"):
        return "torch"
    if isinstance(like, np.ndarray) and like.dtype == object:
        return "symbolic"
    return "numpy"


def sample_shape(e, *others) -> tuple:
    """The sample dimensions ``...``: the shape of e broadcast with the leading shapes (all but the
    last axis) of ``others`` (S, b when read; None entries are skipped)."""
    shape = tuple(np.shape(e))
    others = [tuple(np.shape(a))[:-1] for a in others if a is not None]
    return tuple(np.broadcast_shapes(shape, *others)) if others else shape


def _describe(a) -> str:
    if a is None:
        return "None"
    if isinstance(a, (numbers.Number, str, bytes)):
        return f"a Python {type(a).__name__} (shape ())"
    shape = getattr(a, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else f"a {type(a).__name__} of shape {np.shape(a)}"


def _fits(shape: tuple, target: tuple) -> bool:
    """Whether ``shape`` broadcasts to ``target`` (numpy's rules, target unchanged)."""
    if len(shape) > len(target):
        return False
    return all(s == 1 or s == t for s, t in zip(reversed(shape), reversed(target)))


def _as_array(name, field, a, kind, like):
    """``a`` as an array of the fields' kind, numeric (TypeError naming the field otherwise)."""
    bad = lambda what: TypeError(f"rule {name!r}: update returned {field} of {what}; expected real numbers")  # noqa: E731
    if kind == "torch":
        import torch

        if not torch.is_tensor(a):
            arr = np.asarray(a)
            if arr.dtype.kind not in "biuf":
                raise bad(f"dtype {arr.dtype}" if arr.dtype.kind != "O" else f"type {type(a).__name__}")
            a = torch.as_tensor(arr, device=like.device)
        if a.is_complex():
            raise bad(f"dtype {a.dtype}")
        if a.dtype != like.dtype:
            a = a.to(like.dtype)
        return a
    if kind == "symbolic":
        arr = np.asarray(a, dtype=object)
        for el in arr.flat:
            if isinstance(el, (str, bytes, complex)):
                raise bad(f"type {type(el).__name__} ({el!r})")
        return arr
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise bad(f"dtype {arr.dtype}")
    return arr if arr.dtype == np.float64 else arr.astype(np.float64)


def _broadcast(a, target, kind):
    if kind == "torch":
        return a if tuple(a.shape) == target else a.expand(target)
    return a if a.shape == target else np.broadcast_to(a, target)


def update_fields(name: str, values: dict, lead: tuple, K: int, like) -> tuple:
    """(delta, alpha, e_out, h, e) of ``values`` (by field name), each checked and broadcast to its
    exact shape (module docstring): lead + (K,) or lead. ``like`` is lambda (fixes the array kind,
    dtype and device); ``name`` the rule's, for the messages."""
    kind = _kind(like)
    lead = tuple(lead)
    # the common case, an array of the right kind, dtype and shape, costs one comparison per field
    ready = None if kind == "symbolic" else (type(like), like.dtype if kind == "torch" else np.dtype(np.float64))
    out = []
    for field, per_unit in FIELDS:
        a = values[field]
        target = lead + (K,) if per_unit else lead
        if ready is not None and type(a) is ready[0] and a.dtype == ready[1] and tuple(a.shape) == target:
            out.append(a)
            continue
        want = f"(..., K) = {target}" if per_unit else f"(...) = {target}"
        if a is None:
            raise ValueError(f"rule {name!r}: update returned {field} = None; expected an array of shape {want}")
        arr = _as_array(name, field, a, kind, like)
        shape = tuple(arr.shape)
        if per_unit and (not shape or shape[-1] != K):
            hint = " (a per-sample value needs [..., None] and a factor per unit)" if _fits(shape, lead) else ""
            raise ValueError(f"rule {name!r}: update returned {field} as {_describe(a)}; expected {want}: its last "
                             f"axis must be the K = {K} units{hint}")
        if not _fits(shape, target):
            raise ValueError(f"rule {name!r}: update returned {field} as {_describe(a)}; expected {want}, the sample "
                             "dimensions of the fields" + (" and then the K units" if per_unit else ""))
        out.append(_broadcast(arr, target, kind))
    return tuple(out)
