"""Convert the notebooks' sources, jupytext percent scripts, into the notebooks beside them.

    python notebooks/build.py [NAME ...]          # write notebooks/NN_name.ipynb from notebooks/NN_name.py
    python notebooks/build.py --check [NAME ...]  # exit 1 where a committed .ipynb differs from its script

A notebook is edited in its script, ``notebooks/NN_name.py`` (``# %%`` code cells, ``# %% [markdown]``
cells with the markdown commented); the ``.ipynb`` beside it is generated (outputs stripped, stable cell
ids ``NN-ii``, the kernelspec as notebook metadata only) and committed: the tests run it and the
documentation executes it. NAME: a script or notebook name, with or without its suffix (default: all).

Every notebook reads PEPITA_NB_SIZE ("small" for CI: tiny sizes, same story; anything else: the full
sizes) and, when PEPITA_NB_FIGDIR is set, saves its figures there as PNG.
"""

import argparse
import sys
from pathlib import Path

import jupytext

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def scripts(names=()):
    """The notebooks' scripts, ``notebooks/NN_name.py`` (all of them, or those named)."""
    found = sorted(HERE.glob("[0-9][0-9]_*.py"))
    if not names:
        return found
    stems = {Path(n).name.removesuffix(".py").removesuffix(".ipynb") for n in names}
    unknown = stems - {p.stem for p in found}
    if unknown:
        raise SystemExit(f"no notebook script for {', '.join(sorted(unknown))} in {HERE}")
    return [p for p in found if p.stem in stems]


def notebook(script):
    """The notebook of a percent script: its cells, no outputs, stable ids, the kernelspec as metadata."""
    nb = jupytext.read(script, fmt="py:percent")
    nb.metadata = {"kernelspec": dict(nb.metadata.get("kernelspec") or KERNELSPEC)}
    for i, cell in enumerate(nb.cells):  # stable ids: a rebuild changes only the cells that changed
        cell.id = f"{script.stem[:2]}-{i:02d}"
        cell.metadata = {}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def render(script):
    """The text of the ``.ipynb`` generated from a script: what ``jupytext.write`` writes (a final newline)."""
    text = jupytext.writes(notebook(script), fmt="ipynb")
    return text if text.endswith("\n") else text + "\n"


def stale(names=()):
    """Problems of the committed notebooks against their scripts: one line each, none when all agree."""
    problems = []
    for script in scripts(names):
        target = script.with_suffix(".ipynb")
        if not target.exists():
            problems.append(f"{target.name}: missing (run python notebooks/build.py)")
        elif target.read_text(encoding="utf-8") != render(script):
            problems.append(f"{target.name}: differs from {script.name} (run python notebooks/build.py)")
    if not names:
        problems += [f"{nb.name}: no script {nb.stem}.py beside it" for nb in sorted(HERE.glob("*.ipynb"))
                     if not nb.with_suffix(".py").exists()]
    return problems


def build(names=()):
    for script in scripts(names):
        target = script.with_suffix(".ipynb")
        if not target.exists() or target.read_text(encoding="utf-8") != render(script):
            jupytext.write(notebook(script), target, fmt="ipynb")
            print("wrote", target)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to convert (default: all)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 where a notebook is out of date")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.names)
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    build(args.names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
