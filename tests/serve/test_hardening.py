"""Hardening of the server: audit volume, body size cap, bad input, information exposure, file modes."""

from __future__ import annotations

import http.client
import json
import logging
import os
import stat
from collections.abc import Iterator
from typing import Any

import pytest

openai = pytest.importorskip("openai")

USER = [{"role": "user", "content": "Hallo"}]
CHAT = "/v1/chat/completions"


def request(server: Any, method: str, path: str, body: Any = None, *, key: str | None = "all",
            headers: dict[str, str] | None = None, conn: http.client.HTTPConnection | None = None
            ) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
    """One raw request (http.client: exact bytes, own Host header, keep-alive visible); JSON decoded if it is."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=60)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        hdrs["Authorization"] = f"Bearer {server.keys.get(key, key)}"
    try:
        conn.request(method, path, data, hdrs)
        resp = conn.getresponse()
        raw = resp.read().decode()
        out: dict[str, Any] | str = json.loads(raw) if "json" in (resp.getheader("content-type") or "") else raw
        return resp.status, out, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        if own:
            conn.close()


def rejected(server: Any, reason: str) -> float:
    state = server.uvicorn.config.app.state.kf
    return state.metrics.rejected.labels(reason)._value.get()


@pytest.fixture(scope="module")
def small(server_factory: Any) -> Any:
    """A server with a 4 KiB body limit."""
    return server_factory(max_body_bytes=4096, default_max_tokens=4)


# ------------------------------------------------------------------ 8. audit volume
def test_one_audit_entry_per_request_and_refusals_only_counted(server: Any) -> None:
    from kifabrik.serve.keys import create_key

    ws = server.ws
    server.keys["limited"] = create_key(ws, ["tiny"], rate_limit=1)[1]
    before = len(ws.catalog.audit_entries())
    counted = {r: rejected(server, r) for r in ("invalid_api_key", "invalid_request", "rate_limit_exceeded")}
    resp = server.client(server.keys["limited"]).chat.completions.create(model="tiny", messages=USER, max_tokens=3)
    assert request(server, "POST", CHAT, {"model": "tiny", "messages": USER}, key="limited")[0] == 429
    assert request(server, "POST", CHAT, {"model": "tiny", "messages": USER}, key="kf-00000000-" + "x" * 40)[0] == 401
    assert request(server, "POST", CHAT, {"model": "tiny", "messages": USER, "n": 2})[0] == 400
    new = ws.catalog.audit_entries()[before:]
    assert [(e.action, e.decision) for e in new] == [("serve.request", "permit")]  # 4 requests, 1 entry
    d = new[0].details
    key_id = server.keys["limited"].split("-")[1]
    assert (d["key"], d["model"], d["status"], d["request_id"]) == (key_id, "tiny", 200, resp.id)
    assert (d["prompt_tokens"], d["completion_tokens"]) == (resp.usage.prompt_tokens, resp.usage.completion_tokens)
    assert d["policy"] == {"decision": "permit", "purpose": "serving", "region": ws.settings.region, "checks": []}
    assert d["scope"] == "allowed" and new[0].actor == f"api-key:{key_id}"
    for reason, was in counted.items():  # each refusal is in the metrics instead
        assert rejected(server, reason) == was + 1, reason
    assert ws.catalog.verify_audit() == []


# ------------------------------------------------------------------ 9. body size
def test_oversized_body_is_413_before_it_is_parsed(small: Any) -> None:
    entries, refused = len(small.ws.catalog.audit_entries()), rejected(small, "request_too_large")
    big = b"{" + b" " * 5000  # not even JSON: refused for its size, never parsed
    code, body, headers = request(small, "POST", CHAT, big)
    assert headers["x-ai-generated"] == "true"  # a /v1/ answer, if only an error
    assert code == 413 and body == {"error": {
        "message": "The request body (5,001 bytes) exceeds this server's limit of 4,096 bytes (--max-body-bytes).",
        "type": "invalid_request_error", "param": None, "code": "request_too_large"}}
    # chunked: no Content-Length, refused once the bytes read pass the cap
    conn = http.client.HTTPConnection(small.url.removeprefix("http://"), timeout=60)
    conn.request("POST", "/v1/completions", (b"x" * 1024 for _ in range(8)), {
        "Content-Type": "application/json", "Authorization": f"Bearer {small.keys['all']}"}, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"]["code"] == "request_too_large"
    conn.close()
    assert rejected(small, "request_too_large") == refused + 2  # counted, not audited
    assert len(small.ws.catalog.audit_entries()) == entries
    # just under the limit is served
    ok = {"model": "tiny", "prompt": "Die Maschine", "max_tokens": 2, "user": "u" * 200}
    assert request(small, "POST", "/v1/completions", ok)[0] == 200


def test_body_limit_is_a_serve_option(cli: Any) -> None:
    from kifabrik.serve import ServeConfig

    assert ServeConfig().max_body_bytes == 1_048_576
    assert "413" in (ServeConfig.model_fields["max_body_bytes"].description or "")
    with pytest.raises(ValueError, match="max_body_bytes"):
        ServeConfig(max_body_bytes=10)
    out = cli("serve", "--help").out
    assert "--max-body-bytes" in out and "--allowed-hosts" in out and "--metrics-public" in out


# ------------------------------------------------------------------ 10. bad input
@pytest.mark.parametrize(("field", "value", "words"), [
    ("seed", 2**80, "less than or equal to 9223372036854775807"),
    ("max_tokens", 0, "greater than or equal to 1"),
    ("n", 3, "only n=1 is supported"),
    ("temperature", 2.5, "less than or equal to 2"),
    ("top_p", 0, "greater than 0"),
    ("logprobs", True, "logprobs are not supported"),
    ("stop", ["a", "b", "c", "d", "e"], "at most 4 stop sequences"),
    ("presence_penalty", 0.5, "only 0 is supported"),
])
def test_out_of_range_parameters_are_400_naming_the_param(server: Any, field: str, value: Any, words: str) -> None:
    code, body, _ = request(server, "POST", CHAT, {"model": "tiny", "messages": USER, field: value})
    assert code == 400
    assert body["error"]["param"] == field and body["error"]["code"] == "invalid_request"
    assert body["error"]["message"].startswith(f"{field}: ") and words in body["error"]["message"]


def test_lone_surrogate_is_400_and_the_connection_stays_open(server: Any) -> None:
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=60)
    raw = b'{"model": "tiny", "prompt": "Die \\ud800 Maschine", "max_tokens": 2}'  # JSON escape, valid UTF-8 bytes
    code, body, _ = request(server, "POST", "/v1/completions", raw, conn=conn)
    assert code == 400 and body["error"]["param"] == "prompt"
    assert "lone UTF-16 surrogate" in body["error"]["message"]
    sock = conn.sock
    raw = b'{"model": "tiny", "messages": [{"role": "user", "content": "\\udc00"}]}'
    code, body, _ = request(server, "POST", CHAT, raw, conn=conn)
    assert code == 400 and body["error"]["param"] == "messages.0.content"
    # a field whose *name* is a lone surrogate
    code, body, _ = request(server, "POST", CHAT, b'{"model": "tiny", "messages": [], "\\ud800": 1}', conn=conn)
    assert code == 400 and "unicode string" in body["error"]["message"]
    code, _, _ = request(server, "POST", "/v1/completions", {"model": "tiny", "prompt": "Die", "max_tokens": 1},
                         conn=conn)
    assert code == 200 and conn.sock is sock  # the same keep-alive connection answered all four
    conn.close()


def test_a_500_carries_an_error_id_and_no_exception_text(server: Any, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    state = server.uvicorn.config.app.state.kf

    def broken(served: Any) -> Any:
        raise RuntimeError("secret detail /srv/models/tiny")

    monkeypatch.setattr(state.table, "backend", broken)
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=60)
    with caplog.at_level(logging.ERROR, logger="kifabrik.serve"):
        code, body, _ = request(server, "POST", CHAT, {"model": "tiny", "messages": USER}, conn=conn)
    assert code == 500 and body["error"]["code"] == "internal_error"
    assert "secret" not in json.dumps(body) and "RuntimeError" not in json.dumps(body)
    error_id = body["error"]["message"].rsplit(" ", 1)[-1]
    assert len(error_id) == 12
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert len(logged) == 1 and "secret detail" in str(logged[0].exc_info[1])
    sock = conn.sock
    monkeypatch.undo()
    assert request(server, "GET", "/v1/models", conn=conn)[0] == 200 and conn.sock is sock
    conn.close()


def test_a_failed_batch_reports_an_error_id(caplog: pytest.LogCaptureFixture) -> None:
    from kifabrik.serve.engine import Event, GenRequest, Scheduler

    def run_batch(first: list[GenRequest], take: Any) -> None:
        raise ValueError("Overflow when unpacking long long")

    events: list[Event] = []
    scheduler = Scheduler("tiny", run_batch, max_batch=2, max_queue=2, batch_wait=0)
    req = GenRequest(prompt_ids=[1, 2], max_tokens=2)
    req._sink = events.append
    with caplog.at_level(logging.ERROR, logger="kifabrik.serve"):
        scheduler.submit(req)
        scheduler.close()
    assert [e.finish_reason for e in events] == ["error"]
    assert "Overflow" not in events[0].error and len(events[0].error) == 12
    assert [r.exc_info[1].args[0] for r in caplog.records if events[0].error in r.getMessage()] == [
        "Overflow when unpacking long long"]


# ------------------------------------------------------------------ 11. information exposure
def test_health_is_minimal_and_metrics_need_a_key(server: Any, server_factory: Any) -> None:
    code, body, _ = request(server, "GET", "/health", key=None)
    assert (code, body) == (200, {"status": "ok"})
    code, body, _ = request(server, "GET", "/metrics", key=None)
    assert code == 401 and body["error"]["code"] == "missing_api_key"
    code, body, _ = request(server, "GET", "/metrics")
    assert code == 200 and "kifabrik_requests_total" in body
    public = server_factory(metrics_public=True)
    assert request(public, "GET", "/metrics", key=None)[0] == 200


def test_a_scoped_key_cannot_tell_unknown_from_forbidden_models(server: Any) -> None:
    answers = []
    for name in ("tiny", "no-such-model"):  # `tiny` exists, but key "a" may use only tiny-a
        for method, path, body in (("POST", CHAT, {"model": name, "messages": USER}),
                                   ("POST", "/v1/completions", {"model": name, "prompt": "x"}),
                                   ("GET", f"/v1/models/{name}", None)):
            code, out, _ = request(server, method, path, body, key="a")
            answers.append((path.replace(name, "NAME"), code, json.dumps(out).replace(name, "NAME")))
    assert answers[:3] == answers[3:]
    assert {code for _, code, _ in answers} == {404}


def test_no_docs_by_default_and_offline_docs_on_request(server: Any, server_factory: Any) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert request(server, "GET", path, key=None)[0] == 404
    docs = server_factory(docs=True)
    code, page, headers = request(docs, "GET", "/docs", key=None)
    assert code == 200 and "POST /v1/chat/completions" in page
    assert "<script" not in page and "cdn" not in page.lower() and "src=" not in page
    assert headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'"


def test_host_header_must_be_an_allowed_host(server: Any, server_factory: Any) -> None:
    port = server.url.rsplit(":", 1)[1]
    code, body, _ = request(server, "GET", "/health", key=None, headers={"Host": f"rebind.example:{port}"})
    assert code == 421 and body["error"]["code"] == "invalid_host"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert request(server, "GET", "/health", key=None, headers={"Host": host})[0] == 200, host
    named = server_factory(allowed_hosts=["api.werk.example"])
    assert request(named, "GET", "/health", key=None, headers={"Host": "api.werk.example:443"})[0] == 200
    assert request(named, "GET", "/health", key=None)[0] == 421  # 127.0.0.1 is not in the list given


@pytest.fixture
def fresh_home(tmp_path: Any) -> Iterator[Any]:
    from kifabrik.workspace import Workspace

    old = os.umask(0o022)  # the usual default, which made the home 755 and the catalog 644
    try:
        ws = Workspace.open(tmp_path / "home")
    finally:
        os.umask(old)
    yield ws
    ws.close()


def test_home_and_catalog_are_private(fresh_home: Any) -> None:
    home = fresh_home.settings.home
    fresh_home.catalog.audit("test.write")  # WAL and shared-memory files exist now
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    files = sorted(p.name for p in home.glob("catalog.db*"))
    assert files[0] == "catalog.db"
    # the API keys' table lives in the same file, so the keys are covered too
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in home.glob("catalog.db*")} == dict.fromkeys(files, 0o600)


def test_an_existing_catalog_is_narrowed(tmp_path: Any) -> None:
    from kifabrik.workspace import Workspace

    home = tmp_path / "home"
    Workspace.open(home).close()
    (home / "catalog.db").chmod(0o644)
    Workspace.open(home).close()
    assert stat.S_IMODE((home / "catalog.db").stat().st_mode) == 0o600
