"""numba's cache of the package's own kernels outlives the clone (theory._diskcache).

- a kernel compiled by one copy of the package is loaded, not compiled, by another copy at another path that
  shares the cache folder ($PEPITA_DYNAMICS_CACHE/numba/<module path>);
- the stamp follows the kernel's file and the package modules it imports at module level (a constant it reads
  from theory.ode.layout, a kernel it calls in theory.activations.relu): a change there compiles it again, a
  change elsewhere does not;
- files outside the package (a user's module, the generated rule modules) keep numba's own locators;
- a generated rule module is keyed by the package sources generation depends on
  (theory._codegen.rule.generation_sources), not by every source: every package file that runs while a rule is
  traced, assembled and its facts derived (every registered rule and variant, and the conformance twins), and every
  one the generated module's compiled code reaches through its imports, is among them or among the rule's own
  dependency files; an edit elsewhere (the solvers, the simulations) keeps the key, an edit to a kernel that
  generated code calls changes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from theory import _diskcache
from theory._codegen import rule as codegen

ROOT = Path(_diskcache.__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(_diskcache._caching is None, reason="needs numba")

# compiles (or loads) relu's j2 kernel and reports where numba looked and whether it hit its cache
_PROBE = """
import json, sys
import theory
from theory.activations import relu
relu.j2(0.5, 0.2, 0.3)
impl = relu.j2._cache._impl
print(json.dumps({"hits": sum(relu.j2.stats.cache_hits.values()), "misses": sum(relu.j2.stats.cache_misses.values()),
                  "path": impl.locator.get_cache_path(), "locator": type(impl.locator).__name__,
                  "file": relu.__file__}))
