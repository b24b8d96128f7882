"""The merge quality gate reads evaluation records from the catalog and marks failures."""

from __future__ import annotations

import pytest

from kifabrik.merge.api import MergeOptions, merge
from kifabrik.merge.gate import GateFailed, check_gate


def _evaluation(ws, target, metrics, name):
    with ws.create("evaluation", name, parents=[(target.id, "evaluated")], meta={"metrics": metrics}) as draft:
        draft.write_json("results.json", {"metrics": metrics})
    return draft.record


@pytest.fixture
def merged(ws, adapters):
    a, b = adapters
    m = merge(ws, MergeOptions.model_validate({"method": "linear", "adapters": [{"adapter": a.ref, "weight": 0.5},
                                                                                {"adapter": b.ref, "weight": 0.5}]}), "m")
    _evaluation(ws, a, {"task.service.acc": 0.80}, "eval-a")
    _evaluation(ws, b, {"task.parts.acc": 0.60}, "eval-b")
    return a, b, m


def test_gate_passes_and_records_the_numbers(ws, merged):
    a, b, m = merged
    _evaluation(ws, m, {"task.service.acc": 0.76, "task.parts.acc": 0.59}, "eval-m")
    checks = check_gate(ws, m.ref, {a.ref: "task.service.acc", b.ref: "task.parts.acc"}, 0.9)
    assert [round(c.retention, 4) for c in checks] == [0.95, 0.9833]
    rec = ws.catalog.get_artifact(m.id)
    assert rec.status == "ok" and rec.meta["gate"]["passed"] is True


def test_failed_gate_marks_the_merge_failed_with_the_numbers(ws, merged, cli):
    a, b, m = merged
    _evaluation(ws, m, {"task.service.acc": 0.40, "task.parts.acc": 0.60}, "eval-m")
    with pytest.raises(GateFailed, match=r"task.service.acc: 0.4 vs 0.8 \(50.0% < 90%\)"):
        check_gate(ws, m.ref, {a.ref: "task.service.acc", b.ref: "task.parts.acc"}, 0.9)
    rec = ws.catalog.get_artifact(m.id)
    assert rec.status == "failed"
    assert rec.meta["gate"]["checks"][0]["merged_score"] == 0.40
    assert ws.catalog.verify_audit() == []
    r = cli("merge-gate", m.ref, "--metric", f"{b.ref}=task.parts.acc", "--min-retention", "0.95")
    assert r.code == 0 and "pass" in r.out


def test_gate_needs_recorded_evaluations_and_real_parents(ws, merged, tiny_model):
    a, b, m = merged
    with pytest.raises(Exception, match="no evaluation of adapter m@1 records the metric"):
        check_gate(ws, m.ref, {a.ref: "task.service.acc"}, 0.9)
    with pytest.raises(Exception, match="is not a parent"):
        check_gate(ws, m.ref, {tiny_model.ref: "task.service.acc"}, 0.9)
