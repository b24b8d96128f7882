"""The llama.cpp backend against the real engine (llama-cpp-python, built by `make llama-cpp`) on the embedded SmolLM2.

The transformers backend is the reference: on an f32 GGUF of the same weights, greedy decoding
must give the same tokens for the same prompt ids.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make llama-cpp)")

from helpers import start_server

from kifabrik.serve.backends.base import EngineOptions
from kifabrik.serve.engine import Event, GenRequest

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a short poem about the sea."}],
    [{"role": "system", "content": "Answer in one sentence."}, {"role": "user", "content": "Why is the sky blue?"}],
]
TOKENS = 24


def greedy(backend: Any, ids: list[int], max_tokens: int = TOKENS) -> tuple[str, Event]:
    """Text and final event of one greedy request submitted straight to `backend`."""
    events: list[Event] = []
    done = threading.Event()

    def sink(ev: Event) -> None:
        events.append(ev)
        if ev.finish_reason is not None:
            done.set()

    req = GenRequest(list(ids), max_tokens=max_tokens, temperature=0.0)
    req._sink = sink
    backend.submit(req)
    assert done.wait(300), "no final event within 300 s"
    return "".join(e.text for e in events), events[-1]


@pytest.fixture(scope="module")
def backends(embedded: Any) -> Any:
    from kifabrik.models.sources import model_path
    from kifabrik.serve.backends.hf import TransformersBackend
    from kifabrik.serve.backends.llamacpp import LlamaCppBackend

    ws, record, _, home = embedded
    path = model_path(ws, record)
    ref = TransformersBackend(record, path, [], EngineOptions(max_batch=1))
    llama = LlamaCppBackend(record, path, [], EngineOptions(home=Path(home), gguf_type="f32"))
    yield ref, llama
    ref.close()
    llama.close()


def test_f32_gguf_is_converted_once_from_the_safetensors_weights(backends: Any) -> None:
    ref, llama = backends
    assert llama.gguf.name.endswith(".f32.gguf")
    assert llama.gguf.parent.name == "gguf" and llama.gguf.stat().st_size > 500e6  # 135M parameters x 4 bytes
    assert "f32 conversion" in llama.gguf_reason
    assert llama.context_length == 2048  # 16 sequences share 16384 KV cells: 1024 each, raised to 2048
    # a request joins at the next decoding step, so no wait for others before a batch starts (llama-server's way);
    # transformers gathers arrivals for 5 ms first, unless told otherwise
    assert (llama.scheduler.batch_wait, ref.scheduler.batch_wait) == (0.0, 0.005)


@pytest.mark.parametrize("i", range(len(PROMPTS)))
def test_greedy_tokens_equal_the_transformers_backend(backends: Any, i: int) -> None:
    ref, llama = backends
    ids = ref.chat_ids(PROMPTS[i], None, "")
    assert llama.chat_ids(PROMPTS[i], None, "") == ids  # both render with kifabrik's template and tokenizer
    want, want_end = greedy(ref, ids)
    got, got_end = greedy(llama, ids)
    assert got == want
    assert (got_end.finish_reason, got_end.completion_tokens) == (want_end.finish_reason, want_end.completion_tokens)


def test_a_repeated_prompt_reuses_the_cells_the_finished_request_left(backends: Any) -> None:
    """llama-server's prompt cache: a finished request's KV cells stay, the next prompt computes only what differs."""
    ref, llama = backends
    ids = ref.chat_ids(PROMPTS[2], None, "")
    first, _ = greedy(llama, ids)
    before = llama.stats()["cached_prompt_tokens"]
    again, end = greedy(llama, ids)
    assert llama.stats()["cached_prompt_tokens"] - before == len(ids) - 1  # the last one is fed for its logits
    assert again == first == greedy(ref, ids)[0]
    assert end.prompt_tokens == len(ids)


def test_a_request_joining_copies_the_cells_of_a_running_one_with_the_same_prompt(backends: Any) -> None:
    """Two requests with one prompt at once: the second copies the first's KV stream (COPY_MIN or more tokens)."""
    from kifabrik.serve.backends.llamacpp import COPY_MIN

    ref, llama = backends
    ids = ref.chat_ids(PROMPTS[2], None, "")  # its own system message: other prompts share 3 tokens with it
    assert len(ids) - 1 >= 3 + COPY_MIN
    want = greedy_with(ref, ids, None)
    greedy(llama, ids)  # now a free sequence holds this prompt
    before = llama.stats()
    assert run_together(llama, ids, [None, None]) == [want, want]
    after = llama.stats()
    # the first reuses that sequence, the second a copy of it: all but the last prompt token each
    assert after["cached_prompt_tokens"] - before["cached_prompt_tokens"] == 2 * (len(ids) - 1)
    assert after["copied_kv_streams"] - before["copied_kv_streams"] == 1


