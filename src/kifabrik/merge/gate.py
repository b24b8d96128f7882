"""The merge quality gate: a merged artifact must keep X % of each parent's score.

Scores come from evaluation records in the catalog (kind `evaluation`, lineage edge
`evaluated` from the model or adapter, metrics in `meta["metrics"]`); the merge stage
never runs an evaluation itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.workspace import Workspace


@dataclass(frozen=True)
class GateCheck:
    parent: str
    metric: str
    parent_score: float
    merged_score: float
    retention: float
    passed: bool
    parent_evaluation: str
    merged_evaluation: str


class GateFailed(KifabrikError):
    """The merged artifact lost too much of a parent's score; it is marked failed."""


def latest_score(ws: Workspace, artifact: ArtifactRecord, metric: str) -> tuple[float, ArtifactRecord]:
    """The newest recorded value of `metric` for `artifact`, with the evaluation it comes from."""
    found = []
    for edge in ws.catalog.edges(parent=artifact.id):
        if edge.relation != "evaluated":
            continue
        ev = ws.catalog.get_artifact(edge.child_id)
        value = (ev.meta.get("metrics") or {}).get(metric)
        if ev.kind == "evaluation" and isinstance(value, int | float):
            found.append((ev.created_at, float(value), ev))
    if not found:
        raise KifabrikError(f"no evaluation of {artifact.kind} {artifact.ref} records the metric {metric!r}",
                            hint=f"evaluate it first (kifabrik eval {artifact.ref} ...) with the task behind {metric}")
    _, value, ev = max(found, key=lambda f: f[0])
    return value, ev


def check_gate(ws: Workspace, merged_ref: str, metrics: dict[str, str], min_retention: float,
               *, actor: str = "cli") -> list[GateCheck]:
    """Compare the merged artifact's scores with each parent's; mark it failed when a check fails.

    Args:
        merged_ref: The merged adapter or model.
        metrics: Parent ref -> metric key of that parent's evaluation task (e.g. `task.service.acc`).
        min_retention: Required fraction of each parent's score (0.9 = keep 90 %).

    Raises:
        GateFailed: At least one parent's score is not retained; the record now has status `failed`.
    """
    merged = ws.catalog.get_artifact(merged_ref)
    parents = {e.parent_id for e in ws.catalog.edges(child=merged.id) if e.relation == "merged_from"}
    if not parents:
        raise KifabrikError(f"{merged.ref} is not the output of a merge", hint="give the merged adapter or model")
    checks = []
    for ref, metric in metrics.items():
        parent = ws.catalog.get_artifact(ref)
        if parent.id not in parents:
            raise KifabrikError(f"{parent.ref} is not a parent of {merged.ref}",
                                hint="list the parents with `kifabrik lineage " + merged.ref + "`")
        before, ev_parent = latest_score(ws, parent, metric)
        after, ev_merged = latest_score(ws, merged, metric)
        retention = after / before if before else (1.0 if after >= before else 0.0)
        checks.append(GateCheck(parent.ref, metric, before, after, round(retention, 6),
                                retention >= min_retention, ev_parent.id, ev_merged.id))
    if not checks:
        raise KifabrikError("the gate names no parent metrics", hint="map each parent to its task metric")
    passed = all(c.passed for c in checks)
    gate = {"min_retention": min_retention, "passed": passed, "checks": [asdict(c) for c in checks]}
    ws.catalog.update_meta(merged.id, {"gate": gate})
    if not passed:
        ws.catalog.set_status(merged.id, "failed")
    ws.catalog.audit("merge.gate", actor=actor, subject=merged.id, decision="pass" if passed else "fail", details=gate)
    if not passed:
        bad = "; ".join(f"{c.parent} {c.metric}: {c.merged_score:.4g} vs {c.parent_score:.4g} "
                        f"({c.retention:.1%} < {min_retention:.0%})" for c in checks if not c.passed)
        raise GateFailed(f"merge quality gate failed for {merged.ref}: {bad}",
                         hint="the merged artifact is marked failed; try other weights, a density, or another method")
    return checks
