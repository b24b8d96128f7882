"""Agent recipes: which model, which tools (allow-listed by name), which tasks, which bounds."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from kifabrik.agents.loop import AgentResult, ChatModel, Step, run_agent
from kifabrik.agents.tools import Tool, resolve
from kifabrik.config import StrictModel, load_yaml, validation_messages
from kifabrik.errors import KifabrikError
from kifabrik.models.backend import BackendOptions
from kifabrik.workspace import Workspace

BUNDLED = Path(__file__).parent / "recipes"


class ServerSpec(StrictModel):
    """A model behind an OpenAI-compatible server."""

    url: str = Field(description="Base URL, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="Model name on that server.")
    api_key_env: str = Field(default="KIFABRIK_API_KEY", description="Environment variable holding the API key.")


class MCPSpec(StrictModel):
    """An MCP server started over stdio by the operator's recipe (never from HTTP input)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="Prefix of its tools in the agent.")
    command: str = Field(description="Executable, e.g. python or npx.")
    args: list[str] = Field(default_factory=list, description="Arguments.")
    allow: list[str] = Field(min_length=1, description="The server's tools the agent may use (allow-list).")


class AgentRecipe(BackendOptions):
    """An agent: model, system prompt, allow-listed tools and the bounds of its loop.

    `backend` and `gguf_type` choose what runs a local `model` (transformers or llama.cpp).
    """

    name: str = Field(description="Name of the agent.")
    description: str | None = Field(default=None, description="What it is for.")
    model: str | None = Field(default=None, description="A registered model or adapter, run in this process.")
    server: ServerSpec | None = Field(default=None, description="Or: a model served over HTTP.")
    system: str | None = Field(default=None, description="System prompt.")
    tools: list[str] = Field(default_factory=list, description="Registered agent tools (allow-list), e.g. schmidt.*")
    mcp: list[MCPSpec] = Field(default_factory=list, description="MCP servers and their allowed tools.")
    knowledge: str | None = Field(default=None, description="A knowledge base the agent may search with the tool "
                                  "`search_knowledge` (each passage's own usage policy is checked for serving).")
    knowledge_k: int = Field(default=3, ge=1, le=20, description="Passages `search_knowledge` returns per query.")
    tasks: list[str] = Field(default_factory=list, description="Tasks to run when no --task is given.")
    max_steps: int = Field(default=6, ge=1, le=50, description="Most model turns per task.")
    max_retries: int = Field(default=2, ge=0, le=10, description="Most failed tool turns in a row before giving up.")
    max_tokens: int = Field(default=256, ge=1, description="Most tokens per model turn.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy).")
    first_tool: bool = Field(default=False, description="Force a tool call in the first turn (for small models).")
    answer_from_results: bool = Field(
        default=False, description="Answer right after the first tool turn that succeeded, from a short prompt of "
        "the task and the tool results (for small models, which cannot read them from the tool conversation).")

    @model_validator(mode="after")
    def _one_model(self) -> AgentRecipe:
        if (self.model is None) == (self.server is None):
            raise ValueError("give exactly one of `model` (local) or `server` (served over HTTP)")
        return self


def load_agent_recipe(ref: str) -> AgentRecipe:
    """A recipe file, or the name of a bundled recipe (`schmidt-demo`)."""
    path = Path(ref)
    if not path.exists() and (BUNDLED / f"{ref}.yaml").exists():
        path = BUNDLED / f"{ref}.yaml"
    data = load_yaml(path)
    try:
        return AgentRecipe.model_validate(data)
    except ValidationError as exc:
        raise KifabrikError("invalid agent recipe:\n  " + "\n  ".join(validation_messages(exc, data, str(path))),
                            hint="fix the fields named above") from None


@dataclass
class AgentRun:
    """The tools and model of one recipe, opened; `close()` stops MCP servers and the model."""

    recipe: AgentRecipe
    model: ChatModel
    tools: list[Tool]
    closers: list[Callable[[], None]]

    def run(self, task: str, on_step: Callable[[Step], None] | None = None) -> AgentResult:
        r = self.recipe
        return run_agent(self.model, self.tools, task, system=r.system, max_steps=r.max_steps,
                         max_retries=r.max_retries, first_tool=r.first_tool,
                         answer_from_results=r.answer_from_results, on_step=on_step)

    def close(self) -> None:
        for close in self.closers:
            close()


def open_agent(ws: Workspace, recipe: AgentRecipe, *, model: ChatModel | None = None) -> AgentRun:
    """Resolve tools (allow-list), start MCP servers and open the model (or use `model`)."""
    from kifabrik.agents.models import LocalModel, ServedModel

    tools = resolve(recipe.tools)
    closers: list[Callable[[], None]] = []
    for spec in recipe.mcp:
        from kifabrik.agents.mcp import MCPToolbox

        box = MCPToolbox(spec.name, spec.command, spec.args, spec.allow)
        closers.append(box.close)
        tools += box.tools
    if recipe.knowledge:
        tools.append(knowledge_tool(ws, recipe.knowledge, k=recipe.knowledge_k))
    if model is None:
        if recipe.server is not None:
            model = ServedModel(recipe.server.url, recipe.server.model, os.environ.get(recipe.server.api_key_env),
                                max_tokens=recipe.max_tokens, temperature=recipe.temperature)
        else:
            local = LocalModel(ws, str(recipe.model), max_tokens=recipe.max_tokens, temperature=recipe.temperature,
                               backend=BackendOptions(backend=recipe.backend, gguf_type=recipe.gguf_type))
            closers.append(local.close)
            model = local
    names = [t.call_name for t in tools]
    if len(names) != len(set(names)):
        raise KifabrikError(f"two tools share a name: {sorted(names)}", hint="rename an MCP server prefix")
    ws.catalog.audit("agent.open", actor="agent", subject=None,
                     details={"recipe": recipe.name, "tools": [t.name for t in tools],
                              "model": recipe.model or (recipe.server.model if recipe.server else None),
                              "runtime": model.runtime if isinstance(model, LocalModel) else None})
    return AgentRun(recipe, model, tools, closers)


def knowledge_tool(ws: Workspace, ref: str, *, k: int = 3) -> Tool:
    """The tool `search_knowledge(query)` over one knowledge base (passages checked for `serving`, audited)."""
    from kifabrik.kb.grounding import NOT_FOUND, passage_text
    from kifabrik.kb.search import KnowledgeBase

    kb = KnowledgeBase.open(ws, ref)

    def search_knowledge(query: str) -> Any:
        hits = kb.search(query, k=k, purpose="serving", actor="agent")
        if not hits:
            return {"found": False, "message": NOT_FOUND}
        return {"found": True, "sources": [{"n": h.rank, "dataset": h.dataset_ref, "source": h.source,
                                            "text": passage_text(kb, h)} for h in hits]}

    return Tool("search_knowledge", f"Search the company's knowledge base {kb.record.name} (documents, service "
                "answers) for passages that answer a question; cite them by number.",
                {"type": "object", "properties": {"query": {"type": "string", "minLength": 1,
                                                            "description": "The question or keywords to look up."}},
                 "required": ["query"], "additionalProperties": False}, search_knowledge)


def as_dict(result: AgentResult) -> dict[str, Any]:
    return {"status": result.status, "answer": result.answer, "reason": result.reason,
            "steps": [{"kind": s.kind, "tool": s.tool, "arguments": s.arguments, "text": s.text, "raw": s.raw}
                      for s in result.steps]}
