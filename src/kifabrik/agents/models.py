"""Models an agent can use: a local catalog model (in-process) or a model served by `kifabrik serve`."""

from __future__ import annotations

import json
from typing import Any

from kifabrik.agents.loop import Turn
from kifabrik.errors import KifabrikError
from kifabrik.models import toolcalls
from kifabrik.models.backend import BackendOptions
from kifabrik.workspace import Workspace


class LocalModel:
    """A registered model or adapter, run in this process by the model runtime.

    Prompts are rendered exactly as the server renders them (tools in the chat template or
    in Hermes text, through `models.prompts` and `models.toolcalls`); the raw answer goes back
    to the loop, which parses tool calls from it. Decoding is constrained to the tool-call
    format (`toolcalls.call_format`), so a call names an offered tool and its arguments follow
    the tool's schema (on llama.cpp too: the grammar masks its logits). The usage policy is checked
    for purpose `serving` when the model is opened.
    """

    def __init__(self, ws: Workspace, name: str, *, max_tokens: int = 256, temperature: float = 0.0,
                 backend: BackendOptions | None = None, actor: str = "agent") -> None:
        from kifabrik.models.runtime import load, resolve

        runnable = resolve(ws, ws.catalog.get_artifact(name), purpose="serving", actor=actor)
        self.loaded = load(runnable, home=ws.settings.home, **(backend or BackendOptions()).load_args())
        self.runtime = self.loaded.describe()  # what runs it: backend (and GGUF file, type, quantisation)
        self.max_tokens = max_tokens
        self.temperature = temperature

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *,
                 force_tool: bool = False, retry: int = 0) -> str:
        from kifabrik.models.runtime import GenerationOptions
        from kifabrik.models.structured import Constraint

        native = toolcalls.template_handles_tools(self.loaded.chat_template)
        choice = "required" if force_tool and tools else "auto"
        prefill = toolcalls.prefill(choice)
        ids = self.loaded.chat_ids(toolcalls.prompt_messages(messages, tools, native), tools if native else None, prefill)
        room = self.loaded.context_length - len(ids)
        if room < 1:
            raise KifabrikError(f"the conversation ({len(ids)} tokens) no longer fits the model's context "
                                f"({self.loaded.context_length} tokens)", hint="lower max_steps or shorten the system prompt")
        fmt = toolcalls.call_format(tools, choice, native=native, chat_template=self.loaded.chat_template) if tools else None
        temperature, seed = retry_sampling(self.temperature, retry)
        opts = GenerationOptions(max_new_tokens=min(self.max_tokens, room), temperature=temperature, seed=seed)
        [done] = self.loaded.generate_ids([ids], opts, batch_size=1,
                                          constraint=Constraint.tags(fmt) if fmt is not None else None)
        return prefill + done.text

    def close(self) -> None:
        """The runtime keeps the model cached for the rest of the process."""


def retry_sampling(temperature: float, retry: int) -> tuple[float, int]:
    """(temperature, seed) of a retry: a retry at the same greedy settings would repeat the failed answer word
    for word, so each retry samples, a little hotter each time, with its own seed."""
    if retry <= 0:
        return temperature, 0
    return max(temperature, min(0.3 * retry + 0.2, 1.0)), retry


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
                 force_tool: bool = False, retry: int = 0) -> Turn:
        temperature, seed = retry_sampling(self.temperature, retry)
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": temperature, "seed": seed, **({"tools": tools} if tools else {}),
                **({"tool_choice": "required"} if force_tool and tools else {})}
        from kifabrik.models.http import post_json

        try:
            message = post_json(self.url, body, api_key=self.api_key, timeout=self.timeout)["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise KifabrikError(f"{self.url}: the answer is not a chat completion",
                                hint="is this an OpenAI-compatible endpoint?") from None
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
