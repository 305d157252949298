"""The progress bars of theory and simulate: time t = steps / D with 4 significant digits and its unit.

One definition so that the ODE integrator, the sweeps and the simulation driver all show the same thing,
e.g. ``bp: 12%|##        | 24.25/200 t (steps/D) [00:01<00:08]`` rather than ``0.2425229417376768/200.0``.
"""

from __future__ import annotations

__all__ = ["TIME_UNIT", "TIME_BAR_FORMAT", "format_time", "time_bar"]

#: the unit of every time bar
TIME_UNIT = "t (steps/D)"
#: tqdm's bar_format of a bar whose n and total are times
TIME_BAR_FORMAT = "{l_bar}{bar}| {n:.4g}/{total:.4g} " + TIME_UNIT + " [{elapsed}<{remaining}]"


def format_time(t: float) -> str:
    """A time as the bars show it: 4 significant digits, with its unit."""
    return f"{float(t):.4g} {TIME_UNIT}"


def time_bar(total: float, desc: str | None = None, **kwargs):
    """A tqdm bar (tqdm.auto) over time: advance it by setting ``bar.n = t - t0`` and calling ``refresh()``, or by
    ``update(dt)``; ``kwargs`` go to tqdm (``file=``, ``leave=``, ...; ``leave=False`` by default)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    return tqdm(total=float(total), desc=desc, bar_format=TIME_BAR_FORMAT, **kwargs)
