"""The code generation of compiled rules (theory._codegen): templates, keys, the cache's size.

- the templates (theory._codegen.template, theory._codegen.quadrature) are valid, linted Python: no
  undefined names, no text substitution; a generated module is valid, lint-clean Python too;
- the specialisation checks what it splices in and what the generated module must define;
- a rule's key covers the user modules its update calls into (a helper in another file);
- the cache is pruned to PEPITA_DYNAMICS_CACHE_MAX, least recently used first, never what this process
  loaded; the variable is validated.

Every test uses its own cache folder (PEPITA_DYNAMICS_CACHE).
"""

import ast
import concurrent.futures
import importlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import theory
from theory._codegen import quadrature, template
from theory._codegen import rule as R

CODEGEN = Path(R.__file__).resolve().parent
#: the rules ruff checks: pyflakes (F: undefined and unused names, ...) and pycodestyle's errors (E4, E7, E9)
RUFF_RULES = "E4,E7,E9,F"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("PEPITA_DYNAMICS_CACHE", str(folder))
    monkeypatch.delenv("PEPITA_DYNAMICS_CACHE_MAX", raising=False)
    return folder


def _ruff(*args, stdin=None):
    exe = shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed")
    return subprocess.run([exe, "check", "--isolated", "--select", RUFF_RULES, "--no-cache", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def _generated(rule, K, M):
    traced, feedback = R.trace(rule, K, M)
    return R._source(rule, K, M, traced, feedback)


# ----------------------------------------------------------------------------- 1. the templates
def test_templates_are_real_python_without_text_substitution():
    """No undefined names waved through (noqa: F821), no kernels patched by str.replace, no source strings."""
    for path in CODEGEN.glob("*.py"):
        text = path.read_text()
        assert "F821" not in text, path.name
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "replace":
                # os.replace (an atomic rename) is the only replace left
                assert isinstance(node.func.value, ast.Name) and node.func.value.id == "os", (path.name, node.lineno)
    for fn in (template.update, template.kinks, template.coefficient, template.closed_rhs, template.closed_rhs_rows,
               quadrature.numerical_terms, quadrature.numerical_terms_kinks, quadrature.numerical_rhs,
               quadrature.numerical_rhs_kinks):
        assert callable(fn) and not hasattr(fn, "py_func"), fn  # a plain function: a template is never compiled


def test_templates_are_ruff_clean():
    res = _ruff(str(CODEGEN / "template.py"), str(CODEGEN / "quadrature.py"), str(CODEGEN / "rule.py"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_template_is_not_callable():
    with pytest.raises(NotImplementedError, match="template"):
        template.coefficient(None, None, None, 1.0, None)


@pytest.mark.parametrize("name, K, M", [("pepita", 2, 2), ("bp", 2, 2), ("afa", 3, 1), ("fa", 1, 2)])
def test_generated_module_is_valid_ruff_clean_python(name, K, M):
    rule = theory.make_rule(name)
    src = _generated(rule, K, M)
    tree = ast.parse(src)
    compile(src, f"rule_{name}.py", "exec")
    defs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {
        "update",
        "kinks",
        "numerical_terms",
        "numerical_terms_kinks",
        "numerical_rhs",
        "numerical_rhs_kinks",
    } <= defs
    assert ("closed_rhs" in defs) == (name in ("bp", "fa", "afa"))  # the closed-form family (derived)
    consts = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}
    assert consts["K"] == K and consts["M"] == M and isinstance(consts["KINK_DEPTH"], tuple)
    imported = {a.asname or a.name for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert not imported & set(template.PLACEHOLDERS)  # bound in the module, never imported from the template
    assert "GENERATED" not in src and "@jit" not in src
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        (deco,) = fn.decorator_list
        assert ast.unparse(deco.func) == "numba.njit" and any(k.arg == "cache" and k.value.value for k in deco.keywords)
    res = _ruff("--stdin-filename", f"rule_{name}.py", "-", stdin=src)
    assert res.returncode == 0, res.stdout + res.stderr


def test_generated_module_compiles_and_matches_the_rule(cache):
    """The module written to the cache is the generated source; its update is the rule's (Rule.local_update)."""
    rule = theory.make_rule("pepita")
    comp = R.compiled_rule.__wrapped__(rule, 2, 2)
    assert comp.ok, comp.reason
    assert comp.path.read_text() == _generated(rule, 2, 2) and comp.path.is_relative_to(cache)
    rng = np.random.default_rng(0)
    lam, nu, zeta = rng.normal(size=(7, 2)), rng.normal(size=(7, 2)), rng.normal(size=7)
    kw = dict(v=rng.normal(size=2), v_star=np.ones(2), S=rng.normal(size=2), b=None, sigma=0.1, sigma_F=0.8)
    got = R.update_batch(rule, "erf", lam, nu, zeta, **kw)
    ref = rule.local_update(lam, nu, zeta, g="erf", **kw)
    for a, b in zip(got, (ref.delta, ref.alpha, ref.e_out, ref.h, ref.e)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- 2. the specialisation
def _stmts(src):
    return ast.parse(textwrap.dedent(src)).body


def test_specialise_replaces_generated_and_the_decorator():
    node = template.specialise(template.coefficient, _stmts("c[0] = math.sqrt(v[0]) * sigma_F"))
    text = ast.unparse(node)
    assert "GENERATED" not in text and "c[0] = math.sqrt(v[0]) * sigma_F" in text
    assert text.startswith("@numba.njit(COEF_SIG, cache=True, error_model='numpy')")
    assert "pass" in ast.unparse(template.specialise(template.kinks, []))  # no kinks: an empty loop


def test_specialise_refuses_code_that_reads_unnamed_names():
    with pytest.raises(ValueError, match="reads \\['undefined_helper'\\]"):
        template.specialise(template.coefficient, _stmts("c[0] = undefined_helper(v[0])"))
    template.specialise(template.coefficient, _stmts("_c0 = v[0] * 2.0\nc[0] = abs(_c0)"))  # temporaries, builtins


def test_specialise_needs_exactly_the_generated_statements():
    with pytest.raises(ValueError, match="GENERATED"):
        template.specialise(template.update)  # the rule's code is missing
    with pytest.raises(ValueError, match="GENERATED"):
        template.specialise(quadrature.numerical_rhs, [])  # a generic kernel takes none


def test_module_source_needs_the_placeholders_defined():
    with pytest.raises(NameError, match="placeholder 'update'"):
        template.module_source([(quadrature.numerical_terms, None)], {})
    with pytest.raises(NameError, match="placeholder 'KINK_DEPTH'"):
        template.module_source(
            [(template.update, []), (template.kinks, []), (quadrature.numerical_terms_kinks, None)], {}
        )
    src = template.module_source(
        [(template.update, []), (template.kinks, []), (quadrature.numerical_terms_kinks, None)], {"KINK_DEPTH": ()}
    )
    ast.parse(src)


def test_module_source_imports_what_the_templates_see():
    src = template.module_source([(template.update, []), (quadrature.numerical_terms, None)], {})
    ns = {}
    exec_src = "\n".join(line for line in src.splitlines() if line.startswith(("import ", "from ")))
    exec(compile(exec_src, "imports", "exec"), ns)
    for name, obj in ns.items():
        if not name.startswith("__"):
            seen = template.update.__globals__.get(name, quadrature.numerical_terms.__globals__.get(name))
            assert obj is seen, name


# ----------------------------------------------------------------------------- 3. the key covers helpers
RULE_MODULE = '''
import dataclasses

import theory
import {helper}


@dataclasses.dataclass(frozen=True)
class HelperRule(theory.Rule):
    """bp with the feedback scaled by a helper defined in another module."""

    name = "{name}"

    def update(self, x):
        return theory.LocalUpdate(delta={helper}.scale(x.v) * x.dg(x.lam) * x.e[..., None])
'''


def test_key_covers_a_helper_module(cache, tmp_path, monkeypatch):
    tag = uuid.uuid4().hex[:8]
    helper, rules = f"pd_helper_{tag}", f"pd_rules_{tag}"
    src = tmp_path / "src"
    src.mkdir()
    (src / f"{helper}.py").write_text("def scale(z):\n    return 2.0 * z\n")
    (src / f"{rules}.py").write_text(RULE_MODULE.format(helper=helper, name=f"helper-rule-{tag}"))
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    rng = np.random.default_rng(1)
    lam, nu, zeta = rng.normal(size=(5, 2)), rng.normal(size=(5, 2)), rng.normal(size=5)
    kw = dict(v=rng.normal(size=2), v_star=np.ones(2), S=None, b=None, sigma=0.0, sigma_F=1.0)
    try:
        mod = importlib.import_module(rules)
        first = mod.HelperRule()
        files = R._dependency_files(first)
        assert str((src / f"{helper}.py").resolve()) in files and str((src / f"{rules}.py").resolve()) in files
        key1 = R._rule_key(first, 2, 2)
        comp1 = R.compiled_rule(first, 2, 2)
        assert comp1.ok, comp1.reason
        delta1 = R.update_batch(first, "erf", lam, nu, zeta, **kw)[0]

        (src / f"{helper}.py").write_text("def scale(z):\n    return 3.0 * z  # edited\n")
        importlib.reload(sys.modules[helper])
        second = importlib.reload(mod).HelperRule()
        assert (src / f"{rules}.py").read_text() == RULE_MODULE.format(helper=helper, name=f"helper-rule-{tag}")
        key2 = R._rule_key(second, 2, 2)
        assert key2 != key1  # only the helper's file changed
        comp2 = R.compiled_rule(second, 2, 2)
        assert comp2.ok and comp2.path != comp1.path
        assert (cache / "rules" / f"key_{key2}.txt").read_text() != (cache / "rules" / f"key_{key1}.txt").read_text()
        delta2 = R.update_batch(second, "erf", lam, nu, zeta, **kw)[0]
        np.testing.assert_allclose(delta2, 1.5 * delta1, rtol=1e-12)
        np.testing.assert_allclose(delta2, second.local_update(lam, nu, zeta, g="erf", **kw).delta, rtol=1e-12)
    finally:
        sys.modules.pop(helper, None)
        sys.modules.pop(rules, None)


def test_key_of_a_builtin_rule_is_its_files_and_the_package():
    files = R._dependency_files(theory.make_rule("pepita"))
    assert [Path(f).name for f in files] == ["_base.py", "pepita.py"]  # numpy, sympy, ... never enter it
    assert R._rule_key(theory.make_rule("pepita"), 2, 2) != R._rule_key(
        theory.make_rule("pepita", error="modulated"), 2, 2
    )
    assert R._rule_key(theory.make_rule("pepita"), 2, 2) != R._rule_key(theory.make_rule("pepita"), 2, 3)


# ----------------------------------------------------------------------------- 4. the cache's size
@pytest.mark.parametrize("raw, expected", [
    (None, R.CACHE_MAX_DEFAULT), ("", R.CACHE_MAX_DEFAULT), ("1048576", 2**20), ("500M", 500 * 2**20),
    ("2G", 2 * 2**30), ("1.5g", int(1.5 * 2**30)), ("300MiB", 300 * 2**20), ("64kb", 64 * 2**10), (" 7 ", 7),
    ("0", 0), ("100b", 100),
])
def test_cache_max_reads_the_variable(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv("PEPITA_DYNAMICS_CACHE_MAX", raising=False)
    else:
        monkeypatch.setenv("PEPITA_DYNAMICS_CACHE_MAX", raw)
    assert R.cache_max() == expected


@pytest.mark.parametrize("raw", ["lots", "-5", "5X", "MiB", "1e9", "2 G B", "1..5G"])
def test_cache_max_refuses_a_bad_value(monkeypatch, cache, raw):
    monkeypatch.setenv("PEPITA_DYNAMICS_CACHE_MAX", raw)
    with pytest.raises(ValueError, match="PEPITA_DYNAMICS_CACHE_MAX"):
        R.cache_max()
    with pytest.raises(ValueError, match="PEPITA_DYNAMICS_CACHE_MAX"):
        R.compiled_rule.__wrapped__(theory.make_rule("bp"), 1, 1)


def _fake_entry(folder, digest, size, age, now, key=None):
    """A generated module as the cache holds it: the module, numba's files beside it (__pycache__), a key."""
    pyc = folder / "__pycache__"
    pyc.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"rule_{digest}.py", pyc / f"rule_{digest}.update-15.py311.nbi",
             pyc / f"rule_{digest}.update-15.py311.1.nbc", pyc / f"rule_{digest}.numerical_rhs-200.py311.2.nbc"]
    for p, n in zip(paths, (size // 10, size // 10, size - 3 * (size // 10), size // 10)):
        p.write_bytes(b"x" * n)
    if key is not None:
        paths.append(folder / f"key_{key}.txt")
        paths[-1].write_text(digest)
    for p in paths:
        os.utime(p, (now - age, now - age))
    return paths


def _size(folder):
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def test_prune_removes_the_least_recently_used_entries(tmp_path):
    folder, now = tmp_path / "rules", time.time()
    entries = {f"{i:020x}": _fake_entry(folder, f"{i:020x}", 100_000, age=1000 * (10 - i), now=now, key=f"k{i}")
               for i in range(10)}  # entry 9 the newest
    (folder / "facts_old.json").write_text("{}")
    os.utime(folder / "facts_old.json", (now - 1e6, now - 1e6))
    tmp = folder / "tmpabc.tmp"  # a write in progress
    tmp.write_bytes(b"y" * 50_000)
    digests = sorted(entries)
    stamp = folder / f"rule_{digests[0]}.used"  # the oldest module, used a moment ago
    stamp.touch()
    cap = 560_000  # room for 5 entries, the temporary file and the small files
    removed = R.prune_cache(cap, keep={digests[1]}, folder=folder)
    assert _size(folder) <= cap
    assert removed == digests[2:7]  # the least recently used first, the protected one and the used one skipped
    for d in digests:
        gone = d in removed
        assert all(not p.exists() for p in entries[d]) if gone else all(p.exists() for p in entries[d]), d
    assert tmp.exists() and (folder / "facts_old.json").exists()  # other files go after every module
    assert R.prune_cache(cap, folder=folder) == []  # under the cap: nothing to do
    assert R.prune_cache(0, folder=folder) == []  # 0: no cap


def test_prune_never_removes_what_this_process_loaded(tmp_path, monkeypatch):
    folder, now = tmp_path / "rules", time.time()
    old, new = "a" * 20, "b" * 20
    _fake_entry(folder, old, 100_000, age=5000, now=now)
    _fake_entry(folder, new, 100_000, age=10, now=now)
    monkeypatch.setattr(R, "_LOADED", {old})
    assert R.prune_cache(1, folder=folder) == [new]
    assert (folder / f"rule_{old}.py").exists()


def test_prune_tolerates_concurrent_pruners_and_vanishing_files(tmp_path, monkeypatch):
    folder, now = tmp_path / "rules", time.time()
    for i in range(30):
        _fake_entry(folder, f"{i:020x}", 20_000, age=100 * (30 - i), now=now, key=f"k{i}")
    real_lstat = os.lstat

    def flaky_lstat(path, *a, **kw):  # another process removes files while this one lists them
        if str(path).endswith(".nbi") and hash(str(path)) % 3 == 0:
            raise FileNotFoundError(path)
        return real_lstat(path, *a, **kw)

    monkeypatch.setattr(R.os, "lstat", flaky_lstat)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: R.prune_cache(200_000, folder=folder), range(8)))
    monkeypatch.setattr(R.os, "lstat", real_lstat)
    R.prune_cache(200_000, folder=folder)  # what the hidden files left: a removed module's left-overs go first
    assert _size(folder) <= 200_000
    assert (folder / f"rule_{29:020x}.py").exists()  # the newest stays


def test_writing_a_module_prunes_the_cache(cache, monkeypatch):
    folder, now = cache / "rules", time.time()
    folder.mkdir(parents=True)
    olds = [f"{i:020x}" for i in range(3)]
    for i, d in enumerate(olds):
        _fake_entry(folder, d, 100_000, age=10_000 - i, now=now)
    monkeypatch.setenv("PEPITA_DYNAMICS_CACHE_MAX", "150K")
    comp = R.compiled_rule.__wrapped__(theory.make_rule("bp"), 1, 1)
    assert comp.ok, comp.reason
    assert comp.path.exists() and comp.path.with_suffix(".used").exists()
    assert not (folder / f"rule_{olds[0]}.py").exists() and not (folder / f"rule_{olds[1]}.py").exists()
    assert (folder / f"rule_{olds[2]}.py").exists()  # the newest of the old ones still fits


def test_a_vanished_module_is_generated_again(cache, monkeypatch):
    """A module removed by another process's pruning, before or while this one loads it, is generated again."""
    rule = theory.make_rule("bp")
    comp = R.compiled_rule.__wrapped__(rule, 1, 1)
    assert comp.ok, comp.reason
    modname = f"_pepita_rule_{comp.path.stem[len('rule_'):]}"
    comp.path.unlink()  # before: the key points to a module that is gone
    sys.modules.pop(modname, None)
    again = R.compiled_rule.__wrapped__(rule, 1, 1)
    assert again.ok and again.path == comp.path and comp.path.exists()

    real, calls = R._import_generated, []

    def vanishing(digest, path):  # while: gone between finding it and importing it
        calls.append(path)
        if len(calls) == 1:
            path.unlink()
            raise FileNotFoundError(path)
        return real(digest, path)

    sys.modules.pop(modname, None)
    monkeypatch.setattr(R, "_import_generated", vanishing)
    third = R.compiled_rule.__wrapped__(rule, 1, 1)
    assert third.ok and len(calls) == 2 and comp.path.exists()
