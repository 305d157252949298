"""The package's one version string (pyproject.toml reads it)."""

__version__ = "0.2.0"