def test_cells_that_a_new_prompt_takes_over_come_back_from_memory_for_their_own(backends: Any) -> None:
    """llama-server's --cache-ram: a prompt that keeps less than half of a sequence's cells saves them first."""
    ref, llama = backends
    system = {"role": "system", "content": "Antworte kurz und sachlich."}
    a = ref.chat_ids([system, {"role": "user", "content": "Was ist ein Drehmoment?"}], None, "")
    b = ref.chat_ids([system, {"role": "user", "content": "Wie funktioniert ein Getriebe?"}], None, "")
    first, _ = greedy(llama, a)
    before = llama.stats()
    greedy(llama, b)  # takes a's sequence (the longest shared prefix: the system part), a's cells are saved
    middle = llama.stats()
    assert middle["prompt_cache_bytes"] > before["prompt_cache_bytes"]
    again, _ = greedy(llama, a)  # b's sequence shares only the system part with a; the saved state all of it
    after = llama.stats()
    assert after["restored_prompts"] - middle["restored_prompts"] == 1
    assert after["cached_prompt_tokens"] - middle["cached_prompt_tokens"] == len(a) - 1
    assert again == first == greedy(ref, a)[0]


def test_the_prompt_cache_drops_the_oldest_over_its_limit_and_what_a_longer_entry_covers() -> None:
    from kifabrik.serve.backends.llamacpp import PromptCache, Saved

    cache = PromptCache(10)
    cache.put(Saved(None, [1, 2], b"aaaa"))
    cache.put(Saved(None, [1, 2, 3], b"bbbb"))  # covers [1, 2]
    cache.put(Saved("lora", [1, 2, 3, 4], b"cccc"))  # another adapter's cells: covers nothing
    assert [e.state for e in cache.entries] == [b"bbbb", b"cccc"] and cache.size == 8
    cache.put(Saved(None, [7], b"ddd"))  # over 10 bytes: the oldest goes
    assert [e.state for e in cache.entries] == [b"cccc", b"ddd"] and cache.size == 7
    cache.put(Saved(None, [8], b"x" * 11))  # larger than the whole cache: not kept
    assert cache.size == 7

    def shared(adapter: str | None, tokens: list[int]) -> int:
        return len(tokens) if adapter == "lora" else 0

    assert cache.best(shared) == (4, cache.entries[0])


def test_stop_sequence_and_length_finish_like_transformers(backends: Any) -> None:
    ref, llama = backends
    ids = ref.chat_ids(PROMPTS[1], None, "")  # the poem: longer than 8 tokens
    full, _ = greedy(ref, ids, 8)
    got, end = greedy(llama, ids, 8)
    assert (got, end.finish_reason, end.completion_tokens) == (full, "length", 8)
    # a stop sequence taken from the middle of the greedy answer cuts it there
    stop = full.split()[2]
    req_events: list[Event] = []
    done = threading.Event()
    req = GenRequest(list(ids), max_tokens=8, temperature=0.0, stop=[stop])
    req._sink = lambda ev: (req_events.append(ev), done.set() if ev.finish_reason else None)
    llama.submit(req)
    assert done.wait(120)
    assert "".join(e.text for e in req_events) == full[:full.index(stop)]
    assert req_events[-1].finish_reason == "stop"


