"""Compiled views of a rule, generated from its one definition (:meth:`theory.Rule.update`).

A rule is written once, in array style, for numpy and torch. Its compiled views are *generated*
from that definition: :func:`compiled_rule` runs the rule's ``update`` (and ``feedback``) on sympy
symbols (the symbolic array namespace below stands in for numpy), turns the resulting expressions
for delta, alpha, e_out, h and e into straight-line Python (common subexpressions eliminated),
writes it to a module in the cache folder and compiles it with numba (``cache=True``, so a later
process loads the machine code from disk). Nothing here knows any rule; the tests hold every
generated function against ``Rule.local_update`` for every registered rule and variant.

The generic compiled kernels (the reduced sampler's chain, the ODE integrators, the numerical
expectations) are compiled once, whatever the rule, and receive the rule's functions as
first-class function values with the fixed signatures below:

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

import dataclasses
import functools
import hashlib
import importlib.util
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..ode.layout import HEADER, PARAM, constants, header

try:
    import numba
    from numba import types as nbt

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency, but stay importable without it
    numba = None
    HAVE_NUMBA = False

__all__ = ["compiled_rule", "CompiledRule", "ACTIVATION_CODES", "activation_code", "symbolic_namespace",
           "ode_params", "numerical_params", "ODE_HEADER", "cache_dir", "HAVE_NUMBA"]

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
def dg_scalar(z, gk):
    """g'(z) for the codes of :func:`g_scalar` (relu: Heaviside with g'(0) = 0, as theory)."""
    if gk == 0:
        return _SQRT_2_OVER_PI * math.exp(-0.5 * z * z)
    if gk == 1:
        t = math.tanh(z)
        return 1.0 - t * t
    if gk == 2:
        return 1.0 if z > 0.0 else 0.0
    return 1.0


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


def _offsets(K, M):
    """Offsets of v, S in the flat state y = (Q, R, S, v) and of b in p."""
    off_S = K * K + K * M
    return dict(S=off_S, v=off_S + K, b=constants(K, M)["b"].start)


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

    lam, nu, zeta = _symbols("lam", K)[None], _symbols("nu", M)[None], np.array([sp.Symbol("zeta_t", real=True)], dtype=object)
    v, vs, S, b = _symbols("v", K), _symbols("v_star", M), _symbols("S", K), _symbols("b", K)
    sigma, sigma_F = sp.Symbol("sigma", real=True), sp.Symbol("sigma_F", real=True)
    reads = dict(S=S if "S" in rule.reads else None, b=b if "b" in rule.reads else None)
    up = rule.local_update(lam, nu, zeta, v=v, v_star=vs, sigma=sigma, sigma_F=sigma_F, g=_symbolic_activation(), **reads)

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
                return f"_{name}({self._print(expr.args[0])}, gk)"
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


def _body(assignments, indent):
    """Straight-line code for [(target, expr)], with common subexpressions eliminated."""
    import sympy as sp

    exprs = [e for _, e in assignments]
    reps, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("_c"), optimizations=None)
    pr = _printer()
    pad = " " * indent
    lines = [f"{pad}{s.name} = {pr.doprint(e)}" for s, e in reps]
    lines += [f"{pad}{target} = {pr.doprint(e)}" for (target, _), e in zip(assignments, reduced)]
    return lines, set().union(*(e.free_symbols for e in exprs)) if exprs else set()


def _loads(used, K, M, index_field, index_state, indent):
    pad = " " * indent
    lines = []
    names = {s.name for s in used}
    for k in range(K):
        for arr in ("lam",):
            if f"{arr}_{k}" in names:
                lines.append(f"{pad}{arr}_{k} = {arr}[{k}, {index_field}]")
        for arr in ("v", "S", "b"):
            if f"{arr}_{k}" in names:
                lines.append(f"{pad}{arr}_{k} = {arr}[{k}, {index_state}]")
    for m in range(M):
        if f"nu_{m}" in names:
            lines.append(f"{pad}nu_{m} = nu[{m}, {index_field}]")
        if f"v_star_{m}" in names:
            lines.append(f"{pad}v_star_{m} = v_star[{m}, {index_state}]")
    if "zeta_t" in names:
        lines.append(f"{pad}zeta_t = zeta[{index_field}]")
    return lines


def _source(rule, K, M, traced, feedback) -> str:
    head = [
        f"# Generated by theory._codegen.rule from {type(rule).__module__}.{type(rule).__qualname__}",
        f"# rule {rule.label!r}, K={K}, M={M}; kernels {_kernel_version()}. Do not edit: regenerated on change.",
        "import math",
        "import numpy as np",
        "import numba",
        "from theory._codegen.rule import UPDATE_SIG, COEF_SIG, RHS_SIG, ROWS_SIG, g_scalar as _g, dg_scalar as _dg",
        "",
        "",
        "@numba.njit(UPDATE_SIG, cache=True, error_model=\"numpy\")",
        "def update(lam, nu, zeta, v, v_star, S, b, n, sv, sigma, sigma_F, gk, delta, h, out):",
        "    for t in range(n):",
        "        s = t * sv",
    ]
    targets = [(f"delta[{k}, t]", traced["delta"][k]) for k in range(K)] + [(f"h[{k}, t]", traced["h"][k]) for k in range(K)]
    targets += [("out[0, t]", traced["alpha"]), ("out[1, t]", traced["e_out"]), ("out[2, t]", traced["e"])]
    body, used = _body(targets, 8)
    src = head + _loads(used, K, M, "t", "s", 8) + body
    src += _kink_source(traced, K, M)
    if feedback is not None:
        fb_body, fb_used = _body([(f"c[{k}]", feedback[k]) for k in range(K)], 4)
        loads = [f"    {s.name} = {s.name.rsplit('_', 1)[0]}[{s.name.rsplit('_', 1)[1]}]"
                 for s in sorted(fb_used, key=lambda s: s.name) if s.name != "sigma_F"]
        src += ["", "", "@numba.njit(COEF_SIG, cache=True, error_model=\"numpy\")", "def coefficient(v, S, b, sigma_F, c):"] + (loads + fb_body or ["    pass"])
        from ..rules._facts import derive

        if derive(rule, K, M, traced, feedback).closed_form:  # derived from the update (theory.rules._facts)
            off = _offsets(K, M)
            src += [
                "", "",
                "from theory._codegen.closed import closed_form_rhs_c",
                "",
                "",
                "@numba.njit(RHS_SIG, cache=True, error_model=\"numpy\")",
                "def closed_rhs(t, y, p, dy):",
                f"    c = np.empty({K})",
                f"    coefficient(y[{off['v']}:{off['v'] + K}], y[{off['S']}:{off['S'] + K}], p[{off['b']}:{off['b'] + K}], "
                f"p[{P_SIGMA_F}], c)",
                "    closed_form_rhs_c(t, y, p, c, dy)",
                "",
                "",
                "@numba.njit(ROWS_SIG, cache=True, error_model=\"numpy\", nogil=True)",
                "def closed_rhs_rows(t, Y, Pm, dY):",
                "    for i in range(Y.shape[0]):",
                "        closed_rhs(t[i], Y[i], Pm[i], dY[i])",
            ]
    return "\n".join(src) + "\n"


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


def _kink_source(traced, K, M) -> list:
    """The generated numerical right-hand sides (theory._codegen.quadrature; compiled on first use) and the
    rule's kink arguments ``kinks`` with their depths ``KINK_DEPTH``."""
    from . import quadrature as _quad_compiled

    found = _kink_args(traced)
    src = ["", "", "@numba.njit(cache=True, error_model=\"numpy\")",
           "def kinks(lam, nu, zeta, v, v_star, S, b, n, sv, sigma, sigma_F, gk, out):"]
    if found:
        body, used = _body([(f"out[{j}, t]", a) for j, (_, a) in enumerate(found)], 8)
        src += ["    for t in range(n):", "        s = t * sv"] + _loads(used, K, M, "t", "s", 8) + body
    else:
        src += ["    pass"]
    src += ["", "", f"KINK_DEPTH = ({''.join(f'{dep}, ' for dep, _ in found)})"]
    src += ["", "", "from theory._codegen.quadrature import CHUNK, T_MAX, MAX_BREAKS, _omega, _whiten, _constants, _node_block, "
            "_assemble, _accumulate, _buffers, _fields, _line_points, _piece_weights, line_basis, PARAM"]
    return src + _quad_compiled.kernel_source()


