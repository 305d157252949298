"""The package layout: no import cycle among the modules, theory never imports simulate, a small facade.

The graph is read from the source (ast), not from an import: every module-level ``import`` and
``from ... import`` of a package module is an edge; imports inside functions are not (they run
after every module is loaded). An edge to a package is an edge to its ``__init__``.
"""

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

import theory

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("theory", "simulate")


def _modules():
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_pkg else parts)
            out[name] = (path, is_pkg)
    return out


def _edges(name, path, is_pkg, modules):
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:  # module level only
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            # ``from pkg import sub`` (a module) needs sub, not pkg's body; ``from pkg import name`` needs pkg
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for t in targets:
            if t in modules and t != name:
                found.add(t)
    return found


def import_graph():
    modules = _modules()
    return {name: _edges(name, path, is_pkg, modules) for name, (path, is_pkg) in modules.items()}


def _cycle(graph):
    """One import cycle as a list of modules, or None (iterative depth-first search)."""
    colour = dict.fromkeys(graph, 0)
    for start in graph:
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            for child in children:
                if colour[child] == 1:
                    return path[path.index(child):] + [child]
                if colour[child] == 0:
                    colour[child] = 1
                    stack.append((child, iter(sorted(graph[child]))))
                    path.append(child)
                    break
            else:
                colour[node] = 2
                stack.pop()
                path.pop()
    return None


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_finder_can_fail():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_theory_never_imports_simulate():
    for name, (path, _) in _modules().items():
        if name.startswith("theory"):
            assert "import simulate" not in path.read_text() and "from simulate" not in path.read_text(), name


def test_theory_modules_do_not_import_the_facade():
    """Inside theory, modules import each other, never ``theory`` itself (the facade imports them)."""
    graph = import_graph()
    offenders = [m for m, deps in graph.items() if m.startswith("theory.") and "theory" in deps]
    assert not offenders, offenders


PLUMBING = {"checks", "compiled", "divergence", "io", "resolve", "split_options", "hyper_params", "run_params",
            "json_default"}


def test_facade_holds_no_plumbing():
    assert not PLUMBING & set(theory.__all__)
    for name in theory.__all__:
        assert hasattr(theory, name), name
    from theory import _internal

    for name in _internal.__all__:
        assert hasattr(_internal, name), name


@pytest.mark.parametrize("pkg", ["activations", "analysis", "expectations", "ode", "solver", "_codegen", "sweeps",
                                 "results", "rules"])
def test_every_subpackage_lists_its_modules(pkg):
    """A subpackage's docstring names every module in it: the tree is readable from the docstrings."""
    import importlib

    mod = importlib.import_module(f"theory.{pkg}")
    doc = mod.__doc__ or ""
    for path in (ROOT / "theory" / pkg).glob("*.py"):
        if path.name != "__init__.py" and not (pkg == "rules" and not path.stem.startswith("_")):
            assert path.stem in doc, f"theory/{pkg}/__init__.py does not mention {path.name}"


def test_the_tree_is_ruff_clean():
    """The whole tree passes ``ruff check`` under the project's own configuration (pyproject.toml)."""
    exe = shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (it is in the test extra)")
    res = subprocess.run([exe, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_every_subpackage_is_packaged():
    """A non-editable install ships every package directory (setuptools finds them; none is listed by hand)."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert isinstance(cfg["packages"], dict), "packages listed by hand: a new subpackage would be left out of the wheel"
    from setuptools import find_packages

    found = set(find_packages(str(ROOT), include=cfg["packages"]["find"]["include"]))
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")
    }
    assert on_disk <= found, sorted(on_disk - found)
