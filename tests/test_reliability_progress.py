"""Progress bars show time t = steps / D with 4 significant digits and its unit (issue: progress bar digits)."""

from __future__ import annotations

import io
import re

import numpy as np

import theory
from theory._progress import TIME_UNIT, format_time, time_bar


def test_time_bar_text_has_four_significant_digits_and_the_unit():
    f = io.StringIO()
    bar = time_bar(200.0, "bp", file=f, mininterval=0)
    bar.n = 0.2425229417376768
    bar.refresh()
    bar.n = 24.25229417376768
    bar.refresh()
    bar.close()
    text = f.getvalue()
    assert "0.2425/200 t (steps/D)" in text and "24.25/200 t (steps/D)" in text
    assert "0.2425229417376768" not in text and "200.0" not in text
    assert format_time(0.2425229417376768) == "0.2425 " + TIME_UNIT == "0.2425 t (steps/D)"


def test_ode_bar_shows_time_with_its_unit(monkeypatch):
    import theory._progress as progress

    out = io.StringIO()
    orig = progress.time_bar
    monkeypatch.setattr(progress, "time_bar", lambda *a, **k: orig(*a, file=out, mininterval=0, **k))
    theory.integrate(theory.random_state(2, 2, D=100, seed=0), "bp", np.linspace(0, 3.3, 5), eta=1.0, progress=True)
    text = out.getvalue()
    assert "/3.3 t (steps/D)" in text, text
    numbers = re.findall(r"\| ([0-9.e+-]+)/3\.3 t", text)
    assert numbers and all(len(n.replace(".", "").lstrip("0")) <= 4 for n in numbers), numbers


def test_simulation_bar_counts_time_not_steps(monkeypatch):
    import simulate
    import theory._progress as progress

    out = io.StringIO()
    orig = progress.time_bar
    monkeypatch.setattr(progress, "time_bar", lambda *a, **k: orig(*a, file=out, mininterval=0, **k))
    init = simulate.Initialisation(2, 2, 50, seed=0)
    simulate.run(init, "bp", [0.0, 1.0, 2.0], eta=1.0, replicas=1, device="cpu", progress=True)
    text = out.getvalue()
    assert "/2 t (steps/D)" in text and "step" not in text.replace("steps/D", ""), text
