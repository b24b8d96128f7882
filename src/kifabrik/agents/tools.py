"""Agent tools: Python callables registered by name, offered to a model only when allow-listed.

    @agent_tool("schmidt.order_status", "Status of an order", {"type": "object", ...})
    def order_status(order_id: str) -> dict: ...

A recipe names tools by registry name; nothing reachable from a recipe or over HTTP can
name an import path. Arguments are validated against the tool's JSON Schema before the
callable runs, so a model's malformed call becomes an error message, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kifabrik.errors import KifabrikError
from kifabrik.registry import lookup, register

KIND = "agent-tool"


class ToolError(Exception):
    """A tool call that cannot run: unknown tool, bad arguments, or the tool failed."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]

    def openai(self) -> dict[str, Any]:
        # OpenAI function names allow no dots; the registry name `a.b` is offered as `a_b`
        return {"type": "function", "function": {"name": self.call_name, "description": self.description,
                                                 "parameters": self.parameters}}

    @property
    def call_name(self) -> str:
        return self.name.replace(".", "_")

    def __call__(self, arguments: dict[str, Any]) -> str:
        from jsonschema import Draft202012Validator

        errors = sorted(Draft202012Validator(self.parameters).iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            where = lambda e: ".".join(map(str, e.path)) or "arguments"
            raise ToolError(f"invalid arguments for {self.call_name}: "
                            + "; ".join(f"{where(e)}: {e.message}" for e in errors))
        try:
            result = self.fn(**arguments)
        except ToolError:
            raise
        except Exception as exc:  # the tool's own failure goes back to the model as text
            raise ToolError(f"{self.call_name} failed: {type(exc).__name__}: {exc}") from None
        return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)


def agent_tool(name: str, description: str, parameters: dict[str, Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn` as the agent tool `name` (a duplicate name raises)."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        register(KIND, name)(Tool(name, description, parameters, fn))
        return fn

    return decorator


def resolve(names: list[str]) -> list[Tool]:
    """The allow-listed tools, by registry name (`schmidt.order_status`) or group (`schmidt.*`)."""
    from kifabrik.registry import load_all, registered

    tools: list[Tool] = []
    for name in names:
        load_all(KIND, group=name.split(".", 1)[0])  # a tool group's module registers its tools
        if name.endswith(".*"):
            found = [n for n in registered(KIND) if n.startswith(name[:-1])]
            if not found:
                raise KifabrikError(f"no agent tools match {name!r}", hint=f"known tools: {', '.join(registered(KIND))}")
            tools += [lookup(KIND, n) for n in found]
        else:
            tools.append(lookup(KIND, name))
    return tools
