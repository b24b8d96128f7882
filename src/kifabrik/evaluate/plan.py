"""How much an evaluation computes, and how much of it is left: the estimate `kifabrik eval` prints.

Before the real run, its tasks and suites run once against `Counting`, a backend that answers at
once (empty text, equal log-likelihoods) and counts the work a model would do: scored
continuations, and generated tokens (`max_new_tokens` per prompt, the most a prompt may cost).
The real backends are wrapped in `Metered`, which counts the same units as calls finish and
times each kind; the time left is the units left at the rates measured so far. Suites whose
work depends on the answers (few do) make the plan an estimate, which is what it is called.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kifabrik import progress
from kifabrik.evaluate.loglik import ChoiceScore


@dataclass
class Work:
    """Units of model work: scored continuations and the generation budget in tokens."""

    scored: int = 0
    generated: int = 0


@dataclass
class Counting:
    """A stand-in backend that answers at once and counts the work into `work`."""

    name: str
    kind: str
    record: Any
    work: Work
    notes: list[str] = field(default_factory=list)

    def loglikelihoods(self, items: Sequence[tuple[Any, list[str]]], *, chat: bool, delimiter: str,
                       progress: Callable[[int], None] | None = None) -> list[list[ChoiceScore]]:
        self.work.scored += sum(len(choices) for _, choices in items)
        return [[ChoiceScore(-1.0, i == 0, 1) for i in range(len(choices))] for _, choices in items]

    def generate(self, prompts: Sequence[Any], opts: Any, *, chat: bool,
                 progress: Callable[[int], None] | None = None) -> list[str]:
        self.work.generated += len(prompts) * opts.max_new_tokens
        return ["" for _ in prompts]


@dataclass
class Meter:
    """The planned work (None: unknown), the work done, and the seconds each kind took."""

    planned: Work | None
    done: Work = field(default_factory=Work)
    seconds: dict[str, float] = field(default_factory=lambda: {"scored": 0.0, "generated": 0.0})
    started: float = field(default_factory=time.monotonic)

    def left_s(self) -> float | None:
        """Seconds left at the measured rates; a kind not measured yet borrows the other's rate."""
        if self.planned is None:
            return None
        rates = {k: self.seconds[k] / getattr(self.done, k) for k in self.seconds if getattr(self.done, k)}
        if not rates:
            return None
        fallback = max(rates.values())
        return sum(max(0, getattr(self.planned, k) - getattr(self.done, k)) * rates.get(k, fallback)
                   for k in self.seconds)

    def share(self) -> float | None:
        """The share of the planned work done, weighted by time where rates are known."""
        left = self.left_s()
        spent = sum(self.seconds.values())
        if left is None or spent + left <= 0:
            return None
        return spent / (spent + left)

    def line(self, label: str, step: int, steps: int) -> str:
        """`suite cy (step 5 of 9): 41% done after 2m 10s, about 3m 05s left`."""
        head = f"{label} (step {step} of {steps})"
        elapsed = progress.duration(time.monotonic() - self.started)
        if self.planned is None:
            return f"{head}: {elapsed} so far (no estimate: the plan could not be counted)"
        left, share = self.left_s(), self.share()
        if left is None or share is None:
            p = self.planned
            return (f"{head}: planned {p.scored:,} scored continuations and at most {p.generated:,} generated "
                    "tokens; the time left is estimated once the first calls are timed")
        return f"{head}: {share:.0%} done after {elapsed}, about {progress.duration(left)} left"


    def summary(self) -> str:
        """`done: 1,234 scored continuations, 3,072 generated tokens at most, in 2m 10s (as planned)`."""
        d = self.done
        planned = ("" if self.planned is None else " (as planned)" if self.planned == d
                   else f" (planned {self.planned.scored:,} and {self.planned.generated:,})")
        return (f"done: {d.scored:,} scored continuations and at most {d.generated:,} generated tokens in "
                f"{progress.duration(time.monotonic() - self.started)}{planned}")


class Metered:
    """A backend that counts and times the work of `inner` into `meter`; everything else is `inner`'s."""

    def __init__(self, inner: Any, meter: Meter) -> None:
        self._inner = inner
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def loglikelihoods(self, items: Sequence[tuple[Any, list[str]]], **kw: Any) -> list[list[ChoiceScore]]:
        t = time.monotonic()
        out: list[list[ChoiceScore]] = self._inner.loglikelihoods(items, **kw)
        self._meter.seconds["scored"] += time.monotonic() - t
        self._meter.done.scored += sum(len(choices) for _, choices in items)
        return out

    def generate(self, prompts: Sequence[Any], opts: Any, **kw: Any) -> list[str]:
        t = time.monotonic()
        out: list[str] = self._inner.generate(prompts, opts, **kw)
        self._meter.seconds["generated"] += time.monotonic() - t
        self._meter.done.generated += len(prompts) * opts.max_new_tokens
        return out


def count(run: Callable[[Any, Callable[[Any], Any]], None], backend: Any) -> Work | None:
    """The work of `run(stand_in, stand_in_for)` against stand-ins; None if the dry run fails.

    `stand_in_for(backend)` gives the stand-in of another backend (a judge); all count into one `Work`.
    """
    work = Work()

    def stand_in_for(real: Any) -> Counting | None:
        if real is None:
            return None
        return Counting(getattr(real, "name", "judge"), getattr(real, "kind", "endpoint"),
                        getattr(real, "record", None), work)

    try:
        with progress.silenced():
            run(stand_in_for(backend), stand_in_for)
    except Exception:  # noqa: BLE001 - a plan is advice: a suite that cannot run on empty answers gives none
        return None
    return work
