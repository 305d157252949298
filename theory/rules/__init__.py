"""Learning rules: the base class and registry (``_base``), what an update returns (``_validate``),
what is derived from it (``_facts``), and the built-in rules, one module each (bp, fa, afa, pepita).

Importing this package imports nothing else: the built-in rules register when the registry is
first asked for a rule (:func:`load_builtins`). Adding a rule to the package is adding a module
here (and its test); see :mod:`theory.rules._base` for how to write one.
"""

import importlib
import pkgutil


def load_builtins() -> None:
    """Import every built-in rule module of this package (each registers its rules)."""
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
