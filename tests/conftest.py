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


def pytest_collection_modifyitems(config, items):
    """Mark the compile-heavy tests ``compiled`` (``-m 'not compiled'``: a quick loop without kernel builds)."""
    for item in items:
        path = item.path.as_posix()
        if any(f"/{c}" in path or path.endswith(c) for c in COMPILED):
            item.add_marker(pytest.mark.compiled)
