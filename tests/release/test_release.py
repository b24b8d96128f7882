"""Releases: refused by a policy or a failed gate (audited, failed run, nothing written), or bundled and verifiable."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from doc_builders import build_facts, make_adapter, make_dataset

from kifabrik.document import DocumentOptions, document
from kifabrik.release import Gate, ReleaseOptions, ReleaseRefused, check_gates, release


def _audit(ws, action="release"):
    return [(e.decision, e.details) for e in ws.catalog.audit_entries(action)]


def _refused_cleanly(ws, run_error: str):
    assert not ws.catalog.list_artifacts("release") and not ws.store.leftovers()
    run = next(r for r in ws.catalog.list_runs() if r.stage == "release")
    assert run.status == "failed" and run_error in run.error
    decision, details = _audit(ws)[-1]
    assert decision == "deny"
    return details


def test_internal_only_data_cannot_be_released_under_a_public_licence(cli, ws, tiny_model):
    ds = make_dataset(ws, "internal-chats", "internal-only")
    make_adapter(ws, tiny_model, [ds], name="internal-lora")
    r = cli("release", "internal-lora", "--name", "svc", "--version", "1.0.0", "--license", "MIT")
    assert r.code == 1
    assert "refused by usage policy (release)" in r.err and "dataset internal-chats@1" in r.err
    assert "policy 'internal-only'" in r.err and "forbids distribute" in r.err
    details = _refused_cleanly(ws, "refused by usage policy")
    assert details["refused_by"] == "policy" and details["license"] == "MIT"
    assert {d["dataset_id"] for d in details["denials"]} >= {ds.id}


def test_an_expired_dataset_blocks_the_release(ws, tiny_model):
    ds = make_dataset(ws, "old-chats", "expires-on:2020-01-01")
    ad = make_adapter(ws, tiny_model, [ds], name="old-lora")
    document(ws, ad.id)
    with pytest.raises(ReleaseRefused, match=r"old-chats@1.*requires dateTime lteq 2020-01-01 \(asked: purpose release"):
        release(ws, ad.id, ReleaseOptions(name="old", version="1"))
    _refused_cleanly(ws, "refused by usage policy")


def test_non_commercial_data_may_be_released_under_a_non_commercial_licence_only(cli, ws, tiny_model):
    ds = make_dataset(ws, "research-chats", "research-non-commercial")
    make_adapter(ws, tiny_model, [ds], name="research-lora")
    r = cli("release", "research-lora", "--name", "research", "--version", "1", "--license", "Apache-2.0")
    assert r.code == 1 and "(commercialUse)" in r.err and "forbids commercialize" in r.err
    r = cli("release", "research-lora", "--name", "research", "--version", "1", "--license", "cc-by-nc-4.0")
    assert r.code == 0, r.err
    rec = ws.catalog.get_artifact("research", "release")
    assert rec.meta["license"] == "CC-BY-NC-4.0" and rec.meta["purposes_permitted"] == ["release"]
    card = (ws.path(rec) / "documents" / "README.md").read_text(encoding="utf-8")
    assert "license: cc-by-nc-4.0" in card  # documents regenerated for the chosen licence


def test_a_failed_gate_refuses_the_release(cli, ws, tiny_model, tmp_path):
    facts = build_facts(ws, tiny_model, acc=0.625)
    document(ws, facts["adapter"].id)
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates:\n  - min: {task: werkstatt, metric: acc, value: 0.7}\n"
                     "  - max: {metric: nd.abs_bias_ambig, value: 0.2}\n", encoding="utf-8")
    r = cli("release", "service-lora", "--name", "svc", "--version", "1", "--gate", str(gates))
    assert r.code == 1
    assert "refused by quality gate" in r.err and "task.werkstatt.acc ≥ 0.7 (lower end of the 95 % CI" in r.err
    assert f"evaluation eval-service-lora@1 ({facts['evaluation'].id[:12]})" in r.err
    # the message names task, metric, value, interval and item count (40 of 64: Wilson 0.5025-0.7333)
    assert "task werkstatt, metric acc = 0.625, 95 % CI 0.503–0.733, n = 64: the lower end 0.5025 is below 0.7" in r.err
    assert "nd.abs_bias_ambig" not in r.err  # only failing gates are named
    details = _refused_cleanly(ws, "refused by quality gate")
    assert [g["passed"] for g in details["gates"]] == [False, True]
    assert details["gates"][0]["n"] == 64 and details["gates"][1]["ci_high"] == 0.18


def test_a_min_gate_compares_the_lower_and_a_max_gate_the_upper_end_of_the_interval(ws, tiny_model):
    from doc_builders import make_evaluation

    ds = make_dataset(ws, "chats", "open-with-attribution")
    ad = make_adapter(ws, tiny_model, [ds])
    make_evaluation(ws, ad, n=64)
    document(ws, ad.id)

    def gate(kind, **bound):
        return check_gates(ws, ad, [Gate.model_validate({kind: bound})])[0]

    # point value 0.625 >= 0.6, but the lower end 0.5025 is not
    g = gate("min", task="werkstatt", metric="acc", value=0.6)
    assert not g.passed and g.reason.endswith("the lower end 0.5025 is below 0.6")
    assert gate("min", task="werkstatt", metric="acc", value=0.5).passed
    # point value 0.12 <= 0.15, but the upper end 0.18 is not
    g = gate("max", metric="nd.abs_bias_ambig", value=0.15)
    assert not g.passed and g.reason.endswith("metric nd.abs_bias_ambig = 0.12, 95 % CI 0.06–0.18, n = 96: "
                                              "the upper end 0.18 is above 0.15")
    assert gate("max", metric="nd.abs_bias_ambig", value=0.2).passed


def test_a_gate_over_too_few_items_fails_in_plain_words(ws, tiny_model):
    from doc_builders import make_evaluation

    ds = make_dataset(ws, "chats", "open-with-attribution")
    ad = make_adapter(ws, tiny_model, [ds])
    make_evaluation(ws, ad, n=8)  # 5 of 8 right: 0.625, Wilson 0.306-0.863
    document(ws, ad.id)
    gate = Gate.model_validate({"min": {"task": "werkstatt", "metric": "acc", "value": 0.3}})
    with pytest.raises(ReleaseRefused) as err:
        release(ws, ad.id, ReleaseOptions(name="svc", version="1", gates=[gate]))
    assert ("task werkstatt, metric acc = 0.625, 95 % CI 0.306–0.863, n = 8: measured on 8 items, fewer than the 30 "
            "this gate needs; evaluate on at least 30 items") in str(err.value)
    fewer = Gate.model_validate({"min": {"task": "werkstatt", "metric": "acc", "value": 0.3, "min_items": 8}})
    assert check_gates(ws, ad, [fewer])[0].passed  # the lower end 0.306 clears 0.3 once 8 items are allowed


def test_a_metric_recorded_without_count_or_interval_fails_the_gate(ws, tiny_model):
    from doc_builders import make_evaluation

    ds = make_dataset(ws, "chats", "open-with-attribution")
    ad = make_adapter(ws, tiny_model, [ds])
    make_evaluation(ws, ad, stats=False)
    [g] = check_gates(ws, ad, [Gate.model_validate({"min": {"metric": "ve.accuracy", "value": 0.1}})])
    assert not g.passed and "no item count or confidence interval is recorded with it" in g.reason


def test_a_missing_evaluation_or_metric_fails_the_gate(ws, tiny_model):
    ds = make_dataset(ws, "chats", "open-with-attribution")
    ad = make_adapter(ws, tiny_model, [ds])
    document(ws, ad.id)
    gate = Gate.model_validate({"min": {"task": "werkstatt", "metric": "acc", "value": 0.5}})
    with pytest.raises(ReleaseRefused, match="no evaluation of service-lora@1 is recorded"):
        release(ws, ad.id, ReleaseOptions(name="svc", version="1", gates=[gate]))
    from doc_builders import make_evaluation

    make_evaluation(ws, ad)
    gate = Gate.model_validate({"min": {"metric": "cy.leak_rate", "value": 0.5}})
    with pytest.raises(ReleaseRefused, match=r"has no value for cy.leak_rate \(not measured; it measured: nd"):
        release(ws, ad.id, ReleaseOptions(name="svc", version="1", gates=[gate]))


def test_bad_gate_file_names_file_and_line(cli, ws, tiny_model, tmp_path):
    gates = tmp_path / "gates.yaml"
    gates.write_text("- min: {metric: acc, value: 0.5}\n- min: {metric: acc, vaule: 0.5}\n", encoding="utf-8")
    document(ws, "tiny")
    r = cli("release", "tiny", "--name", "x", "--version", "1", "--gate", str(gates))
    assert r.code == 1 and f"{gates}:2" in r.err and "unknown key" in r.err


def test_release_bundles_weights_documents_lineage_and_checksums(cli, ws, tiny_model):
    facts = build_facts(ws, tiny_model)
    gate = Gate.model_validate({"min": {"task": "werkstatt", "metric": "acc", "value": 0.5}})
    document(ws, facts["adapter"].id, DocumentOptions())
    rec = release(ws, "service-lora", ReleaseOptions(name="schmidt-service", version="1.0.0", gates=[gate]))
    path = ws.path(rec)
    names = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert {"weights/adapter_model.safetensors", "weights/adapter_config.json", "base_model.json", "lineage.json",
            "release.json", "SHA256SUMS", "documents/README.md", "documents/annex-xi.md", "documents/ml-bom.cdx.json",
            "manifest.json"} <= names
    info = json.loads((path / "release.json").read_text())
    assert info["license"] == "Apache-2.0" and info["gates"][0]["value"] == 0.625
    assert (info["gates"][0]["n"], info["gates"][0]["ci_low"]) == (64, 0.502504)  # Wilson for 40 of 64
    assert json.loads((path / "base_model.json").read_text())["id"] == tiny_model.id
    assert json.loads((path / "lineage.json").read_text())["root"] == facts["adapter"].id
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=path, check=False).returncode == 0
    edges = {(e.parent_id, e.relation) for e in ws.catalog.edges(child=rec.id)}
    assert (facts["adapter"].id, "released") in edges and (facts["evaluation"].id, "gated_by") in edges
    assert _audit(ws)[-1][0] == "permit"
    assert cli("verify", rec.id[:12]).code == 0
    (path / "weights" / "adapter_config.json").write_text("{}")
    r = cli("verify", rec.id[:12])
    assert r.code == 1 and "adapter_config.json: content changed" in r.err
    # the same name and version cannot be released twice
    with pytest.raises(Exception, match="exists already"):
        release(ws, "service-lora", ReleaseOptions(name="schmidt-service", version="1.0.0"))


def test_a_model_release_carries_its_full_weights_and_documents_say_so(cli, ws, tiny_model):
    r = cli("release", "tiny", "--name", "tiny-release", "--version", "0.1")
    assert r.code == 0, r.err
    assert "documents of this release: tiny-release-0.1-documents@1" in r.out
    rec = ws.catalog.get_artifact("tiny-release", "release")
    assert (ws.path(rec) / "weights" / "model.safetensors").exists()
    assert json.loads((ws.path(rec) / "release.json").read_text())["weights"]["weights_sha256"] == \
        tiny_model.meta["weights_sha256"]
    # documents made after the release record its date and licence (Annex XI 1(c))
    res = document(ws, "tiny")
    annex = (ws.path(res.record) / "annex-xi.md").read_text(encoding="utf-8")
    assert "Release tiny-release" in annex and "0.1" in annex and "Apache-2.0" in annex


def test_recipe_stages_document_and_release(ws, tiny_model_dir, tmp_path):
    from kifabrik.pipeline import run_recipe, validate_recipe

    recipe = {"name": "r", "model": {"source": str(tiny_model_dir), "name": "tiny"},
              "organisation": {"provider": "Schmidt GmbH", "intended_purpose": "Service answers."},
              "stages": [{"stage": "document", "name": "docs", "model": "base", "out": str(tmp_path / "docs")},
                         {"stage": "release", "name": "ship", "model": "base", "documents": "docs",
                          "release_name": "r-base", "version": "1.0", "license": "Apache-2.0"}]}
    result = run_recipe(ws, validate_recipe(recipe))
    docs, rel = result.steps[0].outputs[0], result.steps[1].outputs[0]
    assert docs.kind == "document" and rel.kind == "release"
    assert "Schmidt GmbH [" in (tmp_path / "docs" / "README.md").read_text(encoding="utf-8")
    # the bundle carries documents made for this release, from the document step it names
    info = json.loads((ws.path(rel) / "release.json").read_text(encoding="utf-8"))
    assert info["documents"]["made_from"]["id"] == docs.id and info["documents"]["id"] == rel.meta["documents"]
    card = (ws.path(rel) / "documents" / "README.md").read_text(encoding="utf-8")
    assert "Schmidt GmbH [" in card and "Service answers. [" in card
    line = re.search(r"- This release: r-base \[(\d+)\] 1\.0 \[\1\], released (\S+) \[\1\] under the licence "
                     r"Apache-2\.0 \[\1\]", card)
    assert line and line.group(2) == info["created_at"]
    # a release step given an organisation file states its facts instead of the recipe's
    org = tmp_path / "org.yaml"
    org.write_text(ORG_FILE, encoding="utf-8")
    again = {**recipe, "stages": [{"stage": "release", "name": "ship", "model": "base", "release_name": "r-base",
                                   "version": "1.1", "license": "Apache-2.0", "org": str(org),
                                   "data_sources": {}}]}
    rel = run_recipe(ws, validate_recipe(again)).steps[0].outputs[0]
    annex = (ws.path(rel) / "documents" / "annex-xi.md").read_text(encoding="utf-8")
    assert "Antworten auf Servicefragen zu unseren Fräsmaschinen. [" in annex and "Service answers." not in annex
    assert "[2] organisation file org.yaml" in annex
    bad = {**recipe, "stages": [{"stage": "release", "model": "base", "release_name": "x", "version": "1",
                                 "gates": [{"min": {"metric": "acc", "value": 1}, "max": {"metric": "acc", "value": 1}}]}]}
    with pytest.raises(Exception, match="exactly one of min, max or dimension"):
        validate_recipe(bad)


ORG_FILE = """provider: Schmidt Maschinenbau GmbH
contact: ki@schmidt.example
intended_purpose: Antworten auf Servicefragen zu unseren Fräsmaschinen.
acceptable_use: Nur für das Service-Team; jede Antwort prüft ein Mensch.
"""


def test_the_bundled_documents_describe_this_release_with_the_facts_given_to_document(cli, ws, tiny_model, tmp_path):
    """`kifabrik document --org --data-source`, then `kifabrik release`: the bundle's documents keep the provider
    facts and categories, and state this release's version, date, licence, audience and gates."""
    facts = build_facts(ws, tiny_model)  # 40 of 64 right: acc 0.625, Wilson 0.5025-0.7333
    org = tmp_path / "org.yaml"
    org.write_text(ORG_FILE, encoding="utf-8")
    gates = tmp_path / "gates.yaml"
    gates.write_text("- min: {task: werkstatt, metric: acc, value: 0.5}\n", encoding="utf-8")
    r = cli("document", "service-lora", "--org", str(org), "--data-source", "service-chats=private")
    assert r.code == 0, r.err
    r = cli("release", "service-lora", "--name", "schmidt-service", "--version", "1.2.0", "--audience", "internal",
            "--license", "LicenseRef-Schmidt-internal", "--gate", str(gates))
    assert r.code == 0, r.err
    rec = ws.catalog.get_artifact("schmidt-service", "release")
    info = json.loads((ws.path(rec) / "release.json").read_text(encoding="utf-8"))
    docs = {p.name: p.read_text(encoding="utf-8") for p in (ws.path(rec) / "documents").glob("*.md")}
    annex = docs["annex-xi.md"]
    assert "Antworten auf Servicefragen zu unseren Fräsmaschinen. [" in annex
    assert "organisation file org.yaml (as given to documents service-lora-documents@1)" in annex
    assert "pass --org FILE" not in annex and "no release of this model is recorded yet" not in annex
    n = re.search(r"- This release: schmidt-service \[(\d+)\] 1\.2\.0 \[\1\], released (\S+) \[\1\] under the "
                  r"licence LicenseRef-Schmidt-internal \[\1\]", annex)
    assert n and n.group(2) == info["created_at"]
    cite = n.group(1)
    assert (f"- Audience: internal: deployed inside the organisation only and never distributed (the usage policies "
            f"of the data were asked for `serving`) [{cite}]") in annex
    assert (f"  - task.werkstatt.acc ≥ 0.5 (lower end of the 95 % CI, at least 30 items) [{cite}]: evaluation "
            f"eval-service-lora@1 ({facts['evaluation'].id[:12]}): task werkstatt, metric acc = 0.625, 95 % CI "
            f"0.503–0.733, n = 64 [{cite}]") in annex
    assert f"[{cite}] release schmidt-service 1.2.0: release.json of its bundle" in annex
    assert "### 1(f) Licence\n\nLicenseRef-Schmidt-internal [" in annex
    summary = docs["training-content-summary.md"]
    assert "category private (the provider's own non-public data)" in summary
    assert "Date of placement on the market: none — this release schmidt-service" in summary
    assert "license: other\nlicense_name: schmidt-internal\n" in docs["README.md"]
    assert "## Release\n" in docs["README.md"] and "this release schmidt-service" in docs["annex-xii.md"]
    bom = json.loads((ws.path(rec) / "documents" / "ml-bom.cdx.json").read_text(encoding="utf-8"))
    main = bom["metadata"]["component"]
    assert main["licenses"] == [{"license": {"name": "LicenseRef-Schmidt-internal"}}]
    props = {p["name"]: p["value"] for p in main["properties"]}
    assert (props["kifabrik:release_version"], props["kifabrik:release_audience"]) == ("1.2.0", "internal")
    assert props["kifabrik:release_created_at"] == info["created_at"]
    bundled = ws.catalog.get_artifact(rec.meta["documents"])
    assert bundled.meta["release"]["version"] == "1.2.0" and bundled.meta["license"] == "LicenseRef-Schmidt-internal"
    assert bundled.meta["bom"].startswith("valid CycloneDX 1.6")
    assert info["documents"]["made_from"]["ref"] == "service-lora-documents@1"
    # the organisation file takes the licence from the release, and says so
    org.write_text(ORG_FILE + "license: Apache-2.0\n", encoding="utf-8")
    r = cli("document", "service-lora", "--org", str(org))
    assert r.code == 1 and "a licence is chosen per release" in r.err


