"""Function calling: putting tools into the prompt and parsing calls out of the model's text.

Which format: when the model's chat template handles `tools` itself (Qwen 2.5, Hermes,
Llama 3.1, Mistral templates do), kifabrik passes the tools to the template and the model
answers in its own trained syntax. Otherwise kifabrik writes the tools into the system
message in the Hermes / Qwen 2.5 convention and the model is asked to answer with

    <tool_call>
    {"name": "order_status", "arguments": {"order_id": "A-1001"}}
    </tool_call>

The parser accepts that convention and two native ones: a whole answer that is one JSON
object `{"name": ..., "arguments"|"parameters": {...}}` (Llama 3.1, optionally after
`<|python_tag|>`), and Mistral's `[TOOL_CALLS] [{...}, ...]`. A block whose JSON does not
parse stays in the text (the client sees what the model wrote; nothing is invented).

`tool_choice="required"` or a named function pre-fills the start of a Hermes `<tool_call>`
after the generation prompt, so even a small model produces a call; the pre-filled text
is part of the parsed output. `call_format` gives the structural tag that the rest of the
answer is then decoded under (`models.structured`): the name is one of the offered tools
and the arguments follow its `parameters` schema. Under `auto` the model writes free text,
and once it starts a `<tool_call>` the call is held to the same format.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
RESPONSE = "<tool_response>"
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)

TOOLS_SYSTEM = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


@dataclass
class ParsedCall:
    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def openai(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": "function",
                               "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}
        if index is not None:
            out["index"] = index
        return out


def template_handles_tools(chat_template: str | None) -> bool:
    return bool(chat_template) and "tools" in str(chat_template)


def prompt_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                    native: bool) -> list[dict[str, Any]]:
    """OpenAI messages -> messages for a chat template that does not know tools (Hermes text)."""
    if native:
        return [_native_message(m) for m in messages]
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = "\n".join(f"{OPEN}\n{json.dumps({'name': c['function']['name'], 'arguments': _args(c)}, ensure_ascii=False)}\n{CLOSE}"
                              for c in m["tool_calls"])
            out.append({"role": "assistant", "content": ((m.get("content") or "") + "\n" + calls).strip()})
        elif m["role"] == "tool":
            out.append({"role": "user", "content": f"{RESPONSE}\n{m.get('content') or ''}\n</tool_response>"})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    if tools:
        text = TOOLS_SYSTEM.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def _native_message(m: dict[str, Any]) -> dict[str, Any]:
    if m["role"] == "assistant" and m.get("tool_calls"):  # HF templates expect arguments as a mapping
        calls = [{"type": "function", "id": c.get("id"), "function": {"name": c["function"]["name"], "arguments": _args(c)}}
                 for c in m["tool_calls"]]
        return {"role": "assistant", "content": m.get("content") or "", "tool_calls": calls}
    return {k: v for k, v in m.items() if v is not None}


def _args(call: dict[str, Any]) -> Any:
    raw = call["function"].get("arguments") or "{}"
    try:
        return json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return raw


def prefill(tool_choice: Any) -> str:
    """Text that starts the answer so that a call is certain (`required` or a named function)."""
    if tool_choice == "required":
        return OPEN + '\n{"name": "'
    if isinstance(tool_choice, dict):
        return OPEN + '\n{"name": ' + json.dumps(tool_choice["function"]["name"]) + ', "arguments": '
    return ""


def call_format(tools: list[dict[str, Any]], tool_choice: Any, *, native: bool = False,
                chat_template: str | None = None) -> dict[str, Any] | None:
    """The structural tag (xgrammar's format, plain data) for the answer that follows `prefill(tool_choice)`.

    `required`: one call of any offered tool; a named function: its arguments; `auto` (or None):
    free text in which every `<tool_call>` block is a valid call. None where no call format can be
    enforced: a native chat template that writes calls in another syntax than `<tool_call>`, under `auto`.
    Raises `structured.UnsupportedSchema` (param `tools[i].function.parameters`) for a schema the grammar
    cannot enforce.
    """
    from kifabrik.models.structured import check_schema

    params: dict[str, Any] = {}
    for i, tool in enumerate(tools):
        fn = tool["function"]
        schema = fn.get("parameters") or {"type": "object", "properties": {}}
        check_schema(schema, f"tools[{i}].function.parameters")
        params[fn["name"]] = schema

    def content(schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": schema, "max_whitespace_cnt": 1}

    end = "}\n" + CLOSE
    if isinstance(tool_choice, dict):
        name = tool_choice["function"]["name"]
        return {"type": "structural_tag", "format": {"type": "sequence", "elements": [
            content(params[name]), {"type": "const_string", "value": end}]}}
    if tool_choice == "required":
        return {"type": "structural_tag", "format": {"type": "or", "elements": [
            {"type": "tag", "begin": json.dumps(name)[1:] + ', "arguments": ', "content": content(schema), "end": end}
            for name, schema in params.items()]}}
    if native and OPEN not in str(chat_template or ""):
        return None
    # the text may not contain a <tool_response>: only the tools write those (a small model tends to echo one)
    return {"type": "structural_tag", "format": {"type": "triggered_tags", "triggers": [OPEN], "tags": [
        {"type": "tag", "begin": OPEN + '\n{"name": ' + json.dumps(name) + ', "arguments": ', "content": content(schema),
         "end": end} for name, schema in params.items()], "excludes": [RESPONSE]}}


def _call(obj: Any) -> ParsedCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    return ParsedCall(obj["name"], args) if isinstance(args, dict) else None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def parse(text: str) -> tuple[str | None, list[ParsedCall]]:
    """`(content, calls)` from a model's answer; content is None when only calls remain."""
    stripped = text.strip()
    if stripped.startswith("[TOOL_CALLS]"):
        items = _loads(stripped.removeprefix("[TOOL_CALLS]").strip())
        calls = [c for c in (_call(i) for i in (items if isinstance(items, list) else [items])) if c]
        if calls:
            return None, calls
    if stripped.startswith(("{", "<|python_tag|>")):
        call = _call(_loads(stripped.removeprefix("<|python_tag|>").strip()))
        if call:
            return None, [call]
    found: list[ParsedCall] = []
    kept: list[str] = []
    pos = 0
    for m in _BLOCK.finditer(text):
        call = _call(_loads(m.group(1)))
        if call is None:
            continue
        found.append(call)
        kept.append(text[pos:m.start()])
        pos = m.end()
    kept.append(text[pos:])
    content = "".join(kept).strip()
    return (content or None) if found else text, found


class StreamFilter:
    """Streams plain text at once and holds back anything that may become a tool call."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.text = ""
        self.sent = 0
        self.holding = False

    def feed(self, delta: str) -> str:
        """The part of `delta` that can be sent now."""
        self.text += delta
        if not self.active:
            self.sent = len(self.text)
            return delta
        if self.holding or self.text.lstrip().startswith(("{", "[TOOL_CALLS]", "<|python_tag|>")):
            self.holding = True
            return ""
        cut = self.text.find(OPEN)
        if cut < 0:  # keep back a tail that could be the start of "<tool_call>"
            cut = len(self.text)
            for k in range(min(len(OPEN) - 1, len(self.text)), 0, -1):
                if OPEN.startswith(self.text[-k:]):
                    cut = len(self.text) - k
                    break
        else:
            self.holding = True
        out = self.text[self.sent:cut]
        self.sent = max(self.sent, cut)
        return out

    def finish(self) -> tuple[str, list[ParsedCall]]:
        """(content not sent yet, tool calls) once the answer is complete."""
        if not self.active:
            return "", []
        content, calls = parse(self.text)
        if not calls:
            return self.text[self.sent:], []
        sent = self.text[:self.sent]
        rest = (content or "")
        rest = rest[len(sent.strip()):] if rest.startswith(sent.strip()) else ""
        return rest, calls
