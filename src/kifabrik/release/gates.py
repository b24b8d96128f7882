"""Quality gates: thresholds on recorded evaluation metrics that a release must meet.

    gates:
      - min: {task: werkstatt, metric: acc, value: 0.6}      # lower end of the 95 % CI >= 0.6
      - max: {metric: cy.injection_success_rate, value: 0.2, min_items: 50}  # upper end <= 0.2
      - dimension: VE                                          # MISSION KI dimension must have passed

A gate reads the newest evaluation of the model (or the one it names) and the item count and
95 % interval recorded with the metric (results.json). A `min` gate passes when the interval's
*lower* end reaches the threshold, a `max` gate when its *upper* end stays below it: the
evaluation must show the property beyond sampling noise, not just by luck of a few items. A
metric measured on fewer than `min_items` items (default 30) fails, and so do a missing
evaluation, a metric the evaluation did not measure, a NaN and a metric recorded without its
item count; each with that reason in words.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from kifabrik.catalog import ArtifactRecord
from kifabrik.config import StrictModel, load_yaml, validation_messages
from kifabrik.errors import KifabrikError
from kifabrik.mission_ki import Measurement, interval_text, recorded_measurements
from kifabrik.workspace import Workspace

MIN_ITEMS = 30


class Bound(StrictModel):
    """A threshold on one recorded metric."""

    metric: str = Field(description="Metric name: a task metric (acc, acc_norm, chrf, ...) with `task`, or a suite "
                                    "metric such as ve.accuracy.")
    value: float = Field(description="The threshold.")
    task: str | None = Field(default=None, description="Task name; the metric is then `task.<task>.<metric>`.")
    evaluation: str | None = Field(default=None, description="Use this evaluation record (default: the newest "
                                                              "evaluation of the model).")
    min_items: int = Field(default=MIN_ITEMS, ge=1, description="Fewest items the metric must have been measured "
                                                                "on; fewer fail the gate.")

    @property
    def key(self) -> str:
        return f"task.{self.task}.{self.metric}" if self.task else self.metric

    @property
    def label(self) -> str:
        """`task werkstatt, metric acc` or `metric cy.leak_rate`, for messages."""
        return f"task {self.task}, metric {self.metric}" if self.task else f"metric {self.metric}"


class Gate(StrictModel):
    """One gate: `min`, `max` or `dimension`."""

    min: Bound | None = Field(default=None, description="The metric must be at least `value`.")
    max: Bound | None = Field(default=None, description="The metric must be at most `value`.")
    dimension: str | None = Field(default=None, description="A MISSION KI dimension (VE, ND, CY, DA, TR, MA) whose "
                                                            "recorded verdict must be `passed`.")

    @model_validator(mode="after")
    def _one(self) -> Gate:
        if sum(x is not None for x in (self.min, self.max, self.dimension)) != 1:
            raise ValueError("a gate has exactly one of min, max or dimension")
        return self

    def text(self) -> str:
        if self.dimension:
            return f"MISSION KI dimension {self.dimension} passed"
        bound = self.min or self.max
        assert bound is not None
        end = "lower" if self.min else "upper"
        return (f"{bound.key} {'≥' if self.min else '≤'} {bound.value:g} "
                f"({end} end of the 95 % CI, at least {bound.min_items} items)")


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    reason: str
    evaluation: str | None = None
    value: Any = None
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "reason": self.reason, "evaluation": self.evaluation,
                "value": self.value, "n": self.n, "ci_low": self.ci_low, "ci_high": self.ci_high}


def load_gates(path: Path) -> list[Gate]:
    """A gate file: a list of gates, or a mapping with `gates:` (a recipe's release step uses the same form)."""
    data = load_yaml(path)
    items = data.get("gates") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise KifabrikError(f"{path}: expected a list of gates (or `gates:` with a list)",
                            hint="e.g. gates: [{min: {task: werkstatt, metric: acc, value: 0.6}}]")
    gates, problems = [], []
    for i, item in enumerate(items):
        try:
            gates.append(Gate.model_validate(item))
        except ValidationError as exc:
            problems += validation_messages(exc, data, str(path), prefix=(("gates",) if isinstance(data, dict) else ()) + (i,))
    if problems:
        raise KifabrikError(f"{path}: invalid gates:\n  " + "\n  ".join(problems),
                            hint="each gate is min: {metric, value[, task]}, max: {...} or dimension: VE")
    return gates


def evaluations_of(ws: Workspace, target: ArtifactRecord) -> list[ArtifactRecord]:
    """Complete evaluations of `target` (lineage edge `evaluated`), oldest first."""
    recs = [ws.catalog.get_artifact(e.child_id) for e in ws.catalog.edges(parent=target.id) if e.relation == "evaluated"]
    return sorted([r for r in recs if r.kind == "evaluation" and r.status == "ok"], key=lambda r: r.created_at)


def _pick(ws: Workspace, target: ArtifactRecord, evals: list[ArtifactRecord], ref: str | None) -> ArtifactRecord | str:
    if ref is None:
        return evals[-1] if evals else (f"no evaluation of {target.ref} is recorded "
                                        f"(run `kifabrik eval {target.ref} --task ... --suite ...`)")
    rec = ws.catalog.get_artifact(ref, "evaluation")
    return rec if rec.id in {e.id for e in evals} else f"evaluation {rec.ref} is not an evaluation of {target.ref}"


def check_gates(ws: Workspace, target: ArtifactRecord, gates: list[Gate]) -> list[GateResult]:
    """Decide every gate against the recorded evaluations of `target` (nothing is written)."""
    evals = evaluations_of(ws, target)
    out = []
    for gate in gates:
        bound = gate.min or gate.max
        picked = _pick(ws, target, evals, bound.evaluation if bound else None)
        if isinstance(picked, str):
            out.append(GateResult(gate.text(), False, picked))
            continue
        where = f"evaluation {picked.ref} ({picked.id[:12]})"
        if gate.dimension:
            status = (picked.meta.get("verdict") or {}).get(gate.dimension.upper())
            ok = status == "passed"
            why = (f"{where}: dimension {gate.dimension.upper()} is {status!r}" if status
                   else f"{where} recorded no verdict for dimension {gate.dimension.upper()} "
                        "(evaluate with --catalogue and protection needs)")
            out.append(GateResult(gate.text(), ok, why, picked.id, status))
            continue
        out.append(check_bound(gate, picked, recorded_results(ws, picked), where))
    return out


def recorded_results(ws: Workspace, evaluation: ArtifactRecord) -> dict[str, Any]:
    """The evaluation's results.json (its metrics with the recorded `stats`); the record's meta without it."""
    try:
        data = json.loads((ws.path(evaluation) / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    return {**data, "metrics": evaluation.meta.get("metrics") or data.get("metrics") or {}}


def check_bound(gate: Gate, picked: ArtifactRecord, results: dict[str, Any], where: str) -> GateResult:
    """One `min` or `max` gate against one evaluation's recorded metric, item count and interval."""
    bound, is_min, text = gate.min or gate.max, gate.min is not None, gate.text()
    assert bound is not None
    metrics = results.get("metrics") or {}
    value = metrics.get(bound.key)
    if not isinstance(value, int | float) or isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)):
        known = ", ".join(sorted(metrics)) or "none"
        return GateResult(text, False, f"{where} has no value for {bound.key} "
                          f"({'NaN' if value is not None else 'not measured'}; it measured: {known})", picked.id)
    m = recorded_measurements(results).get(bound.key) or Measurement(float(value))
    said = f"{where}: {bound.label} = {value:.6g}"

    def done(passed: bool, reason: str) -> GateResult:
        return GateResult(text, passed, reason, picked.id, value, m.n, m.ci_low, m.ci_high)

    if m.n is None or not m.has_interval:
        return done(False, f"{said}, but no item count or confidence interval is recorded with it (an evaluation "
                           "from an older kifabrik); evaluate the model again")
    said += f", 95 % CI {interval_text(m.ci_low, m.ci_high)}, n = {m.n}"
    if m.n < bound.min_items:
        return done(False, f"{said}: measured on {m.n} items, fewer than the {bound.min_items} this gate needs; "
                           f"evaluate on at least {bound.min_items} items (or set min_items deliberately)")
    edge = m.bound("higher" if is_min else "lower")
    if is_min and edge < bound.value:
        return done(False, f"{said}: the lower end {edge:.4g} is below {bound.value:g}")
    if not is_min and edge > bound.value:
        return done(False, f"{said}: the upper end {edge:.4g} is above {bound.value:g}")
    return done(True, said)
