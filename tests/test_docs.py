"""The documentation site builds with warnings as errors, executing the notebooks, and its internal links resolve."""

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")
pytest.importorskip("furo")

import simulate  # noqa: E402
import theory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        for key in ("href", "src"):
            if a.get(key):
                self.links.append(a[key])


def _parse(path):
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def broken_links(html_root: Path) -> list[str]:
    """Every internal href/src of the built site whose file or #anchor does not exist."""
    pages, broken = {}, []
    for page in sorted(html_root.rglob("*.html")):
        pages[page.resolve()] = _parse(page)
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:", "data:")):
                continue  # external: not checked here (no network in CI)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(html_root)}: {link} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{page.relative_to(html_root)}: {link} (no such anchor)")
    return broken


@pytest.fixture(scope="module")
def site(tmp_path_factory, executed_notebooks):
    """The site, built once by one xdist worker (tests/conftest.py: the docs group), from the notebooks that
    tests/test_notebooks.py executed in this session where it did (the others are executed by the build)."""
    out = tmp_path_factory.mktemp("html")
    env = dict(os.environ, PEPITA_NB_SIZE="small", MPLBACKEND="Agg", PYTHONWARNINGS="ignore::DeprecationWarning",
               PEPITA_DOCS_EXECUTED=str(executed_notebooks))
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, (
        f"docs build failed (warnings are errors):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return out


def test_docs_build_without_warnings_and_links_resolve(site):
    assert (site / "index.html").exists()
    assert broken_links(site) == []


def test_every_public_name_has_a_page(site):
    for mod in (theory, simulate):
        api = (site / "api" / f"{mod.__name__}.html").read_text(encoding="utf-8")
        for name in mod.__all__:
            if name == "__version__":
                continue
            assert f"{mod.__name__}.{name}" in api, f"{mod.__name__}.{name} missing from the API reference"


def test_notebooks_are_rendered_with_their_figures(site):
    notebooks = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    assert notebooks
    for nb in notebooks:
        html = (site / "notebooks" / f"{nb.stem}.html").read_text(encoding="utf-8")
        assert re.search(r"<img[^>]+src=\"[^\"]+\.png\"", html), f"{nb.name}: no figure on its page"
        assert "Traceback" not in html, f"{nb.name}: an error in its output"


def test_the_link_checker_finds_broken_links(tmp_path):
    (tmp_path / "a.html").write_text('<a id="here" href="b.html#there">x</a><a href="#here">y</a><a href="c.html">z</a>'
                                     '<img src="https://example.org/x.png">')
    (tmp_path / "b.html").write_text('<p id="elsewhere">b</p>')
    assert broken_links(tmp_path) == ["a.html: b.html#there (no such anchor)", "a.html: c.html (no such file)"]
