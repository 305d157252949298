"""The template of a generated rule module: real, linted Python, specialised through ast (never text).

A rule's compiled views live in one module generated per (rule, K, M) (:mod:`theory._codegen.rule`).
That module is assembled from *template functions*, ordinary functions of this package that any
linter reads:

- here, the rule's own functions ``update``, ``kinks``, ``coefficient`` and the closed-form
  right-hand sides ``closed_rhs``, ``closed_rhs_rows`` built on ``coefficient``;
- in :mod:`theory._codegen.quadrature`, the numerical-expectation kernels ``numerical_terms``,
  ``numerical_terms_kinks``, ``numerical_rhs``, ``numerical_rhs_kinks``, which call ``update`` and
  ``kinks`` and read ``KINK_DEPTH``.

:func:`module_source` makes the generated module from them by three substitutions, and only these:

1. **The rule's code.** A template that depends on the rule holds a statement ``GENERATED(a, b, ...)`` (or
   one per case of a loop specialised by cases); :func:`specialise` replaces each by the rule's straight-line
   code (ast statements: sympy's expressions with common subexpressions eliminated). Its arguments name
   everything that code may read or write besides its own temporaries, and :func:`specialise` checks that the
   code reads nothing else; a keyword ``name=other`` makes that copy read ``other`` for ``name``.
2. **The placeholders** (:data:`PLACEHOLDERS`): ``K``, ``M``, ``KINK_DEPTH`` (module constants) and
   ``update``, ``kinks``, ``coefficient`` (the templates above) are real names here, so the templates
   are valid Python whose every name is defined; the generated module binds each of them to the
   rule's own (the constants assigned at its top, the functions defined in it). numba then compiles
   a direct call to the rule's ``update`` inside the kernels, inlined and cached, exactly as if they
   had been written for that rule.
   The switches (:data:`SWITCHES`, here ``ERF_LOOP``) are resolved instead: a branch on one is kept or dropped.
3. **Compilation.** A template's ``@jit(signature, **options)`` (here a no-op: a template is never
   compiled) becomes ``@numba.njit(signature, cache=True, **options)``.

Every other free name of a copied function is imported in the generated module from where the
template's own module gets it (that module's ``import`` statements, read with ast; else the module
itself), and :func:`module_source` checks that the import yields the very object the template sees.
"""

from __future__ import annotations

import ast
import builtins
import copy
import functools
import importlib
import importlib.util
import inspect
import math
import sys
import textwrap

import numpy as np

from ..ode.layout import HEADER, PARAM
from .closed import closed_form_rhs_c
from .rule import COEF_SIG, RHS_SIG, ROWS_SIG, UPDATE_SIG, dg_erf, dg_scalar, g_erf, g_scalar

__all__ = ["GENERATED", "KINK_DEPTH", "PLACEHOLDERS", "SWITCHES", "K", "M", "coefficient", "closed_rhs",
           "closed_rhs_rows", "jit", "kinks", "module_source", "specialise", "update"]

# ====================================================================== the template's own vocabulary
#: placeholders: the number of student / teacher units (module constants of the generated module)
K = 1
M = 1
#: placeholder: the depth of each of the rule's kink arguments (the rows of ``kinks``' output)
KINK_DEPTH: tuple = ()
#: the names every generated module defines itself (the values above and the functions below, or the rule's)
PLACEHOLDERS = ("K", "M", "KINK_DEPTH", "update", "kinks", "coefficient")

#: switches, resolved when a module is generated: the branch ``if SWITCH [and ...]:`` keeps its body (and the
#: rest of its test) or is replaced by its ``else``, so a generated module compiles only what it can run. Here:
#: whether ``update`` has its erf quadrature loop (rules whose erf expectations have no closed form). The values
#: are what a module gets when :func:`module_source` is given none.
SWITCHES = {"ERF_LOOP": False}
ERF_LOOP = SWITCHES["ERF_LOOP"]


def jit(signature=None, **options):
    """A template function's compilation: ``numba.njit(signature, cache=True, **options)`` in the generated
    module. Here a no-op: a template is never compiled (nor called)."""

    def template(fn):
        return fn

    return template


def GENERATED(*names):
    """Marks where the rule's straight-line code goes in a template (:func:`specialise` replaces the
    statement); ``names`` are what that code may read or write besides its own temporaries."""
    raise NotImplementedError("a template function was called: only its generated specialisation runs")


