"""Quality gates: thresholds on recorded evaluation metrics that a release must meet.

    gates:
      - min: {task: werkstatt, metric: acc, value: 0.6}      # task.werkstatt.acc >= 0.6
      - max: {metric: cy.injection_success_rate, value: 0.2}
      - dimension: VE                                          # MISSION KI dimension must have passed

A gate reads the newest evaluation of the model (or the one it names). A missing evaluation,
a metric the evaluation did not measure, or a NaN fails the gate, with that reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from kifabrik.catalog import ArtifactRecord
from kifabrik.config import StrictModel, load_yaml, validation_messages
from kifabrik.errors import KifabrikError
from kifabrik.workspace import Workspace


class Bound(StrictModel):
    """A threshold on one recorded metric."""

    metric: str = Field(description="Metric name: a task metric (acc, acc_norm, chrf, ...) with `task`, or a suite "
                                    "metric such as ve.accuracy.")
    value: float = Field(description="The threshold.")
    task: str | None = Field(default=None, description="Task name; the metric is then `task.<task>.<metric>`.")
    evaluation: str | None = Field(default=None, description="Use this evaluation record (default: the newest "
                                                              "evaluation of the model).")

    @property
    def key(self) -> str:
        return f"task.{self.task}.{self.metric}" if self.task else self.metric


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
        return f"{bound.key} {'≥' if self.min else '≤'} {bound.value:g}"


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    reason: str
    evaluation: str | None = None
    value: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "reason": self.reason, "evaluation": self.evaluation,
                "value": self.value}


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
        assert bound is not None
        metrics = picked.meta.get("metrics") or {}
        value = metrics.get(bound.key)
        if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
            known = ", ".join(sorted(metrics)) or "none"
            out.append(GateResult(gate.text(), False, f"{where} has no value for {bound.key} "
                                  f"({'NaN' if value is not None else 'not measured'}; it measured: {known})", picked.id))
            continue
        ok = value >= bound.value if gate.min else value <= bound.value
        out.append(GateResult(gate.text(), ok, f"{where} measured {bound.key} = {value:.6g}", picked.id, value))
    return out
