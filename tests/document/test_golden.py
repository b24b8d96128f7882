"""Golden files of every document template, from records with fixed numbers; volatile fields masked.

Regenerate after a deliberate template change: KIFABRIK_REGEN_GOLDEN=1 pytest tests/document/test_golden.py
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from doc_builders import CATALOGUE, build_facts

from kifabrik.config import Organisation
from kifabrik.document import DOCUMENTS, DocumentOptions, gather, render_all

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parents[2]
MASKS = [
    (re.compile(r"\b[0-9a-f]{40}(\+dirty)?\b"), "<git>"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<sha256>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<run-id>"),
    (re.compile(r"\b[0-9a-f]{12}\b"), "<id12>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?"), "<time>"),
    (re.compile(r"kifabrik \d+\.\d+\.\d+\S*"), "kifabrik <version>"),
]


def mask(text: str) -> str:
    text = text.replace(str(REPO), "<repo>")
    for pattern, repl in MASKS:
        text = pattern.sub(repl, text)
    return text


@pytest.fixture
def rendered(ws, tiny_model):
    build_facts(ws, tiny_model)
    org = Organisation(provider="Schmidt Maschinenbau GmbH", contact="ki@schmidt.example",
                       intended_purpose="Answering customer-service questions about the company's machines.",
                       acceptable_use="Internal service staff only; no legal or medical advice.")
    ctx = gather(ws, "service-lora", DocumentOptions(catalogue=str(CATALOGUE), data_sources={"service-chats": "private"}),
                 org, "recipe demo: organisation section")
    return render_all(ctx)


@pytest.mark.parametrize("stem", sorted(DOCUMENTS))
def test_template_matches_its_golden_file(rendered, stem):
    text = mask(rendered[f"{stem}.md"])
    golden = GOLDEN / f"{stem}.md"
    if os.environ.get("KIFABRIK_REGEN_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"{golden} missing: run with KIFABRIK_REGEN_GOLDEN=1 once"
    assert text == golden.read_text(encoding="utf-8"), f"{stem}.md differs from {golden} (KIFABRIK_REGEN_GOLDEN=1 to accept)"


def test_golden_files_carry_no_catalogue_text():
    """The repository must not copy MISSION KI texts: goldens use the synthetic test catalogue."""
    real = REPO.parent / "shared" / "data" / "mission-ki" / "VCIO.json"
    if not real.exists():
        pytest.skip("the MISSION KI catalogue is not beside the repository")
    data = json.loads(real.read_text(encoding="utf-8"))
    titles = [i["title"].strip() for d in data.values() for c in d["criteria"] for i in c["indicators"].values()]
    text = "".join(p.read_text(encoding="utf-8") for p in GOLDEN.glob("*"))
    assert not [t for t in titles if len(t) > 20 and t in text]