def test_served_over_http_with_the_unchanged_front(embedded: Any) -> None:
    """Keys, AI disclosure, streaming and /v1/models through `kifabrik serve --backend llama.cpp`."""
    from kifabrik.serve.keys import create_key

    ws, record, _, _ = embedded
    srv = start_server(ws, backend="llama.cpp", gguf_type="f32", models=[record.name], default_max_tokens=8)
    try:
        key = create_key(ws, [record.name])[1]
        client = srv.client(key)
        [model] = client.models.list().data
        assert (model.backend, model.backend_reason) == ("llama.cpp", "chosen with --backend")  # type: ignore[attr-defined]
        raw = client.chat.completions.with_raw_response.create(model=record.name, messages=PROMPTS[1],
                                                                temperature=0, max_tokens=8)
        assert raw.headers["x-ai-generated"] == "true"
        whole = raw.parse()
        assert whole.usage.completion_tokens == 8 and whole.choices[0].finish_reason == "length"
        chunks = list(client.chat.completions.create(model=record.name, messages=PROMPTS[1], temperature=0,
                                                     max_tokens=8, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
        with pytest.raises(Exception, match="401"):
            srv.client("kf-wrong").models.list()
    finally:
        srv.stop()


def test_auto_serves_a_model_registered_from_gguf_with_llama_cpp_and_says_why(embedded: Any) -> None:
    from kifabrik.serve.keys import create_key

    ws, record, gguf, _ = embedded
    srv = start_server(ws, backend="auto", models=[record.name], default_max_tokens=4)
    try:
        client = srv.client(create_key(ws, [record.name])[1])
        [model] = client.models.list().data
        assert model.backend == "llama.cpp"  # type: ignore[attr-defined]
        assert model.backend_reason == (  # type: ignore[attr-defined]
            "no CUDA GPU; llama-cpp-python is installed and every model has a GGUF "
            f"({record.name}: the GGUF it was registered from ({gguf.name}))")
        # the Q4_1 file itself answers: quantised kernels on a prompt of ~60 tokens (AMX buffers crash there)
        done = client.chat.completions.create(model=record.name, messages=PROMPTS[1], temperature=0, max_tokens=4)
        assert done.usage.completion_tokens == 4 and done.usage.prompt_tokens > 50
    finally:
        srv.stop()


def test_auto_keeps_transformers_when_no_gguf_can_be_made(serve_ws: Any) -> None:
    """The tiny test model's tokenizer is one llama.cpp's converter does not know."""
    from kifabrik.serve.backends.base import choose_backend
    from kifabrik.serve.models import discover

    kind, reason = choose_backend(serve_ws, list(discover(serve_ws, None).values()))  # tiny + 2 adapters
    assert kind == "transformers"
    assert reason.startswith("no CUDA GPU, but tiny@1 has no GGUF and none can be made (GGUF conversion of ")
    assert "BPE pre-tokenizer was not recognized" in reason


def test_adapters_apply_per_request_with_the_transformers_backend_s_greedy_tokens(embedded: Any) -> None:
    """Base and adapter requests run side by side on one loaded base; each equals transformers + PEFT."""
    from kifabrik.models.sources import model_path
    from kifabrik.serve.backends.base import AdapterSpec
    from kifabrik.serve.backends.hf import TransformersBackend
    from kifabrik.serve.backends.llamacpp import LlamaCppBackend

    ws, record, _, home = embedded
    path = model_path(ws, record)
    adapter = random_adapter(ws, record, path, "llama-lora", seed=5)
    specs = [AdapterSpec(adapter.name, ws.path(adapter), adapter)]
    ref = TransformersBackend(record, path, specs, EngineOptions(max_batch=1))
    llama = LlamaCppBackend(record, path, specs, EngineOptions(home=Path(home), gguf_type="f32"))
    try:
        assert llama.loras.keys() == {"llama-lora"}
        ids = ref.chat_ids(PROMPTS[1], None, "")
        want = {name: greedy_with(ref, ids, name) for name in (None, "llama-lora")}
        assert want[None] != want["llama-lora"]  # the adapter changes the answer
        # both submitted at once: one step decodes the base row and the adapter row one after the other
        got = run_together(llama, ids, [None, "llama-lora"])
        assert got == [want[None], want["llama-lora"]]
    finally:
        ref.close()
        llama.close()


def greedy_with(backend: Any, ids: list[int], adapter: str | None) -> str:
    return run_together(backend, ids, [adapter])[0]


def run_together(backend: Any, ids: list[int], adapters: list[str | None], max_tokens: int = 16) -> list[str]:
    texts: list[list[str]] = [[] for _ in adapters]
    dones = [threading.Event() for _ in adapters]
    for i, name in enumerate(adapters):
        req = GenRequest(list(ids), max_tokens=max_tokens, temperature=0.0, adapter=name)

        def sink(ev: Event, i: int = i) -> None:
            texts[i].append(ev.text)
            if ev.finish_reason is not None:
                dones[i].set()

        req._sink = sink
        backend.submit(req)
    assert all(d.wait(300) for d in dones)
    return ["".join(t) for t in texts]


def random_adapter(ws: Any, base: Any, model_dir: Path, name: str, seed: int) -> Any:
    """A LoRA adapter artifact as the train stage writes it, with random non-zero B (so it changes outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    with ws.create("adapter", name, parents=[(base.id, "base_model")],
                   meta={"base_model": base.ref, "base_model_id": base.id, "method": "lora"}) as draft:
        peft_model.save_pretrained(draft.dir, safe_serialization=True)
    return draft.record


def test_response_format_json_schema_is_decoded_under_its_schema(embedded: Any) -> None:
    """`response_format` on llama.cpp: xgrammar masks llama.cpp's logits, so the answer validates (streamed too)."""
    import json

    from jsonschema import Draft202012Validator

    from kifabrik.serve.keys import create_key

    schema = {"type": "object", "properties": {"machine": {"type": "string", "maxLength": 12},
                                               "hours": {"type": "integer"}},
              "required": ["machine", "hours"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "interval", "schema": schema, "strict": True}}
    ws, record, _, _ = embedded
    srv = start_server(ws, backend="llama.cpp", gguf_type="f32", models=[record.name], default_max_tokens=48)
    try:
        client = srv.client(create_key(ws, [record.name])[1])
        msgs = [{"role": "user", "content": "Give the oil change interval of the FZ 400 as JSON."}]
        resp = client.chat.completions.create(model=record.name, messages=msgs, temperature=0, max_tokens=48,
                                              response_format=fmt)  # type: ignore[arg-type]
        answer = json.loads(resp.choices[0].message.content or "")
        assert list(Draft202012Validator(schema).iter_errors(answer)) == []
        assert resp.choices[0].finish_reason == "stop"  # the grammar ended it
        chunks = list(client.chat.completions.create(model=record.name, messages=msgs, temperature=0, max_tokens=48,
                                                     response_format=fmt, stream=True))  # type: ignore[arg-type]
        assert json.loads("".join(c.choices[0].delta.content or "" for c in chunks if c.choices)) == answer
    finally:
        srv.stop()
