"""Function calling: parsing the model's native formats, and the OpenAI shape over HTTP."""

from __future__ import annotations

import json

import pytest

from kifabrik.models import toolcalls

TOOLS = [{"type": "function", "function": {
    "name": "order_status", "description": "Status of an order",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
CALL = '<tool_call>\n{"name": "order_status", "arguments": {"order_id": "A-1001"}}\n</tool_call>'


@pytest.mark.parametrize("text,content,calls", [
    ("Gern.\n" + CALL, "Gern.", [("order_status", {"order_id": "A-1001"})]),
    (CALL + CALL.replace("1001", "1002"), None, [("order_status", {"order_id": "A-1001"}),
                                                ("order_status", {"order_id": "A-1002"})]),
    ('{"name": "order_status", "parameters": {"order_id": "7"}}', None, [("order_status", {"order_id": "7"})]),
    ('[TOOL_CALLS] [{"name": "f", "arguments": {}}]', None, [("f", {})]),
    ("<tool_call>{not json}</tool_call>", "<tool_call>{not json}</tool_call>", []),
    ("Keine Werkzeuge nötig.", "Keine Werkzeuge nötig.", []),
])
def test_parse(text, content, calls):
    got_content, got = toolcalls.parse(text)
    assert got_content == content
    assert [(c.name, c.arguments) for c in got] == calls


def test_stream_filter_holds_back_the_call():
    filt = toolcalls.StreamFilter(active=True)
    text = "Ich sehe nach. " + CALL
    sent = "".join(filt.feed(text[i:i + 3]) for i in range(0, len(text), 3))
    rest, calls = filt.finish()
    assert sent + rest == "Ich sehe nach." or (sent + rest).strip() == "Ich sehe nach."
    assert "<tool" not in sent and [c.name for c in calls] == ["order_status"]


def test_prompt_without_native_tool_support_uses_hermes_text():
    msgs = toolcalls.prompt_messages([
        {"role": "user", "content": "Wo ist A-1001?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "order_status", "arguments": '{"order_id": "A-1001"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"status": "shipped"}'},
    ], TOOLS, native=False)
    assert msgs[0]["role"] == "system" and "<tools>" in msgs[0]["content"] and "order_status" in msgs[0]["content"]
    assert msgs[2]["content"].startswith("<tool_call>") and msgs[3]["role"] == "user"
    assert "<tool_response>" in msgs[3]["content"]


def test_tool_calls_over_http(server_factory):
    from serve_scripted import use_scripted

    srv = server_factory()
    use_scripted(srv, ["Moment. " + CALL, "Auftrag A-1001 ist versandt.", CALL, CALL])
    client = srv.client()
    resp = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Wo ist A-1001?"}],
                                          tools=TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Moment."
    call = choice.message.tool_calls[0]
    assert call.function.name == "order_status" and json.loads(call.function.arguments) == {"order_id": "A-1001"}
    # the client sends the call and its result back, as the OpenAI docs show
    follow = client.chat.completions.create(model="tiny", tools=TOOLS, messages=[
        {"role": "user", "content": "Wo ist A-1001?"}, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"status": "versandt"}'}])
    assert follow.choices[0].message.content == "Auftrag A-1001 ist versandt."
    assert follow.choices[0].message.tool_calls is None
    chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                                 tools=TOOLS, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert not any("<tool_call>" in (d.content or "") for d in deltas)
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert [(tc.index, tc.function.name) for tc in calls] == [(0, "order_status")]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # tool_choice "none": tools are not offered, so the text is returned as it is
    plain = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], tools=TOOLS,
                                           tool_choice="none")
    assert plain.choices[0].message.tool_calls is None


def test_named_tool_choice_prefills_the_call(server_factory):
    """The forced start of the call goes into the prompt; the model's continuation completes it."""
    from serve_scripted import use_scripted

    srv = server_factory()
    backend = use_scripted(srv, ['{"order_id": "B-7"}}\n</tool_call>'])
    resp = srv.client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "x"}], tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "order_status"}})
    tokenizer = srv.uvicorn.config.app.state.kf.table.loaded()[srv.ws.catalog.get_artifact("tiny").id].tokenizer
    prompt = tokenizer.decode(backend.seen[-1].prompt_ids)
    assert prompt.endswith('<tool_call>\n{"name": "order_status", "arguments": ')
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "order_status" and json.loads(call.function.arguments) == {"order_id": "B-7"}


def test_agent_uses_a_served_model(server_factory, tmp_path):
    """`kifabrik agent` with `server:`: the server parses the call, the agent runs the tool."""
    from serve_scripted import use_scripted

    from kifabrik.agents import demo, resolve, run_agent
    from kifabrik.agents.models import ServedModel

    demo.use_database(tmp_path / "schmidt.db")
    srv = server_factory()
    script = use_scripted(srv, [CALL.replace("order_status", "schmidt_order_status"), "Der Auftrag ist unterwegs."])
    model = ServedModel(srv.url + "/v1", "tiny", srv.keys["all"])
    result = run_agent(model, resolve(["schmidt.order_status"]), "Wo ist A-1001?")
    assert result.status == "answered" and result.answer == "Der Auftrag ist unterwegs."
    assert result.steps[0].kind == "tool" and '"A-1001"' in result.steps[0].text
    assert len(script.seen) == 2  # two model turns, the second with the tool result in its prompt