# ====================================================================== the templates of a rule's functions
@jit(UPDATE_SIG, error_model="numpy")
def update(lam, nu, zeta, v, v_star, S, b, n, sv, sigma, sigma_F, gk, delta, h, out):
    """The rule's update on the samples t < n (the ABI: theory._codegen.rule): delta[:, t], h[:, t] and
    out[:, t] = (alpha, e_out, e) from the fields lam[:, t], nu[:, t], zeta[t] and the state at s = t * sv.

    The quadrature's case (one state for all nodes, erf) has a loop of its own where the rule's erf expectations
    have no closed form (``ERF_LOOP``; elsewhere the quadrature is a cross-check, not worth the ~0.6 s the loop
    adds to the rule's compile): there sv and gk are constants, so the state's loads leave the loop, g is the
    compiled erf alone (:func:`theory._codegen.rule.g_erf`) and the loop vectorises. A pepita node then takes
    half the time: its six erf are no longer one dependent chain after another."""
    if ERF_LOOP and sv == 0 and gk == 0:
        for t in range(n):
            GENERATED(math, lam, nu, zeta, v, v_star, S, b, sigma, sigma_F, gk, delta, h, out, t, sv,
                      g_scalar=g_erf, dg_scalar=dg_erf)
    else:
        for t in range(n):
            GENERATED(math, g_scalar, dg_scalar, lam, nu, zeta, v, v_star, S, b, sigma, sigma_F, gk, delta, h, out, t,
                      sv)


@jit(error_model="numpy")
def kinks(lam, nu, zeta, v, v_star, S, b, n, sv, sigma, sigma_F, gk, out):
    """The arguments of g and g' in the rule's update at the samples t < n: out[j, t] (depth KINK_DEPTH[j])."""
    for t in range(n):
        GENERATED(math, g_scalar, dg_scalar, lam, nu, zeta, v, v_star, S, b, sigma, sigma_F, gk, out, t, sv)


@jit(COEF_SIG, error_model="numpy")
def coefficient(v, S, b, sigma_F, c):
    """The rule's feedback vector c (K) from the state (Rule.feedback)."""
    GENERATED(math, g_scalar, dg_scalar, v, S, b, sigma_F, c)


@jit(RHS_SIG, error_model="numpy")
def closed_rhs(t, y, p, dy):
    """The closed-form right-hand side (theory._codegen.closed) with the rule's coefficient c."""
    off_S = K * K + K * M  # y = (Q, R, S, v)
    off_b = HEADER + M * M + 2 * M  # p = (header, T, U, v_star, b): theory.ode.layout.constants
    c = np.empty(K)
    coefficient(y[off_S + K : off_S + 2 * K], y[off_S : off_S + K], p[off_b : off_b + K], p[PARAM.sigma_F], c)
    closed_form_rhs_c(t, y, p, c, dy)


@jit(ROWS_SIG, error_model="numpy", nogil=True)
def closed_rhs_rows(t, Y, Pm, dY):
    """closed_rhs on every row: a batch of points, each with its own time and parameters."""
    for i in range(Y.shape[0]):
        closed_rhs(t[i], Y[i], Pm[i], dY[i])


# ====================================================================== the specialisation
def _function_node(fn) -> ast.FunctionDef:
    node = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    if not isinstance(node, ast.FunctionDef):
        raise TypeError(f"template {fn.__qualname__}: not a function definition")
    return node


def _is_generated(stmt) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Name)
            and stmt.value.func.id == "GENERATED")


def _bound_and_loaded(nodes) -> tuple[set, set]:
    """(names bound, names read) in the statements ``nodes`` (one function scope: the templates nest none)."""
    bound, loaded = set(), set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                (loaded if isinstance(sub.ctx, ast.Load) else bound).add(sub.id)
            elif isinstance(sub, ast.arg):
                bound.add(sub.arg)
            elif isinstance(sub, (ast.FunctionDef, ast.ClassDef)) and sub not in nodes:
                bound.add(sub.name)
    return bound, loaded


def free_names(node: ast.FunctionDef) -> set:
    """The global names a function reads (its decorators included), builtins included."""
    bound, loaded = _bound_and_loaded([node.args, *node.body])
    _, deco = _bound_and_loaded(node.decorator_list)
    return (loaded - bound) | deco


def _blocks(stmt):
    """The statement lists nested in ``stmt`` (its body and else, by field): where the walkers below descend."""
    for field in ("body", "orelse"):
        inner = getattr(stmt, field, None)
        if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
            yield field, inner