"""


def _copy_package(dest: Path) -> Path:
    for name in _diskcache._PACKAGES:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _probe(copy: Path, cache: Path) -> dict:
    env = dict(os.environ, PEPITA_DYNAMICS_CACHE=str(cache), PYTHONPATH=str(copy))
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=copy, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_copy_of_the_package_loads_the_first_ones_machine_code(tmp_path):
    cache = tmp_path / "cache"
    a, b = _copy_package(tmp_path / "a"), _copy_package(tmp_path / "b")
    first = _probe(a, cache)
    assert first["file"].startswith(str(a)), "the probe must run the copied package"
    assert first["locator"] == "PackageCacheLocator"
    assert Path(first["path"]) == cache / "numba" / "theory" / "activations" / "relu"
    assert first["misses"] == 1 and first["hits"] == 0
    assert any(p.suffix == ".nbi" for p in Path(first["path"]).iterdir())
    second = _probe(b, cache)
    assert second["file"].startswith(str(b))
    assert second["hits"] == 1 and second["misses"] == 0
    assert not (b / "theory" / "activations" / "__pycache__").exists() or not any(
        p.suffix in (".nbi", ".nbc") for p in (b / "theory" / "activations" / "__pycache__").iterdir())
    # a change to the kernel's own file compiles it again, in the same folder
    relu_b = b / "theory" / "activations" / "relu.py"
    relu_b.write_text(relu_b.read_text() + "\n# a change\n")
    third = _probe(b, cache)
    assert third["misses"] == 1 and third["hits"] == 0


def test_the_stamp_follows_module_level_imports_and_nothing_else(tmp_path):
    copy = _copy_package(tmp_path / "pkg")
    closed = copy / "theory" / "_codegen" / "closed.py"

    def stamp():
        return _diskcache.source_stamp.__wrapped__(closed, copy)

    rel = {str(p.relative_to(copy)) for p in _diskcache.dependencies(closed, copy)}
    assert {"theory/_codegen/closed.py", "theory/activations/relu.py", "theory/ode/layout.py"} <= rel
    assert "theory/_codegen/rule.py" not in rel  # imported inside functions only: not a dependency
    before = stamp()
    assert stamp() == before
    layout = copy / "theory" / "ode" / "layout.py"
    layout.write_text(layout.read_text() + "\n# a constant changed\n")
    after_layout = stamp()
    assert after_layout != before
    unrelated = copy / "theory" / "plots.py"
    unrelated.write_text(unrelated.read_text() + "\n# unrelated\n")
    assert stamp() == after_layout
    relu = copy / "theory" / "activations" / "relu.py"
    relu.write_text(relu.read_text() + "\n# a called kernel changed\n")
    assert stamp() != after_layout
    # the same sources at another path: the same stamp (paths enter relative to the package's folder)
    other = _copy_package(tmp_path / "other")
    assert (_diskcache.source_stamp.__wrapped__(other / "theory" / "_codegen" / "closed.py", other)
            == _diskcache.source_stamp.__wrapped__(ROOT / "theory" / "_codegen" / "closed.py", ROOT))


def test_files_outside_the_package_keep_numbas_own_locators(tmp_path):
    user = tmp_path / "user_kernels.py"
    user.write_text("def f(x):\n    return x + 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import user_kernels
    finally:
        sys.path.remove(str(tmp_path))
    assert _diskcache.PackageCacheLocator.from_function(user_kernels.f, str(user)) is None
    assert _diskcache.PackageCacheLocator in _diskcache._caching.CacheImpl._locator_classes
    assert _diskcache._caching.CacheImpl._locator_classes[0] is _diskcache.PackageCacheLocator


def _executed_package_files(fn) -> set[Path]:
    """The package source files whose code runs while ``fn()`` runs (this thread)."""
    roots = tuple(str(ROOT / name) + os.sep for name in _diskcache._PACKAGES)
    seen: set[str] = set()

    def profile(frame, event, arg):
        if frame.f_code.co_filename.startswith(roots):
            seen.add(frame.f_code.co_filename)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return {Path(f) for f in seen}


def _imported_modules(source: str) -> list[Path]:
    import ast

    names = [n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.module]
    files = [_diskcache._module_file(n, ROOT) for n in names if n.split(".")[0] in _diskcache._PACKAGES]
    assert None not in files, names
    return files


@pytest.mark.filterwarnings("ignore::theory.rules._facts.UntraceableRuleWarning")
def test_generation_reads_and_calls_only_what_the_rule_key_hashes():
    from tests.conformance.helpers import RULES
    from theory.rules import _facts

    hashed = codegen.generation_sources()
    assert ROOT / "theory" / "_codegen" / "closed.py" in hashed
    assert not any(p.is_relative_to(ROOT / "simulate") for p in hashed)  # can fail: the set is not everything
    generated = 0
    for rule in RULES:
        own = {Path(f) for f in codegen._dependency_files(rule)}
        for K, M in ((2, 2), (3, 1)):
            sources = []

            def generate(rule=rule, K=K, M=M, sources=sources):
                _facts._trace_facts(rule, K, M)
                try:
                    traced, feedback = codegen.trace(rule, K, M)
                except Exception:  # an untraceable twin: its tracing still ran package code
                    return
                sources.append(codegen._source(rule, K, M, traced, feedback))

            ran = _executed_package_files(generate)
            assert ran - hashed - own == set(), f"{rule.label} K={K} M={M}: generation ran unhashed sources"
            for src in sources:
                generated += 1
                reached = _diskcache.dependencies(_imported_modules(src), ROOT)
                assert reached - hashed == set(), f"{rule.label}: its compiled code reaches unhashed sources"
    assert generated >= 16


def test_the_rule_key_follows_generation_sources_and_nothing_else(tmp_path):
    copy = _copy_package(tmp_path / "pkg")

    def key():
        return _diskcache.stamp(codegen.generation_sources(copy), copy)

    before = key()
    assert before == _diskcache.stamp(codegen.generation_sources(), ROOT)  # the same sources: the same stamp
    for unrelated in ("simulate/_run.py", "theory/solver/integrate.py", "theory/analysis/fixed_points.py"):
        (copy / unrelated).write_text((copy / unrelated).read_text() + "\n# unrelated\n")
    assert key() == before
    relu = copy / "theory" / "activations" / "relu.py"  # a kernel the generated closed forms call
    relu.write_text(relu.read_text() + "\n# a called kernel changed\n")
    assert key() != before
