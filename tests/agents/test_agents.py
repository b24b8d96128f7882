"""The agent loop with a scripted model that writes real tool-call text (only the model is fake)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from pathlib import Path

import pytest

from kifabrik.agents import demo, load_agent_recipe, open_agent, resolve, run_agent

SCHMIDT = ["schmidt.order_status", "schmidt.find_spare_parts", "schmidt.part_availability"]


def call(name: str, **args: object) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": args})}\n</tool_call>'


class ScriptedModel:
    """Answers with canned raw text, in order; records what it was shown."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.seen: list[list[dict]] = []
        self.offered: list[list[dict]] = []
        self.retries: list[int] = []

    def complete(self, messages, tools, force_tool=False, retry=0):
        self.seen.append([dict(m) for m in messages])
        self.offered.append(tools)
        self.retries.append(retry)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return demo.use_database(tmp_path / "schmidt.db")


def test_demo_database_is_deterministic(tmp_path: Path):
    def digest(path: Path) -> str:
        con = sqlite3.connect(demo.build_database(path))
        rows = [r for t in ("machines", "parts", "part_fits", "orders", "order_items")
                for r in con.execute(f"SELECT * FROM {t} ORDER BY 1, 2")]
        con.close()
        return hashlib.sha256(repr(rows).encode()).hexdigest()

    assert digest(tmp_path / "a.db") == digest(tmp_path / "b.db")
    con = sqlite3.connect(tmp_path / "a.db")
    assert con.execute("SELECT count(*) FROM orders").fetchone()[0] == 40
    assert con.execute("SELECT count(*) FROM parts WHERE stock = 0").fetchone()[0] == 2


def test_agent_looks_up_an_order_and_answers(db):
    status = demo.order_status("A-1007")["status"]
    model = ScriptedModel(call("schmidt_order_status", order_id="A-1007"), f"Auftrag A-1007: {status}.")
    result = run_agent(model, resolve(SCHMIDT), "Wo ist mein Auftrag A-1007?", system="Service")
    assert result.status == "answered" and result.answer == f"Auftrag A-1007: {status}."
    tool_step = result.steps[0]
    assert tool_step.kind == "tool" and tool_step.tool == "schmidt_order_status"
    assert json.loads(tool_step.text)["id"] == "A-1007"
    # the model's second turn saw its call and the tool's result, in the OpenAI message format
    second = model.seen[1]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "schmidt_order_status"
    assert second[-1]["role"] == "tool" and '"A-1007"' in second[-1]["content"]
    # the offered tools reach the prompt in Hermes text
    from kifabrik.models.toolcalls import prompt_messages

    rendered = prompt_messages(second, [t.openai() for t in resolve(SCHMIDT)], native=False)
    assert "schmidt_find_spare_parts" in rendered[0]["content"] and "<tool_response>" in rendered[-1]["content"]


def test_spare_parts_search(db):
    parts = demo.find_spare_parts(machine="HP-80")
    assert {p["number"] for p in parts} == {"ET-1003", "ET-1004", "ET-1008", "ET-1010"}
    assert [p["number"] for p in demo.find_spare_parts(query="Filter")] == ["ET-1003"]
    assert demo.part_availability("ET-1004")["available"] is False


@pytest.mark.parametrize("bad,error", [
    ("<tool_call>{order_id: A-1007</tool_call>", "not valid"),  # unparseable JSON
    (call("delete_all_orders"), "unknown tool"),  # not on the allow-list
    (call("schmidt_order_status", order_id="1007"), "does not match"),  # breaks the schema
    (call("schmidt_order_status", order_id="A-9999"), "no order A-9999"),  # the tool itself fails
])
def test_invalid_calls_get_an_error_and_a_bounded_retry(db, bad, error):
    model = ScriptedModel(bad, call("schmidt_order_status", order_id="A-1001"), "fertig")
    result = run_agent(model, resolve(SCHMIDT), "Status?", max_retries=2)
    assert result.status == "answered" and result.answer == "fertig"
    assert result.steps[0].kind == "error" and error in result.steps[0].text
    assert error in json.dumps(model.seen[1][-1])  # the model was told what was wrong
    assert result.steps[1].kind == "tool"


