"""Bad input and refused requests: OpenAI-style bodies, the right codes, and a server that stays up."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

openai = pytest.importorskip("openai")

USER = [{"role": "user", "content": "Hallo"}]


def post(server, path: str, data: bytes, key: str | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(server.url + path, data, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key or server.keys['all']}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), dict(exc.headers)


def test_malformed_json_and_unknown_fields_are_400(server):
    code, body, _ = post(server, "/v1/chat/completions", b'{"model": "tiny", "messages": [')
    assert code == 400 and body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "invalid_json"
    code, body, _ = post(server, "/v1/chat/completions", json.dumps(
        {"model": "tiny", "messages": USER, "temperatur": 0.5}).encode())
    assert code == 400 and "temperatur" in body["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="only n=1"):
        server.client().chat.completions.create(model="tiny", messages=USER, n=2)


def test_auth_scope_and_unknown_model(server):
    before = _actions(server).count(("serve.request", "deny"))
    with pytest.raises(openai.AuthenticationError):
        server.client("kf-00000000-notavalidkeynotavalidkey").chat.completions.create(model="tiny", messages=USER)
    code, body, _ = post(server, "/v1/chat/completions", json.dumps({"model": "tiny", "messages": USER}).encode(),
                         key="wrong")
    assert code == 401 and body["error"]["code"] == "invalid_api_key"
    # outside the key's scope and unknown: the same 404, so a scoped key cannot probe other names
    with pytest.raises(openai.NotFoundError, match="does not exist or you do not have access") as scoped:
        server.client(server.keys["a"]).chat.completions.create(model="tiny", messages=USER, max_tokens=2)
    with pytest.raises(openai.NotFoundError, match="does not exist or you do not have access") as unknown:
        server.client().chat.completions.create(model="gpt-4o", messages=USER)
    assert scoped.value.body["code"] == unknown.value.body["code"] == "model_not_found"
    # the two 401s are counted in the metrics only; the two access decisions are one audit entry each
    assert _actions(server).count(("serve.request", "deny")) == before + 2
    assert server.ws.catalog.verify_audit() == []


def test_context_limit_names_the_limit(server):
    long = [{"role": "user", "content": "Ölwechsel " * 400}]
    with pytest.raises(openai.BadRequestError, match="maximum context length is 256 tokens") as exc:
        server.client().chat.completions.create(model="tiny", messages=long)
    assert exc.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="256 tokens"):
        server.client().chat.completions.create(model="tiny", messages=USER, max_tokens=1000)


def test_invalid_tool_schemas_are_400(server):
    bad = [{"type": "function", "function": {"name": "has space", "parameters": {"type": "object"}}},
           {"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}},
           {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]
    for tool in bad:
        with pytest.raises(openai.BadRequestError):
            server.client().chat.completions.create(model="tiny", messages=USER, tools=[tool])
    with pytest.raises(openai.BadRequestError, match="not in tools"):
        server.client().chat.completions.create(model="tiny", messages=USER, tools=[
            {"type": "function", "function": {"name": "f"}}], tool_choice={"type": "function", "function": {"name": "g"}})


def test_rate_limit_per_key(server):
    from kifabrik.serve.keys import create_key

    key = create_key(server.ws, ["tiny"], rate_limit=2)[1]
    client = server.client(key)
    for _ in range(2):
        client.models.list()
    with pytest.raises(openai.RateLimitError) as exc:
        client.models.list()
    assert int(exc.value.response.headers["retry-after"]) >= 1


def test_revoked_key_stops_working(server):
    from kifabrik.serve.keys import create_key, revoke_key

    rec, key = create_key(server.ws, ["tiny"])
    server.client(key).models.list()
    revoke_key(server.ws, rec.id)
    with pytest.raises(openai.AuthenticationError):
        server.client(key).models.list()


def test_policy_denial_is_403_and_audited(server_factory, serve_ws):
    from kifabrik.policy import preset
    from kifabrik.serve.keys import create_key

    base = serve_ws.catalog.get_artifact("tiny", "model")
    policy = serve_ws.catalog.add_policy("evaluation-only", preset("evaluation-only"))
    with serve_ws.create("dataset", "eval-data", policies=[policy]) as draft:
        draft.write_text("train.jsonl", '{"text": "x"}\n')
    with serve_ws.create("adapter", "tiny-eval", parents=[(base.id, "base_model"), (draft.record.id, "trained_on")],
                         meta={"base_model_id": base.id}) as adapter:
        import shutil

        shutil.copytree(serve_ws.path(serve_ws.catalog.get_artifact("tiny-a")), adapter.dir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("manifest.json"))
    srv = server_factory(models=["tiny-eval"])
    with pytest.raises(openai.PermissionDeniedError, match="usage policy") as exc:
        srv.client(create_key(serve_ws, ["tiny-eval"])[1]).chat.completions.create(model="tiny-eval", messages=USER)
    assert exc.value.body["code"] == "policy_denied"
    entry = [e for e in srv.ws.catalog.audit_entries("serve.request") if e.details["model"] == "tiny-eval"][-1]
    assert entry.decision == "deny" and entry.details["status"] == 403
    assert entry.details["policy"]["decision"] == "deny"
    assert [c["policy"] for c in entry.details["policy"]["checks"] if c["decision"] == "deny"] == ["evaluation-only"]
    assert ("policy.check", "deny") not in _actions(srv)  # the decision lives in the request's one entry


def _actions(server):
    return [(e.action, e.decision) for e in server.ws.catalog.audit_entries()]
