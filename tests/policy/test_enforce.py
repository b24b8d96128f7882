"""Enforcement along lineage, with the real catalog: audit entries, inheritance, use counting."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect

from kifabrik.errors import KifabrikError
from kifabrik.policy import PolicyDenied, check, require, restrictions, usage
from kifabrik.workspace import Workspace


def audit_rows(ws: Workspace) -> list[tuple[str, str | None, str | None, dict]]:
    from sqlalchemy import select

    from kifabrik.catalog import schema as t
    from kifabrik.catalog.db import session_factory

    with session_factory(ws.catalog.engine)() as s:
        return [(e.action, e.subject, e.decision, e.details) for e in s.scalars(select(t.AuditEntry).order_by(t.AuditEntry.seq))]


def test_migration_adds_the_usage_table(ws: Workspace) -> None:
    assert "policy_usage" in inspect(ws.catalog.engine).get_table_names()


def test_model_inherits_the_datasets_policy(ws: Workspace, make) -> None:
    data = make(ws, "dataset", "kunden", policy="internal-only")
    base = make(ws, "model", "base")
    model = make(ws, "model", "fach", parents=[data.id, base.id])
    require(ws, [model.id], "serving", actor="test")
    with pytest.raises(PolicyDenied) as info:
        require(ws, [model.id], "release", actor="test")
    message = str(info.value)
    assert f"dataset kunden@1 ({data.id[:12]}), policy 'internal-only'" in message
    assert "prohibition[0] forbids distribute" in message and "[inherited by fach@1]" in message
    rows = [r for r in audit_rows(ws) if r[0] == "policy.check"]
    assert [(r[1], r[2]) for r in rows] == [(data.id, "permit"), (data.id, "deny")]
    assert rows[1][3]["artifact"] == model.id and rows[1][3]["rule"] == "prohibition[0]"
    assert rows[1][3]["purpose"] == "release" and rows[1][3]["policy"] == "internal-only"
    assert ws.catalog.verify_audit() == []


def test_prohibitions_of_all_datasets_add_up(ws: Workspace, make) -> None:
    open_data = make(ws, "dataset", "handbuch", policy="open-with-attribution:Schmidt Maschinenbau GmbH")
    research = make(ws, "dataset", "forschung", policy="research-non-commercial")
    adapter = make(ws, "adapter", "lora", parents=[open_data.id, research.id])
    merged = make(ws, "model", "merged", parents=[adapter.id])
    require(ws, [merged.id], "release")
    with pytest.raises(PolicyDenied, match=r"dataset forschung@1 .*prohibition\[0\] forbids commercialize"):
        require(ws, [merged.id], "commercialUse")
    found = restrictions(ws, merged.id)
    kinds = sorted((r["kind"], r["action"], r["policy"]) for r in found)
    assert kinds == [("duty", "attribute", "open-with-attribution:Schmidt Maschinenbau GmbH"),
                     ("duty", "attribute", "research-non-commercial"),
                     ("prohibition", "commercialize", "research-non-commercial")]
    prohibition = next(r for r in found if r["kind"] == "prohibition")
    assert prohibition["sources"] == [{"id": research.id, "ref": "forschung@1", "kind": "dataset"}]
    assert prohibition["text"] == "must not use commercially"
    assert restrictions(ws, make(ws, "model", "plain").id) == []


def test_every_denying_dataset_is_named(ws: Workspace, make) -> None:
    a = make(ws, "dataset", "a", policy="evaluation-only")
    b = make(ws, "dataset", "b", policy="expires-on:2020-01-01")
    with pytest.raises(PolicyDenied) as info:
        require(ws, [a.id, b.id], "training")
    assert [c.source.name for c in info.value.denials] == ["a", "b"]
    assert "dateTime lteq 2020-01-01" in str(info.value)


def test_count_limited_training_is_counted_persistently(ws: Workspace, make, edc_doc: dict, home: Path) -> None:
    data = make(ws, "dataset", "kunden", policy=edc_doc)
    base = make(ws, "model", "base")
    require(ws, [data.id, base.id], "training", count=True)
    require(ws, [data.id], "evaluation")  # not counted
    reopened = Workspace.open(home)
    try:
        require(reopened, [data.id, base.id], "training", count=True)
        with pytest.raises(PolicyDenied, match=r"requires count lteq 2"):
            require(reopened, [data.id], "training", count=True)
        model = make(reopened, "model", "fach", parents=[data.id, base.id])
        require(reopened, [model.id], "serving")  # the limit is reached, not overrun
    finally:
        reopened.close()
    (policy_id, _, _), = ws.catalog.policies_of(data.id)
    assert usage.read_counts(ws, data.id, policy_id) == {"policy.permission[0]": 2}
    trainings = [(r[2], r[3]["uses"]) for r in audit_rows(ws) if r[0] == "policy.check" and r[3]["purpose"] == "training"]
    assert trainings == [("permit", {"policy.permission[0]": 1}), ("permit", {"policy.permission[0]": 2}),
                         ("deny", {"policy.permission[0]": 2})]


def test_a_stale_counter_is_not_consumed(ws: Workspace, make, edc_doc: dict) -> None:
    data = make(ws, "dataset", "kunden", policy=edc_doc)
    (policy_id, _, _), = ws.catalog.policies_of(data.id)
    key = (data.id, policy_id, "policy.permission[0]")
    assert usage.consume(ws, [(*key, 0)])
    assert not usage.consume(ws, [(*key, 0)])  # another process got there first
    assert usage.consume(ws, [(*key, 1)])
    assert usage.read_counts(ws, data.id, policy_id) == {"policy.permission[0]": 2}


def test_region_comes_from_settings_or_argument(ws: Workspace, make, edc_doc: dict) -> None:
    data = make(ws, "dataset", "kunden", policy=edc_doc)
    require(ws, [data.id], "serving")  # settings: EU
    with pytest.raises(PolicyDenied, match="requires spatial eq EU"):
        require(ws, [data.id], "serving", region="US")
    assert check(ws, [data.id], "serving", region="AT")[0].decision.permitted


def test_expiry_reaches_derived_models(ws: Workspace, make) -> None:
    data = make(ws, "dataset", "kunden", policy="expires-on:2026-12-31")
    model = make(ws, "model", "fach", parents=[data.id])
    require(ws, [model.id], "serving", now=datetime(2026, 12, 31, 20, 0, tzinfo=UTC))
    with pytest.raises(PolicyDenied, match="dateTime lteq 2026-12-31"):
        require(ws, [model.id], "serving", now=datetime(2027, 1, 1, tzinfo=UTC))


def test_artifacts_without_policies_are_permitted_and_audited(ws: Workspace, make) -> None:
    base = make(ws, "model", "base")
    require(ws, [base.id], "commercialUse", actor="key:abc")
    (row,) = [r for r in audit_rows(ws) if r[0] == "policy.check"]
    assert row[1:3] == (base.id, "permit") and "no usage policy" in row[3]["reason"]


def test_bad_requests(ws: Workspace, make) -> None:
    base = make(ws, "model", "base")
    with pytest.raises(KifabrikError, match="unknown purpose 'train'"):
        require(ws, [base.id], "train")
    with pytest.raises(KifabrikError, match="no model|no artifact"):
        require(ws, ["does-not-exist"], "training")


def test_a_corrupted_policy_denies(ws: Workspace, make) -> None:
    policy_id = ws.catalog.add_policy("broken", {"permission": [{"action": "fly"}]})
    with ws.create("dataset", "x", policies=[policy_id]) as draft:
        draft.write_text("a.txt", "a")
    with pytest.raises(PolicyDenied, match="not valid ODRL any more"):
        require(ws, [draft.record.id], "training")


def test_a_lineage_learned_later_is_checked_at_once(ws: Workspace, make) -> None:
    # the ancestry of a checked artifact is kept while the catalog's lineage is unchanged (a server
    # checks it for every request); an edge recorded later, or a new version, is seen by the next check
    from kifabrik.catalog import EdgeRecord

    model = make(ws, "model", "fach")
    assert all(c.decision.permitted for c in check(ws, [model.id], "release"))
    data = make(ws, "dataset", "kunden", policy="internal-only")
    assert all(c.decision.permitted for c in check(ws, [model.id], "release"))  # kept: no edge to it yet
    ws.catalog.add_edge(EdgeRecord(data.id, model.id, "trained_on"))
    denied = [c for c in check(ws, [model.id], "release") if not c.decision.permitted]
    assert [c.source.id for c in denied] == [data.id]
    assert [c.artifact.id for c in check(ws, ["fach"], "release")] == [model.id]
    newer = make(ws, "model", "fach", parents=[data.id])
    assert [c.artifact.id for c in check(ws, ["fach"], "release")] == [newer.id]
