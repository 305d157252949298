"""A small tidy table: named 1-D columns of equal length, one row per sweep point (pandas optional)."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

__all__ = ["Table"]


class Table:
    """A small tidy table: named 1-D numpy columns of equal length (pandas is optional).

    ``table["eta"]`` is a column, ``table[3]`` a row (dict), ``table[mask]`` / ``table[1:5]`` a
    sub-table; ``len(table)``, ``table.columns``, ``table.rows()``, ``table.to_pandas()``,
    ``table.to_csv(path)``, ``Table.from_csv(path)``.
    """

    def __init__(self, columns: Mapping[str, Any]):
        cols = {}
        n = None
        for k, val in columns.items():
            a = np.asarray(val)
            if a.ndim != 1:
                raise ValueError(f"Table: column {k!r} must be 1-D, got shape {a.shape}")
            if n is None:
                n = a.shape[0]
            elif a.shape[0] != n:
                raise ValueError(f"Table: column {k!r} has length {a.shape[0]}, expected {n}")
            cols[str(k)] = a
        self._cols = cols
        self._n = 0 if n is None else n

    @property
    def columns(self) -> list[str]:
        return list(self._cols)

    def __len__(self) -> int:
        return self._n

    def __contains__(self, name) -> bool:
        return name in self._cols

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._cols[key]
        if isinstance(key, (int, np.integer)):
            return {k: _py(v[key]) for k, v in self._cols.items()}
        return Table({k: v[key] for k, v in self._cols.items()})

    def rows(self) -> Iterator[dict]:
        for i in range(self._n):
            yield self[i]

    def to_dict(self) -> dict[str, np.ndarray]:
        return dict(self._cols)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self._cols)

    def to_csv(self, path) -> None:
        import csv

        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(self.columns)
            for r in self.rows():
                w.writerow([repr(x) if isinstance(x, float) else x for x in r.values()])

    @classmethod
    def from_csv(cls, path) -> "Table":
        import csv

        with open(path, newline="") as fh:
            rd = csv.reader(fh)
            header = next(rd)
            data = list(rd)
        cols = {}
        for j, name in enumerate(header):
            raw = [r[j] for r in data]
            for conv in (int, float):
                try:
                    cols[name] = np.array([conv(x) for x in raw])
                    break
                except ValueError:
                    continue
            else:
                cols[name] = np.array([{"True": True, "False": False}.get(x, x) for x in raw])
        return cls(cols)

    def __eq__(self, other):
        return NotImplemented

    def __repr__(self) -> str:
        head = ", ".join(self.columns[:12]) + (", ..." if len(self._cols) > 12 else "")
        return f"Table({self._n} rows; columns: {head})"


def _py(x):
    return x.item() if isinstance(x, np.generic) else x


