"""The one model runtime: every face sends the same token ids for the same messages.

evaluate (`LocalBackend.generate`), the recipe/CLI `generate`, and the server (`/v1/chat/completions`)
are each run for real on a tiny model, with and without a chat template; the ids that reach the
model are captured where they enter it and compared byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kifabrik.workspace import Workspace

SYSTEM = "Sie sind der Kundenservice-Assistent."
USER = "Die Maschine braucht alle 500 Betriebsstunden einen Ölwechsel?"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]


@pytest.fixture(scope="module")
def runtime_ws(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    from kifabrik.models.runtime import clear_cache
    from kifabrik.models.sources import add_model

    plain_dir = tmp_path_factory.mktemp("plain")
    import shutil

    shutil.copytree(tiny_model_dir, plain_dir, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(plain_dir))
    tok.chat_template = None
    (plain_dir / "chat_template.jinja").unlink(missing_ok=True)
    tok.save_pretrained(str(plain_dir))
    ws = Workspace.open(tmp_path_factory.mktemp("runtime-home"))
    add_model(ws, str(tiny_model_dir), name="templated")
    add_model(ws, str(plain_dir), name="plain")
    clear_cache()
    yield ws
    clear_cache()
    ws.close()


def _capture_generate(model: Any, seen: list[list[int]]) -> None:
    """Record the unpadded prompt ids of every `model.generate` call on this model object."""
    original = model.generate

    def spy(*args: Any, **kwargs: Any) -> Any:
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
            seen.append([t for t, keep in zip(row, m, strict=True) if keep])
        return original(*args, **kwargs)

    model.generate = spy


@pytest.mark.parametrize("name", ["templated", "plain"])
def test_evaluate_generate_and_serve_send_identical_ids(runtime_ws: Workspace, name: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import start_server

    from kifabrik.evaluate.backends import GenOptions, open_target
    from kifabrik.generate import generate_text
    from kifabrik.models import prompts
    from kifabrik.serve.backends.hf import TransformersBackend
    from kifabrik.serve.keys import create_key

    backend = open_target(runtime_ws, name)
    seen_local: list[list[int]] = []
    _capture_generate(backend.loaded.model, seen_local)  # type: ignore[attr-defined]
    backend.generate([MESSAGES], GenOptions(max_new_tokens=2), chat=True)
    generate_text(runtime_ws, name, [USER], system=SYSTEM)  # same cached model: the spy sees it too
    assert len(seen_local) == 2
    evaluate_ids, generate_ids = seen_local

    served: list[list[int]] = []
    original_submit = TransformersBackend.submit

    def submit(self: TransformersBackend, req: Any) -> None:
        served.append(list(req.prompt_ids))
        original_submit(self, req)

    monkeypatch.setattr(TransformersBackend, "submit", submit)
    srv = start_server(runtime_ws, models=[name], ai_notice=False, ai_notice_off_reason="the test compares raw prompts")
    try:
        key = create_key(runtime_ws, ["*"])[1]
        srv.keys["all"] = key
        srv.client().chat.completions.create(model=name, messages=MESSAGES, max_tokens=2, temperature=0)
    finally:
        srv.stop()
    assert served == [evaluate_ids]
    assert evaluate_ids == generate_ids

    tok = backend.tokenizer  # type: ignore[attr-defined]
    if name == "plain":  # the documented fallback: role lines, tokenized with the tokenizer's special tokens
        expected = tok(f"system: {SYSTEM}\nuser: {USER}\nassistant:")["input_ids"]
        assert evaluate_ids == expected
    else:
        assert evaluate_ids == tok(prompts.render(tok, MESSAGES), add_special_tokens=False)["input_ids"]
        assert tok.convert_ids_to_tokens(evaluate_ids[-1]) == "<|assistant|>"


def test_batch_decoder_greedy_equals_model_generate(runtime_ws: Workspace) -> None:
    """The server's own batch decoder gives the same greedy tokens as transformers' `generate`."""
    from helpers import start_server

    from kifabrik.models.runtime import GenerationOptions, load_record
    from kifabrik.serve.keys import create_key

    loaded = load_record(runtime_ws, runtime_ws.catalog.get_artifact("templated"))
    questions = [USER, "Bitte prüfen Sie den Hydraulikdruck vor dem Start.", "Order spare parts"]
    convs = [[{"role": "user", "content": q}] for q in questions]
    reference = [c.text for c in loaded.generate(convs, GenerationOptions(max_new_tokens=12), batch_size=1)]
    srv = start_server(runtime_ws, models=["templated"], ai_notice=False, ai_notice_off_reason="the test compares raw prompts",
                       max_batch=4)
    try:
        srv.keys["all"] = create_key(runtime_ws, ["*"])[1]
        client = srv.client()
        got = [client.chat.completions.create(model="templated", messages=c, max_tokens=12, temperature=0)
               .choices[0].message.content for c in convs]
    finally:
        srv.stop()
    assert [g.strip() for g in got] == reference
    assert any(reference), "a random tiny model still writes some text in 12 tokens"


def test_resolve_refuses_non_models_before_loading(runtime_ws: Workspace) -> None:
    from kifabrik.errors import KifabrikError
    from kifabrik.models.runtime import resolve

    with runtime_ws.create("dataset", "not-a-model") as draft:
        draft.write_text("rows.jsonl", "")
    with pytest.raises(KifabrikError, match="is a dataset; a model, an adapter or a Fach-LLM is needed"):
        resolve(runtime_ws, draft.record)


def test_bfloat16_runs_in_float32_where_the_cpu_only_emulates_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from kifabrik.models import loading

    monkeypatch.setattr(loading, "native_cpu_bf16", lambda: False)
    assert loading.cpu_dtype("bfloat16", "cpu") == "float32"
    assert loading.cpu_dtype("bfloat16", "cuda") == "bfloat16"  # GPUs keep what was asked
    assert loading.cpu_dtype("float16", "cpu") == "float16"  # only bfloat16 has an emulated path to avoid
    monkeypatch.setattr(loading, "native_cpu_bf16", lambda: True)
    assert loading.cpu_dtype("bfloat16", "cpu") == "bfloat16"