def test_the_terms_a_base_model_was_accepted_under_travel_with_the_bundle(ws, tiny_model, tmp_path):
    from kifabrik.artifacts import sha256_file

    terms = tmp_path / "TERMS.html"
    terms.write_text("<p>Use restrictions that pass on to every derived model</p>")
    ws.catalog.update_meta(tiny_model.id, {"terms": {"name": "Fake Terms", "file": str(terms),
                                                     "sha256": sha256_file(terms), "accepted": True}})
    facts = build_facts(ws, tiny_model)
    document(ws, facts["adapter"].id, DocumentOptions())
    rec = release(ws, "service-lora", ReleaseOptions(name="schmidt-service", version="1.0.0"))
    path = ws.path(rec)
    assert (path / "BASE-MODEL-TERMS.html").read_text() == terms.read_text()
    base = json.loads((path / "base_model.json").read_text())
    assert base["terms"] == {"name": "Fake Terms", "file": "BASE-MODEL-TERMS.html", "sha256": sha256_file(terms)}
    assert "BASE-MODEL-TERMS.html" in (path / "SHA256SUMS").read_text()
    assert "subject to the Fake Terms (BASE-MODEL-TERMS.html in this bundle)" in (path / "NOTICE").read_text()
    # terms changed since they were accepted: refused, nothing released
    terms.write_text("<p>other terms</p>")
    with pytest.raises(Exception, match="no longer at .* as accepted"):
        release(ws, "service-lora", ReleaseOptions(name="schmidt-service", version="1.0.1"))
    assert [r.meta.get("release_version") for r in ws.catalog.list_artifacts("release")] == ["1.0.0"]
    assert not ws.store.leftovers()
