"""The package's folder on disk for compiled code, and numba's cache of the package's own kernels in it.

:func:`cache_dir` is the one folder (``$PEPITA_DYNAMICS_CACHE``, else ``$XDG_CACHE_HOME/pepita-dynamics`` or
``~/.cache/pepita-dynamics``, else a temporary folder) that holds the generated rule modules
(:mod:`theory._codegen.rule`, under ``rules/``) and the machine code of the package's kernels (under ``numba/``).

numba's default cache sits in ``__pycache__`` beside each source file, so every clone or fresh install of the
package compiles every kernel again (minutes, most of a fresh test run). :class:`PackageCacheLocator` puts the
package's kernels in ``cache_dir()/numba/<module path>/`` instead, the same folder for every copy of the package,
and stamps them with a hash of the *contents* of the kernel's source file and of every package module it
imports at module level, directly or through others: a clone with the same sources loads the machine code; a
change to a kernel, to a kernel it calls or to a constant it reads (numba's own stamp follows only the kernel's
file) compiles it again. numba keys each entry by the function's signature, its bytecode, the target CPU and
numba's version besides.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import tempfile
from pathlib import Path

#: the folder holding the ``theory`` and ``simulate`` packages
_ROOT = Path(__file__).resolve().parents[1]
_PACKAGES = ("theory", "simulate")


def cache_dir() -> Path:
    """Where generated modules (and numba's machine code for them) live: $PEPITA_DYNAMICS_CACHE, else
    $XDG_CACHE_HOME/pepita-dynamics or ~/.cache/pepita-dynamics, else a temporary folder."""
    env = os.environ.get("PEPITA_DYNAMICS_CACHE")
    candidates = [Path(env)] if env else []
    xdg = os.environ.get("XDG_CACHE_HOME")
    candidates += [Path(xdg) / "pepita-dynamics"] if xdg else []
    candidates += [
        Path.home() / ".cache" / "pepita-dynamics",
        Path(tempfile.gettempdir()) / f"pepita-dynamics-{os.getuid()}",
    ]
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


def _module_file(name: str, root: Path) -> Path | None:
    """The source file of the package module ``name`` (dotted, absolute) under ``root``, or None outside the
    package."""
    if name.split(".")[0] not in _PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_level(body: list) -> list:
    """The import statements of a module body, in module-level ``if`` / ``try`` / ``with`` blocks included."""
    found = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", []),
                          *(h.body for h in getattr(node, "handlers", []))):
                found += _module_level(block)
    return found


def _imports(path: Path, root: Path = _ROOT, everywhere: bool = False) -> tuple[Path, ...]:
    """The package modules a source file imports: at module level (the names its compiled functions see as
    globals), or ``everywhere`` (inside functions too: what its Python code may run). For ``from a.b import n``:
    a/b/n.py when n is a submodule, else the module a.b. Parent packages' ``__init__`` files are not followed.
    Module level suffices for numba's stamps: what a factory imports inside a function and closes over, numba
    hashes into the cache key itself."""
    package = ".".join(path.relative_to(root).with_suffix("").parts)
    here = package.rsplit(".", 1)[0]  # the package a relative import starts from (for __init__: itself)
    tree = ast.parse(path.read_bytes(), filename=str(path))
    nodes = ([n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))] if everywhere
             else _module_level(tree.body))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [_module_file(a.name, root) for a in node.names]
            continue
        if node.level:
            parts = here.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            module = f"{base}.{node.module}" if node.module else base
        else:
            module = node.module or ""
        submodules = [_module_file(f"{module}.{a.name}", root) for a in node.names]
        found += submodules
        if not all(submodules):
            found.append(_module_file(module, root))
    return tuple(sorted({p for p in found if p is not None and p != path}))


def dependencies(paths, root: Path = _ROOT, everywhere: bool = False) -> set[Path]:
    """``paths`` (a source file or several) and every package module under ``root`` they import
    (:func:`_imports`), directly or not."""
    seen, todo = set(), [paths] if isinstance(paths, Path) else list(paths)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += _imports(p, root, everywhere)
    return seen


def stamp(files, root: Path = _ROOT) -> str:
    """A hash of the contents of ``files`` (package source files; their paths relative to ``root`` included)."""
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def source_stamp(path: Path, root: Path = _ROOT) -> str:
    """The stamp of a kernel's file: :func:`stamp` of its module-level :func:`dependencies`."""
    return stamp(dependencies(path, root), root)


try:
    from numba.core import caching as _caching
except ImportError:  # pragma: no cover - numba is a dependency, but stay importable without it
    _caching = None


if _caching is not None:

    class PackageCacheLocator(_caching._CacheLocator):
        """numba's cache locator for the package's own kernels: ``cache_dir()/numba/<module path>``, stamped by
        :func:`source_stamp` (contents, not the file's path or time)."""

        def __init__(self, py_func, py_file: Path):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            rel = py_file.relative_to(_ROOT).with_suffix("")
            self._cache_path = str(cache_dir() / "numba" / Path(*rel.parts))

        def get_cache_path(self):
            return self._cache_path

        def get_source_stamp(self):
            return source_stamp(self._py_file)

        def get_disambiguator(self):
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file):
            try:
                path = Path(py_file).resolve()
                path.relative_to(_ROOT)
            except (OSError, ValueError):
                return None
            if path.suffix != ".py" or path.relative_to(_ROOT).parts[0] not in _PACKAGES or not path.is_file():
                return None
            try:
                self = cls(py_func, path)
                self.ensure_cache_path()
            except (OSError, SyntaxError):
                return None  # numba's own locators then decide (in-tree __pycache__, ...)
            return self


def install() -> None:
    """Put :class:`PackageCacheLocator` first among numba's cache locators (once; before any kernel of the
    package is decorated: importing this module calls it, and ``theory/__init__`` imports it first)."""
    if _caching is None:
        return
    locators = _caching.CacheImpl._locator_classes
    if PackageCacheLocator not in locators:
        locators.insert(0, PackageCacheLocator)


install()
