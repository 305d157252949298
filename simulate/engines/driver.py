"""The one loop of the built-in engines: from step 0 to the last recording step, over a pluggable Stepper.

The steps are cut into chunks of at most ``stepper.chunk`` steps, cut again at every recording
step (:func:`plan`). After each chunk the stepper is asked why its replicas diverged (the policy
of the ODEs, ``theory._internal.divergence``): a reason stops the run with status -1 and the
records made so far. At a recording step the stepper records. Ctrl-C stops with status 1 and what
was recorded; a stepper whose state is whole at every chunk boundary (``keeps_interrupted_state``)
also records that state.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np

from .._spec import Records

__all__ = ["Stepper", "Outcome", "Recorder", "plan", "drive"]


class Stepper(abc.ABC):
    """What the driver advances: ``chunk`` (most steps per advance), ``advance(n, next_n)`` (n steps; next_n
    the size of the chunk after, or None: to prepare it), ``why_diverged()``, ``record(step)``."""

    chunk: int = 1
    keeps_interrupted_state: bool = False

    @abc.abstractmethod
    def advance(self, n: int, next_n: int | None) -> None: ...

    @abc.abstractmethod
    def why_diverged(self) -> str | None: ...

    @abc.abstractmethod
    def record(self, step: int) -> None: ...


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a drive ended: status (0 finished, 1 interrupted, -1 diverged), message, and the step every
    replica reached."""

    status: int = 0
    message: str = "finished"
    step: int = 0


def plan(steps: np.ndarray, chunk: int) -> list[tuple[int, bool]]:
    """The chunks from step 0 to steps[-1]: (number of steps, whether a record is due after it); at most
    ``chunk`` steps each, cut at every recording step."""
    out, s = [], 0
    for target in steps[steps > 0]:
        while s < target:
            n = int(min(chunk, target - s))
            s += n
            out.append((n, s == target))
    return out


def _bar(desc: str | None, total: int, D: int = 1):
    """A progress bar over time t = steps / D (4 significant digits, unit "t (steps/D)"): update it with
    ``bar.update(dt)`` (dt = steps / D). None for no bar."""
    if desc is None or total <= 0:
        return None
    from theory._progress import time_bar

    return time_bar(total / D, desc)


def drive(stepper: Stepper, steps: np.ndarray, D: int, *, progress: str | None = None) -> Outcome:
    """Run ``stepper`` through the recording ``steps`` (module docstring); ``progress``: the progress bar's
    label, or None for none. Returns the :class:`Outcome`."""
    chunks = plan(steps, stepper.chunk)
    bar = _bar(progress, int(steps[-1]), D)
    s, recorded = 0, -1
    try:
        if steps[0] == 0:
            stepper.record(0)
            recorded = 0
        for c, (n, due) in enumerate(chunks):
            stepper.advance(n, chunks[c + 1][0] if c + 1 < len(chunks) else None)
            t0, s = s / D, s + n
            why = stepper.why_diverged()
            if why is not None:
                return Outcome(-1, f"diverged between t = {t0:.6g} and t = {s / D:.6g} (steps/D): {why}", s)
            if due:
                stepper.record(s)
                recorded = s
            if bar is not None:
                bar.update(s / D - bar.n)  # t = steps / D
    except KeyboardInterrupt:
        if stepper.keeps_interrupted_state and s > recorded:
            stepper.record(s)
            return Outcome(1, f"interrupted at t = {s / D:.6g} (steps/D); its state is the last record", s)
        return Outcome(1, f"interrupted at t = {s / D:.6g} (steps/D)", s)
    finally:
        if bar is not None:
            bar.close()
    return Outcome(0, "finished", s)


class Recorder:
    """The records of a run: per recording step, one array per quantity over all replicas, stacked at the end
    along a record axis (axis 1) into :class:`simulate.Records`.

    ``shapes``: quantity -> its per-record shape (replicas first), for the empty stack of a run that recorded
    nothing; a quantity absent from ``shapes`` is None in the records.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        self.shapes = shapes
        self.lists: dict[str, list] = {k: [] for k in shapes}
        self.steps: list[int] = []

    def add(self, step: int, **arrays) -> None:
        for k, a in arrays.items():
            self.lists[k].append(a)
        self.steps.append(int(step))

    def stacked(self, name: str):
        if name not in self.shapes:
            return None
        if not self.steps:
            s = self.shapes[name]
            return np.empty(s[:1] + (0,) + s[1:])
        return np.stack(self.lists[name], axis=1)

    def records(self, outcome: Outcome, *, eg_test=None, info=None) -> Records:
        return Records(steps=np.asarray(self.steps, dtype=np.int64), Q=self.stacked("Q"), R=self.stacked("R"),
                       S=self.stacked("S"), v=self.stacked("v"), U=self.stacked("U"), P=self.stacked("P"),
                       eg_test=self.stacked("eg_test") if eg_test is None else eg_test, status=outcome.status,
                       message=outcome.message, info=dict(info or {}))
