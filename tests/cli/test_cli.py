"""The real CLI on a tiny random model: files, catalog rows, runs, lineage, errors."""

from __future__ import annotations

import json
import subprocess
import sys

from kifabrik.workspace import Workspace

RECIPE = """\
name: shop
model:
  source: {source}
  name: tiny
stages:
  - stage: generate
    name: ask
    prompts:
      - {{text: "Wann ist der nächste Ölwechsel fällig?", lang: de}}
      - {{text: "When is the next oil change due?", lang: en}}
    max_new_tokens: 6
  - stage: generate
    name: ask-again
    model: base
    prompts: ["Ersatzteile?"]
    max_new_tokens: 3
"""


def test_help_does_not_import_torch():
    code = ("import sys; from kifabrik.cli.main import app; import kifabrik.pipeline, kifabrik.generate; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"
    helped = subprocess.run([sys.executable, "-m", "kifabrik.cli.main", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "models" in helped.stdout


def test_models_commands(cli, tiny_model_dir):
    r = cli("models", "add", str(tiny_model_dir), "--name", "tiny")
    assert r.code == 0, r.err
    assert "registered model tiny@1" in r.out and "LlamaForCausalLM" in r.out
    listed = json.loads(cli("models", "list", "--json").out)
    assert [m["name"] for m in listed] == ["tiny"] and "chat_template" not in listed[0]
    shown = json.loads(cli("models", "show", "tiny", "--json").out)
    assert shown["license"] == "apache-2.0" and shown["weights_sha256"]
    catalogue = cli("models", "catalog")
    assert catalogue.code == 0 and "utter-project/EuroLLM-9B-Instruct" in catalogue.out
    gen = cli("generate", "tiny", "Hallo", "--max-new-tokens", "4", "--temperature", "0.7", "--seed", "3")
    assert gen.code == 0, gen.err
    missing = cli("generate", "nope", "Hallo")
    assert missing.code == 1 and "no artifact 'nope'" in missing.err and "Traceback" not in missing.err
    assert cli("models", "rm", "tiny").code == 0
    assert json.loads(cli("models", "list", "--json").out) == []


def test_run_recipe_records_everything(cli, home, tiny_model_dir, tmp_path):
    recipe = tmp_path / "shop.yaml"
    recipe.write_text(RECIPE.format(source=tiny_model_dir), encoding="utf-8")
    checked = cli("run", str(recipe), "--check")
    assert checked.code == 0 and "is valid" in checked.out
    with _ws(home) as ws:
        assert ws.catalog.list_runs() == []  # --check runs nothing

    r = cli("run", str(recipe), "--set", "stages.ask-again.max_new_tokens=2")
    assert r.code == 0, r.err
    assert "✓ ask (generate)" in r.out and "✓ ask-again (generate)" in r.out
    with _ws(home) as ws:
        runs = ws.catalog.list_runs()
        assert sorted(x.name for x in runs) == ["ask", "ask-again", "model"]
        assert {x.status for x in runs} == {"succeeded"} and len({x.pipeline_id for x in runs}) == 1
        again = next(x for x in runs if x.name == "ask-again")
        assert again.config["max_new_tokens"] == 2  # the resolved config, override applied
        gens = ws.catalog.list_artifacts("generations")
        assert sorted(g.name for g in gens) == ["shop-ask", "shop-ask-again"]
        ask = next(g for g in gens if g.name == "shop-ask")
        rows = [json.loads(line) for line in (ws.path(ask) / "answers.jsonl").read_text().splitlines()]
        assert [row["lang"] for row in rows] == ["de", "en"]
        assert all(row["completion_tokens"] <= 6 and row["chat_template"] for row in rows)
        assert ask.id in next(x for x in runs if x.name == "ask").outputs and ask.id not in again.outputs

    lineage = json.loads(cli("lineage", "tiny", "--format", "json").out)
    assert {e["relation"] for e in lineage["descendants"]} == {"generated_by"}
    assert len(lineage["descendants"]) == 2
    dot = cli("lineage", "shop-ask", "--format", "dot").out
    assert dot.startswith("digraph lineage") and "generated_by" in dot
    text = cli("lineage", "shop-ask").out
    assert "ancestors:" in text and "model tiny@1" in text
    assert cli("lineage", "tiny", "--format", "svg").code == 1


def test_invalid_recipe_runs_nothing(cli, home, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: x\nmodel:\n  source: embedded:smollm2-135m-instruct\nstages:\n"
                      "  - stage: generate\n    prompts: []\n    max_new_tokens: lots\n")
    r = cli("run", str(recipe))
    assert r.code == 1
    assert "bad.yaml:6: stages[0].prompts" in r.err and "bad.yaml:7: stages[0].max_new_tokens" in r.err
    with _ws(home) as ws:
        assert ws.catalog.list_runs() == [] and ws.catalog.list_artifacts() == []


def test_failing_stage_leaves_a_failed_run_and_no_output(cli, home, tiny_model_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    # `ask` is an earlier step, so the check passes; its output (answers) is found to be no model only at run time
    recipe.write_text(RECIPE.format(source=tiny_model_dir).replace("model: base", "model: ask"))
    r = cli("run", str(recipe))
    assert r.code == 1 and "shop-ask@1 is a generations; a model, an adapter or a Fach-LLM is needed" in r.err
    with _ws(home) as ws:
        failed = [x for x in ws.catalog.list_runs() if x.status == "failed"]
        assert [x.name for x in failed] == ["ask-again"]
        assert "is a generations" in failed[0].error and failed[0].ended_at is not None
        assert "shop-ask-again" not in {a.name for a in ws.catalog.list_artifacts()}
    runs = cli("runs", "list", "--json")
    assert runs.code == 0 and len(json.loads(runs.out)) == 3


def test_unknown_model_source_fails_before_any_run(cli, home, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(source=tmp_path / "missing-folder"))
    r = cli("run", str(recipe))
    assert r.code == 1 and "missing-folder" in r.err and "no such file" in r.err
    with _ws(home) as ws:
        assert ws.catalog.list_runs() == []


def test_lineage_and_show_carry_inherited_restrictions(cli, ws, tiny_model):
    from kifabrik.policy import preset

    policy = ws.catalog.add_policy("internal-only", preset("internal-only"))
    with ws.create("dataset", "kundendienst", policies=[policy]) as data:
        data.write_text("train.jsonl", "")
    with ws.create("adapter", "kd-lora", parents=[(tiny_model.id, "base_model"), (data.record.id, "trained_on")]) as ad:
        ad.write_text("adapter_config.json", "{}")
    text = cli("lineage", "kd-lora").out
    assert "usage restrictions (own and inherited along lineage):" in text
    assert "policy 'internal-only', from dataset kundendienst@1" in text
    as_json = json.loads(cli("lineage", "kd-lora", "--format", "json").out)
    assert as_json["restrictions"] and all(r["sources"][0]["ref"] == "kundendienst@1" for r in as_json["restrictions"])
    shown = cli("models", "show", "tiny")
    assert "usage restrictions: none recorded" in shown.out and "languages: ['de', 'en']" in shown.out


class _ws:
    """`with _ws(home) as ws:` — a workspace closed after use."""

    def __init__(self, home):
        self.ws = Workspace.open(home)

    def __enter__(self):
        return self.ws

    def __exit__(self, *exc):
        self.ws.close()


def test_messages_are_printed_literally(cli):
    r = cli("lineage", "x[bold]y:train:1")
    assert r.code == 1 and "no artifact 'x[bold]y:train:1'" in r.err


def test_audit_list_reads_the_log(cli, tiny_model_dir):
    assert cli("models", "add", str(tiny_model_dir), "--name", "tiny").code == 0
    listed = cli("audit", "list", "--json")
    assert listed.code == 0, listed.err
    entries = json.loads(listed.out)
    assert [e["action"] for e in entries] == ["model.add"] and entries[0]["details"]["name"] == "tiny"
    only = json.loads(cli("audit", "list", "--json", "--subject", "tiny", "--action", "model.add").out)
    assert len(only) == 1 and only[0]["subject"] == entries[0]["subject"]
    table = cli("audit", "list")
    assert table.code == 0 and "model.add" in table.out
    assert json.loads(cli("audit", "list", "--json", "--action", "no.such").out) == []
