"""Sphinx configuration of the pepita-dynamics documentation.

Build (from the repository root): ``python -m sphinx -W -b html docs docs/_build/html``.
The notebooks are copied from ``notebooks/`` and executed at the small size during the build
(``PEPITA_NB_SIZE=small``), so the pages show their figures (or taken already executed from
``$PEPITA_DOCS_EXECUTED``, as the test suite does); the benchmark page includes the figures recorded in
``benchmarks/results/``.
"""

import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import ClassVar

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
# The executed notebooks and the kernels they start import the package from the checkout, at the small size.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
os.environ.setdefault("PEPITA_NB_SIZE", "small")
# the notebooks' kernels draw inline (an inherited MPLBACKEND=Agg, as CI sets, would leave the pages without figures)
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"

import theory  # noqa: E402

project = "pepita-dynamics"
author = "pepita-dynamics developers"
copyright = "2026, pepita-dynamics developers (MIT licence)"
release = theory.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
# ".rst" first: autosummary writes its generated pages (reStructuredText) with the first suffix whose parser it
# takes for reST, and it takes any suffix whose parser it cannot look up, ".md" included; the pages would then
# be read as Markdown and show their directives as text instead of the API.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
root_doc = "index"

autosummary_generate = True
autosummary_imported_members = True
autosummary_ignore_module_all = False  # a module's page (simulate.plots) lists its __all__, not what it imports
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
# Names that type hints mention but the API reference does not document (third-party types).
nitpicky = False

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# Notebooks: executed during the build at the small size, any error fails the build. PEPITA_DOCS_EXECUTED names a
# folder of notebooks already executed at the small size (tests/test_notebooks.py writes one, each stamped with the
# SHA-256 of its source); those whose source matches are taken as they are and only the others are executed ("auto").
EXECUTED = os.environ.get("PEPITA_DOCS_EXECUTED")
nb_execution_mode = os.environ.get("PEPITA_DOCS_EXECUTE", "auto" if EXECUTED else "force")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

html_theme = "furo"
html_title = f"pepita-dynamics {release}"
html_static_path = []

# --------------------------------------------------------------------------- notebooks into the source tree
NB_SRC = ROOT / "notebooks"
NB_DST = DOCS / "notebooks"


def _copy_notebooks():
    """Sphinx reads sources below docs/ only: mirror notebooks/*.ipynb into docs/notebooks/ (generated, ignored)."""
    NB_DST.mkdir(exist_ok=True)
    wanted = {p.name for p in NB_SRC.glob("[0-9]*.ipynb")}
    for old in NB_DST.glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()
    for name in sorted(wanted):
        src, dst = NB_SRC / name, NB_DST / name
        done = _executed(src)
        data = done if done is not None else src.read_bytes()
        if not dst.exists() or dst.read_bytes() != data:
            dst.write_bytes(data)


def _executed(src: Path) -> bytes | None:
    """The executed copy of notebook ``src`` in $PEPITA_DOCS_EXECUTED, if it was executed from this very source."""
    if not EXECUTED or not (Path(EXECUTED) / src.name).exists():
        return None
    data = (Path(EXECUTED) / src.name).read_bytes()
    meta = json.loads(data).get("metadata", {}).get("pepita_dynamics", {})
    return data if meta.get("source_sha256") == hashlib.sha256(src.read_bytes()).hexdigest() else None


_copy_notebooks()

# --------------------------------------------------------------------------- API pages from __all__
# One page per package listing every public name (its __all__), each with its own generated page:
# the reference cannot fall behind the package.
API_INTRO = {
    "theory": "Order-parameter ODEs of two-layer networks: rules, states, integration, sweeps, observables, "
              "Gaussian integrals, input/output.",
    "simulate": "High-dimensional simulations (full weights, batched over replicas, CPU or CUDA), the exact "
                "reduced sampler, comparison with the ODEs, finite-size studies and the command line.",
}


#: Public modules that re-export another one's functions: one page (the original's), not two.
API_ALIASES = {"simulate.plots": "theory.plots"}


def _write_api_pages():
    import importlib
    import inspect

    out = DOCS / "api"
    shutil.rmtree(out / "generated", ignore_errors=True)  # autosummary writes it afresh: no stale pages
    out.mkdir(exist_ok=True)
    for package, intro in API_INTRO.items():
        mod = importlib.import_module(package)
        names = [n for n in mod.__all__ if n != "__version__"]
        data = [n for n in names if not (inspect.isclass(getattr(mod, n)) or callable(getattr(mod, n))
                                         or inspect.ismodule(getattr(mod, n)))]
        lines = [f"# `{package}`", "", intro, "", "```{eval-rst}", f".. automodule:: {package}", "   :no-members:", "",
                 f".. currentmodule:: {package}", "", ".. autosummary::", "   :toctree: generated", ""]
        lines += [f"   {n}" for n in names if n not in data and f"{package}.{n}" not in API_ALIASES]
        lines += ["```", ""]
        for n in names:
            if f"{package}.{n}" in API_ALIASES:
                lines += [f"`{package}.{n}`: the same functions as {{mod}}`{API_ALIASES[f'{package}.{n}']}`, "
                          "where they are documented.", ""]
        lines += ["## Constants", "", "```{eval-rst}", f".. currentmodule:: {package}", ""]
        for n in data:
            lines += [f".. py:data:: {n}", f"   :value: {_short_repr(getattr(mod, n))}", ""]
            lines += [f"   {line}" for line in _attr_doc(package, n)] + [""]
        lines += ["```", ""]
        text = "\n".join(lines)
        path = out / f"{package}.md"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def _short_repr(value, width=70):
    r = repr(value) if not isinstance(value, dict) else "{" + ", ".join(map(repr, value)) + "}"
    return r if len(r) <= width else r[:width - 5] + " ...}"