class _Rename(ast.NodeTransformer):
    """Renames the names of ``mapping``'s keys to its values (``GENERATED(..., g_scalar=g_erf)``)."""

    def __init__(self, mapping):
        self.mapping = mapping

    def visit_Name(self, node):
        if node.id in self.mapping:
            return ast.copy_location(ast.Name(id=self.mapping[node.id], ctx=node.ctx), node)
        return node


def _replace_generated(body, code, where):
    """``body`` with its GENERATED statements (searched in nested blocks) replaced by ``code``: (new body, count).
    A keyword ``GENERATED(..., a=b)`` makes that copy of the code read ``b`` where it reads ``a``."""
    out, count = [], 0
    for stmt in body:
        if _is_generated(stmt):
            rename = {k.arg: k.value.id for k in stmt.value.keywords if isinstance(k.value, ast.Name)}
            if len(rename) != len(stmt.value.keywords):
                raise ValueError(f"template {where}: a GENERATED keyword must bind a name to a name")
            allowed = {a.id for a in stmt.value.args if isinstance(a, ast.Name)} | set(rename.values())
            new = [_Rename(rename).visit(s) for s in copy.deepcopy(list(code))]
            bound, loaded = _bound_and_loaded(new)
            stray = sorted(loaded - bound - allowed - set(dir(builtins)))
            if stray:
                raise ValueError(f"template {where}: the generated code reads {stray}, which GENERATED does not name")
            out += new or [ast.Pass()]
            count += 1
            continue
        for field, inner in _blocks(stmt):
            new, n = _replace_generated(inner, code, where)
            setattr(stmt, field, new)
            count += n
        out.append(stmt)
    return out, count


def _resolve_switches(body, switches):
    """``body`` with each ``if SWITCH [and rest]:`` (searched in nested blocks) resolved by ``switches``."""
    out = []
    for stmt in body:
        if isinstance(stmt, ast.If):
            test = stmt.test
            terms = test.values if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) else [test]
            if isinstance(terms[0], ast.Name) and terms[0].id in switches:
                if not switches[terms[0].id]:
                    out += _resolve_switches(stmt.orelse, switches)
                    continue
                if len(terms) == 1:
                    out += _resolve_switches(stmt.body, switches)
                    continue
                stmt.test = terms[1] if len(terms) == 2 else ast.BoolOp(op=ast.And(), values=terms[1:])
        for field, inner in _blocks(stmt):
            setattr(stmt, field, _resolve_switches(inner, switches))
        out.append(stmt)
    return out


def specialise(fn, code=None, switches=None) -> ast.FunctionDef:
    """The generated-module definition of the template function ``fn``: its ``GENERATED`` statements replaced
    by the statements ``code`` (the template must have at least one when ``code`` is given, none otherwise;
    each gets the same code: one loop per case of a specialised loop) and its ``@jit(...)`` by
    ``@numba.njit(..., cache=True)``; its branches on :data:`SWITCHES` resolved by ``switches`` (names of
    SWITCHES to booleans; the rest take SWITCHES' values)."""
    switches = {**SWITCHES, **(switches or {})}
    if set(switches) - set(SWITCHES) or not all(isinstance(x, bool) for x in switches.values()):
        raise ValueError(f"switches: booleans for names of {sorted(SWITCHES)}, got {switches}")
    node = _function_node(fn)
    node.body = _resolve_switches(node.body, switches)
    node.body, count = _replace_generated(node.body, list(code or ()), fn.__qualname__)
    if bool(count) != (code is not None):
        raise ValueError(f"template {fn.__qualname__}: {count} GENERATED statements, expected "
                         f"{'at least one' if code is not None else 'none'}")
    decos = [
        d
        for d in node.decorator_list
        if isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "jit"
    ]
    if len(decos) != 1 or len(node.decorator_list) != 1:
        raise ValueError(f"template {fn.__qualname__}: expected exactly one decorator, @jit(...)")
    jit_call = decos[0]
    njit = ast.Attribute(value=ast.Name(id="numba", ctx=ast.Load()), attr="njit", ctx=ast.Load())
    node.decorator_list = [ast.Call(func=njit, args=jit_call.args,
                                    keywords=[ast.keyword(arg="cache", value=ast.Constant(True)), *jit_call.keywords])]
    return node


