"""The OpenAI-compatible API through the official `openai` client: chat, streaming, completions,
adapters as models, batching, disclosure and the audit trail."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")

USER = [{"role": "user", "content": "Wann ist der nächste Ölwechsel?"}]


def chat(client, model: str = "tiny", **kw):
    kw.setdefault("max_tokens", 8)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=kw.pop("messages", USER), **kw)


def test_models_are_listed_per_key(server):
    assert sorted(m.id for m in server.client().models.list().data) == ["tiny", "tiny-a", "tiny-b"]
    scoped = server.client(server.keys["a"]).models.list().data
    assert [(m.id, m.kind, m.parent) for m in scoped] == [("tiny-a", "adapter", "tiny")]


def test_chat_answer_is_disclosed_and_audited(server):
    raw = server.client().with_raw_response.chat.completions.create(model="tiny", messages=USER, max_tokens=6,
                                                                   temperature=0)
    assert raw.headers["x-ai-generated"] == "true"
    assert "Art. 50" in raw.headers["x-ai-disclosure"]
    resp = raw.parse()
    assert resp.object == "chat.completion" and resp.model == "tiny"
    assert resp.ai_generated is True  # the body field (extra fields survive in the client's model)
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage.completion_tokens <= 6 and resp.usage.prompt_tokens > 0
    entries = [e for e in _audit(server) if e["action"] == "serve.request" and e["details"].get("request_id") == resp.id]
    assert len(entries) == 1 and entries[0]["decision"] == "permit"
    assert entries[0]["details"]["ai_notice"] is True and "prompt" not in entries[0]["details"]  # content off
    policy = entries[0]["details"]["policy"]
    assert policy["purpose"] == "serving" and policy["decision"] == "permit" and policy["checks"] == []  # no policy
    assert not any(e["action"] == "policy.check" for e in _audit(server))  # decisions live in the one entry
    assert server.ws.catalog.verify_audit() == []


def test_stream_equals_non_stream(server):
    client = server.client()
    whole = chat(client, max_tokens=12).choices[0].message.content
    chunks = list(chat(client, max_tokens=12, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].usage.completion_tokens <= 12 and chunks[-1].choices == []
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert all(c.ai_generated for c in chunks)


def test_adapters_share_the_base_and_change_the_output(server):
    client = server.client()
    outs = {m: chat(client, m, max_tokens=10).choices[0].message.content for m in ("tiny", "tiny-a", "tiny-b")}
    assert len(set(outs.values())) == 3, outs
    loaded = server.uvicorn.config.app.state.kf.table.loaded()
    assert len(loaded) == 1  # one copy of the base weights serves the base and both adapters
    # a mixed batch (base + two adapters at once) answers exactly like one request at a time
    with ThreadPoolExecutor(9) as pool:
        futures = [pool.submit(lambda m: chat(client, m, max_tokens=10).choices[0].message.content, m)
                   for m in ("tiny", "tiny-a", "tiny-b") * 3]
        together = [f.result() for f in futures]
    assert together == [outs[m] for m in ("tiny", "tiny-a", "tiny-b") * 3]


def test_sampling_seed_and_stop(server):
    client = server.client()
    a = chat(client, temperature=1.0, top_p=0.9, seed=7, max_tokens=10).choices[0].message.content
    b = chat(client, temperature=1.0, top_p=0.9, seed=7, max_tokens=10).choices[0].message.content
    assert a == b
    full = chat(client, max_tokens=10).choices[0].message.content
    stop = full[3:5]
    cut = chat(client, max_tokens=10, stop=[stop])
    assert cut.choices[0].message.content == full[:full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_completions_endpoint(server):
    client = server.client()
    resp = client.completions.create(model="tiny-a", prompt="Die Maschine braucht", max_tokens=5, temperature=0)
    assert resp.object == "text_completion" and resp.usage.completion_tokens <= 5
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny-a", prompt="Die Maschine braucht", max_tokens=5, temperature=0, stream=True))
    assert streamed == resp.choices[0].text
    echo = client.completions.create(model="tiny-a", prompt="Die Maschine", max_tokens=3, temperature=0, echo=True)
    assert echo.choices[0].text.startswith("Die Maschine")


def test_curl_style_request_and_openapi(server):
    body = json.dumps({"model": "tiny", "messages": USER, "max_tokens": 3}).encode()
    req = urllib.request.Request(server.url + "/v1/chat/completions", body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {server.keys['all']}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["X-AI-Generated"] == "true" and json.load(r)["ai_generated"] is True
    with urllib.request.urlopen(server.url + "/openapi.json", timeout=10) as r:
        paths = json.load(r)["paths"]
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"} <= set(paths)
    metrics_req = urllib.request.Request(server.url + "/metrics",
                                         headers={"Authorization": f"Bearer {server.keys['all']}"})
    with urllib.request.urlopen(metrics_req, timeout=10) as r:
        metrics = r.read().decode()
    assert "kifabrik_completion_tokens_total" in metrics and "kifabrik_batch_join_size" in metrics
    with urllib.request.urlopen(server.url + "/health", timeout=10) as r:
        assert json.load(r)["status"] == "ok"


def _audit(server):
    return [{"action": e.action, "decision": e.decision, "details": e.details, "actor": e.actor}
            for e in server.ws.catalog.audit_entries()]
