"""Compiled views of a rule, generated from its one definition (:meth:`theory.Rule.update`).

A rule is written once, in array style, for numpy and torch. Its compiled views are *generated*
from that definition: :func:`compiled_rule` runs the rule's ``update`` (and ``feedback``) on sympy
symbols (the symbolic array namespace below stands in for numpy), turns the resulting expressions
for delta, alpha, e_out, h and e into straight-line code (common subexpressions eliminated, as ast),
splices it into the templates of :mod:`theory._codegen.template` (real, linted functions whose
placeholders the generated module binds to the rule's own; the numerical kernels of
:mod:`theory._codegen.quadrature` are templates too), writes the module to the cache folder and
compiles it with numba (``cache=True``, so a later process loads the machine code from disk).
Nothing here knows any rule; the tests hold every generated function against ``Rule.local_update``
for every registered rule and variant.

The cache (:func:`cache_dir`) is keyed by :func:`_rule_key`: the sources of the rule's classes and of
the modules they use (a helper imported from another file included, this package's among them), the
package sources that generation reads or the generated code calls (:func:`generation_sources`), the
package's version, the rule's options, K and M. It is kept under ``$PEPITA_DYNAMICS_CACHE_MAX``
bytes (:func:`cache_max`, default 200M): writing a new module removes the least recently used ones
with numba's files beside them (:func:`prune_cache`), never one this process has loaded.

The generic compiled kernels (the reduced sampler's chain, the ODE integrators) are compiled once,
whatever the rule, and receive the rule's functions as first-class function values with the fixed
signatures below (the numerical expectations are templates instead, compiled in each rule's module):

``update(lam, nu, zeta, v, v_star, S, b, n, sv, sigma, sigma_F, gk, delta, h, out)``
    for samples t < n: fields lam[k, t], nu[m, t], zeta[t]; state v[k, s], v_star[m, s], S[k, s],
    b[k, s] with s = t * sv (sv = 1: one state per sample, 0: one state for all); writes
    delta[k, t], h[k, t] and out[:, t] = (alpha, e_out, e). gk is the activation's code.
``closed_rhs(t, y, p, dy)`` (rules of the closed-form family, derived: theory.rules._facts)
    the closed-form ODE right-hand side at time t and flat state y (see :func:`ode_params` for p);
    ``closed_rhs_rows(t, Y, Pm, dY)`` applies it to every row (a batch of points, each with its own
    time and parameters; a direct call, since passing a function from Python costs ~50 us a call).

A rule whose update cannot be traced (it calls torch or numpy functions directly, branches on
the values of the fields, ...) has no compiled view: :func:`compiled_rule` says why, and every
entry point uses the generic numpy/torch path instead, which is correct for any rule.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import math
import os
import re
import stat
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

from .._diskcache import _PACKAGES, _ROOT, cache_dir, dependencies, stamp
from ..ode.layout import HEADER, PARAM, header
from .special import erf as _erf

try:
    import numba
    from numba import types as nbt
    from numba.core.dispatcher import Dispatcher as _Dispatcher

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency, but stay importable without it
    numba = None
    HAVE_NUMBA = False

__all__ = ["compiled_rule", "CompiledRule", "ACTIVATION_CODES", "activation_code", "symbolic_namespace",
           "ode_params", "numerical_params", "ODE_HEADER", "cache_dir", "cache_max", "prune_cache", "HAVE_NUMBA"]

def _activation_codes() -> dict[str, int]:
    from ..activations._base import ACTIVATIONS

    return {name: act.code for name, act in ACTIVATIONS.items() if act.code is not None}


#: Activations with compiled scalar forms, by code (Activation.code; g_scalar / dg_scalar below).
ACTIVATION_CODES = _activation_codes()

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def activation_code(g) -> int | None:
    """The compiled code of an activation (None when it has no compiled form)."""
    from ..activations._base import activation

    return activation(g).code


def _jit(*args, **kw):
    def deco(fn):
        return numba.njit(*args, cache=True, **kw)(fn) if HAVE_NUMBA else fn

    return deco


@_jit(inline="always")
def g_scalar(z, gk):
    """g(z): 0 erf(z / sqrt 2), 1 tanh, 2 relu, 3 linear (theory.activations._base)."""
    if gk == 0:
        return math.erf(z * _INV_SQRT2)
    if gk == 1:
        return math.tanh(z)
    if gk == 2:
        return z if z > 0.0 else 0.0
    return z


@_jit(inline="always")
def dg_erf(z, gk):
    """:func:`dg_scalar` for gk == 0 alone (see :func:`g_erf`)."""
    return _SQRT_2_OVER_PI * math.exp(-0.5 * z * z)


@_jit(inline="always")
def dg_scalar(z, gk):
    """g'(z) for the codes of :func:`g_scalar` (relu: Heaviside with g'(0) = 0, as theory)."""
    if gk == 0:
        return dg_erf(z, gk)
    if gk == 1:
        t = math.tanh(z)
        return 1.0 - t * t
    if gk == 2:
        return 1.0 if z > 0.0 else 0.0
    return 1.0


@_jit(inline="always")
def g_erf(z, gk):
    """:func:`g_scalar` for gk == 0 alone, with :func:`theory._codegen.special.erf` (2.6 ulp, a quarter of libm's
    cost, and vectorisable): for a loop that knows its activation is erf (the update template's quadrature case).
    Only there: in a loop that branches on gk it would not vectorise, and would add to every rule's compile."""
    return _erf(z * _INV_SQRT2)


if HAVE_NUMBA:
    _A2 = nbt.float64[:, ::1]
    _A1 = nbt.float64[::1]
    #: see the module docstring
    UPDATE_SIG = nbt.void(_A2, _A2, _A1, _A2, _A2, _A2, _A2, nbt.int64, nbt.int64, nbt.float64, nbt.float64, nbt.int64,
                          _A2, _A2, _A2)
    COEF_SIG = nbt.void(nbt.float64[:], nbt.float64[:], nbt.float64[:], nbt.float64, nbt.float64[::1])
    RHS_SIG = nbt.void(nbt.float64, _A1, _A1, _A1)
    ROWS_SIG = nbt.void(_A1, _A2, _A2, _A2)
    UPDATE_TYPE = nbt.FunctionType(UPDATE_SIG)
    RHS_TYPE = nbt.FunctionType(RHS_SIG)
else:  # pragma: no cover
    UPDATE_SIG = COEF_SIG = RHS_SIG = ROWS_SIG = UPDATE_TYPE = RHS_TYPE = None


def function_pointer(fn, sig=None):
    """A compiled function as a first-class function argument whose address is looked up once.

    Passing a numba dispatcher to a compiled function that takes a function makes numba look up its
    machine-code address in LLVM on every call (about 0.2 ms); this wrapper (numba's wrapper address
    protocol) keeps the address, so a compiled driver can be called often at no cost.
    """
    from numba.core.types.function_type import WrapperAddressProtocol
    from numba.experimental.function_type import _get_wrapper_address

    sig = RHS_SIG if sig is None else sig

    class _Pointer(WrapperAddressProtocol):
        def __init__(self):
            self.fn, self.addr = fn, _get_wrapper_address(fn, sig)  # keeps fn (and its code) alive

        def __wrapper_address__(self):
            return self.addr

        def signature(self):
            return sig

    return _Pointer()


# ====================================================================== parameters of the compiled ODE
#: the header's length and the offsets of its fields are declared once, in theory.ode.layout
ODE_HEADER = HEADER
P_SIGMA_F = PARAM.sigma_F


def _piece(r) -> tuple:
    """(kind, a, b, c) of a rate: a number, a smooth piece, or a schedule without breakpoints (a power law)."""
    if isinstance(r, float):
        return 0.0, r, 0.0, 0.0
    return (r if hasattr(r, "encode") else r.piece(0.0, 0.0)).encode()


def _with_constants(head, K, T, U, v_star, b) -> np.ndarray:
    b = np.zeros(K) if b is None else b
    return np.concatenate([head, np.ravel(T), np.ravel(U), np.ravel(v_star), np.ravel(b)])


def ode_params(K, M, T, U, P, v_star, b, hyper, modulated: bool, mirror: bool = False) -> np.ndarray:
    """The flat parameter vector p of a compiled right-hand side ``rhs(t, y, p, dy)`` (one point; layout:
    theory.ode.layout); ``hyper`` restricted to an interval without schedule breakpoints (HyperParams.on);
    ``mirror``: the state holds U and P (feedback mirroring)."""
    gk = activation_code(hyper.g)
    head = header(K=K, M=M, eta=_piece(hyper.eta), eta_v=_piece(hyper.eta_v), sigma=hyper.sigma, sigma_F=hyper.sigma_F,
                  kappa=hyper.weight_decay, modulated=float(modulated), train_v=float(hyper.train_second_layer),
                  gk=-1 if gk is None else gk, P=P, batch=hyper.batch, eta_F=_piece(hyper.eta_F), kappa_F=hyper.kappa_F,
                  mirror=float(mirror), mirror_norm=float(hyper.mirror_norm))
    return _with_constants(head, K, T, U, v_star, b)


def terms_params(K, M, T, U, P, v_star, b, sigma, sigma_F, gk) -> np.ndarray:
    """The parameters the expectation kernels read (theory._codegen.quadrature.numerical_terms): ode_params' layout
    with the learning rates and the flags left 0."""
    zero = (0.0,) * 4
    head = header(K=K, M=M, eta=zero, eta_v=zero, sigma=sigma, sigma_F=sigma_F, kappa=0.0, modulated=0.0, train_v=0.0,
                  gk=gk, P=P, batch=1.0, eta_F=zero, kappa_F=0.0, mirror=0.0, mirror_norm=0.0)
    return _with_constants(head, K, T, U, v_star, b)


def numerical_params(base: np.ndarray, nodes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """p of the compiled numerical right-hand side (theory._codegen.quadrature): ``base`` (:func:`ode_params`)
    followed by the node block [N, d, nodes (N, d) row by row, weights (N,)]."""
    nodes = np.asarray(nodes, dtype=float)
    return np.concatenate([base, [len(weights), nodes.shape[1]], nodes.ravel(), np.asarray(weights, float)])


# ====================================================================== the symbolic stand-in for numpy
@functools.lru_cache(maxsize=1)
def symbolic_namespace():
    """An array namespace over sympy object arrays: the functions a rule may call through ``x.xp``."""
    import sympy as sp

    def ufunc(fn, nin=1):
        return np.frompyfunc(fn, nin, 1)

    def heaviside(z, *_):
        return sp.Piecewise((1, z > 0), (0, True))

    ns = dict(
        sign=ufunc(sp.sign), exp=ufunc(sp.exp), log=ufunc(sp.log), sqrt=ufunc(sp.sqrt), tanh=ufunc(sp.tanh),
        abs=ufunc(sp.Abs), erf=ufunc(sp.erf), cos=ufunc(sp.cos), sin=ufunc(sp.sin),
        maximum=ufunc(lambda a, b: sp.Max(a, b), 2), minimum=ufunc(lambda a, b: sp.Min(a, b), 2),
        where=ufunc(lambda c, a, b: sp.Piecewise((a, c), (b, True)), 3), heaviside=ufunc(heaviside, 2),
        clip=ufunc(lambda a, lo, hi: sp.Min(sp.Max(a, lo), hi), 3),
        zeros_like=lambda a: np.zeros_like(a, dtype=object) * 0, ones_like=lambda a: np.ones_like(a, dtype=object),
        pi=sp.pi,
    )
    ns["absolute"] = ns["abs"]
    return type("SymbolicNamespace", (), {k: staticmethod(v) if callable(v) else v for k, v in ns.items()})()


@functools.lru_cache(maxsize=1)
def _symbolic_activation():
    import sympy as sp

    from ..activations._base import Activation

    G, DG = sp.Function("g"), sp.Function("dg")
    return Activation("symbolic", g=np.frompyfunc(G, 1, 1), dg=np.frompyfunc(DG, 1, 1))


def _symbols(prefix, n):
    import sympy as sp

    return np.array([sp.Symbol(f"{prefix}_{i}", real=True) for i in range(n)], dtype=object)


def trace(rule, K: int, M: int):
    """Run the rule's update and feedback on symbols: ({"delta": [...], "alpha": e, ...}, feedback or None)."""
    import sympy as sp

    from ..rules._base import Sample

    lam, nu, zeta = (
        _symbols("lam", K)[None],
        _symbols("nu", M)[None],
        np.array([sp.Symbol("zeta_t", real=True)], dtype=object),
    )
    v, vs, S, b = _symbols("v", K), _symbols("v_star", M), _symbols("S", K), _symbols("b", K)
    sigma, sigma_F = sp.Symbol("sigma", real=True), sp.Symbol("sigma_F", real=True)
    reads = dict(S=S if "S" in rule.reads else None, b=b if "b" in rule.reads else None)
    up = rule.local_update(
        lam, nu, zeta, v=v, v_star=vs, sigma=sigma, sigma_F=sigma_F, g=_symbolic_activation(), **reads
    )

    def exprs(a, n):
        arr = np.broadcast_to(np.asarray(a, dtype=object), (1, n) if n else (1,)).ravel()
        return [sp.sympify(x) for x in arr]

    out = dict(delta=exprs(up.delta, K), h=exprs(up.h, K), alpha=exprs(up.alpha, 0)[0], e_out=exprs(up.e_out, 0)[0],
               e=exprs(up.e, 0)[0])
    x = Sample(rule, None, None, None, v=v, v_star=vs, sigma_F=sigma_F, **reads)
    fb = rule.feedback(x)
    feedback = None if fb is None else [sp.sympify(c) for c in np.broadcast_to(np.asarray(fb, dtype=object), (K,))]
    return out, feedback


# ====================================================================== code generation
def _printer():
    from sympy.printing.pycode import PythonCodePrinter

    class Printer(PythonCodePrinter):
        def _print_Function(self, expr):
            name = expr.func.__name__
            if name in ("g", "dg"):
                return f"{name}_scalar({self._print(expr.args[0])}, gk)"  # theory._codegen.template
            return super()._print_Function(expr)

        def _print_Max(self, expr):
            return "max(" + ", ".join(self._print(a) for a in expr.args) + ")"

        def _print_Min(self, expr):
            return "min(" + ", ".join(self._print(a) for a in expr.args) + ")"

        def _print_Symbol(self, expr):
            return expr.name

        def _print_Float(self, expr):
            return repr(float(expr))

    return Printer(dict(fully_qualified_modules=True, standard="python3"))


def _expr(text: str) -> ast.expr:
    """The ast of one expression printed by sympy's Python printer (:func:`_printer`)."""
    return ast.parse(text, mode="eval").body


def _name(name: str, store: bool = False) -> ast.Name:
    return ast.Name(id=name, ctx=ast.Store() if store else ast.Load())


def _item(array: str, *index, store: bool = False) -> ast.Subscript:
    """``array[i, j]`` (ints and names) as ast."""
    idx = [ast.Constant(i) if isinstance(i, int) else _name(i) for i in index]
    return ast.Subscript(value=_name(array), slice=idx[0] if len(idx) == 1 else ast.Tuple(elts=idx, ctx=ast.Load()),
                         ctx=ast.Store() if store else ast.Load())


def _assign(target, value) -> ast.Assign:
    return ast.Assign(targets=[target], value=value)


def _body(assignments):
    """Straight-line code (ast statements) for [(target ast, expr)], with common subexpressions eliminated,
    and the symbols it reads."""
    import sympy as sp

    exprs = [e for _, e in assignments]
    reps, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("_c"), optimizations=None)
    pr = _printer()
    code = [_assign(_name(s.name, store=True), _expr(pr.doprint(e))) for s, e in reps]
    code += [_assign(target, _expr(pr.doprint(e))) for (target, _), e in zip(assignments, reduced)]
    return code, set().union(*(e.free_symbols for e in exprs)) if exprs else set()


def _loads(used, K, M):
    """The loads of the symbols ``used`` inside a template's sample loop (theory._codegen.template.update:
    sample t, state s = t * sv)."""
    names = {s.name for s in used}
    lines = []
    for k in range(K):
        if f"lam_{k}" in names:
            lines.append(_assign(_name(f"lam_{k}", True), _item("lam", k, "t")))
        for arr in ("v", "S", "b"):
            if f"{arr}_{k}" in names:
                lines.append(_assign(_name(f"{arr}_{k}", True), _item(arr, k, "s")))
    for m in range(M):
        if f"nu_{m}" in names:
            lines.append(_assign(_name(f"nu_{m}", True), _item("nu", m, "t")))
        if f"v_star_{m}" in names:
            lines.append(_assign(_name(f"v_star_{m}", True), _item("v_star", m, "s")))
    if "zeta_t" in names:
        lines.append(_assign(_name("zeta_t", True), _item("zeta", "t")))
    if any(isinstance(line.value.slice, ast.Tuple) and line.value.slice.elts[1].id == "s" for line in lines):
        lines.insert(0, _assign(_name("s", True), ast.BinOp(left=_name("t"), op=ast.Mult(), right=_name("sv"))))
    return lines


def _sample_code(assignments, K, M):
    code, used = _body(assignments)
    return _loads(used, K, M) + code


def _source(rule, K, M, traced, feedback) -> str:
    """The generated module of ``rule`` at (K, M): the templates of theory._codegen.template and
    theory._codegen.quadrature, specialised to the traced update (see there for the mechanism)."""
    from . import quadrature, template

    targets = [(_item("delta", k, "t", store=True), traced["delta"][k]) for k in range(K)]
    targets += [(_item("h", k, "t", store=True), traced["h"][k]) for k in range(K)]
    targets += [(_item("out", j, "t", store=True), traced[key]) for j, key in enumerate(("alpha", "e_out", "e"))]
    found = _kink_args(traced)
    kink_code = _sample_code([(_item("out", j, "t", store=True), a) for j, (_, a) in enumerate(found)], K, M)
    parts = [(template.update, _sample_code(targets, K, M)), (template.kinks, kink_code)]
    if feedback is not None:
        code, used = _body([(_item("c", k, store=True), feedback[k]) for k in range(K)])
        loads = [_assign(_name(s.name, True), _item(s.name.rsplit("_", 1)[0], int(s.name.rsplit("_", 1)[1])))
                 for s in sorted(used, key=lambda s: s.name) if s.name != "sigma_F"]
        parts.append((template.coefficient, loads + code))
        from ..rules._facts import derive

        closed = derive(rule, K, M, traced, feedback).closed_form  # derived from the update (theory.rules._facts)
        if closed:
            parts += [(template.closed_rhs, None), (template.closed_rhs_rows, None)]
    else:
        closed = False
    parts += [(fn, None) for fn in (quadrature.numerical_terms, quadrature.numerical_terms_kinks,
                                    quadrature.numerical_rhs, quadrature.numerical_rhs_kinks)]
    comments = [f"Generated by theory._codegen.rule from {type(rule).__module__}.{type(rule).__qualname__}",
                f"rule {rule.label!r}, K={K}, M={M}; kernels {_kernel_version()}. Do not edit: regenerated on change."]
    return template.module_source(parts, {"K": K, "M": M, "KINK_DEPTH": tuple(dep for dep, _ in found),
                                          "ERF_LOOP": not closed}, comments)


def _kink_args(traced):
    """The distinct arguments of g and g' in the rule's traced update, with their depth (the nesting of g
    inside them: 0 for a field, 1 for pepita's lambda - sigma_F S e, ...), in order of depth."""
    import sympy as sp

    def calls(e):
        return [a for a in sp.sympify(e).atoms(sp.Function) if a.func.__name__ in ("g", "dg")]

    def depth(arg):
        inner = calls(arg)
        return 0 if not inner else 1 + max(depth(c.args[0]) for c in inner)

    args = {}
    for key in ("delta", "h", "alpha", "e_out", "e"):
        for e in (traced[key] if isinstance(traced[key], list) else [traced[key]]):
            for c in calls(e):
                args.setdefault(sp.srepr(c.args[0]), c.args[0])
    found = sorted(((depth(a), sp.srepr(a), a) for a in args.values()), key=lambda x: (x[0], x[1]))
    return [(dep, a) for dep, _, a in found]


@functools.lru_cache(maxsize=8)
def generation_sources(root: Path | None = None) -> frozenset[Path]:
    """The package sources a generated rule module depends on: this module (tracing, assembly), the modules of
    the rule and activation registries, and every package module they import, inside functions too
    (:func:`theory._diskcache.dependencies`): the templates and kernels the module is spliced from and calls
    (closed forms, quadrature, relu's integrals), the layout and the derived facts that shape it. ``root``: the
    folder holding the package (default: this copy's). tests/theory/codegen/test_diskcache.py holds every
    package file that generation runs, and every one the generated modules' compiled code reaches, to this set.
    Computed once per process (parsing the 23 files takes ~0.1 s; the key and :func:`_is_library` share it)."""
    root = _ROOT if root is None else Path(root)
    seeds = [root / "theory" / "_codegen" / "rule.py"]
    for registry in ("rules", "activations"):
        seeds += sorted((root / "theory" / registry).glob("*.py"))
    return frozenset(dependencies(seeds, root, everywhere=True))


@functools.lru_cache(maxsize=1)
def _kernel_version() -> str:
    """A hash of :func:`generation_sources`: a change to any of them regenerates every rule module (and so
    recompiles it: the hash is in the module's header); a change elsewhere in the package (the solvers, the
    simulations, the analysis, ...) keeps them."""
    return stamp(generation_sources(), _ROOT)[:12]


@dataclasses.dataclass(frozen=True, eq=False)
class CompiledRule:
    """The compiled functions of one rule at one (K, M), or why there are none (``reason``)."""

    rule: object
    K: int
    M: int
    update: object = None
    coefficient: object = None
    closed_rhs: object = None
    closed_rhs_rows: object = None
    numerical_rhs: object = None
    numerical_rhs_kinks: object = None
    numerical_terms: object = None
    numerical_terms_kinks: object = None
    path: Path | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.update is not None


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader (another process) sees the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ====================================================================== the cache's size
#: the cache folder's default size cap (PEPITA_DYNAMICS_CACHE_MAX)
CACHE_MAX_DEFAULT = 200 * 2**20
_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
#: a temporary file younger than this (seconds) may be a write in progress: never removed
_TMP_GRACE = 3600.0
#: digests of the generated modules imported by this process: never pruned
_LOADED: set = set()


def cache_max() -> int:
    """The size cap of the cache folder in bytes: $PEPITA_DYNAMICS_CACHE_MAX, a number of bytes with an
    optional suffix K, M, G or T (powers of 1024; "500M", "2G", "1.5G", "300MiB"), 0 for no cap;
    default 200M (:data:`CACHE_MAX_DEFAULT`). Anything else is a ValueError naming the variable."""
    raw = os.environ.get("PEPITA_DYNAMICS_CACHE_MAX")
    if raw is None or not raw.strip():
        return CACHE_MAX_DEFAULT
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?\s*", raw, flags=re.IGNORECASE)
    if m is None or (m.group(3) and m.group(3).lower() == "ib" and not m.group(2)):
        raise ValueError(f"PEPITA_DYNAMICS_CACHE_MAX={raw!r}: expected a size in bytes, optionally with a suffix K, M, "
                         "G or T (powers of 1024: 500M, 2G), or 0 for no limit")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def _cache_groups(folder: Path, now: float) -> tuple[int, dict]:
    """(total size in bytes, {group: [size, last use, priority, paths]}) of the cache folder ``folder``
    (the ``rules`` folder of :func:`cache_dir` and its ``__pycache__``).

    A generated module is one group with everything named after it: ``rule_<digest>.py``, its use stamp
    ``rule_<digest>.used``, numba's index and machine code ``__pycache__/rule_<digest>.<function>-<line>.py311.nbi``
    / ``.<n>.nbc`` (numba's in-tree cache, beside the module), a ``.pyc``, and the ``key_*.txt`` files that
    point to it. Every other file (facts, a key to nothing, a stale temporary) is a group of its own.
    Files that vanish while this runs (another process pruning) are skipped."""
    total, groups = 0, {}
    modules = set()
    for directory in (folder, folder / "__pycache__"):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            path = directory / name
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            total += st.st_size
            m = re.match(r"rule_([0-9a-f]+)\.", name)
            if name.startswith(".probe-") or (name.endswith(".tmp") and now - st.st_mtime < _TMP_GRACE):
                continue  # counted, never removed
            if m:
                group = m.group(1)
                if directory == folder and name.endswith(".py"):
                    modules.add(group)
            elif name.startswith("key_") and name.endswith(".txt"):
                try:
                    group = path.read_text().strip() or name
                except OSError:
                    continue
            else:
                group = name
            g = groups.setdefault(group, [0, 0.0, 2, []])
            g[0] += st.st_size
            g[1] = max(g[1], st.st_mtime)
            g[3].append(path)
    for group, g in groups.items():  # 0: what is left of a removed module, 1: modules, 2: anything else
        if re.fullmatch(r"[0-9a-f]+", group) and any(p.name.startswith("rule_") for p in g[3]):
            g[2] = 1 if group in modules else 0
    return total, groups


def prune_cache(max_bytes: int | None = None, keep=(), folder: Path | None = None) -> list:
    """Remove the least recently used generated modules (each with numba's cache files, its use stamp and
    the keys that point to it) until the cache folder holds at most ``max_bytes`` (default: :func:`cache_max`;
    0: no cap). Never removed: the modules this process imported, the digests in ``keep``, temporary files
    younger than an hour (writes in progress). Left-overs of a removed module go first, other small files
    (facts, keys to nothing) last. Safe when several processes share the folder: every removal is one
    ``unlink`` and a file that has vanished is skipped; a process that finds a module gone regenerates it.
    Returns the removed groups (digests or file names), oldest first."""
    cap = cache_max() if max_bytes is None else int(max_bytes)
    folder = cache_dir() / "rules" if folder is None else Path(folder)
    if cap <= 0:
        return []
    now = time.time()
    total, groups = _cache_groups(folder, now)
    protected = _LOADED | set(keep)
    removed = []
    for group, (size, _, _, paths) in sorted(groups.items(), key=lambda kv: (kv[1][2], kv[1][1], kv[0])):
        if total <= cap:
            break
        if group in protected:
            continue
        for path in sorted(paths, key=lambda p: not p.name.endswith(".py")):  # the module first: then it is gone
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        total -= size
        removed.append(group)
    return removed


def _touch(path: Path) -> None:
    """Mark a use (the last-use time :func:`prune_cache` reads): never the module's own mtime, which numba's
    cache index checks."""
    with contextlib.suppress(OSError):
        path.touch()


# ====================================================================== the key of a compiled rule
#: the most source files a rule's key follows (its classes' modules and the user modules they use)
_MAX_DEPENDENCIES = 256


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple:
    """Folders whose files never enter a rule's key: the standard library and site-packages (they change
    with the installation, not with the user's code). This package's own files are not among them, wherever it
    is installed: a rule that uses one of its helpers is keyed by that helper's file (the files generation
    itself reads are hashed by :func:`_kernel_version`)."""
    import site
    import sysconfig

    roots = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    with contextlib.suppress(Exception):
        roots.update(site.getsitepackages())
    with contextlib.suppress(Exception):
        roots.add(site.getusersitepackages())
    return tuple(sorted(os.path.join(os.path.realpath(r), "") for r in roots if r))


@functools.lru_cache(maxsize=1)
def _package_dirs() -> tuple:
    return tuple(os.path.join(os.path.realpath(_ROOT / name), "") for name in _PACKAGES)


@functools.lru_cache(maxsize=1)
def _generation_files() -> frozenset:
    return frozenset(os.path.realpath(p) for p in generation_sources())


def _is_library(path: str) -> bool:
    """Whether a file stays out of a rule's own dependency files: the standard library and site-packages, and
    the package files that :func:`_kernel_version` hashes already (any other file of this package enters)."""
    real = os.path.realpath(path)
    if real.startswith(_package_dirs()):
        return real in _generation_files()
    return real.startswith(_library_roots()) or bool({"site-packages", "dist-packages"} & set(Path(real).parts))


def _unwrap(obj) -> list:
    """The functions, classes and modules that ``obj`` stands for (methods, properties, partials and
    numba dispatchers unwrapped)."""
    for _ in range(8):
        if isinstance(obj, (staticmethod, classmethod, types.MethodType)):
            obj = obj.__func__
        elif isinstance(obj, functools.partial):
            obj = obj.func
        elif isinstance(obj, property):
            return [f for f in (obj.fget, obj.fset, obj.fdel) if f is not None]
        elif HAVE_NUMBA and isinstance(obj, _Dispatcher):
            obj = obj.py_func
        else:
            break
    return [obj]


def _where(obj):
    """(source file, namespace, other objects) of the code of ``obj``, or None: a function's file and
    globals (and what its closure holds), a class's module's (and its attributes), a module's own; an
    instance stands for its class."""
    if isinstance(obj, types.FunctionType):
        cells = []
        for cell in obj.__closure__ or ():
            with contextlib.suppress(ValueError):  # an empty cell
                cells.append(cell.cell_contents)
        return obj.__code__.co_filename, obj.__globals__, cells
    if isinstance(obj, types.ModuleType):
        file = getattr(obj, "__file__", None)
        return (file, vars(obj), []) if file else None
    cls = obj if isinstance(obj, type) else type(obj)
    mod = sys.modules.get(getattr(cls, "__module__", None) or "")
    file = getattr(mod, "__file__", None)
    if not file:
        return None
    return file, vars(mod), list(vars(cls).values()) if cls.__module__ not in ("builtins", "abc") else []


def _dependency_files(rule) -> list | None:
    """The source files the generated code of ``rule`` depends on through the rule itself: the files of the
    rule's classes (always), and, transitively, every file outside the standard library and site-packages (this
    package's included, but for the ones :func:`_kernel_version` hashes already) that holds a function, class
    or module reachable from the globals of those classes' modules, their methods' globals and closures, and
    the rule's own attributes. Generated code (a dataclass's ``__init__``: a ``<string>`` file) is covered by
    the class's file. None when a class's source is unknown (defined interactively), a dependency's file cannot
    be read or there are more than :data:`_MAX_DEPENDENCIES` of them."""
    import inspect

    files: dict = {}
    try:
        for c in type(rule).__mro__:
            if c.__module__ not in ("builtins", "abc"):
                files[os.path.realpath(inspect.getsourcefile(c))] = None
    except (TypeError, OSError):
        return None
    queue = collections.deque(c for c in type(rule).__mro__ if c.__module__ not in ("builtins", "abc"))
    queue.extend(getattr(rule, "__dict__", {}).values())
    scanned, seen = set(), []
    seen_ids = set()
    while queue:
        for obj in _unwrap(queue.popleft()):
            if id(obj) in seen_ids:
                continue
            seen_ids.add(id(obj))
            seen.append(obj)  # keeps the ids valid
            where = _where(obj)
            if where is None:
                continue
            file, namespace, more = where
            if file.startswith("<") or _is_library(file):
                continue
            real = os.path.realpath(file)
            if real not in files:
                if len(files) >= _MAX_DEPENDENCIES or not os.path.isfile(real):
                    return None
                files[real] = None
            queue.extend(more)
            if id(namespace) not in scanned:
                scanned.add(id(namespace))
                queue.extend(namespace.values())
    return sorted(files)


def _rule_key(rule, K: int, M: int) -> str | None:
    """A fingerprint of what the generated code of ``rule`` at (K, M) depends on, computed without
    tracing: the source files of the rule's classes and of the user modules they use
    (:func:`_dependency_files`; any edit re-traces), the rule's class and options (its repr), K, M, the
    package sources generation depends on (:func:`_kernel_version`) and the package's version. None when a
    source is unknown (a class defined interactively) or there are more than :data:`_MAX_DEPENDENCIES` of them:
    such rules are traced in every process."""
    files = _dependency_files(rule)
    if not files:
        return None
    try:
        blobs = [Path(f).read_bytes() for f in files]
    except OSError:
        return None
    from .._version import __version__
    from ..rules._facts import _version as facts_version

    h = hashlib.sha256()
    h.update(facts_version().encode())  # what is generated depends on the derived facts (theory.rules._facts)
    for b in blobs:
        h.update(hashlib.sha256(b).digest())
    h.update(f"{type(rule).__module__}.{type(rule).__qualname__}|{rule!r}|{K}|{M}|{_kernel_version()}|{__version__}".encode())
    return h.hexdigest()[:24]


def _known_digest(folder: Path, known: Path | None) -> str | None:
    """The digest a key file points to, when its module is still there (None: trace again)."""
    if known is None:
        return None
    try:
        digest = known.read_text().strip()
    except OSError:
        return None
    return digest if digest and (folder / f"rule_{digest}.py").exists() else None


def _import_generated(digest: str, path: Path):
    modname = f"_pepita_rule_{digest}"
    mod = sys.modules.get(modname)
    if mod is None:
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            sys.modules.pop(modname, None)
            raise
    return mod


@functools.lru_cache(maxsize=256)
def compiled_rule(rule, K: int, M: int) -> CompiledRule:
    """The compiled view of ``rule`` for K student and M teacher units (generated, cached on disk; the
    cache is kept under $PEPITA_DYNAMICS_CACHE_MAX: :func:`prune_cache`)."""
    if not HAVE_NUMBA:
        return CompiledRule(rule, K, M, reason="numba is not installed")
    cache_max()  # a bad PEPITA_DYNAMICS_CACHE_MAX is an error now, not when the cache first fills
    folder = cache_dir() / "rules"
    key = _rule_key(rule, K, M)
    known = folder / f"key_{key}.txt" if key else None
    digest = _known_digest(folder, known)  # traced before: no sympy, no tracing (a fast start)
    src = None
    for attempt in range(2):
        if digest is None:
            if src is None:
                try:
                    traced, feedback = trace(rule, K, M)
                except Exception as exc:  # any failure of a user's code on symbols: fall back to the generic path
                    return CompiledRule(rule, K, M, reason=f"its update could not be traced symbolically "
                                                           f"({type(exc).__name__}: {exc})")
                try:
                    src = _source(rule, K, M, traced, feedback)
                except (ValueError, TypeError, NameError) as exc:
                    return CompiledRule(rule, K, M, reason=f"its generated code could not be assembled "
                                                           f"({type(exc).__name__}: {exc})")
            digest = hashlib.sha256(src.encode()).hexdigest()[:20]
            path = folder / f"rule_{digest}.py"
            try:
                same = path.read_text() == src
            except OSError:
                same = False
            if not same:
                _write_atomic(path, src)
            if known is not None:
                _write_atomic(known, digest)
            if not same:
                with contextlib.suppress(OSError):
                    prune_cache(keep={digest}, folder=folder)
        path = folder / f"rule_{digest}.py"
        try:
            mod = _import_generated(digest, path)
        except FileNotFoundError:  # removed by another process's pruning since: generate it again, once
            digest = None
            if attempt == 0:
                continue
            return CompiledRule(rule, K, M, path=path, reason="its generated module vanished twice while loading")
        except Exception as exc:
            return CompiledRule(
                rule, K, M, path=path, reason=f"its generated code did not compile ({type(exc).__name__}: {exc})"
            )
        break
    _LOADED.add(digest)
    _touch(folder / f"rule_{digest}.used")
    from ..rules._facts import rule_facts

    # the kink-aware kernels integrate piecewise quadratics exactly and nothing else: derived (theory.rules._facts)
    kinks = rule_facts(rule, K, M).kinks_exact
    return CompiledRule(
        rule,
        K,
        M,
        update=mod.update,
        coefficient=getattr(mod, "coefficient", None),
        closed_rhs=getattr(mod, "closed_rhs", None),
        closed_rhs_rows=getattr(mod, "closed_rhs_rows", None),
        numerical_rhs=getattr(mod, "numerical_rhs", None),
        numerical_rhs_kinks=getattr(mod, "numerical_rhs_kinks", None) if kinks else None,
        numerical_terms=getattr(mod, "numerical_terms", None),
        numerical_terms_kinks=getattr(mod, "numerical_terms_kinks", None) if kinks else None,
        path=path,
    )


def update_batch(rule, g, lam, nu, zeta, v, v_star, S, b, sigma, sigma_F):
    """The compiled update on a batch of samples, numpy in and out (for tests and the generic callers).

    lam (n, K), nu (n, M), zeta (n,); v, S, b (n, K) or (K,); v_star (n, M) or (M,). Returns
    (delta (n, K), alpha (n,), e_out (n,), h (n, K), e (n,)). One state for all samples (v, v_star, S, b each
    1-D or None) is the quadrature's case, sv = 0: with erf, the update's own loop for it where the rule has one
    (theory._codegen.template.update).
    """
    n, K = np.shape(lam)
    M = np.shape(nu)[1]
    comp = compiled_rule(rule, K, M)
    if not comp.ok:
        raise ValueError(f"rule {rule.label}: no compiled view: {comp.reason}")
    gk = activation_code(g)
    if gk is None:
        raise ValueError(f"g: no compiled form for activation {g!r}; expected one of {sorted(ACTIVATION_CODES)}")

    shared = all(a is None or np.ndim(a) == 1 for a in (v, v_star, S, b))
    rows = 1 if shared else n

    def c(a, width, rows=n):
        a = np.zeros(width) if a is None else np.asarray(a, float)
        return np.array(np.broadcast_to(a, (rows, width)).T, order="C")  # a copy: writable, even at rows = 1

    delta, h, out = np.empty((K, n)), np.empty((K, n)), np.empty((3, n))
    comp.update(c(lam, K), c(nu, M), np.array(np.broadcast_to(np.asarray(zeta, float), (n,))), c(v, K, rows),
                c(v_star, M, rows), c(S, K, rows), c(b, K, rows), n, int(not shared), float(sigma), float(sigma_F), gk,
                delta, h, out)
    return delta.T.copy(), out[0].copy(), out[1].copy(), h.T.copy(), out[2].copy()
