"""A backend whose *model* is scripted: the tokenizer, context checks, scheduler, queue, HTTP
layer and tool-call parsing are all real; only the text the model writes is canned.

Used where the random tiny model cannot produce a meaningful answer (tool calls) or where a
test must hold the model busy deterministically (a full queue).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

from kifabrik.serve.backends.hf import TransformersBackend
from kifabrik.serve.engine import Event, GenRequest, Scheduler


class ScriptedBackend(TransformersBackend):
    #: answers, taken in order, one per request (the last one repeats)
    script: ClassVar[list[str]] = ["Hallo."]
    #: cleared to hold the model inside a batch until the test sets it
    gate = threading.Event()
    seen: ClassVar[list[GenRequest]] = []
    #: after the first piece, wait until the client goes away (a model still busy writing)
    hold_mid_stream = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scheduler.close()
        self.scheduler = Scheduler(self.base.name, self._run, max_batch=self.options.max_batch,
                                   max_queue=self.options.max_queue, batch_wait=0.0)

    @property
    def context_length(self) -> int:
        return 4096  # the tool instructions alone exceed the tiny model's 256 positions

    def _run(self, first: list[GenRequest], take: Callable[[int], list[GenRequest]]) -> None:
        for req in first:
            type(self).seen.append(req)
            self.gate.wait(30)
            text = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            pieces = [text[i:i + 5] for i in range(0, len(text), 5)]
            for i, piece in enumerate(pieces[:-1]):
                req.emit(Event(text=piece))
                if i == 0 and self.hold_mid_stream and req.cancelled.wait(20):
                    req.emit(Event(finish_reason="cancelled", prompt_tokens=len(req.prompt_ids), completion_tokens=1))
                    break
            else:
                req.emit(Event(text=pieces[-1] if pieces else "", finish_reason="stop",
                               prompt_tokens=len(req.prompt_ids), completion_tokens=len(pieces)))


def use_scripted(server: Any, script: list[str]) -> type[ScriptedBackend]:
    """Make `server` load ScriptedBackend for its (not yet loaded) models."""
    ScriptedBackend.script = list(script)
    ScriptedBackend.gate.set()
    ScriptedBackend.seen = []
    ScriptedBackend.hold_mid_stream = False
    server.uvicorn.config.app.state.kf.table.cls = ScriptedBackend
    return ScriptedBackend