def test_a_model_that_keeps_failing_stops_and_says_why(db):
    model = ScriptedModel(call("nope"), call("nix"), call("nada"), call("niente"))
    result = run_agent(model, resolve(SCHMIDT), "Status?", max_retries=2, max_steps=20)
    assert result.status == "gave_up" and len(model.seen) == 3  # first try + 2 retries, never more
    # no retry is asked like the attempt before it: each is marked as a retry (other sampling) and told the error
    assert model.retries == [0, 1, 2]
    assert [seen[-1]["content"].split(";")[0] for seen in model.seen[1:]] == [
        "Error: unknown tool 'nope'", "Error: unknown tool 'nix'"]
    assert result.reason == ("3 failed attempts in a row (the retries sampled with other settings and were told the "
                             "error); last error: unknown tool 'nada'; available: schmidt_order_status, "
                             "schmidt_find_spare_parts, schmidt_part_availability")
    looping = ScriptedModel(call("schmidt_part_availability", part_number="ET-1001"))
    assert run_agent(looping, resolve(SCHMIDT), "x", max_steps=4).status == "max_steps"
    assert len(looping.seen) == 4


def test_a_repeated_failing_call_stops_at_once_with_the_reason(db):
    """A retry that writes the very call that failed would fail the same way: it is not run again."""
    model = ScriptedModel(call("schmidt_order_status", order_id="A-9999"))
    result = run_agent(model, resolve(SCHMIDT), "Status von A-9999?", max_retries=5, max_steps=20)
    assert result.status == "gave_up" and len(model.seen) == 2 and model.retries == [0, 1]
    assert [s.kind for s in result.steps] == ["error", "error"]
    assert result.reason == ('the model repeated the call schmidt_order_status({"order_id": "A-9999"}), which had '
                             "failed (no order A-9999 (order numbers run from A-1001 to A-1040)), although the "
                             "retry sampled with other settings and was told the error")


def test_tools_come_only_from_the_registry():
    from kifabrik.errors import KifabrikError

    with pytest.raises(KifabrikError, match="unknown agent-tool"):
        resolve(["os.system"])
    assert [t.name for t in resolve(["schmidt.*"])] == sorted(SCHMIDT)


def test_bundled_recipe_runs_with_a_scripted_model(ws, db):
    recipe = load_agent_recipe("schmidt-demo")
    assert recipe.tools == SCHMIDT and recipe.max_steps == 4
    model = ScriptedModel(call("schmidt_find_spare_parts", machine="HP-80"), "ET-1003, ET-1004, ET-1008, ET-1010")
    run = open_agent(ws, recipe, model=model)
    result = run.run(recipe.tasks[1])
    run.close()
    assert result.status == "answered" and "ET-1003" in result.steps[0].text
    assert ws.catalog.verify_audit() == []


def test_local_model_agent_end_to_end(ws, tiny_model, db):
    """The real tiny model through the real loop: whatever it writes, the loop ends within its bounds."""
    from kifabrik.agents.recipe import AgentRecipe

    recipe = AgentRecipe(name="t", model="tiny", tools=[], max_steps=2, max_tokens=8)
    run = open_agent(ws, recipe)
    try:
        result = run.run("Hallo")
        assert result.status == "answered" and result.steps[-1].kind == "answer"
        # with tool instructions the prompt outgrows the tiny model's 256 positions: a clear stop, no crash
        run.tools = resolve(SCHMIDT)
        full = run.run("Hallo")
        assert full.status == "error" and "context (256 tokens)" in full.steps[-1].text
    finally:
        run.close()


def test_mcp_tools(tmp_path: Path, db):
    pytest.importorskip("mcp")
    from kifabrik.agents.mcp import MCPToolbox

    server = tmp_path / "werkstatt.py"
    server.write_text(
        "from mcp.server.mcpserver import MCPServer\n"
        "app = MCPServer('werkstatt')\n"
        "@app.tool()\n"
        "def wartung(machine: str) -> str:\n"
        "    '''Next maintenance date of a machine.'''\n"
        "    return f'{machine}: Wartung am 2026-03-02'\n"
        "@app.tool()\n"
        "def reset(machine: str) -> str:\n"
        "    '''Not allow-listed.'''\n"
        "    return 'reset'\n"
        "app.run()\n")
    box = MCPToolbox("werkstatt", sys.executable, [str(server)], allow=["wartung"])
    try:
        assert [t.name for t in box.tools] == ["werkstatt.wartung"]
        model = ScriptedModel(call("werkstatt_wartung", machine="HP-80"), "Am 2. März.")
        result = run_agent(model, box.tools, "Wann ist die Wartung?")
        assert result.status == "answered" and "2026-03-02" in result.steps[0].text
    finally:
        box.close()


