"""What /openapi.json says the server sends: response bodies, every error status, no 422.

The response models here document the answers (the handlers build plain dicts of the same
shape); the request models are in `schemas.py`. Every operation lists the statuses it can
answer with, all errors with the OpenAI error body. FastAPI's automatic 422 is removed: body
validation errors are answered with 400 (`app._errors`), so 422 is never sent.
"""

from __future__ import annotations

import html
import json
from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str = Field(description="What was wrong and how to fix it.")
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error, ...")
    param: str | None = Field(description="The request field at fault, if any.")
    code: str | None = Field(description="Machine-readable code: model_not_found, invalid_api_key, ...")


class ErrorResponse(BaseModel):
    """The OpenAI error body."""

    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="JSON-encoded arguments.")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    refusal: None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None
    finish_reason: str | None = Field(description="stop, length, tool_calls, cancelled")


class Source(BaseModel):
    """A knowledge-base passage a Fach-LLM answered from."""

    n: int
    id: str
    dataset: str
    source: str | None
    score: float
    text: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[ChatChoice]
    usage: Usage
    ai_generated: Literal[True] = Field(description="EU AI Act Art. 50: the content is AI-generated.")
    sources: list[Source] | None = Field(default=None, description="Only for Fach-LLMs.")


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: str | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[CompletionChoice]
    usage: Usage
    ai_generated: Literal[True]


class ModelObject(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    kind: str = Field(description="model, adapter or fach-llm")
    artifact_id: str
    version: int
    root: str = Field(description="The base model whose weights answer.")
    parent: str | None = Field(description="An adapter's base model.")
    backend: str = Field(description="The inference backend that answers (transformers, vllm, llama.cpp).")
    backend_reason: str = Field(description="Why this backend: chosen with --backend, or what --backend auto found.")


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]


class Health(BaseModel):
    status: Literal["ok"]


_WHY = {400: "Invalid request: body, parameter or context length.", 401: "Missing, invalid or revoked API key.",
        403: "A usage policy forbids serving this model.",
        404: "Unknown model, or a model outside the key's scope (the same answer for both).",
        413: "The request body is larger than --max-body-bytes.", 421: "The Host header is not an allowed host.",
        429: "Rate limit of the key reached, or the model's queue is full (see Retry-After).",
        500: "Internal error; the body carries only an error id for the server log.",
        503: "The server is shutting down."}

_SSE = {"schema": {"type": "object", "required": ["data"], "properties": {"data": {
    "type": "string", "description": "A JSON chunk (chat.completion.chunk / text_completion), an error body, "
                                     "or [DONE]"}}}}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for error statuses, with the OpenAI error body; 413, 421 and 500 apply everywhere."""
    return {c: {"model": ErrorResponse, "description": _WHY[c]} for c in sorted({*codes, 413, 421, 500})}


def _generation(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": "The answer (JSON), or server-sent events with `stream: true`.",
                  "content": {"text/event-stream": _SSE}}, **errors(400, 401, 403, 404, 429, 503)}


CHAT_RESPONSES = _generation(ChatCompletion)
COMPLETION_RESPONSES = _generation(Completion)
KEYED = errors(401, 429)  # GET routes behind the key
MODEL = errors(401, 404, 429)
PUBLIC = errors()


def without_422(spec: dict[str, Any]) -> dict[str, Any]:
    """Drop FastAPI's automatic 422 responses and their schemas: invalid bodies get 400 here."""
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return spec


def docs_page(spec: dict[str, Any]) -> str:
    """The API as one self-contained HTML page (no scripts, styles inline, nothing loaded from elsewhere)."""
    e = html.escape
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>{e(spec['info']['title'])} API</title>"
              "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto}pre{background:#f4f4f4;"
              "padding:.5rem;overflow:auto}code{font-weight:bold}</style></head><body>"),
             f"<h1>{e(spec['info']['title'])} {e(spec['info']['version'])}</h1>",
             (f"<p>{e(spec['info'].get('description', ''))}</p><p>Machine-readable: <a href='/openapi.json'>"
              "/openapi.json</a></p>")]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            parts.append(f"<h2><code>{e(method.upper())} {e(path)}</code></h2><p>{e(op.get('summary', ''))}</p>")
            if op.get("description"):
                parts.append(f"<p>{e(op['description'])}</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                parts.append(f"<p>Body: {e(body.get('$ref', '').rsplit('/', 1)[-1] or json.dumps(body))}</p>")
            parts.append("<ul>" + "".join(f"<li>{e(code)}: {e(r.get('description', ''))}</li>"
                                          for code, r in op.get("responses", {}).items()) + "</ul>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        parts.append(f"<h3 id='{e(name)}'>{e(name)}</h3><pre>{e(json.dumps(schema, indent=2))}</pre>")
    parts.append("</body></html>")
    return "".join(parts)


#: No script runs and nothing is fetched: the page needs only itself.
DOCS_CSP = "default-src 'none'; style-src 'unsafe-inline'"
