"""`kifabrik eval` counts its work first (a dry run on stand-ins) and says at every step how much is left."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from rich.console import Console

from kifabrik import progress
from kifabrik.evaluate import EvalOptions, evaluate
from kifabrik.evaluate.plan import Meter, Work


def test_every_step_says_how_much_is_left(ws: Any, tiny_model: Any, mc_task: Path, gen_task: Path,
                                          monkeypatch: Any) -> None:
    shown = io.StringIO()
    monkeypatch.setenv("KIFABRIK_QUIET", "0")
    monkeypatch.setattr(progress, "console", Console(file=shown, width=1000))
    evaluate(ws, tiny_model.ref, EvalOptions(tasks=[str(mc_task), str(gen_task)], suites=["all"], limit=2))
    lines = [line.strip() for line in shown.getvalue().splitlines() if "(step " in line]
    # 2 tasks, then the 6 suites of `all` in their run order
    assert [line.split(" (step")[0] for line in lines] == [
        "task wartung", "task fragen", "suite ve", "suite nd", "suite cy", "suite da", "suite tr", "suite lang"]
    assert [re.search(r"step (\d+) of (\d+)", line).groups() for line in lines] == [(str(i), "8") for i in range(1, 9)]
    planned = re.search(r"planned ([\d,]+) scored continuations and at most ([\d,]+) generated tokens", lines[0])
    assert planned is not None  # the dry run counted every suite (else: "no estimate")
    assert all(re.search(r": \d+% done after \S+( \S+)?, about \S+( \S+)? left$", line) for line in lines[1:])
    # the stand-ins counted exactly what the model then computed
    done = re.search(r"done: ([\d,]+) scored continuations and at most ([\d,]+) generated tokens in .* \(as planned\)",
                     shown.getvalue())
    assert done is not None and done.groups() == planned.groups()


def test_time_left_follows_the_measured_rates() -> None:
    meter = Meter(Work(scored=100, generated=1000))
    meter.done, meter.seconds = Work(scored=50, generated=0), {"scored": 10.0, "generated": 0.0}
    # 50 continuations left at 0.2 s; generation not timed yet: it borrows that rate, 1000 tokens × 0.2 s
    assert meter.left_s() == 50 * 0.2 + 1000 * 0.2
    meter.done, meter.seconds = Work(scored=100, generated=500), {"scored": 20.0, "generated": 5.0}
    assert meter.left_s() == 500 * 0.01 and meter.share() == 25 / 30
    assert Meter(None).left_s() is None