@functools.lru_cache(maxsize=1)
def _kernel_version() -> str:
    """A hash of every source file of the package (generated code calls into the kernels, the layout,
    the activations' integrals, and is shaped by the derived facts): any change regenerates every rule module."""
    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def cache_dir() -> Path:
    """Where generated modules (and numba's machine code for them) live: $PEPITA_DYNAMICS_CACHE, else
    $XDG_CACHE_HOME/pepita-dynamics or ~/.cache/pepita-dynamics, else a temporary folder."""
    env = os.environ.get("PEPITA_DYNAMICS_CACHE")
    candidates = [Path(env)] if env else []
    xdg = os.environ.get("XDG_CACHE_HOME")
    candidates += [Path(xdg) / "pepita-dynamics"] if xdg else []
    candidates += [Path.home() / ".cache" / "pepita-dynamics", Path(tempfile.gettempdir()) / f"pepita-dynamics-{os.getuid()}"]
    for c in candidates:
        try:
            (c / "rules").mkdir(parents=True, exist_ok=True)
            probe = c / "rules" / f".probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
            return c
        except OSError:
            continue
    raise OSError("no writable cache folder for compiled rules; set PEPITA_DYNAMICS_CACHE")


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _rule_key(rule, K: int, M: int) -> str | None:
    """A fingerprint of what the generated code of ``rule`` at (K, M) depends on, computed without
    tracing: the source file of the rule's module (any edit re-traces), the rule's class and options
    (its repr), K, M, the kernels' version and the package's. None when the source is unknown (a
    class defined interactively): such rules are traced in every process."""
    import inspect

    try:
        files = {inspect.getsourcefile(c) for c in type(rule).__mro__ if c.__module__ not in ("builtins", "abc")}
        blobs = [Path(f).read_bytes() for f in sorted(f for f in files if f)]
    except (TypeError, OSError):
        return None
    if not blobs:
        return None
    from ..rules._facts import _version as facts_version
    from .._version import __version__

    h = hashlib.sha256()
    h.update(facts_version().encode())  # what is generated depends on the derived facts (theory.rules._facts)
    for b in blobs:
        h.update(b)
    h.update(f"{type(rule).__module__}.{type(rule).__qualname__}|{rule!r}|{K}|{M}|{_kernel_version()}|{__version__}".encode())
    return h.hexdigest()[:24]


