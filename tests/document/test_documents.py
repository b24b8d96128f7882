"""Documents of a really trained tiny model hold the recorded numbers; facts point at records or say why not."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from doc_builders import CATALOGUE, build_facts, make_dataset

from kifabrik.document import DOCUMENTS, DocumentOptions, document
from kifabrik.document.render import fmt
from kifabrik.errors import KifabrikError

REPO = Path(__file__).resolve().parents[2]
VCIO = REPO / ".." / "shared" / "data" / "mission-ki" / "VCIO.json"
FAST = {"max_steps": 4, "epochs": 4, "batch_size": 2, "save_steps": 4, "eval_steps": 4, "learning_rate": 5e-3,
        "max_seq_length": 64, "lora": {"rank": 4, "alpha": 8}}


def test_documents_of_a_trained_model_contain_the_recorded_numbers(cli, ws, tiny_model, tmp_path):
    from kifabrik.train import TrainOptions, train

    ds = make_dataset(ws, "service-chats", "open-with-attribution:Schmidt GmbH", train=12, test=3)
    adapter = train(ws, "tiny", [ds.id], TrainOptions(**FAST), name="service-lora")
    acc = adapter.meta["accounting"]
    ev = _evaluate(ws, adapter)
    r = cli("document", "service-lora", "--out", str(tmp_path / "docs"), "--catalogue", str(CATALOGUE),
            "--data-source", "service-chats=private")
    assert r.code == 0, r.err
    assert "valid CycloneDX 1.6" in r.out
    docs = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "docs").iterdir()}
    annex = docs["annex-xi.md"]
    for number in (acc["tokens_seen"], acc["steps"], adapter.meta["trainable_parameters"],
                   adapter.meta["data"]["train"]["tokens"]):
        assert f"{number:,}" in annex
    assert fmt(acc["flops"]) in annex and fmt(acc["energy_kwh"]) in annex and acc["energy_basis"] in annex
    assert fmt(acc["wall_time_s"]) in annex and acc["device"] in annex
    assert "12 [" in annex and "456 [" in annex  # dataset rows and tokens from its card
    score = ev.meta["metrics"]["task.werkstatt.acc"]
    card = docs["README.md"]
    assert fmt(score) in card and f"value: {round(score, 6)}" in card
    assert "base_model: tiny" in card and "license: apache-2.0" in card and "- service-chats" in card
    assert "less than 1 billion tokens" in docs["training-content-summary.md"]
    assert "2.2 Private" in docs["training-content-summary.md"]
    # every citation points at a record of the catalog
    assert f"artifact id `{adapter.id}`" in annex and f"run id `{adapter.meta['run_id']}`" in annex
    bom = json.loads(docs["ml-bom.cdx.json"])
    assert bom["specVersion"] == "1.6"
    refs = {c["bom-ref"] for c in bom["components"]}
    assert f"kifabrik:dataset:{ds.id}" in refs and f"kifabrik:model:{tiny_model.id}" in refs
    deps = {d["ref"]: d["dependsOn"] for d in bom["dependencies"]}
    assert set(deps[f"kifabrik:adapter:{adapter.id}"]) == {f"kifabrik:dataset:{ds.id}", f"kifabrik:model:{tiny_model.id}"}
    data = next(c for c in bom["components"] if c["type"] == "data")
    assert data["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    energy = bom["metadata"]["component"]["modelCard"]["considerations"]["environmentalConsiderations"]
    assert energy["energyConsumptions"][0]["activityEnergyCost"]["value"] == acc["energy_kwh"]
    rec = ws.catalog.get_artifact("service-lora-documents", "document")
    assert {(e.parent_id, e.relation) for e in ws.catalog.edges(child=rec.id)} == {(adapter.id, "documents"),
                                                                                  (ev.id, "evidence")}
    html = (ws.path(rec) / "html" / "annex-xi.html").read_text(encoding="utf-8")
    assert "<table>" in html and f"{acc['tokens_seen']:,}" in html


def _evaluate(ws, adapter):
    """A real evaluation with the packaged domain task (falls back to nothing: the test then fails loudly)."""
    from kifabrik.evaluate import EvalOptions, evaluate

    task = REPO / "src" / "kifabrik" / "evaluate" / "data" / "tasks" / "werkstatt.yaml"
    return evaluate(ws, adapter.id, EvalOptions(tasks=[str(task)], limit=4)).record


def test_every_fact_is_recorded_or_says_why(ws, tiny_model):
    """A registered base model without organisation facts: many facts are unknown, each with its reason."""
    res = document(ws, "tiny")
    facts = json.loads((res.record and (ws.path(res.record) / "facts.json")).read_text(encoding="utf-8"))

    def walk(node):
        if isinstance(node, dict):
            if "recorded" in node:
                yield node
            else:
                for v in node.values():
                    yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)

    items = list(walk(facts))
    assert items and all((f["recorded"] and f["source"]) or (not f["recorded"] and f["reason"]) for f in items)
    assert res.record.meta["not_recorded"] == sum(not f["recorded"] for f in items) > 5
    card = (ws.path(res.record) / "README.md").read_text(encoding="utf-8")
    assert "*not recorded — the provider's name is not known to the platform" in card
    assert "# not recorded: datasets: no training dataset" in card
    assert "no MISSION KI catalogue was given" in (ws.path(res.record) / "mission-ki.md").read_text(encoding="utf-8")


@pytest.mark.skipif(not VCIO.exists(), reason="the MISSION KI catalogue is not beside the repository")
def test_mission_ki_assessment_lists_the_catalogue_with_evidence_and_open_items(ws, tiny_model):
    facts = build_facts(ws, tiny_model)
    res = document(ws, facts["adapter"].id, DocumentOptions(catalogue=str(VCIO)))
    text = (ws.path(res.record) / "mission-ki.md").read_text(encoding="utf-8")
    data = json.loads(VCIO.read_text(encoding="utf-8"))
    ids = [i for d in data.values() for c in d["criteria"] for i in c["indicators"]]
    assert len(ids) == 75 and all(f"| {i} " in text for i in ids)
    assert "ve.accuracy = 0.625 (95 % CI 0.503–0.733, n = 64; higher is better) → level C" in text
    assert "Indicators: 75 in all, 2 with machine evidence, 0 assessed by people, 73 open." in text
    assert text.count("- [ ] ") == 73


def test_not_assessable_is_rendered_with_its_reason(ws, tiny_model):
    from doc_builders import make_adapter, make_evaluation

    why = "the accuracy on disambiguated items is not significantly above the chance rate 0.333"
    ds = make_dataset(ws, "service-chats", "open-with-attribution:Schmidt GmbH")
    adapter = make_adapter(ws, tiny_model, [ds])
    make_evaluation(ws, adapter, bias_why=why)
    res = document(ws, adapter.id, DocumentOptions(catalogue=str(CATALOGUE)))
    text = (ws.path(res.record) / "mission-ki.md").read_text(encoding="utf-8")
    assert "Status: not assessable [" in text
    assert f"level not assessable [3]; status not assessable (ND1.3 not assessable: nd.abs_bias_ambig: {why}) [3]" in text
    assert ("| ND1.3 Bias is measured. | Maximalwert | Analyse | not assessable [3] | nd.abs_bias_ambig = 0.12 "
            f"(95 % CI 0.06–0.18, n = 96; lower is better) → not assessable: {why} |") in text
    assert "Indicators: 3 in all, 1 with machine evidence, 0 assessed by people, 1 open, 1 not assessable." in text
    card = (ws.path(res.record) / "README.md").read_text(encoding="utf-8")
    assert f"| nd.abs_bias_ambig | 0.12 [7] | 96 [7] | 0.06–0.18 [7] (not meaningful: {why}) | – |" in card
    assert "| ND | not assessable [7] |" in card
    # without the catalogue's verdict, the recorded stats still decide: no level for the bias score
    other = make_adapter(ws, tiny_model, [ds], name="other-lora")
    bare = make_evaluation(ws, other, bias_why=why, catalogue=None)
    res = document(ws, other.id, DocumentOptions())
    text = (ws.path(res.record) / "mission-ki.md").read_text(encoding="utf-8")
    assert f"- ND1.3: nd.abs_bias_ambig = 0.12 (95 % CI 0.06–0.18, n = 96; lower is better) → not assessable: {why}" in text
    assert bare.id in {e.parent_id for e in ws.catalog.edges(child=res.record.id)}


def test_bad_input_writes_nothing(ws, tiny_model, cli):
    build_facts(ws, tiny_model)
    before = len(ws.catalog.list_artifacts("document"))
    with pytest.raises(KifabrikError, match="not in the lineage of service-lora@1: nope"):
        document(ws, "service-lora", DocumentOptions(data_sources={"nope": "public"}))
    r = cli("document", "service-lora", "--data-source", "service-chats=stolen")
    assert r.code == 1 and "categories: public" in r.err
    r = cli("document", "service-chats")
    assert r.code == 1 and "documents describe a model or an adapter" in r.err
    assert len(ws.catalog.list_artifacts("document")) == before


def test_pdf_documents_keep_tables_citations_and_umlauts(ws, tiny_model, tmp_path):
    """Every document printed by WeasyPrint: the text, umlauts, citations and tables are on the pages."""
    from pypdf import PdfReader

    from kifabrik.config import Organisation

    facts = build_facts(ws, tiny_model)
    org = Organisation(provider="Schmidt Maschinenbau GmbH, Öhringen", contact="ki@schmidt.example",
                       intended_purpose="Antworten auf Servicefragen zu Fräsmaschinen und Drehbänken (Kühlschmierstoff, "
                                        "Ölwechsel, Störungen).")
    res = document(ws, facts["adapter"].id, DocumentOptions(format="pdf", catalogue=str(CATALOGUE)), org=org,
                   org_label="Organisationsangaben der Qualitätsstelle", out=tmp_path / "docs")
    pdfs = sorted(p.name for p in (ws.path(res.record) / "pdf").iterdir())
    assert pdfs == sorted(f"{stem}.pdf" for stem in DOCUMENTS) == sorted(p.name for p in (tmp_path / "docs").glob("*.pdf"))
    assert res.record.meta["formats"] == ["md", "html", "pdf"]
    texts = {}
    for name in pdfs:
        reader = PdfReader(ws.path(res.record) / "pdf" / name)
        texts[name] = " ".join(" ".join((page.extract_text() or "").split()) for page in reader.pages)
    annex = texts["annex-xi.pdf"]
    assert "Antworten auf Servicefragen zu Fräsmaschinen und Drehbänken (Kühlschmierstoff, Ölwechsel, Störungen). [2]" in annex
    assert "[2] Organisationsangaben der Qualitätsstelle" in annex  # the citation and its source entry
    assert "Schmidt Maschinenbau GmbH, Öhringen [" in texts["README.pdf"]
    # table cells, in their order: the metrics table of Annex XII with item counts and intervals
    assert "metric value items (n) 95 % CI" in texts["annex-xii.pdf"]
    assert "task.werkstatt.acc 0.625 [" in texts["annex-xii.pdf"] and "64 [" in texts["annex-xii.pdf"]
    assert "| VE1.5 " not in texts["mission-ki.pdf"] and "VE1.5" in texts["mission-ki.pdf"]  # a table, not Markdown
    for name, text in texts.items():
        assert "page 1 of" in text, name  # the page footer of the print style
    # the pages as a reader sees them: pdftoppm renders every page; the table's borders are drawn
    out = subprocess.run(["pdftoppm", "-png", "-r", "50", str(ws.path(res.record) / "pdf" / "annex-xii.pdf"),
                          str(tmp_path / "page")], check=True, capture_output=True)
    assert out.returncode == 0
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == len(PdfReader(ws.path(res.record) / "pdf" / "annex-xii.pdf").pages) >= 2
    from PIL import Image

    grey = Image.open(pages[0]).convert("L")
    rows = [sum(1 for x in range(grey.width) if grey.getpixel((x, y)) < 235) for y in range(grey.height)]
    assert max(rows) > grey.width * 0.6  # a horizontal line across the text width: a table border


def test_pdf_without_weasyprint_says_what_to_install(ws, tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # what `import weasyprint` meets where it is missing
    with pytest.raises(KifabrikError, match="PDF output needs WeasyPrint") as exc:
        document(ws, "tiny", DocumentOptions(format="pdf"))
    assert "kifabrik[pdf]" in (exc.value.hint or "")
    assert not ws.catalog.list_artifacts("document") and not ws.store.leftovers()


def test_html_escapes_what_people_typed(ws, tiny_model, tmp_path):
    org = tmp_path / "org.yaml"
    org.write_text("organisation:\n  provider: <script>alert(1)</script> GmbH\n", encoding="utf-8")
    from kifabrik.document.facts import load_organisation

    res = document(ws, "tiny", org=load_organisation(org), org_label="org.yaml")
    html = (ws.path(res.record) / "html" / "README.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_adapter_facts_are_read_from_the_records_that_hold_them(ws, tiny_model):
    """A merge of two SFT adapters, trained on a dataset imported without a tokenizer or collection date."""
    from doc_builders import make_adapter, make_merge

    ds = make_dataset(ws, "service-chats", "internal-only")
    card_path = ws.path(ds) / "card.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    # as the data stage records a dataset imported without --model and --collected
    card["size"]["tokens"] = {"train": None, "test": None, "tokenizer": None,
                              "note": "unknown: no base model was given (--model), so characters were counted"}
    card["collected"] = "2026-01-05 (import date; the collection date was not given)"
    card["languages"]["shares"] = {"de": 1.0}
    card_path.write_text(json.dumps(card), encoding="utf-8")  # the test's own record, rewritten before use
    a = make_adapter(ws, tiny_model, [ds], name="wartung-lora")
    b = make_adapter(ws, tiny_model, [ds], name="teile-lora")
    merged = make_merge(ws, tiny_model, [a, b])
    res = document(ws, merged.id, DocumentOptions(data_sources={"service-chats": "private"}))
    annex = (ws.path(res.record) / "annex-xi.md").read_text(encoding="utf-8")
    assert "training objective sft (the objective of the merged adapters: wartung-lora@1, teile-lora@1) [" in annex
    assert ("| trainable parameters (adaptation) | none in the merge itself; the merged adapters trained "
            "4,096 (wartung-lora@1), 4,096 (teile-lora@1) [") in annex
    assert "LoRA rank 8 [1], alpha 16 [1], modules q_proj, v_proj [1]" in annex  # alpha from adapter_config.json
    assert "not a LoRA adapter" not in annex and "not an adapter or fine-tune" not in annex
    digest = merged.manifest["files"]["adapter_model.safetensors"]["sha256"]
    assert f"weights sha256 {digest} (adapter_model.safetensors; the base model's weights separately) [1]" in annex
    card = (ws.path(res.record) / "README.md").read_text(encoding="utf-8")
    trained = card.split("## Training procedure")[1].split("## Evaluation")[0]
    assert trained.count("| LoRA rank / alpha | 4 [") == 2 and " / 8 [" in trained  # each training's own settings
    # 1(e): the languages of the training data first, the base model's as its card states them
    assert "- Languages: de [" in annex and "(detected in the training data); de, en [" in annex
    # 2(c) states the token count that 2(b) states, for what it counts
    assert "| 456 in the training sequences of teile-lora@1 (not counted per dataset at import) [" in annex
    summary = (ws.path(res.record) / "training-content-summary.md").read_text(encoding="utf-8")
    assert "| latest date of data collection | 2026-01-05 (import date of service-chats; its collection date was " \
           "not given) [" in summary
    own = summary.split("### 2.6 Other sources of data")[1].split("## 3.")[0]
    assert "service-chats@1" in own and "category private (the provider's own non-public data)" in own
    third = summary.split("### 2.2 ")[1].split("### 2.3")[0]
    assert "service-chats" not in third


def test_every_evaluation_figure_in_every_document_carries_its_item_count(ws, tiny_model):
    """Scores from 4 items must read as scores from 4 items: in the tables, the prose, the YAML and the ML-BOM."""
    from doc_builders import make_adapter, make_evaluation

    ds = make_dataset(ws, "service-chats", "open-with-attribution:Schmidt GmbH")
    adapter = make_adapter(ws, tiny_model, [ds])
    make_evaluation(ws, adapter, acc=0.5, n=4)  # the werkstatt task and ve.accuracy on 4 items; the bias on 96
    res = document(ws, adapter.id, DocumentOptions(catalogue=str(CATALOGUE)))
    counts = {"task.werkstatt.acc": 4, "task.werkstatt.acc_norm": 4, "ve.accuracy": 4, "nd.abs_bias_ambig": 96}
    seen = 0
    for stem in DOCUMENTS:
        text = (ws.path(res.record) / f"{stem}.md").read_text(encoding="utf-8")
        for line in text.splitlines():
            for metric, n in counts.items():
                shown = re.search(rf"(?<![\w.]){re.escape(metric)}(?![\w]) ?[|=]? ?\d", line)
                if shown:
                    seen += 1
                    assert re.search(rf"n = {n}\b|\| {n} \[\d+\] \|", line), f"{stem}.md: {line}"
    assert seen >= 10  # the metrics tables of the card and Annex XII, Annex XI's bias line, MISSION KI evidence
    front = (ws.path(res.record) / "README.md").read_text(encoding="utf-8").split("---")[1]
    assert "name: acc (n = 4, 95 % CI" in front and "name: nd.abs_bias_ambig (n = 96, 95 % CI 0.06–0.18)" in front
    bom = json.loads((ws.path(res.record) / "ml-bom.cdx.json").read_text(encoding="utf-8"))
    metrics = bom["metadata"]["component"]["modelCard"]["quantitativeAnalysis"]["performanceMetrics"]
    assert {m["type"]: m["slice"].rsplit("(", 1)[1] for m in metrics} == {k: f"n = {n})" for k, n in counts.items()}
    assert next(m for m in metrics if m["type"] == "nd.abs_bias_ambig")["confidenceInterval"] == \
        {"lowerBound": "0.06", "upperBound": "0.18"}
