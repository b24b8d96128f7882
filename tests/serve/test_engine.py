"""The batching engine on the tiny model, without HTTP: batched == one at a time, joins, cancellation, bounds."""

from __future__ import annotations

import threading

import pytest

from kifabrik.serve.backends.base import EngineOptions, backend_class
from kifabrik.serve.engine import Event, GenRequest
from kifabrik.serve.errors import QueueFull


@pytest.fixture(scope="module")
def backend(serve_ws):
    from kifabrik.models.sources import model_path

    rec = serve_ws.catalog.get_artifact("tiny", "model")
    b = backend_class("transformers")(rec, model_path(serve_ws, rec), [], EngineOptions(max_batch=3, max_queue=4))
    yield b
    b.close()


def ask(backend, texts: list[str], **kw) -> list[tuple[str, str]]:
    outs: list[list[Event]] = [[] for _ in texts]
    done = [threading.Event() for _ in texts]
    reqs = []
    for i, text in enumerate(texts):
        def sink(ev: Event, i: int = i) -> None:
            outs[i].append(ev)
            if ev.finish_reason:
                done[i].set()

        ids = backend.chat_ids([{"role": "user", "content": text}], None, "")
        reqs.append(GenRequest(prompt_ids=ids, max_tokens=kw.get("max_tokens", 6 + 2 * i), temperature=0.0,
                               stop=kw.get("stop", []), stream=kw.get("stream", True), _sink=sink))
    if kw.get("cancel_first"):  # cancelled before it is queued: the first decode step must end it
        reqs[0].cancelled.set()
    for r in reqs:
        backend.submit(r)
    for d in done:
        assert d.wait(60)
    if "events" in kw:
        kw["events"].extend(len(o) for o in outs)
    return [("".join(e.text for e in o), o[-1].finish_reason or "") for o in outs]


def test_batched_with_joins_equals_one_at_a_time(backend):
    texts = ["Ölwechsel " * (i + 1) for i in range(4)]  # 4 requests, max_batch 3: one joins a running batch
    together = ask(backend, texts)
    alone = [ask(backend, [t], max_tokens=6 + 2 * i)[0] for i, t in enumerate(texts)]
    assert together == alone
    assert all(reason == "length" for _, reason in together)


def test_a_request_not_streamed_gets_its_text_in_one_event(backend):
    streamed: list[int] = []
    whole: list[int] = []
    texts = ["Ölwechsel", "Filter Filter"]
    assert ask(backend, texts, max_tokens=8, events=streamed) == ask(backend, texts, max_tokens=8, stream=False,
                                                                     events=whole)
    assert whole == [1, 1] and all(n > 1 for n in streamed)  # no deltas: the event loop is woken once


def test_cancelled_request_ends_without_blocking_others(backend):
    out = ask(backend, ["a", "b"], cancel_first=True, max_tokens=30)
    assert out[0][1] == "cancelled"
    assert out[1][1] == "length" and out[1][0]  # the other request runs to its token limit


def test_queue_is_bounded(backend):
    gate = threading.Event()
    blocker = threading.Event()
    original = backend.scheduler.run_batch

    def slow(first, take):
        blocker.set()
        gate.wait(30)
        original(first, take)

    backend.scheduler.run_batch = slow
    try:
        ids = backend.text_ids("x")
        sinks = [GenRequest(prompt_ids=ids, max_tokens=1) for _ in range(3 + 4)]
        for r in sinks[:3]:
            backend.submit(r)  # the worker takes up to max_batch=3 and blocks
        assert blocker.wait(10)
        for r in sinks[3:]:
            backend.submit(r)  # 4 wait in the queue
        with pytest.raises(QueueFull) as exc:
            backend.submit(GenRequest(prompt_ids=ids, max_tokens=1))
        assert exc.value.status == 429 and exc.value.retry_after == 1
    finally:
        gate.set()
        backend.scheduler.run_batch = original
