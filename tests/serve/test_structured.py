"""Constrained decoding over HTTP: response_format json_object / json_schema and tool_choice, on the real
decoder of the random tiny model (whose free text is never JSON, so only the constraint makes it valid)."""

from __future__ import annotations

import json
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from jsonschema import Draft202012Validator

from kifabrik.models import toolcalls
from kifabrik.models.structured import (
    Constraint,
    Matcher,
    UnsupportedSchema,
    check_schema,
)
from kifabrik.serve.backends.hf import TransformersBackend

USER = [{"role": "user", "content": "Wo ist Auftrag A-1007?"}]
ORDER = {"type": "object", "properties": {
    "status": {"enum": ["eingegangen", "in Fertigung", "versandt"]},
    "menge": {"type": "integer", "minimum": 1, "maximum": 9},
    "express": {"type": "boolean"}}, "required": ["status", "menge", "express"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "order_status", "description": "Status", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string", "pattern": "^A-[0-9]{4}$"}},
    "required": ["order_id"], "additionalProperties": False}}},
         {"type": "function", "function": {"name": "part_stock", "description": "Stock", "parameters": {
             "type": "object", "properties": {"part": {"enum": ["ET-1003", "ET-1004"]}}, "required": ["part"],
             "additionalProperties": False}}}]


class LongContext(TransformersBackend):
    """The real tiny model and decoder; only the context is widened (the tool instructions alone need more than
    its 256 positions; rotary positions are computed, so the random model runs past them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._context = self.decoder.context_length = 4096


@pytest.fixture(scope="module")
def srv(server_factory):
    server = server_factory(max_batch=4, default_max_tokens=48)
    server.uvicorn.config.app.state.kf.table.cls = LongContext
    return server


def chat(srv, **kw):
    kw.setdefault("max_tokens", 96)
    kw.setdefault("temperature", 0)
    return srv.client().chat.completions.create(model="tiny", messages=kw.pop("messages", USER), **kw)


def post(srv, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(srv.url + "/v1/chat/completions", method="POST",
                                 data=json.dumps({"model": "tiny", "messages": USER, **body}).encode(),
                                 headers={"Authorization": f"Bearer {srv.keys['all']}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_json_schema_answer_validates(srv):
    fmt = {"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER, "strict": True}}
    free = chat(srv).choices[0].message.content
    with pytest.raises(json.JSONDecodeError):  # the random model on its own writes no JSON
        json.loads(free)
    resp = chat(srv, response_format=fmt)
    answer = json.loads(resp.choices[0].message.content)
    assert list(Draft202012Validator(ORDER).iter_errors(answer)) == []
    assert resp.choices[0].finish_reason == "stop"  # the grammar ended it, not max_tokens
    # streaming decodes under the same constraint: the deltas add up to the same answer
    chunks = list(chat(srv, response_format=fmt, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(streamed) == answer


def test_json_object_answer_is_an_object(srv):
    resp = chat(srv, response_format={"type": "json_object"}, max_tokens=200)
    assert resp.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(resp.choices[0].message.content), dict)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "part_stock"}}])
def test_tool_choice_forces_a_valid_call(srv, choice):
    resp = chat(srv, tools=TOOLS, tool_choice=choice, max_tokens=64)
    msg = resp.choices[0].message
    assert resp.choices[0].finish_reason == "tool_calls" and len(msg.tool_calls) == 1
    call = msg.tool_calls[0].function
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    assert call.name in schemas and (choice == "required" or call.name == "part_stock")
    assert list(Draft202012Validator(schemas[call.name]).iter_errors(json.loads(call.arguments))) == []


@pytest.mark.parametrize("schema,param", [
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}},
     "response_format.json_schema.schema.properties.a.not"),
    ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, "response_format.json_schema.schema.if"),
    ({"$ref": "https://example.com/s.json"}, "response_format.json_schema.schema.$ref"),
    ({"type": "string", "maxLength": 10**6}, "response_format.json_schema.schema.maxLength"),
    ({"type": "strnig"}, "response_format.json_schema.schema"),
])
def test_unsupported_schema_is_a_400_naming_the_param(srv, schema, param):
    status, body = post(srv, {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert status == 400 and body["error"]["param"] == param, body
    assert body["error"]["code"] == "unsupported_schema"


def test_unsupported_tool_parameters_are_a_400_naming_the_tool(srv):
    bad = [TOOLS[0], {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "array", "uniqueItems": True}}}}}]
    status, body = post(srv, {"tools": bad})
    assert status == 400 and body["error"]["param"] == "tools[1].function.parameters.properties.x.uniqueItems", body
    status, body = post(srv, {"tools": TOOLS, "response_format": {"type": "json_object"}})
    assert status == 400 and body["error"]["param"] == "response_format"


def test_auto_allows_text_and_holds_a_started_call_to_the_format(srv):
    """Under tool_choice auto the model may write text; once it opens <tool_call>, only valid calls continue."""
    from kifabrik.models.runtime import load, resolve

    lm = load(resolve(srv.ws, srv.ws.catalog.get_artifact("tiny")))
    grammar = lm.grammar(Constraint.tags(toolcalls.call_format(TOOLS, "auto")))

    def accepts(text: str) -> bool:
        m = Matcher(grammar)
        return all(m.accept(t) for t in lm.tokenizer.encode(text, add_special_tokens=False))

    assert accepts("Ich sehe nach, einen Moment.")
    assert accepts('Gern. <tool_call>\n{"name": "order_status", "arguments": {"order_id": "A-1007"}}\n</tool_call>')
    assert not accepts('<tool_call>\n{"name": "delete_orders", "arguments": {}}')  # not an offered tool
    assert not accepts('<tool_call>\n{"name": "order_status", "arguments": {"order_id": "1007"}}')  # breaks pattern


def test_check_schema_accepts_what_it_enforces():
    check_schema(ORDER, "schema")
    check_schema({"type": "array", "items": {"$ref": "#/$defs/p"}, "$defs": {"p": {"type": "string", "format": "date"}},
                  "minItems": 1, "maxItems": 3}, "schema")
    with pytest.raises(UnsupportedSchema) as err:
        check_schema({"anyOf": [{"type": "string"}, {"type": "object", "patternProperties": {"^a": {}}}]}, "s")
    assert err.value.param == "s.anyOf[1].patternProperties"
