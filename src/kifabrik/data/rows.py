"""Rows and problems, and turning one raw record into kifabrik's normalised row.

A normalised row is either `{"messages": [{"role", "content"}, ...]}` (chat) or
`{"text": str}` (text). Instruction records (`instruction`/`input`/`output`) become chat rows.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

ROLES = ("system", "user", "assistant")
Kind = Literal["chat", "text"]


class Problem(NamedTuple):
    """A row (or file) that cannot be imported: `file:line: reason`."""

    source: str
    line: int | str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}" if self.line is not None else f"{self.source}: {self.reason}"


class Row(NamedTuple):
    """A valid, normalised row and where it came from (line number, `page 3`, `chunk 2`).

    `section` is set on rows cut from a document: the top-level section they lie in ("" before
    the first); a test split takes whole documents or whole sections, never single chunks.
    """

    source: str
    line: int | str
    record: dict[str, Any]
    section: str | None = None

    @property
    def kind(self) -> Kind:
        return "chat" if "messages" in self.record else "text"


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def chat_row(obj: Any) -> tuple[dict[str, Any] | None, str | None]:
    """Validate an OpenAI/HF chat record; returns (row, None) or (None, reason)."""
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, "`messages` must be a non-empty list"
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return None, f"messages[{i}] must be an object with role and content"
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            return None, f"messages[{i}].role is {role!r}; use system, user or assistant"
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            content = "\n".join(p for p in parts if isinstance(p, str))
        if not _nonempty(content):
            return None, f"messages[{i}].content must be non-empty text"
        if role == "system" and i != 0:
            return None, f"messages[{i}]: a system message may only come first"
        out.append({"role": role, "content": content})
    roles = [m["role"] for m in out]
    if "user" not in roles or "assistant" not in roles:
        return None, "a chat needs at least one user and one assistant message"
    if roles[-1] != "assistant":
        return None, "the last message must be the assistant's answer"
    return {"messages": out}, None


def instruction_row(obj: Any) -> tuple[dict[str, Any] | None, str | None]:
    """`{"instruction", "input"?, "output", "system"?}` -> a chat row."""
    instruction, extra, output = obj.get("instruction"), obj.get("input", ""), obj.get("output")
    if not _nonempty(instruction):
        return None, "`instruction` must be non-empty text"
    if not _nonempty(output):
        return None, "`output` must be non-empty text"
    if extra is not None and not isinstance(extra, str):
        return None, "`input` must be text"
    user = instruction.strip() + (f"\n\n{extra.strip()}" if extra and extra.strip() else "")
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    if _nonempty(obj.get("system")):
        messages.insert(0, {"role": "system", "content": obj["system"]})
    return {"messages": messages}, None


def text_row(obj: Any) -> tuple[dict[str, Any] | None, str | None]:
    if not _nonempty(obj.get("text")):
        return None, "`text` must be non-empty text"
    return {"text": obj["text"]}, None


FORMATS = {"chat": chat_row, "instruction": instruction_row, "text": text_row}


def record_row(obj: Any, fmt: str) -> tuple[dict[str, Any] | None, str | None]:
    """Normalise one parsed JSON record; `fmt` is `auto` or a key of FORMATS."""
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    if fmt == "auto":
        fmt = "chat" if "messages" in obj else "instruction" if "instruction" in obj else "text" if "text" in obj else ""
        if not fmt:
            keys = ", ".join(sorted(obj)[:6]) or "none"
            return None, f"neither `messages`, `instruction`/`output` nor `text` (keys: {keys})"
    return FORMATS[fmt](obj)


def row_text(record: dict[str, Any]) -> str:
    """All text of a row, for dedup, language detection and counting."""
    if "messages" in record:
        return "\n".join(m["content"] for m in record["messages"])
    return str(record["text"])


def map_text(record: dict[str, Any], fn: Any) -> dict[str, Any]:
    """A copy of `record` with `fn` applied to every text field."""
    if "messages" in record:
        return {"messages": [{"role": m["role"], "content": fn(m["content"])} for m in record["messages"]]}
    return {"text": fn(record["text"])}
