import os

import numpy as np
import pytest
from hypothesis import settings

# Property tests draw their examples from a fixed seed by default, so that a CI run is reproducible; set
# HYPOTHESIS_PROFILE=explore to search with fresh random examples (and fix what it finds).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))






@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's simulations (its statistical tests time-share the cores with xdist)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


#: the modules whose tests build numba kernels (the first run in a fresh cache compiles: tens of seconds each)
COMPILED = ("tests/theory/codegen/", "tests/simulate/engines/reduced/", "tests/conformance/test_steps.py",
            "tests/theory/expectations/test_accuracy.py")


@pytest.fixture(scope="session")
def executed_notebooks(tmp_path_factory):
    """The folder where tests/test_notebooks.py leaves each notebook it executed (stamped with its source's SHA-256)
    and where tests/test_docs.py's site build takes them from (docs/conf.py, PEPITA_DOCS_EXECUTED), so that a
    notebook runs once per test session, not once in its test and again in the docs build."""
    folder = tmp_path_factory.getbasetemp() / "executed-notebooks"
    folder.mkdir(exist_ok=True)
    return folder


#: test modules run by one xdist worker, in this order: the notebooks, then the docs site built from their executions
DOCS_GROUP = ("tests/test_notebooks.py", "tests/test_docs.py")


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Mark the compile-heavy tests ``compiled`` (``-m 'not compiled'``: a quick loop without kernel builds); put
    the notebook and docs tests in one xdist group (pyproject's --dist loadgroup), first in the queue (the group is
    the longest unit: started last, it would run alone at the end) and the docs after the notebooks."""
    for item in items:
        path = item.path.as_posix()
        if any(f"/{c}" in path or path.endswith(c) for c in COMPILED):
            item.add_marker(pytest.mark.compiled)
        if any(path.endswith(m) for m in DOCS_GROUP):
            item.add_marker(pytest.mark.xdist_group("docs-site"))
    rank = {m: i for i, m in enumerate(DOCS_GROUP)}
    items.sort(key=lambda it: next((rank[m] for m in DOCS_GROUP if it.path.as_posix().endswith(m)), len(rank)))
