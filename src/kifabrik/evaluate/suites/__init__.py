"""Quality suites: groups of checks that give machine evidence for MISSION KI indicators.

A suite registers itself with `@register("suite", NAME)` on a `Suite`, states the MISSION KI
dimension and criteria it gives evidence for and the AI Act provision, and returns a
`SuiteResult` whose `metrics` use the keys of `thresholds.yaml` (e.g. `ve.accuracy`). Each
metric is a `stats.Measured` value (its item count and 95 % interval travel with it and are
recorded as the suite's `stats`). Suites take `limit` (items per check) so a demo stays small.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.evaluate.backends import Backend
from kifabrik.evaluate.runner import TaskResult
from kifabrik.evaluate.stats import stats_of
from kifabrik.evaluate.tasks import Task
from kifabrik.registry import lookup, names
from kifabrik.workspace import Workspace

#: The order suites run in; `lang` summarises what the others measured, so it comes last.
ORDER = ["ve", "nd", "cy", "da", "tr", "lang"]


@dataclass
class SuiteContext:
    """What a running suite may use. `cache` shares task results between suites (e.g. ECE reuses VE's)."""

    backend: Backend
    ws: Workspace | None = None
    tasks: list[Task] = field(default_factory=list)
    limit: int | None = None
    judge: Backend | None = None
    seed: int = 0
    training_datasets: list[ArtifactRecord] = field(default_factory=list)
    results: dict[str, SuiteResult] = field(default_factory=dict)
    cache: dict[str, TaskResult] = field(default_factory=dict)

    def cap(self, default: int) -> int:
        return self.limit if self.limit is not None else default


@dataclass
class SuiteResult:
    """Metrics (keys as in thresholds.yaml), the task results behind them, and notes for the report."""

    name: str
    title: str
    dimension: str
    criteria: list[str]
    ai_act: str
    metrics: dict[str, float]
    tasks: list[TaskResult] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    measured: bool = True

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "dimension": self.dimension, "criteria": self.criteria,
                "ai_act": self.ai_act, "metrics": self.metrics, "stats": stats_of(self.metrics),
                "details": self.details, "notes": self.notes,
                "measured": self.measured, "tasks": [t.summary() for t in self.tasks]}


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    dimension: str
    criteria: tuple[str, ...]
    ai_act: str
    run: Callable[[SuiteContext], SuiteResult]

    def result(self, metrics: dict[str, float], **kw: Any) -> SuiteResult:
        return SuiteResult(self.name, self.title, self.dimension, list(self.criteria), self.ai_act, metrics, **kw)


def get_suite(name: str) -> Suite:
    suite: Suite = lookup("suite", name)
    return suite


def suite_names() -> list[str]:
    return names("suite")


def ordered(requested: list[str]) -> list[str]:
    """Requested suite names in run order (`all` expands to every suite); unknown names raise."""
    wanted = list(ORDER) if "all" in requested else list(dict.fromkeys(requested))
    for name in wanted:
        get_suite(name)
    return sorted(wanted, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


def data_file(name: str) -> Path:
    """A file shipped in kifabrik/evaluate/data/."""
    return Path(str(resources.files("kifabrik.evaluate") / "data" / name))


def package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, located without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent.joinpath(*parts)
    return path if path.exists() else None


def spread(rows: list[Any], n: int) -> list[Any]:
    """`n` rows spread evenly over `rows` (deterministic), so a small limit still covers every part."""
    if n >= len(rows):
        return list(rows)
    if n <= 0:
        return []
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]
