"""Operations: full queue, disconnects, graceful shutdown, AI notice switches, content logging, keys CLI."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")

USER = [{"role": "user", "content": "Hallo"}]


def test_full_queue_answers_429_with_retry_after(server_factory):
    from serve_scripted import ScriptedBackend, use_scripted

    srv = server_factory(max_batch=1, max_queue=1)
    use_scripted(srv, ["fertig"])
    client = srv.client()
    client.chat.completions.create(model="tiny", messages=USER)  # loads the model
    ScriptedBackend.gate.clear()  # the model now holds its first request until released
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(client.chat.completions.create, model="tiny", messages=USER)
        deadline = time.monotonic() + 20
        while len(ScriptedBackend.seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the model holds the first request (so the queue is empty again) ...
        assert len(ScriptedBackend.seen) == 2
        queued = pool.submit(client.chat.completions.create, model="tiny", messages=USER)
        state = srv.uvicorn.config.app.state.kf
        while next(iter(state.table.loaded().values())).stats()["waiting"] < 1:
            assert time.monotonic() < deadline, "the second request never reached the queue"
            time.sleep(0.01)  # ... and the second request waits in the queue (length 1)
        with pytest.raises(openai.RateLimitError, match="queue") as exc:
            client.chat.completions.create(model="tiny", messages=USER)
        assert int(exc.value.response.headers["retry-after"]) >= 1
        ScriptedBackend.gate.set()
        assert running.result().choices[0].message.content == "fertig"
        assert queued.result().choices[0].message.content == "fertig"


def test_client_disconnect_mid_stream_cancels_and_server_stays_up(server_factory):
    from serve_scripted import ScriptedBackend, use_scripted

    server = server_factory()
    use_scripted(server, ["Erstens, zweitens, drittens, viertens."])
    ScriptedBackend.hold_mid_stream = True  # the model is still writing when the client leaves
    client = server.client()
    stream = client.chat.completions.create(model="tiny", messages=USER, stream=True)
    for i, _ in enumerate(stream):
        if i == 1:  # role chunk, first text
            break
    stream.close()
    state = server.uvicorn.config.app.state.kf
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if state.metrics.cancelled.labels("tiny")._value.get() >= 1:
            break
        time.sleep(0.05)
    assert state.metrics.cancelled.labels("tiny")._value.get() >= 1
    assert ScriptedBackend.seen[-1].cancelled.is_set()  # the backend was told to stop generating
    ScriptedBackend.hold_mid_stream = False
    assert client.chat.completions.create(model="tiny", messages=USER, max_tokens=2).choices


def test_graceful_shutdown_finishes_in_flight_requests(server_factory):
    srv = server_factory()
    client = srv.client()
    client.chat.completions.create(model="tiny", messages=USER, max_tokens=1)  # load
    result: dict = {}

    def ask() -> None:
        result["r"] = client.chat.completions.create(model="tiny", messages=USER, max_tokens=60, temperature=0,
                                                     stop=None)

    thread = threading.Thread(target=ask)
    thread.start()
    state = srv.uvicorn.config.app.state.kf
    deadline = time.monotonic() + 20
    while state.metrics.in_flight._value.get() < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    srv.stop()  # like SIGTERM: stop accepting, finish what runs
    thread.join(60)
    assert result["r"].choices[0].finish_reason in ("length", "stop")
    assert result["r"].usage.completion_tokens >= 1
    actions = [a for a, _ in _actions(srv)]
    assert actions.index("serve.stop") > max(i for i, a in enumerate(actions) if a == "serve.request")


def test_ai_notice_off_needs_a_reason_and_is_audited(server_factory, server):
    from kifabrik.serve import ServeConfig

    with pytest.raises(ValueError, match="needs a reason"):
        ServeConfig(ai_notice=False)
    quiet = server_factory(ai_notice=False, ai_notice_off_reason="internal batch tool, users know it is an AI",
                           log_content=True)
    with_notice = server.client().chat.completions.create(model="tiny", messages=USER, max_tokens=1)
    without = quiet.client().chat.completions.create(model="tiny", messages=USER, max_tokens=1)
    assert without.usage.prompt_tokens < with_notice.usage.prompt_tokens  # no system notice in the prompt
    assert ("serve.ai_notice_off", None) in _actions(quiet)
    logged = [d for a, d in _details(quiet) if a == "serve.request" and d.get("request_id") == without.id]
    assert logged[0]["prompt"] == [{"role": "user", "content": "Hallo"}] and "output" in logged[0]


def test_no_auth_only_on_loopback_and_vllm_refuses_clearly(serve_ws):
    from kifabrik.errors import KifabrikError
    from kifabrik.serve import ServeConfig, build_app

    with pytest.raises(ValueError, match="loopback"):
        ServeConfig(host="0.0.0.0", auth=False)
    ServeConfig(host="127.0.0.1", auth=False)
    with pytest.raises(KifabrikError, match="vllm") as exc:
        build_app(serve_ws, ServeConfig(backend="vllm"))
    assert "kifabrik[vllm]" in (exc.value.hint or "")


def test_keys_cli(cli, ws, tiny_model):
    created = cli("keys", "create", "--models", "tiny", "--rate-limit", "30/min", "--name", "Werkstatt")
    assert created.code == 0, created.err
    key = created.out.strip()
    assert key.startswith("kf-")
    listed = cli("keys", "list", "--json")
    assert key not in listed.out and '"rate_limit": 30' in listed.out and "Werkstatt" in listed.out
    key_id = key.split("-")[1]
    assert cli("keys", "revoke", key_id).code == 0
    assert cli("keys", "create", "--models", "nope").code == 1
    assert cli("keys", "create", "--models", "tiny", "--rate-limit", "fast").code == 1
    bad = cli("serve", "--host", "0.0.0.0", "--no-auth")
    assert bad.code == 1 and "loopback" in bad.err
    assert cli("audit", "verify").code == 0


def _details(server):
    return [(e.action, e.details) for e in server.ws.catalog.audit_entries()]


def _actions(server):
    return [(e.action, e.decision) for e in server.ws.catalog.audit_entries()]
