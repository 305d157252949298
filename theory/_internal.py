"""What :mod:`simulate` (and the tests) take from ``theory`` beyond its public API, in one place.

``theory``'s facade holds what users use; the plumbing the simulation half shares with the
theory half (input checks, files, the draw of initial weights, the divergence policy, the compiled-rule ABI, the keyword
options -> rule and HyperParams resolution, the run record) is imported from here.
"""

from . import _checks as checks
from ._codegen import rule as compiled
from ._hyper import hyper_params, resolve, split_options
from ._hyper import record as run_params
from ._init import draw_weights
from .ode.derivatives import HYPER_DIFFERENTIABLE
from .ode.views import rhs_view, update_view
from .results import io
from .results.io import json_default
from .rules import _facts as facts
from .solver import divergence

__all__ = ["checks", "compiled", "divergence", "draw_weights", "facts", "hyper_params", "io", "json_default",
           "resolve", "rhs_view", "run_params", "split_options", "update_view", "HYPER_DIFFERENTIABLE"]
