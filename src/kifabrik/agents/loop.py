"""The agent loop: ask the model, run the tool calls it makes, feed the results back, repeat.

Bounded in two ways: at most `max_steps` model turns, and at most `max_retries` failed
turns in a row (a call that does not parse, names an unknown tool, has arguments that
break the tool's schema, or whose tool fails). A failure goes back to the model as a
clear error message so it can correct itself; it never raises out of the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from kifabrik.agents.tools import Tool, ToolError
from kifabrik.errors import KifabrikError
from kifabrik.models import toolcalls


@dataclass
class Turn:
    """One model answer: text, parsed tool calls, and why a call attempt did not parse (if so)."""

    content: str | None
    calls: list[toolcalls.ParsedCall]
    raw: str
    malformed: str | None = None

    @classmethod
    def from_text(cls, raw: str) -> Turn:
        """Parse a model's native output (Hermes `<tool_call>`, Llama JSON, Mistral `[TOOL_CALLS]`)."""
        content, calls = toolcalls.parse(raw)
        malformed = None
        if not calls and (toolcalls.OPEN in raw or raw.strip().startswith("[TOOL_CALLS]")):
            malformed = ("the tool call is not valid: write exactly <tool_call>{\"name\": ..., \"arguments\": {...}}"
                         "</tool_call> with JSON inside")
        return cls(content, calls, raw, malformed)


class ChatModel(Protocol):
    """What the loop needs from a model: one answer to a conversation with tools offered.

    Returns the raw text (parsed by the loop) or an already parsed `Turn` (a served model).
    `force_tool` asks for a tool call (`tool_choice="required"`; a local model gets the start
    of a `<tool_call>` pre-filled, which small models need to call tools at all).
    """

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *,
                 force_tool: bool = False) -> str | Turn: ...


@dataclass
class Step:
    kind: Literal["answer", "tool", "error"]
    text: str
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    raw: str | None = None  # what the model wrote, for a call that did not parse


@dataclass
class AgentResult:
    status: Literal["answered", "gave_up", "max_steps", "error"]
    answer: str | None
    steps: list[Step] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)


def run_agent(model: ChatModel, tools: list[Tool], task: str, *, system: str | None = None, max_steps: int = 8,
              max_retries: int = 2, first_tool: bool = False,
              on_step: Callable[[Step], None] | None = None) -> AgentResult:
    """Run one task to an answer (or to a bound) and return the answer with every step.

    `first_tool` forces a tool call in the first turn (and after a failed one), so a weak
    model looks something up before it answers.
    """
    by_name = {t.call_name: t for t in tools}
    offered = [t.openai() for t in tools]
    messages: list[dict[str, Any]] = ([{"role": "system", "content": system}] if system else [])
    messages.append({"role": "user", "content": task})
    steps: list[Step] = []
    failures = 0

    def note(step: Step) -> None:
        steps.append(step)
        if on_step:
            on_step(step)

    for step in range(max_steps):
        force = bool(first_tool and offered and (step == 0 or failures))
        try:
            out = model.complete(messages, offered, force_tool=force) if force else model.complete(messages, offered)
        except KifabrikError as exc:  # e.g. the conversation outgrew the context: stop, do not crash
            note(Step("error", exc.message))
            return AgentResult("error", None, steps, messages)
        turn = out if isinstance(out, Turn) else Turn.from_text(out)
        if turn.malformed:
            failures += 1
            note(Step("error", turn.malformed, raw=turn.raw))
            messages += [{"role": "assistant", "content": turn.raw},
                         {"role": "user", "content": f"Error: {turn.malformed}. Available tools: "
                                                     f"{', '.join(by_name)}. Try again or answer directly."}]
            if failures > max_retries:
                return AgentResult("gave_up", None, steps, messages)
            continue
        if not turn.calls:
            note(Step("answer", turn.content or ""))
            return AgentResult("answered", turn.content or "", steps, messages)
        messages.append({"role": "assistant", "content": turn.content,
                         "tool_calls": [c.openai() for c in turn.calls]})
        failed = False
        for call in turn.calls:
            try:
                if call.name not in by_name:
                    raise ToolError(f"unknown tool {call.name!r}; available: {', '.join(by_name) or 'none'}")
                result = by_name[call.name](call.arguments)
                note(Step("tool", result, call.name, call.arguments))
            except ToolError as exc:
                failed = True
                result = f"Error: {exc}"
                note(Step("error", result, call.name, call.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        failures = failures + 1 if failed else 0
        if failures > max_retries:
            return AgentResult("gave_up", None, steps, messages)
    return AgentResult("max_steps", None, steps, messages)
