"""The agent loop: ask the model, run the tool calls it makes, feed the results back, repeat.

Bounded in two ways: at most `max_steps` model turns, and at most `max_retries` failed
turns in a row (a call that does not parse, names an unknown tool, has arguments that
break the tool's schema, or whose tool fails). A failure goes back to the model as a
repair hint that names the error, and the retry is asked with `retry=n`, which a model
answers with other sampling settings (`agents.models.retry_sampling`): asking again
with the same prompt at temperature 0 would only get the same failure back. When the
bound is reached the result says why (`AgentResult.reason`); nothing raises out of the loop.
"""

from __future__ import annotations

import json
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
    of a `<tool_call>` pre-filled, which small models need to call tools at all). `retry` counts
    the failed turns just before this one: a model must not answer a retry exactly as before.
    """

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *,
                 force_tool: bool = False, retry: int = 0) -> str | Turn: ...


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
    reason: str | None = None  # why the loop stopped without an answer, in words for the user


#: Closes the prompt of an answer from tool results (`answer_from_results`).
ANSWER_FROM_RESULTS = "Answer the question with this result. Name every item of the result."


def results_prompt(task: str, calls: list[tuple[toolcalls.ParsedCall, str]]) -> str:
    """One user message: the task, each call with its result, and the request to answer from them."""
    parts = [task, ""]
    for call, result in calls:
        parts += [f"Result of {call.name}({json.dumps(call.arguments, ensure_ascii=False)}):", result, ""]
    return "\n".join([*parts, ANSWER_FROM_RESULTS])


def run_agent(model: ChatModel, tools: list[Tool], task: str, *, system: str | None = None, max_steps: int = 8,
              max_retries: int = 2, first_tool: bool = False, answer_from_results: bool = False,
              on_step: Callable[[Step], None] | None = None) -> AgentResult:
    """Run one task to an answer (or to a bound) and return the answer with every step.

    `first_tool` forces a tool call in the first turn (and after a failed one), so a weak
    model looks something up before it answers. `answer_from_results` asks for the answer
    right after the first tool turn that succeeded, from one short prompt (the task and the
    results, no tools offered; `results_prompt`) instead of the whole tool conversation: a
    135M model reads its facts from that prompt, while in the conversation it echoes the
    tool response or calls the same tool again.
    """
    by_name = {t.call_name: t for t in tools}
    offered = [t.openai() for t in tools]
    messages: list[dict[str, Any]] = ([{"role": "system", "content": system}] if system else [])
    messages.append({"role": "user", "content": task})
    steps: list[Step] = []
    failures = 0
    errors: list[str] = []  # of the failed turns in a row, for the reason of a stop
    failed_calls: dict[str, str] = {}  # call (name + arguments) -> its error, for a model that repeats one

    def note(step: Step) -> None:
        steps.append(step)
        if on_step:
            on_step(step)

    def repair(error: str) -> str:
        return (f"Error: {error}. Available tools: {', '.join(by_name) or 'none'}. "
                "Fix the call and try again, or answer directly.")

    def give_up() -> AgentResult:
        tries = "attempt" if failures == 1 else "attempts"
        reason = (f"{failures} failed {tries} in a row (the retries sampled with other settings and were told "
                  f"the error); last error: {errors[-1]}")
        return AgentResult("gave_up", None, steps, messages, reason)

    for step in range(max_steps):
        force = bool(first_tool and offered and (step == 0 or failures))
        try:
            out = model.complete(messages, offered, force_tool=force, retry=failures)
        except KifabrikError as exc:  # e.g. the conversation outgrew the context: stop, do not crash
            note(Step("error", exc.message))
            return AgentResult("error", None, steps, messages, exc.message)
        turn = out if isinstance(out, Turn) else Turn.from_text(out)
        if turn.malformed:
            failures += 1
            errors.append(turn.malformed)
            note(Step("error", turn.malformed, raw=turn.raw))
            messages += [{"role": "assistant", "content": turn.raw}, {"role": "user", "content": repair(turn.malformed)}]
            if failures > max_retries:
                return give_up()
            continue
        if not turn.calls:
            note(Step("answer", turn.content or ""))
            return AgentResult("answered", turn.content or "", steps, messages)
        messages.append({"role": "assistant", "content": turn.content,
                         "tool_calls": [c.openai() for c in turn.calls]})
        failed: list[str] = []
        done: list[tuple[toolcalls.ParsedCall, str]] = []
        for call in turn.calls:
            signature = f"{call.name}({json.dumps(call.arguments, ensure_ascii=False, sort_keys=True)})"
            if signature in failed_calls:  # running it again gives the same error: stop and say so
                error = failed_calls[signature]
                note(Step("error", f"Error: repeated {signature}: {error}", call.name, call.arguments))
                return AgentResult("gave_up", None, steps, messages,
                                   f"the model repeated the call {signature}, which had failed ({error}), "
                                   "although the retry sampled with other settings and was told the error")
            try:
                if call.name not in by_name:
                    raise ToolError(f"unknown tool {call.name!r}; available: {', '.join(by_name) or 'none'}")
                result = by_name[call.name](call.arguments)
                note(Step("tool", result, call.name, call.arguments))
                done.append((call, result))
            except ToolError as exc:
                failed.append(str(exc))
                failed_calls[signature] = str(exc)
                result = repair(str(exc))
                note(Step("error", f"Error: {exc}", call.name, call.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        if failed:
            failures += 1
            errors.append("; ".join(failed))
        else:
            failures = 0
            if answer_from_results:
                return _answer_from(model, system, task, done, steps, messages, note)
        if failures > max_retries:
            return give_up()
    return AgentResult("max_steps", None, steps, messages,
                       f"no answer within {max_steps} model turns (max_steps); the last turn was a tool call")


def _answer_from(model: ChatModel, system: str | None, task: str, done: list[tuple[toolcalls.ParsedCall, str]],
                 steps: list[Step], messages: list[dict[str, Any]], note: Callable[[Step], None]) -> AgentResult:
    prompt = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": results_prompt(task, done)}]
    try:
        out = model.complete(prompt, [])
    except KifabrikError as exc:
        note(Step("error", exc.message))
        return AgentResult("error", None, steps, messages, exc.message)
    answer = ((out.content or out.raw) if isinstance(out, Turn) else out).strip()  # no tools offered: all text
    if not answer:
        note(Step("error", "the answer from the tool results is empty"))
        return AgentResult("error", None, steps, messages, "the model wrote no answer from the tool results")
    note(Step("answer", answer))
    messages.append({"role": "assistant", "content": answer})
    return AgentResult("answered", answer, steps, messages)
