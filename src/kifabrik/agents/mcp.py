"""Tools from MCP servers (the `mcp` package, extra `agents`), offered only when allow-listed.

The agent loop is synchronous; the MCP client is async. A `MCPToolbox` runs one event loop
in a background thread that owns the client session for the whole agent run, and each tool
call is a coroutine sent to that loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from concurrent.futures import Future
from typing import Any

from kifabrik.agents.tools import Tool, ToolError
from kifabrik.errors import KifabrikError


def require_mcp() -> None:
    if importlib.util.find_spec("mcp") is None:
        raise KifabrikError("MCP tools need the mcp package, which is not installed", hint="pip install 'kifabrik[agents]'")


class MCPToolbox:
    """One MCP server started over stdio; `tools` are its allow-listed tools as agent `Tool`s."""

    def __init__(self, name: str, command: str, args: list[str], allow: list[str], *,
                 env: dict[str, str] | None = None, timeout: float = 60) -> None:
        require_mcp()
        self.name = name
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._ready: Future[list[Any]] = Future()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, args=(command, args, env), daemon=True,
                                        name=f"kifabrik-mcp-{name}")
        self._thread.start()
        try:
            listed = self._ready.result(timeout)
        except Exception as exc:
            raise KifabrikError(f"MCP server {name!r} ({command} {' '.join(args)}) did not start: "
                                f"{type(exc).__name__}: {exc}", hint="run the command by hand to see its error") from None
        by_name = {t.name: t for t in listed}
        unknown = [a for a in allow if a not in by_name]
        if unknown:
            raise KifabrikError(f"MCP server {name!r} has no tool {', '.join(map(repr, unknown))}",
                                hint=f"its tools: {', '.join(sorted(by_name))}")
        self.tools = [Tool(f"{name}.{t.name}", t.description or "", t.input_schema or {"type": "object"},
                           self._caller(t.name)) for t in (by_name[a] for a in allow)]

    def _run(self, command: str, args: list[str], env: dict[str, str] | None) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._session(command, args, env))

    async def _session(self, command: str, args: list[str], env: dict[str, str] | None) -> None:
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters

        self._stop = asyncio.Event()
        try:
            async with Client(StdioServerParameters(command=command, args=args, env=env)) as client:
                self._client = client
                self._ready.set_result(list((await client.list_tools()).tools))
                await self._stop.wait()
        except Exception as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)

    def _caller(self, tool: str) -> Any:
        def call(**arguments: Any) -> str:
            future = asyncio.run_coroutine_threadsafe(self._client.call_tool(tool, arguments), self._loop)
            try:
                result = future.result(self.timeout)
            except Exception as exc:
                raise ToolError(f"{self.name}.{tool}: {type(exc).__name__}: {exc}") from None
            text = "\n".join(getattr(c, "text", "") for c in result.content)
            if result.is_error:
                raise ToolError(text or f"{self.name}.{tool} reported an error")
            if result.structured_content is not None:
                return json.dumps(result.structured_content, ensure_ascii=False, default=str)
            return text

        return call

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
