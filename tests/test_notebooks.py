"""Every notebook runs top to bottom at the small size (PEPITA_NB_SIZE=small)."""

import hashlib
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_exist_and_are_stripped():
    assert len(NOTEBOOKS) >= 5
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: outputs not stripped"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path, executed_notebooks):
    monkeypatch.setenv("PEPITA_NB_SIZE", "small")
    monkeypatch.setenv("PEPITA_NB_FIGDIR", str(tmp_path))
    # inline figures, as the docs build draws them: the executed notebook is the docs site's page (tests/conftest.py)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    assert list(tmp_path.glob("*.png")), f"{path.name} drew no figure"
    nb.metadata["pepita_dynamics"] = {"source_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    nbformat.write(nb, executed_notebooks / path.name)