def test_first_tool_forces_a_call_in_the_first_turn_only(db):
    class Forced(ScriptedModel):
        def complete(self, messages, tools, force_tool=False, retry=0):
            self.forced.append(force_tool)
            return super().complete(messages, tools, force_tool, retry)

    model = Forced(call("schmidt_part_availability", part_number="ET-1003"), "8 Stück")
    model.forced = []
    result = run_agent(model, resolve(SCHMIDT), "Haben Sie ET-1003?", first_tool=True)
    assert result.status == "answered" and model.forced == [True, False]


def test_retry_sampling_differs_from_the_failed_attempt():
    from kifabrik.agents.models import retry_sampling

    assert retry_sampling(0.0, 0) == (0.0, 0)  # the first attempt is greedy, as the recipe says
    settings = [retry_sampling(0.0, n) for n in (1, 2, 3, 4)]
    assert settings == [(0.5, 1), (0.8, 2), (1.0, 3), (1.0, 4)]  # hotter each time, never the same seed twice
    assert retry_sampling(1.2, 1) == (1.2, 1)  # a recipe's higher temperature is kept


def test_a_retry_decodes_differently_on_a_real_model(ws, tiny_model, db):
    """The tiny model through LocalModel: the same prompt as a retry decodes differently (sampled, seeded)."""
    from kifabrik.agents.models import LocalModel

    model = LocalModel(ws, "tiny", max_tokens=12)
    messages = [{"role": "user", "content": "Hallo"}]
    first, again = model.complete(messages, []), model.complete(messages, [])
    retry = model.complete(messages, [], retry=1)
    assert first == again  # greedy: asking again unchanged would only repeat the failure
    assert retry != first
    assert model.complete(messages, [], retry=1) == retry  # and still reproducible


def test_answer_from_results_asks_with_the_results_and_no_tools(db):
    model = ScriptedModel(call("schmidt_order_status", order_id="A-1007"), "Der Auftrag A-1007 ist in Fertigung.")
    result = run_agent(model, resolve(SCHMIDT), "Status von A-1007?", system="Service", first_tool=True,
                       answer_from_results=True)
    assert result.status == "answered" and result.answer == "Der Auftrag A-1007 ist in Fertigung."
    assert [s.kind for s in result.steps] == ["tool", "answer"]
    assert model.offered[1] == []  # the answer turn offers no tools
    system, user = model.seen[1]
    assert system == {"role": "system", "content": "Service"}
    tool_result = result.steps[0].text
    assert user["content"] == ('Status von A-1007?\n\nResult of schmidt_order_status({"order_id": "A-1007"}):\n'
                               f"{tool_result}\n\nAnswer the question with this result. Name every item of the result.")
    assert json.loads(tool_result)["status"] == demo.order_status("A-1007")["status"]


@pytest.mark.embedded
def test_demo_agent_finishes_both_tasks_on_the_embedded_model(embedded, db):
    """`kifabrik agent schmidt-demo` on SmolLM2-135M: valid calls (constrained), the right tool and arguments,
    and answers that carry the looked-up facts."""
    ws, record, _, _ = embedded
    recipe = load_agent_recipe("schmidt-demo").model_copy(update={"model": record.name})
    run = open_agent(ws, recipe)
    try:
        status, parts = (run.run(task) for task in recipe.tasks)
    finally:
        run.close()
    assert status.status == "answered" and parts.status == "answered", (status.reason, parts.reason)
    assert [(s.kind, s.tool, s.arguments) for s in status.steps] == [
        ("tool", "schmidt_order_status", {"order_id": "A-1007"}), ("answer", None, None)]
    assert [(s.kind, s.tool, s.arguments) for s in parts.steps] == [
        ("tool", "schmidt_find_spare_parts", {"machine": "HP-80"}), ("answer", None, None)]
    assert demo.order_status("A-1007")["status"] == "in Fertigung"  # the seeded demo database
    assert "in Fertigung" in status.answer
    # the four parts that fit the HP-80 (demo data): each named in the answer
    for name in ("Hydraulikfilter HF-35", "Dichtungssatz Zylinder 80 bar", "Not-Aus-Taster rot", "Hydrauliköl"):
        assert name in parts.answer, parts.answer
