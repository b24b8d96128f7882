"""Requests, output events and the dynamic batching scheduler (backend-neutral, no torch).

One `Scheduler` per loaded base model owns one worker thread. Requests wait in a bounded
queue (a full queue refuses at once with 429 + Retry-After instead of growing). The worker
takes up to `max_batch` waiting requests and hands them to the backend's `run_batch`, which
decodes them together; while it runs, the backend may `take()` requests that arrived
meanwhile and add them to the running batch (continuous batching) where it can.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kifabrik.serve.errors import QueueFull, ShuttingDown, log


@dataclass
class Event:
    """One piece of output: a text delta, and at the end `finish_reason` and token counts."""

    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # with finish_reason "error": the id the traceback is logged under


@dataclass
class GenRequest:
    """A generation request as the backends see it (prompt already tokenized)."""

    prompt_ids: list[int]
    max_tokens: int
    adapter: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    grammar: Any = None  # a compiled constraint (`Backend.grammar`): every token is masked to follow it
    # False: the text arrives in one event at the end (a non-streamed response needs no deltas, and each
    # delta wakes the event loop, which takes CPU from the decoding threads)
    stream: bool = True
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.monotonic)
    _sink: Callable[[Event], None] | None = None

    def emit(self, event: Event) -> None:
        if self._sink is not None:
            self._sink(event)


def async_sink(req: GenRequest) -> asyncio.Queue[Event]:
    """Connect `req` to an asyncio queue of the running loop (the worker thread pushes into it)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    def sink(ev: Event) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ev)

    req._sink = sink
    return queue


class Scheduler:
    """Bounded queue + one worker thread that runs batches.

    Args:
        name: Model name (for messages).
        run_batch: `run_batch(first, take)` decodes the requests `first`; `take(n)` returns up
            to `n` more waiting requests to join the running batch (may return none).
        max_batch: Most requests decoded together.
        max_queue: Most requests waiting; more are refused with `QueueFull`.
        batch_wait: Seconds the worker waits for more requests before starting a batch.
        on_batch: Called with each batch size (metrics).
    """

    def __init__(self, name: str, run_batch: Callable[[list[GenRequest], Callable[[int], list[GenRequest]]], None],
                 *, max_batch: int = 16, max_queue: int = 64, batch_wait: float = 0.005,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.name = name
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batch_wait = batch_wait
        self.on_batch = on_batch
        self._queue: deque[GenRequest] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self.running = 0
        self._current: list[GenRequest] = []
        self._thread = threading.Thread(target=self._work, name=f"kifabrik-serve-{name}", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def submit(self, req: GenRequest) -> None:
        with self._cond:
            if self._closing:
                raise ShuttingDown()
            if len(self._queue) >= self.max_queue:
                raise QueueFull(self.name, self.max_queue, retry_after=1)
            self._queue.append(req)
            self._cond.notify()

    def take(self, n: int) -> list[GenRequest]:
        """Up to `n` waiting requests (called by the backend between decoding steps)."""
        out: list[GenRequest] = []
        with self._cond:
            while self._queue and len(out) < n:
                req = self._queue.popleft()
                if req.cancelled.is_set():
                    req.emit(Event(finish_reason="cancelled"))
                    continue
                out.append(req)
        self._current.extend(out)
        self.running = len(self._current)
        if out and self.on_batch:
            self.on_batch(len(out))
        return out

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue and self._closing:
                    return
            time.sleep(self.batch_wait)  # let concurrent arrivals join the first batch
            first = self.take(self.max_batch)
            if not first:
                continue
            try:
                self.run_batch(first, self.take)
            except Exception as exc:  # a backend bug must not kill the worker or hang clients
                error_id = uuid.uuid4().hex[:12]
                log.error("generation failed in the batch of %s (error id %s)", self.name, error_id, exc_info=exc)
                for req in self._current:  # a second final event is ignored by requests that had one
                    req.emit(Event(finish_reason="error", error=error_id))
            finally:
                self._current = []
                self.running = 0

    def close(self, timeout: float | None = 60.0) -> None:
        """Refuse new requests, finish the queued and running ones, stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {"waiting": self.waiting, "running": self.running, "max_batch": self.max_batch,
                "max_queue": self.max_queue}