@functools.cache
def _origins(modname: str) -> dict:
    """How module ``modname`` binds each of its global names: ("import", module, asname) for ``import m [as a]``,
    ("from", module, name) for ``from m import name [as a]`` and for what it defines itself. Imports take
    precedence (``try: import numba / except ImportError: numba = None``)."""
    mod = sys.modules[modname]
    tree = ast.parse(inspect.getsource(mod))
    package = mod.__package__ or ""
    imports, defined = {}, {}

    def visit(stmts):
        for s in stmts:
            if isinstance(s, ast.Import):
                for a in s.names:
                    imports.setdefault(a.asname or a.name.split(".")[0], ("import", a.name, a.asname))
            elif isinstance(s, ast.ImportFrom):
                base = importlib.util.resolve_name("." * s.level + (s.module or ""), package) if s.level else s.module
                for a in s.names:
                    imports.setdefault(a.asname or a.name, ("from", base, a.name))
            elif isinstance(s, (ast.FunctionDef, ast.ClassDef)):
                defined[s.name] = ("from", modname, s.name)
            elif isinstance(s, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for t in (s.targets if isinstance(s, ast.Assign) else [s.target]):
                    for sub in ast.walk(t):
                        if isinstance(sub, ast.Name):
                            defined[sub.id] = ("from", modname, sub.id)
            for field in ("body", "orelse", "finalbody"):
                inner = getattr(s, field, None)
                if isinstance(inner, list) and not isinstance(s, (ast.FunctionDef, ast.ClassDef)):
                    visit(inner)
            for h in getattr(s, "handlers", ()):
                visit(h.body)

    visit(tree.body)
    return {**defined, **imports}


def _import_for(name, fn):
    """The origin of the global ``name`` that template ``fn`` reads (:func:`_origins`; None for a builtin),
    checked to give the very object ``fn`` sees."""
    origins = _origins(fn.__module__)
    if name not in origins:
        if hasattr(builtins, name):
            return None
        raise NameError(f"template {fn.__qualname__}: {name!r} is neither defined nor imported in {fn.__module__}")
    kind, module, attr = origins[name]
    got = importlib.import_module(module)
    if kind == "from":
        got = getattr(got, attr, None)
    elif attr is None:  # ``import a.b`` binds a
        got = sys.modules[module.split(".")[0]]
    if got is not fn.__globals__.get(name):
        raise NameError(f"template {fn.__qualname__}: importing {name!r} from {module} would not give what it sees")
    return origins[name]


def _literal(value) -> ast.expr:
    if isinstance(value, tuple):
        return ast.Tuple(elts=[_literal(v) for v in value], ctx=ast.Load())
    if isinstance(value, (bool, int, float, str)) or value is None:
        return ast.Constant(value)
    raise TypeError(f"a generated module's constant must be a literal, got {type(value).__name__}")


def module_source(parts, constants: dict, comments=()) -> str:
    """The source of a generated module: ``comments`` (lines, without the ``#``), the imports its
    functions need, the module constants ``constants`` (placeholders, e.g. K, M, KINK_DEPTH) and
    :func:`specialise` of each ``(template, code)`` of ``parts``, in order (a function compiled eagerly,
    with a signature, must come after the functions it calls). The entries of ``constants`` named in
    :data:`SWITCHES` are switches, resolved in the functions, not module constants."""
    switches = {name: value for name, value in constants.items() if name in SWITCHES}
    constants = {name: value for name, value in constants.items() if name not in SWITCHES}
    nodes = [(fn, specialise(fn, code, switches)) for fn, code in parts]
    defined = {node.name for _, node in nodes} | set(constants)
    imports = {"numba": ("import", "numba", None)}  # the decorators (specialise)
    for fn, node in nodes:
        for name in sorted(free_names(node) - defined - {"numba"}):
            if name in PLACEHOLDERS:
                raise NameError(f"template {fn.__qualname__} reads the placeholder {name!r}, which the generated "
                                "module does not define")
            origin = _import_for(name, fn)
            if origin is None:
                continue
            if imports.setdefault(name, origin) != origin:
                raise NameError(f"{name!r}: the templates see different objects ({imports[name]} and {origin})")
    body = [ast.Import(names=[ast.alias(name=module, asname=asname)])
            for kind, module, asname in sorted(set(imports.values())) if kind == "import"]
    by_module: dict = {}
    for name, (kind, module, attr) in sorted(imports.items()):
        if kind == "from":
            by_module.setdefault(module, []).append(ast.alias(name=attr, asname=None if attr == name else name))
    body += [ast.ImportFrom(module=module, names=names, level=0) for module, names in sorted(by_module.items())]
    body += [ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=_literal(value))
             for name, value in constants.items()]
    body += [node for _, node in nodes]
    tree = ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))
    text = "\n".join(("\n\n" if isinstance(stmt, ast.FunctionDef) else "") + ast.unparse(stmt) for stmt in tree.body)
    return "".join(f"# {line}\n" for line in comments) + text + "\n"
