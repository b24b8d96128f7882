"""Models an agent can use: a local catalog model (in-process) or a model served by `kifabrik serve`."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

from kifabrik.agents.loop import Turn
from kifabrik.errors import KifabrikError
from kifabrik.serve import toolcalls
from kifabrik.workspace import Workspace


class LocalModel:
    """A registered model or adapter, loaded in this process with the serving backend.

    Prompts are rendered exactly as the server renders them (tools in the chat template or
    in Hermes text); the raw answer goes back to the loop, which parses tool calls from it.
    The usage policy is checked for purpose `serving` when the model is opened.
    """

    def __init__(self, ws: Workspace, name: str, *, max_tokens: int = 256, temperature: float = 0.0,
                 actor: str = "agent") -> None:
        from kifabrik.models.sources import model_path
        from kifabrik.policy import require
        from kifabrik.serve.backends.base import EngineOptions
        from kifabrik.serve.backends.hf import TransformersBackend
        from kifabrik.serve.models import discover

        served = discover(ws, [name])[name]
        require(ws, [served.record.id], "serving", actor=actor)
        from kifabrik.serve.backends.base import AdapterSpec

        adapters = [AdapterSpec(name, ws.path(served.record), served.record)] if served.adapter else []
        self.backend = TransformersBackend(served.base, model_path(ws, served.base), adapters,
                                           EngineOptions(max_batch=1, max_queue=4))
        self.adapter = served.adapter
        self.max_tokens = max_tokens
        self.temperature = temperature

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *,
                 force_tool: bool = False) -> str:
        from kifabrik.serve.engine import Event, GenRequest

        native = toolcalls.template_handles_tools(self.backend.chat_template)
        prefill = toolcalls.prefill("required") if force_tool and tools else ""
        ids = self.backend.chat_ids(toolcalls.prompt_messages(messages, tools, native), tools if native else None,
                                    prefill)
        room = self.backend.context_length - len(ids)
        if room < 1:
            raise KifabrikError(f"the conversation ({len(ids)} tokens) no longer fits the model's context "
                                f"({self.backend.context_length} tokens)", hint="lower max_steps or shorten the system prompt")
        parts: list[str] = [prefill]
        done = threading.Event()

        def sink(ev: Event) -> None:
            parts.append(ev.text)
            if ev.finish_reason:
                done.set()

        req = GenRequest(prompt_ids=ids, max_tokens=min(self.max_tokens, room), adapter=self.adapter,
                         temperature=self.temperature, seed=0, _sink=sink)
        self.backend.submit(req)
        done.wait()
        return "".join(parts)

    def close(self) -> None:
        self.backend.close()


class ServedModel:
    """A model behind an OpenAI-compatible server (`kifabrik serve`, or any other)."""

    def __init__(self, url: str, model: str, api_key: str | None, *, max_tokens: int = 256,
                 temperature: float = 0.0, timeout: float = 300) -> None:
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout = timeout

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *,
                 force_tool: bool = False) -> Turn:
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature, **({"tools": tools} if tools else {}),
                **({"tool_choice": "required"} if force_tool and tools else {})}
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})}
        req = urllib.request.Request(self.url, json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                message = json.load(resp)["choices"][0]["message"]
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise KifabrikError(f"{self.url}: HTTP {exc.code}: {detail}", hint="check the URL, model name and API key") from None
        except (urllib.error.URLError, OSError) as exc:
            raise KifabrikError(f"{self.url}: cannot connect ({exc})", hint="is `kifabrik serve` running?") from None
        calls = [toolcalls.ParsedCall(c["function"]["name"], _args(c["function"].get("arguments")), c.get("id") or "")
                 for c in message.get("tool_calls") or []]
        if calls:
            return Turn(message.get("content"), calls, message.get("content") or "")
        return Turn.from_text(message.get("content") or "")  # an unparsed call attempt stays visible as text


def _args(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return {"__invalid_json__": raw}
    return value if isinstance(value, dict) else {"__invalid_json__": raw}
