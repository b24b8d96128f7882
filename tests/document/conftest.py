"""Fixtures of the document tests: records made by the real data, train and evaluate stages."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from doc_builders import CATALOGUE, QA

from kifabrik.catalog import ArtifactRecord
from kifabrik.workspace import Workspace

WERKSTATT = Path(__file__).resolve().parents[2] / "src" / "kifabrik" / "evaluate" / "data" / "tasks" / "werkstatt.yaml"
MACHINES = ["Fräse FZ400", "Drehbank DL200", "Presse HP50", "Bandsäge BS30", "Schleifmaschine SG10"]
#: Like `doc_builders.make_adapter`'s run: a few steps of LoRA on the tiny model.
TRAIN = {"max_steps": 6, "epochs": 3, "batch_size": 2, "save_steps": 3, "eval_steps": 3, "learning_rate": 5e-3,
         "max_seq_length": 128, "lora": {"rank": 4, "alpha": 8}}


class StageRecords(NamedTuple):
    ws: Workspace
    base: ArtifactRecord
    dataset: ArtifactRecord
    adapter: ArtifactRecord
    evaluation: ArtifactRecord


def service_rows() -> list[dict[str, Any]]:
    """15 distinct German and English service conversations (distinct, so deduplication keeps them all)."""
    return [{"messages": [{"role": "user", "content": q.replace("die Maschine", f"die {m}").replace(
        "the machine", f"the {m}") + f" ({m})"}, {"role": "assistant", "content": a}]}
        for m in MACHINES for q, a in QA]


@pytest.fixture(scope="session")
def stage_records(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[StageRecords]:
    """One dataset imported, one adapter trained and one evaluation run by the real stages (once per session)."""
    from kifabrik.data.importer import import_dataset
    from kifabrik.data.options import ImportOptions
    from kifabrik.evaluate import EvalOptions, evaluate
    from kifabrik.models.sources import add_model
    from kifabrik.train import TrainOptions, train

    ws = Workspace.open(tmp_path_factory.mktemp("stage-records-home"))
    base = add_model(ws, str(tiny_model_dir), name="tiny")
    src = tmp_path_factory.mktemp("stage-records-data") / "service.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in service_rows()), encoding="utf-8")
    dataset = import_dataset(ws, ImportOptions(
        name="service-chats", path=str(src), model="tiny", test_fraction=0.2, collected="2025-12-31",
        description="Service conversations of the demo company.",
        policy_preset="open-with-attribution:Schmidt GmbH")).record
    adapter = train(ws, "tiny", [dataset.id], TrainOptions(**TRAIN), name="service-lora")
    evaluation = evaluate(ws, adapter.id, EvalOptions(tasks=[str(WERKSTATT)], suites=["ve", "nd"], limit=4,
                                                      catalogue=str(CATALOGUE), needs={"VE1": 1, "ND1": 2})).record
    assert evaluation is not None
    yield StageRecords(ws, base, dataset, adapter, evaluation)
    ws.close()
