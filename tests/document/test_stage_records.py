"""The hand-built records of `doc_builders` against records the real stages wrote on the tiny model.

The golden documents are rendered from hand-built records so that their numbers stay fixed. These
tests keep those records honest: every field they hold (with its JSON type) is a field the data,
train and evaluate stages write, and every fact the documents state as recorded from them is
recorded from the stages' own records too. A renamed or dropped field fails here, not in a
golden file that still passes on stale records.
"""

from __future__ import annotations

import json
from typing import Any

from doc_builders import CATALOGUE, build_facts

from kifabrik.config import Organisation
from kifabrik.document import DocumentOptions, document

ORG = Organisation(provider="Schmidt Maschinenbau GmbH", contact="ki@schmidt.example",
                   intended_purpose="Answering customer-service questions about the company's machines.")


def shape(value: Any, path: str = "") -> set[str]:
    """`path:type` of every leaf and `path` of every key; a null leaf only says that the key exists."""
    out = {path} if path else set()
    if isinstance(value, dict):
        for k, v in value.items():
            out |= shape(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for v in value:
            out |= shape(v, f"{path}[]")
    elif value is not None:
        kind = "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__
        out.add(f"{path}:{kind}")
    return out


def _json(ws: Any, record: Any, name: str) -> dict[str, Any]:
    return json.loads((ws.path(record) / name).read_text(encoding="utf-8"))


def test_hand_built_records_use_the_fields_the_stages_write(ws, tiny_model, stage_records):
    hand = build_facts(ws, tiny_model)
    real = stage_records
    pairs = {
        "dataset meta": (hand["dataset"].meta, real.dataset.meta),
        "card.json": (_json(ws, hand["dataset"], "card.json"), _json(real.ws, real.dataset, "card.json")),
        "adapter meta": (hand["adapter"].meta, real.adapter.meta),
        "adapter config": (hand["adapter"].manifest["config"], real.adapter.manifest["config"]),
        "accounting.json": (_json(ws, hand["adapter"], "accounting.json"),
                            _json(real.ws, real.adapter, "accounting.json")),
        "evaluation meta": (hand["evaluation"].meta, real.evaluation.meta),
        "results.json": (_json(ws, hand["evaluation"], "results.json"),
                         _json(real.ws, real.evaluation, "results.json")),
    }
    extra = {name: sorted(shape(h) - shape(r)) for name, (h, r) in pairs.items()}
    assert extra == {name: [] for name in pairs}, "fields the hand-built records hold but the stages do not write"


def recorded(tree: Any, path: str = "") -> set[str]:
    """Paths of the facts in a facts.json that are recorded (list items by position)."""
    if isinstance(tree, dict):
        if "recorded" in tree:
            return {path} if tree["recorded"] else set()
        return {p for k, v in tree.items() for p in recorded(v, f"{path}.{k}" if path else k)}
    if isinstance(tree, list):
        return {p for i, v in enumerate(tree) for p in recorded(v, f"{path}[{i}]")}
    return set()


def test_documents_of_stage_records_state_every_fact_the_hand_built_ones_do(ws, tiny_model, stage_records):
    build_facts(ws, tiny_model)
    opts = DocumentOptions(catalogue=str(CATALOGUE), data_sources={"service-chats": "private"})
    hand = document(ws, "service-lora", opts, org=ORG, org_label="test organisation").record
    real = document(stage_records.ws, stage_records.adapter.id, opts, org=ORG, org_label="test organisation").record
    hand_facts, real_facts = _json(ws, hand, "facts.json"), _json(stage_records.ws, real, "facts.json")
    assert len(recorded(hand_facts)) > 100  # the comparison covers the documents, not a corner of them
    missing = sorted(recorded(hand_facts) - recorded(real_facts))
    assert missing == [], "facts the documents state from the hand-built records but not from the stages' records"


def test_documents_name_source_files_without_the_machines_paths(stage_records: Any) -> None:
    """Released documents identify a source file by name and sha256, never by where it lay."""
    ws, adapter, dataset = stage_records.ws, stage_records.adapter, stage_records.dataset
    (source,) = dataset.meta["sources"]
    folder = source["path"].rsplit("/", 1)[0]
    assert folder.startswith("/")  # the import recorded where the file was
    result = document(ws, adapter.id, DocumentOptions())
    written = [p for p in ws.path(result.record).rglob("*") if p.is_file()]
    assert written
    for path in written:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert folder not in text, f"{path.name} names the import folder"
        assert str(ws.settings.home) not in text, f"{path.name} names the kifabrik home"
    annex = (ws.path(result.record) / "annex-xi.md").read_text(encoding="utf-8")
    assert "service.jsonl" in annex and source["sha256"] in annex


def test_what_the_pii_scan_could_not_see_is_stated_where_the_data_is_described(stage_records: Any) -> None:
    """The dataset card says whether person names were detected; so do the curation sections that use the data."""
    ws, adapter, dataset = stage_records.ws, stage_records.adapter, stage_records.dataset
    names = _json(ws, dataset, "card.json")["pii"]["names"]
    assert names.startswith("person names were")  # the import's own words, detector or none
    result = document(ws, adapter.id, DocumentOptions())
    annex = (ws.path(result.record) / "annex-xi.md").read_text(encoding="utf-8")
    curation = next(line for line in annex.splitlines() if line.startswith("- Curation:"))
    assert f"limits of the scan: {names} [" in curation
    summary = (ws.path(result.record) / "training-content-summary.md").read_text(encoding="utf-8")
    assert "service-chats: mode redact [" in summary and f"limits of the scan: {names} [" in summary