@functools.lru_cache(maxsize=256)
def compiled_rule(rule, K: int, M: int) -> CompiledRule:
    """The compiled view of ``rule`` for K student and M teacher units (generated, cached on disk)."""
    if not HAVE_NUMBA:
        return CompiledRule(rule, K, M, reason="numba is not installed")
    folder = cache_dir() / "rules"
    key = _rule_key(rule, K, M)
    known = folder / f"key_{key}.txt" if key else None
    digest = None
    if known is not None and known.exists():  # traced before: no sympy, no tracing (a fast start)
        digest = known.read_text().strip()
        if not (folder / f"rule_{digest}.py").exists():
            digest = None
    if digest is None:
        try:
            traced, feedback = trace(rule, K, M)
        except Exception as exc:  # any failure of a user's code on symbols: fall back to the generic path
            return CompiledRule(rule, K, M, reason=f"its update could not be traced symbolically ({type(exc).__name__}: {exc})")
        src = _source(rule, K, M, traced, feedback)
        digest = hashlib.sha256(src.encode()).hexdigest()[:20]
        path = folder / f"rule_{digest}.py"
        if not path.exists() or path.read_text() != src:
            _write_atomic(path, src)
        if known is not None:
            _write_atomic(known, digest)
    path = folder / f"rule_{digest}.py"
    modname = f"_pepita_rule_{digest}"
    try:
        mod = sys.modules.get(modname)
        if mod is None:
            spec = importlib.util.spec_from_file_location(modname, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[modname] = mod
            spec.loader.exec_module(mod)
    except Exception as exc:
        sys.modules.pop(modname, None)
        return CompiledRule(rule, K, M, path=path, reason=f"its generated code did not compile ({type(exc).__name__}: {exc})")
    from ..rules._facts import rule_facts

    # the kink-aware kernels integrate piecewise quadratics exactly and nothing else: derived (theory.rules._facts)
    kinks = rule_facts(rule, K, M).kinks_exact
    return CompiledRule(rule, K, M, update=mod.update, coefficient=getattr(mod, "coefficient", None),
                        closed_rhs=getattr(mod, "closed_rhs", None), closed_rhs_rows=getattr(mod, "closed_rhs_rows", None),
                        numerical_rhs=getattr(mod, "numerical_rhs", None),
                        numerical_rhs_kinks=getattr(mod, "numerical_rhs_kinks", None) if kinks else None,
                        numerical_terms=getattr(mod, "numerical_terms", None),
                        numerical_terms_kinks=getattr(mod, "numerical_terms_kinks", None) if kinks else None, path=path)


def update_batch(rule, g, lam, nu, zeta, v, v_star, S, b, sigma, sigma_F):
    """The compiled update on a batch of samples, numpy in and out (for tests and the generic callers).

    lam (n, K), nu (n, M), zeta (n,); v, S, b (n, K) or (K,); v_star (n, M) or (M,). Returns
    (delta (n, K), alpha (n,), e_out (n,), h (n, K), e (n,)).
    """
    n, K = np.shape(lam)
    M = np.shape(nu)[1]
    comp = compiled_rule(rule, K, M)
    if not comp.ok:
        raise ValueError(f"rule {rule.label}: no compiled view: {comp.reason}")
    gk = activation_code(g)
    if gk is None:
        raise ValueError(f"g: no compiled form for activation {g!r}; expected one of {sorted(ACTIVATION_CODES)}")
    c = lambda a, width: np.ascontiguousarray(np.broadcast_to(np.zeros(width) if a is None else np.asarray(a, float), (n, width)).T)  # noqa: E731
    delta, h, out = np.empty((K, n)), np.empty((K, n)), np.empty((3, n))
    comp.update(c(lam, K), c(nu, M), np.array(np.broadcast_to(np.asarray(zeta, float), (n,))), c(v, K), c(v_star, M),
                c(S, K), c(b, K), n, 1, float(sigma), float(sigma_F), gk, delta, h, out)
    return delta.T.copy(), out[0].copy(), out[1].copy(), h.T.copy(), out[2].copy()
