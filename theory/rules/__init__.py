"""The built-in learning rules, one module each, registered on import.

Every module of this package is imported (and so registers its rules): adding a rule to the
package is adding a module here (and its test). See :mod:`theory._rules` for how to write one.
"""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