def _attr_doc(package, name):
    """The ``#:`` comment documenting a module-level constant, read from whichever submodule defines it."""
    from sphinx.pycode import ModuleAnalyzer

    for modname in sorted(m for m in sys.modules if m == package or m.startswith(package + ".")):
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # noqa: BLE001 (compiled or source-less modules)
            continue
        if ("", name) in docs:
            return [line for line in docs[("", name)] if line.strip()]
    raise RuntimeError(f"{package}.{name}: document it with a '#:' comment where it is defined")


_write_api_pages()


# --------------------------------------------------------------------------- the command line's help
def _write_cli_page():
    """docs/cli.md: the help of ``pepita-dynamics`` and of each subcommand, as argparse prints it."""
    import io
    from contextlib import redirect_stdout

    from simulate._cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    parts = [
        "# Command line",
        "",
        "`pepita-dynamics` (installed with the package) has four subcommands: `compare` (simulations",
        "against ODEs), `ode` (learning curves), `sweep` (a grid of ODE learning curves, its table and",
        "phase diagrams) and `fixed-points` (fixed points, their stability and escape, continuation). Exit codes: 0 "
        "done, 2 bad input, 3 a run diverged or failed (its results are",
        "written), 130 interrupted (what was computed is written).",
        "",
    ]
    for name, p in [("pepita-dynamics", parser)] + [(f"pepita-dynamics {k}", v) for k, v in sub.choices.items()]:
        buf = io.StringIO()
        with redirect_stdout(buf):
            p.print_help()
        parts += [f"## `{name}`", "", "```text", buf.getvalue().rstrip(), "```", ""]
    text = "\n".join(parts)
    path = DOCS / "cli.md"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


_write_cli_page()


# --------------------------------------------------------------------------- benchmark figures
def _write_benchmarks_page():
    """docs/benchmarks.md: the figures each benchmark printed on the reference machine (benchmarks/results/)."""
    results = sorted((ROOT / "benchmarks" / "results").glob("*.txt"))
    parts = ["# Benchmarks", "",
             "Each script under `benchmarks/` prints its figures and, where it has one, the ratio against a",
             "baseline measured in the same run. The outputs below were recorded with",
             "`python benchmarks/run_all.py` (which writes `benchmarks/results/`); the first lines of each",
             "say on which machine and with which versions.", ""]
    if not results:
        parts += ["No recorded results yet: run `python benchmarks/run_all.py`.", ""]
    for path in results:
        parts += [f"## `{path.stem}`", "", f"```{{literalinclude}} ../benchmarks/results/{path.name}",
                  ":language: text", "```", ""]
    text = "\n".join(parts)
    path = DOCS / "benchmarks.md"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


_write_benchmarks_page()


# --------------------------------------------------------------------------- docstrings written as plain text
class _DocstringMarkup(logging.Filter):
    """Keeps reST complaints about docstrings from failing the build (``-W``), and collects them.

    The docstrings are written to be read as text (``help()``, the source): hanging indents, ``**options``,
    ``|x|``. docutils renders them as written but warns about the markup; the pages' own warnings (the
    Markdown pages, the notebooks) still fail the build. The complaints are listed in
    ``<outdir>/docstring_markup.txt``, for whoever edits a docstring to clear its own."""

    found: ClassVar[list[str]] = []

    def filter(self, record):
        where = str(getattr(record, "location", "") or "")
        if getattr(record, "type", "") == "docutils" and ("docstring of " in where or "<autosummary>" in where):
            self.found.append(f"{where}: {record.getMessage()}")
            return False
        return True


def _install_docstring_filter(app):
    for handler in logging.getLogger("sphinx").handlers:
        if type(handler).__name__ == "WarningStreamHandler":
            handler.filters.insert(0, _DocstringMarkup())  # ahead of the filter that counts warnings


def _report_docstring_markup(app, exception):
    if exception is None and _DocstringMarkup.found:
        path = Path(app.outdir) / "docstring_markup.txt"
        path.write_text("\n".join(sorted(set(_DocstringMarkup.found))) + "\n")
        print(f"{len(set(_DocstringMarkup.found))} reST complaints about docstrings (rendered as written): {path}")


def _plain_problematic(app, doctree, docname):
    """In the API pages, markup docutils could not read (``**options``, ``|x|``, ``R_``) is shown as the text it
    is, not as a link to an error message that the pages leave out (a broken anchor)."""
    if not docname.startswith("api/"):
        return
    from docutils import nodes

    for node in list(doctree.findall(nodes.problematic)):
        node.replace_self(nodes.inline(node.astext(), node.astext(), ids=node["ids"]))


def setup(app):
    app.connect("builder-inited", _install_docstring_filter)
    app.connect("doctree-resolved", _plain_problematic)
    app.connect("build-finished", _report_docstring_markup)
