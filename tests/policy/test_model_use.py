"""Every way to run or hand out a model asks its usage policy first, for the right purpose, and audits the answer.

The tables below classify every CLI command (from the typer app) and every recipe stage (from the
registry): the purpose for which it runs or hands out a model, or None where it does neither. A
command or stage that is added without being classified fails `test_every_command_and_stage_is_classified`.
Each classified use then runs for real on the tiny model carrying one policy that permits every purpose
but that one: it must be refused with `PolicyDenied` (so it asked for exactly that purpose) before
any weights are loaded, and leave the denial in the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kifabrik import registry
from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.policy import PURPOSES, PolicyDenied
from kifabrik.workspace import Workspace

#: CLI command -> purpose it runs or hands out a model for (None: it does neither; why in the comment).
COMMANDS: dict[str, str | None] = {
    "generate": "serving", "agent": "serving", "serve": "serving", "eval": "evaluation", "train": "training",
    "merge": "merging", "export": "release", "release": "release",
    "run": None, "demo": None,  # run recipe stages, classified in STAGES
    "document": None,  # written from recorded facts; no model runs
    "merge-gate": None,  # compares recorded evaluations
    "data import": None,  # --model loads only the tokenizer, to count and chunk
    "kb build": None, "kb search": None,  # BM25 over passages, each passage's own policy checked
    "fach-llm create": None,  # records a model + knowledge base pair; running it is checked like any model
    "models add": None, "models rm": None, "models list": None, "models show": None, "models catalog": None,
    "adapters list": None, "adapters show": None, "data list": None, "data show": None, "data rm": None,
    "kb list": None, "kb show": None, "kb rm": None, "fach-llm list": None, "keys create": None, "keys list": None,
    "keys revoke": None, "policy presets": None, "policy validate": None, "policy show": None, "policy check": None,
    "verify": None, "lineage": None, "doctor": None, "runs list": None, "runs show": None, "runs cancel": None, "artifacts list": None,
    "usage": None,  # sums recorded runs; no model runs
    "audit verify": None, "audit list": None,
    "users add": None, "users list": None, "users grant": None, "users revoke": None, "users passwd": None,
    "users disable": None, "projects add": None, "projects list": None,  # accounts; no model runs
    "ui": None,  # its pages run models only through the serving path (chat) and CLI jobs (train, eval, run),
                 # each asking the policy as above; tests/ui/test_pages_work.py covers the chat's refusal
}
#: Recipe stage -> purpose (None: it does not run or hand out a model).
STAGES: dict[str, str | None] = {
    "generate": "serving", "evaluate": "evaluation", "train": "training", "merge": "merging", "release": "release",
    "data": None, "kb": None, "fach-llm": None, "document": None, "merge-gate": None,
}


def cli_commands() -> list[str]:
    from typer.main import get_command

    from kifabrik.cli.main import app

    def walk(group: Any, prefix: str) -> list[str]:
        out = []
        for name, sub in group.commands.items():
            full = f"{prefix} {name}".strip()
            out += walk(sub, full) if hasattr(sub, "commands") else [full]
        return out

    return sorted(walk(get_command(app), ""))


def test_every_command_and_stage_is_classified() -> None:
    assert sorted(COMMANDS) == cli_commands(), "classify the new command in COMMANDS (and run it below)"
    assert sorted(STAGES) == registry.names("stage"), "classify the new stage in STAGES (and run it below)"
    assert {p for p in [*COMMANDS.values(), *STAGES.values()] if p} <= set(PURPOSES)


# --------------------------------------------------------------------------- the inputs each use needs

def all_but(purpose: str) -> dict[str, Any]:
    others = [p for p in PURPOSES if p != purpose]
    return {"@context": "http://www.w3.org/ns/odrl.jsonld", "@type": "Set", "@id": f"urn:test:all-but-{purpose}",
            "permission": [{"action": "use", "constraint": [
                {"leftOperand": "purpose", "operator": "isAnyOf", "rightOperand": others}]}]}


def chat_dataset(ws: Workspace) -> ArtifactRecord:
    row = {"messages": [{"role": "user", "content": "Wie oft Ölwechsel?"},
                        {"role": "assistant", "content": "Alle 500 Betriebsstunden."}]}
    with ws.create("dataset", "chats", meta={"format": "chat", "rows": {"train": 8, "test": 0}}) as draft:
        draft.write_text("train.jsonl", (json.dumps(row, ensure_ascii=False) + "\n") * 8)
        draft.write_text("test.jsonl", "")
    return draft.record


def lora(ws: Workspace, base: ArtifactRecord) -> ArtifactRecord:
    from peft import LoraConfig, get_peft_model

    from kifabrik.models.loading import load_model
    from kifabrik.models.sources import model_path

    model = get_peft_model(load_model(model_path(ws, base), dtype="float32", device="cpu"),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    meta = {"base_model_id": base.id, "base_weights_sha256": base.meta.get("weights_sha256"), "rank": 2,
            "datasets": [], "policy_ids": []}
    with ws.create("adapter", "lora", parents=[(base.id, "base_model")], meta=meta) as draft:
        model.save_pretrained(draft.dir, safe_serialization=True)
    return draft.record


def task_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mc.jsonl").write_text(json.dumps({"id": "1", "question": "Öl alle", "choices": ["500 h", "5 h"],
                                                 "answer": 0}) + "\n", encoding="utf-8")
    path = folder / "mc.yaml"
    path.write_text("name: mc\ntype: multiple_choice\nitems: mc.jsonl\n", encoding="utf-8")
    return path


def run_cli(*args: str) -> None:
    """The real command line, in process, raising what it raises (main() would print it and exit 1)."""
    from typer.main import get_command

    from kifabrik.cli import common
    from kifabrik.cli.main import app

    common._ws = None
    try:
        get_command(app).main(args=list(args), prog_name="kifabrik", standalone_mode=False)
    finally:
        if common._ws is not None:
            common._ws.close()
            common._ws = None


def run_stage(ws: Workspace, step: dict[str, Any]) -> None:
    from kifabrik.pipeline import run_recipe, validate_recipe

    run_recipe(ws, validate_recipe({"name": "use", "model": {"source": "tiny"}, "stages": [step]}))


USES: dict[str, Callable[[Workspace, Path], None]] = {
    "cli generate": lambda ws, tmp: run_cli("generate", "tiny", "Hallo"),
    "cli agent": lambda ws, tmp: run_cli("agent", "schmidt-demo", "--model", "tiny", "--task", "Hallo"),
    "cli eval": lambda ws, tmp: run_cli("eval", "tiny", "--task", str(task_file(tmp / "tasks"))),
    "cli train": lambda ws, tmp: run_cli("train", "--base", "tiny", "--data", chat_dataset(ws).ref, "--max-steps", "1"),
    "cli merge": lambda ws, tmp: run_cli("merge", "--method", "linear", "--adapters",
                                         f"{lora(ws, ws.catalog.get_artifact('tiny')).ref}:1", "--name", "m"),
    "cli export": lambda ws, tmp: run_cli("export", "tiny", "--out", str(tmp / "export")),
    "cli release": lambda ws, tmp: run_cli("release", "tiny", "--name", "r", "--version", "1", "--license",
                                           "Apache-2.0"),
    "stage generate": lambda ws, tmp: run_stage(ws, {"stage": "generate", "model": "base", "prompts": ["Hallo"]}),
    "stage evaluate": lambda ws, tmp: run_stage(ws, {"stage": "evaluate", "model": "base",
                                                     "tasks": [str(task_file(tmp / "tasks"))]}),
    "stage train": lambda ws, tmp: run_stage(ws, {"stage": "train", "model": "base", "data": [chat_dataset(ws).ref],
                                                  "max_steps": 1}),
    "stage merge": lambda ws, tmp: run_stage(ws, {"stage": "merge", "method": "linear", "adapters": [
        {"adapter": lora(ws, ws.catalog.get_artifact("tiny")).ref, "weight": 1.0}]}),
    "stage release": lambda ws, tmp: run_stage(ws, {"stage": "release", "model": "base", "release_name": "r",
                                                    "version": "1", "license": "Apache-2.0"}),
}
CASES = [(f"cli {c}", p) for c, p in COMMANDS.items() if p and c != "serve"] + \
        [(f"stage {s}", p) for s, p in STAGES.items() if p] + [("cli eval --judge", "evaluation")]


def other_model(ws: Workspace, tmp: Path) -> str:
    """A second model with its own weights (the same weights would carry the tiny model's policy)."""
    from helpers import build_tiny_model

    from kifabrik.models.sources import add_model

    return add_model(ws, str(build_tiny_model(tmp / "other", seed=3)), name="other").ref


USES["cli eval --judge"] = lambda ws, tmp: run_cli("eval", other_model(ws, tmp), "--judge", "tiny", "--task",
                                                   str(task_file(tmp / "tasks")))


def test_every_classified_use_is_run_below() -> None:
    assert sorted(name for name, _ in CASES) == sorted(USES)


def _denial(exc: BaseException) -> PolicyDenied | None:
    """The PolicyDenied behind `exc` (a release refusal raises its own error from it)."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, PolicyDenied):
        seen = seen.__cause__ or seen.__context__
    return seen


@pytest.mark.parametrize(("use", "purpose"), CASES, ids=[name for name, _ in CASES])
def test_a_model_runs_only_for_what_its_policy_permits(use: str, purpose: str, ws: Workspace, tiny_model,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kifabrik.models import runtime

    policy_id = ws.catalog.add_policy(f"all-but-{purpose}", all_but(purpose))
    ws.catalog.attach_policy(tiny_model.id, policy_id)
    before = len(ws.catalog.audit_entries("policy.check"))
    loads: list[Any] = []
    monkeypatch.setattr(runtime, "_load", lambda *a, **k: loads.append(a) or pytest.fail("weights were loaded"))
    with pytest.raises(KifabrikError) as info:
        USES[use](ws, tmp_path)
    denied = _denial(info.value)
    assert denied is not None, f"{use} was refused, but not by a usage policy: {info.value}"
    assert denied.purpose == purpose and [c.policy_id for c in denied.denials] == [policy_id]
    entries = ws.catalog.audit_entries("policy.check")[before:]
    refusals = [e for e in entries if e.decision == "deny"]
    assert [(e.subject, e.details["purpose"], e.details["policy_id"]) for e in refusals] == \
        [(tiny_model.id, purpose, policy_id)]
    assert loads == []


def test_serve_answers_only_what_the_policy_permits(ws: Workspace, tiny_model) -> None:
    """`serve` loads the model at start; each request asks the policy (serve/state.py) and is audited."""
    import openai
    from helpers import start_server

    from kifabrik.serve.keys import create_key

    policy_id = ws.catalog.add_policy("all-but-serving", all_but("serving"))
    ws.catalog.attach_policy(tiny_model.id, policy_id)
    server = start_server(ws, models=["tiny"], default_max_tokens=4)
    try:
        client = server.client(create_key(ws, ["*"])[1])
        with pytest.raises(openai.PermissionDeniedError) as info:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hallo"}])
    finally:
        server.stop()
    error = info.value.body
    assert info.value.status_code == 403 and error["code"] == "policy_denied"
    assert "usage policy forbids serving" in error["message"]
    [entry] = [e for e in ws.catalog.audit_entries("serve.request") if e.decision == "deny"]
    assert entry.details["model"] == "tiny"
