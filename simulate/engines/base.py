"""What :func:`simulate.run` needs to know about an engine, declared by the engine itself."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable

import torch

__all__ = ["Engine", "CallableEngine"]


class Engine(abc.ABC):
    """A simulation engine: ``run(spec) -> Records`` (also ``engine(spec)``), and what it declares.

    name: the name recorded in the result. needs_weights: whether the spec must carry the
    D-dimensional :class:`simulate.Weights` (an engine without it can start from a theory.OrderParams).
    dtype: the default dtype. ``n_test(hyper)``: the default size of the empirical test error's
    sample. ``check(spec)``: refuse (ValueError) what this engine cannot run, before it starts.
    ``memory(...)``: bytes the engine allocates beyond the records and the initial draw.
    """

    name: str
    needs_weights: bool = True
    dtype: torch.dtype = torch.float32

    def n_test(self, hyper) -> int:
        return 10_000

    def check(self, spec) -> None:
        return None

    def memory(self, *, K, M, D, replicas, n_test, hyper, itemsize) -> float:
        return replicas * K * D * itemsize if self.needs_weights else 0.0

    @abc.abstractmethod
    def run(self, spec):
        """Simulate ``spec`` (a :class:`simulate.RunSpec`); returns :class:`simulate.Records`."""

    def __call__(self, spec):
        return self.run(spec)


@dataclasses.dataclass(frozen=True)
class CallableEngine(Engine):
    """A plain function fn(spec) -> Records as an engine (:func:`simulate.register_engine`): it receives the
    weights (needs_weights), float32 by default, and n_test = 10,000 by default."""

    name: str
    fn: Callable

    def run(self, spec):
        return self.fn(spec)
