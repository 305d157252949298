"""The notebooks' sources: each notebooks/NN_name.ipynb is generated from its jupytext percent script
notebooks/NN_name.py by notebooks/build.py, and the committed notebook is that script's conversion."""

import importlib.util
import json
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
SCRIPTS = sorted(NB_DIR.glob("[0-9]*.py"))
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))


def _load_build():
    spec = importlib.util.spec_from_file_location("notebooks_build", NB_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build():
    return _load_build()


def test_every_notebook_has_its_script_and_every_script_its_notebook(build):
    assert len(SCRIPTS) >= 5
    assert {p.stem for p in NOTEBOOKS} == {p.stem for p in SCRIPTS}
    assert [p.name for p in build.scripts()] == [p.name for p in SCRIPTS]
    assert {p.stem for p in NB_DIR.glob("[0-9]*.py")} == {p.stem for p in NB_DIR.glob("[0-9]*.ipynb")}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_is_a_percent_script_that_compiles(script):
    text = script.read_text(encoding="utf-8")
    assert text.startswith("# ---\n# jupyter:\n#   jupytext:\n"), f"{script.name}: no jupytext header"
    assert "format_name: percent" in text.split("# ---\n")[1], f"{script.name}: not in the percent format"
    assert "kernelspec:" in text.split("# ---\n")[1]
    assert "\n# %%" in text
    compile(text, str(script), "exec")  # the script as a whole is valid Python
    nb = jupytext.read(script, fmt="py:percent")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            compile(cell.source, f"{script.name}, cell {i}", "exec")  # and so is each code cell on its own


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_committed_notebook_is_its_scripts_conversion(script, build):
    target = script.with_suffix(".ipynb")
    assert target.exists(), f"{target.name} missing: run python notebooks/build.py"
    assert target.read_text(encoding="utf-8") == build.render(script), (
        f"{target.name} differs from {script.name}: run python notebooks/build.py")
    # what build.render compares against is what build.py writes
    nb = json.loads(build.render(script))
    assert nb["metadata"] == {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    assert [c["id"] for c in nb["cells"]] == [f"{script.stem[:2]}-{i:02d}" for i in range(len(nb["cells"]))]
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_check_mode_passes_on_the_tree_and_fails_on_a_stale_notebook(build, tmp_path, monkeypatch, capsys):
    assert build.main(["--check"]) == 0
    assert build.stale() == []
    # a copy of the notebooks: the written notebook equals render(); an edit to a script, a missing
    # notebook and an orphan notebook each make --check fail
    for path in [*SCRIPTS[:2], SCRIPTS[0].with_suffix(".ipynb")]:
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(build, "HERE", tmp_path)
    assert build.main(["--check", SCRIPTS[0].name]) == 0
    assert build.main(["--check"]) == 1
    assert f"{SCRIPTS[1].stem}.ipynb: missing" in capsys.readouterr().err
    build.main([])
    assert build.main(["--check"]) == 0
    assert (tmp_path / SCRIPTS[1].with_suffix(".ipynb").name).read_text(encoding="utf-8") == \
        SCRIPTS[1].with_suffix(".ipynb").read_text(encoding="utf-8")
    first = tmp_path / SCRIPTS[0].name
    first.write_text(first.read_text(encoding="utf-8") + "\n# %%\nprint('an edit')\n", encoding="utf-8")
    assert build.main(["--check"]) == 1
    assert "differs" in capsys.readouterr().err
    build.main([SCRIPTS[0].stem])
    assert build.main(["--check"]) == 0
    first.unlink()
    assert build.main(["--check"]) == 1
    assert "no script" in capsys.readouterr().err
