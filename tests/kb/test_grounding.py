"""Grounded answers: training rows with sources, and a Fach-LLM (model + knowledge base) served,
generated and evaluated under one name, with every passage's policy checked."""

from __future__ import annotations

import re
from typing import Any

import pytest
from kb_datafiles import QA, SECRET_QA, Data

from kifabrik.catalog import ArtifactRecord
from kifabrik.workspace import Workspace


def _rows() -> list[dict[str, Any]]:
    system = {"role": "system", "content": "Sie sind der Service."}
    return [{"messages": [system, {"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in QA]


def test_context_rows_hold_the_answer_among_sources_or_teach_to_say_not_found() -> None:
    from kifabrik.kb.contexts import add_contexts
    from kifabrik.kb.grounding import NOT_FOUND, SOURCES_HEADING

    rows = _rows()
    out, stats = add_contexts(rows, k=3, unanswerable=0.25, seed=3)
    assert (stats.rows, stats.passages) == (8, 8)
    assert stats.answerable + stats.unanswerable == 8 and stats.unanswerable >= 1 and stats.answerable >= 1
    for before, after in zip(rows, out, strict=True):
        system, user, answer = after["messages"]
        assert user == before["messages"][1]
        sources = system["content"].split(SOURCES_HEADING + "\n", 1)[1].splitlines()
        assert system["content"].startswith("Sie sind der Service.") and len(sources) == 3
        gold = before["messages"][2]["content"]
        if answer["content"] == NOT_FOUND:
            assert not any(gold in s for s in sources)
        else:
            assert answer["content"] == gold and sum(gold in s for s in sources) == 1
    again, _ = add_contexts(rows, k=3, unanswerable=0.25, seed=3)
    assert again == out  # same seed, same rows


@pytest.fixture
def fach_llm(ws: Workspace, data: Data, tiny_model: ArtifactRecord) -> ArtifactRecord:
    from kifabrik.kb.build import build_kb
    from kifabrik.kb.fachllm import create_fach_llm

    kb = build_kb(ws, "wissen", [data.chats, data.handbook, data.secret])
    return create_fach_llm(ws, "tiny-fach", tiny_model, kb, k=2)


def test_fach_llm_is_served_under_one_name_with_sources(ws: Workspace, fach_llm: ArtifactRecord) -> None:
    from helpers import start_server

    from kifabrik.kb.grounding import NOT_FOUND
    from kifabrik.serve.keys import create_key

    srv = start_server(ws, models=["tiny-fach"], max_batch=2)
    try:
        srv.keys["all"] = create_key(ws, ["*"])[1]
        client = srv.client()
        asked = client.chat.completions.create(model="tiny-fach", max_tokens=4, temperature=0,
                                               messages=[{"role": "user", "content": QA[0][0]}])
        sources = asked.model_extra["sources"]
        # k=2, but the tiny model's 256-token context holds only the best source next to the AI notice:
        # the lower-ranked one is dropped instead of refusing the request
        assert [s["n"] for s in sources] == [1] and sources[0]["text"] == QA[0][1]
        assert sources[0]["cited"] is ("[1]" in (asked.choices[0].message.content or ""))
        assert sources[0]["dataset"].startswith("service")
        # the only passage that answers this is in a dataset whose policy forbids serving: never shown
        secret = client.chat.completions.create(model="tiny-fach", max_tokens=4, temperature=0,
                                                messages=[{"role": "user", "content": SECRET_QA[0]}])
        assert all(SECRET_QA[1] not in s["text"] for s in secret.model_extra["sources"])
        assert all(not s["dataset"].startswith("geheim") for s in secret.model_extra["sources"])
        unrelated = client.chat.completions.create(model="tiny-fach", max_tokens=4, temperature=0,
                                                   messages=[{"role": "user", "content": "Wie wird das Wetter in Paris?"}])
        assert unrelated.choices[0].message.content == NOT_FOUND and unrelated.model_extra["sources"] == []
        stream = client.chat.completions.create(model="tiny-fach", max_tokens=4, temperature=0, stream=True,
                                                messages=[{"role": "user", "content": QA[0][0]}])
        last = list(stream)[-1]
        assert last.model_extra["sources"][0]["text"] == QA[0][1]
    finally:
        srv.stop()
    # one audit entry per request: the withheld passages are recorded inside the request's entry
    assert ws.catalog.audit_entries("kb.search") == []
    filtered = [e.details["knowledge"] for e in ws.catalog.audit_entries("serve.request") if "knowledge" in e.details]
    assert filtered and filtered[0]["purpose"] == "serving" and filtered[0]["dropped"] >= 1
    assert filtered[0]["denied"][0]["dataset_ref"].startswith("geheim")


def test_generate_and_evaluate_answer_from_the_knowledge_base(ws: Workspace, fach_llm: ArtifactRecord,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from kifabrik.evaluate.backends import GenOptions, open_target
    from kifabrik.generate import generate_text
    from kifabrik.kb.grounding import NOT_FOUND, SOURCES_HEADING

    [plain, unrelated] = generate_text(ws, "tiny-fach", [QA[2][0], "Wie wird das Wetter in Paris?"])
    assert unrelated.text == NOT_FOUND and plain.prompt_tokens > 0
    backend = open_target(ws, "tiny-fach")
    sent: list[str] = []
    original = backend.loaded.generate  # type: ignore[attr-defined]

    def spy(prompts: Any, *args: Any, **kwargs: Any) -> Any:
        sent.extend(p[0]["content"] for p in prompts)
        return original(prompts, *args, **kwargs)

    # the loaded model is the runtime's cached one: monkeypatch puts its method back for later tests
    monkeypatch.setattr(backend.loaded, "generate", spy)  # type: ignore[attr-defined]
    backend.generate([[{"role": "user", "content": QA[2][0]}]], GenOptions(max_new_tokens=2), chat=True)
    assert len(sent) == 1 and SOURCES_HEADING in sent[0] and QA[2][1] in sent[0]


def test_a_fach_llm_runs_in_the_precision_it_records_wherever_it_runs(ws: Workspace, data: Data,
                                                                      tiny_model: ArtifactRecord) -> None:
    from kifabrik.errors import KifabrikError
    from kifabrik.evaluate.backends import open_target
    from kifabrik.kb.build import build_kb
    from kifabrik.kb.fachllm import create_fach_llm
    from kifabrik.models.loading import cpu_dtype
    from kifabrik.models.runtime import load, resolve
    from kifabrik.serve.backends.base import EngineOptions
    from kifabrik.serve.models import ModelTable, discover

    kb = build_kb(ws, "wissen", [data.chats, data.handbook])
    fast = create_fach_llm(ws, "tiny-bf16", tiny_model, kb, dtype="bfloat16")
    plain = create_fach_llm(ws, "tiny-fp32", tiny_model, kb)
    assert fast.meta["dtype"] == "bfloat16" and "dtype" not in plain.meta  # older records: float32 on CPUs
    runs_as = cpu_dtype("bfloat16", "cpu")  # float32 on a CPU that only emulates bfloat16
    assert load(resolve(ws, fast)).describe()["dtype"] == runs_as
    assert load(resolve(ws, plain)).describe()["dtype"] == "float32"
    assert load(resolve(ws, fast), dtype="float32").describe()["dtype"] == "float32"  # asked for explicitly
    assert open_target(ws, "tiny-bf16").loaded.describe()["dtype"] == runs_as  # type: ignore[attr-defined]
    # a server gives a base model the precision its served Fach-LLMs record, and refuses two that disagree
    table = ModelTable(ws, discover(ws, ["tiny-bf16", "tiny"]), "transformers", EngineOptions())
    assert table.options_for(tiny_model).dtype == "bfloat16"
    with pytest.raises(KifabrikError, match="record different precisions"):
        ModelTable(ws, discover(ws, ["tiny-bf16", "tiny-fp32"]), "transformers", EngineOptions())
    both = ModelTable(ws, discover(ws, ["tiny-bf16", "tiny-fp32"]), "transformers", EngineOptions(dtype="float32"))
    assert both.options_for(tiny_model).dtype == "float32"
    with pytest.raises(KifabrikError, match="dtype 'int4' is not known"):
        create_fach_llm(ws, "tiny-int4", tiny_model, kb, dtype="int4")


def test_agent_searches_the_knowledge_base_with_policies(ws: Workspace, data: Data) -> None:
    import json

    from kifabrik.agents.recipe import knowledge_tool
    from kifabrik.kb.build import build_kb

    build_kb(ws, "wissen", [data.chats, data.handbook, data.secret])
    tool = knowledge_tool(ws, "wissen", k=2)
    assert tool.openai()["function"]["name"] == "search_knowledge"
    found = json.loads(tool({"query": QA[2][0]}))
    assert found["found"] and found["sources"][0]["text"] == QA[2][1]
    secret = json.loads(tool({"query": SECRET_QA[0]}))
    assert all(SECRET_QA[1] not in s["text"] for s in secret.get("sources", []))
    assert json.loads(tool({"query": "Wie wird das Wetter in Paris?"}))["found"] is False


def test_a_fach_llm_with_focus_shows_the_asked_table_row_and_cites_the_whole_section(ws: Workspace,
                                                                                    data: Data) -> None:
    from kb_datafiles import PARTS, TABLE_ROWS

    from kifabrik.kb.build import build_kb
    from kifabrik.kb.grounding import ground
    from kifabrik.kb.search import KnowledgeBase

    kb = KnowledgeBase.open(ws, build_kb(ws, "wissen", [data.handbook]))
    asked = [{"role": "user", "content": "Welche Artikelnummer hat der Zahnriemen?"}]
    row = TABLE_ROWS[PARTS.index("Zahnriemen")].strip("| ").split(" | ")
    whole = ground(kb, asked, k=1, purpose="evaluation").sources[0]
    focused = ground(kb, asked, k=1, purpose="evaluation", focus=True).sources[0]
    assert whole.passage_id == focused.passage_id  # the citation names the same (whole) section
    assert all(p in whole.text for p in PARTS)
    lines = focused.text.splitlines()
    assert lines[0] == "## Verschleißteile"
    assert f"Teil: Zahnriemen; Artikelnummer: {row[1]}" in lines  # the column asked for (`kb.focus`)
    assert row[2] not in focused.text
    assert not any(p in focused.text for p in PARTS if p != "Zahnriemen")


def test_context_rows_show_document_sections_focused_as_a_fach_llm_does() -> None:
    from kb_datafiles import HANDBOOK, TABLE_ROWS

    from kifabrik.kb.chunking import chunk_text
    from kifabrik.kb.contexts import add_contexts

    sections = [c.text for c in chunk_text(HANDBOOK.format(rows="\n".join(TABLE_ROWS)), 200)[0]]
    table = next(s for s in sections if "Spindelfilter |" in s)
    rows = [r for r in _rows() if "Spindelfilter" in r["messages"][1]["content"]]
    plain, _ = add_contexts(rows, k=3, unanswerable=0.0, pool=sections)
    focused, _ = add_contexts(rows, k=3, unanswerable=0.0, pool=sections, focus=set(sections))
    assert table in plain[0]["messages"][0]["content"]
    shown = focused[0]["messages"][0]["content"]
    assert table not in shown and "Teil: Spindelfilter; Artikelnummer: TB-1000-10\n" in shown
    assert "Keilriemen" not in shown


def test_document_rows_answer_from_a_section_that_states_the_answer_without_its_copies() -> None:
    from kb_datafiles import HANDBOOK, TABLE_ROWS

    from kifabrik.kb.chunking import chunk_text
    from kifabrik.kb.contexts import add_contexts, states
    from kifabrik.kb.grounding import SOURCES_HEADING
    from kifabrik.kb.tokenize import Tokenizer

    tok = Tokenizer.default()
    sections = [c.text for c in chunk_text(HANDBOOK.format(rows="\n".join(TABLE_ROWS)), 200)[0]]
    oil = next(s for s in sections if "## Ölwechsel" in s)
    question, answer = QA[0]  # the DM 320's oil: its interval is in the Ölwechsel section, its oil type is not
    said = "Das Spindelöl der DM 320 wechseln Sie alle 1500 Betriebsstunden, am besten betriebswarm."
    assert states(said, question, oil, tok)
    assert not states(answer, question, sections[0], tok)  # a section without the interval
    assert not states("Die DM 250 wird alle 1500 Betriebsstunden gewechselt.", "Wann wechsle ich das Öl der DM 250?",
                      oil, tok)  # the interval, but of another machine
    rows = [{"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": said}]},
            *_rows()[1:]]
    out, stats = add_contexts(rows, k=2, unanswerable=0.0, pool=sections, from_documents=1.0)
    shown = out[0]["messages"][0]["content"].split(SOURCES_HEADING + "\n", 1)[1]
    assert stats.from_documents >= 1 and "## Ölwechsel" in shown
    assert rows[0]["messages"][1]["content"] not in shown  # the row's own answer is not among its sources
    assert out[0]["messages"][-1] == rows[0]["messages"][1]  # and is still the target
    cited, _ = add_contexts(rows, k=2, unanswerable=0.0, pool=sections, from_documents=1.0, cite=True)
    for row in cited:  # the target names the source that holds it
        shown = row["messages"][0]["content"].split(SOURCES_HEADING + "\n", 1)[1]
        n, answer = re.fullmatch(r"\[(\d)\] (.*)", row["messages"][-1]["content"], re.DOTALL).groups()
        source = next(line for line in shown.split("\n[") if line.lstrip("[").startswith(f"{n}]"))
        assert answer in source or "## Ölwechsel" in source
    plain, plain_stats = add_contexts(rows, k=2, unanswerable=0.0, pool=sections)
    assert plain_stats.from_documents == 0 and rows[0]["messages"][1]["content"] in plain[0]["messages"][0]["content"]


def test_a_name_the_documents_never_mention_is_not_found_without_running_the_model(ws: Workspace,
                                                                                   data: Data) -> None:
    from kifabrik.kb.build import build_kb
    from kifabrik.kb.grounding import NOT_FOUND, ground
    from kifabrik.kb.search import KnowledgeBase

    kb = KnowledgeBase.open(ws, build_kb(ws, "wissen", [data.chats, data.handbook]))
    assert kb.unknown_names("Was bedeutet E999 an der DM 320?") == ["E999"]  # E615/E205 are known codes
    assert kb.unknown_names("Welches Öl braucht die DM 900?") == ["DM 900"]  # DM 250, DM 320 are known
    # known names, hyphenated numbers (orders, IBAN-like) and letters the documents never use as names
    assert kb.unknown_names("Welches Öl braucht die DM 320? Auftrag A-2025-44199, Ansprechpartner W 56") == []
    asked = [{"role": "user", "content": "Was bedeutet der Fehler E999 an der Fräse?"}]
    grounded = ground(kb, asked, k=2, purpose="evaluation", known_names=True)
    assert not grounded.found and grounded.not_found == f"{NOT_FOUND} Meine Unterlagen nennen E999 nicht."
    assert ground(kb, asked, k=2, purpose="evaluation").found  # off: the nearest codes are retrieved


def test_a_question_whose_best_match_is_withheld_by_policy_is_not_found(ws: Workspace, data: Data) -> None:
    """A confidential passage behind a question is not answered around: the lesser passages left do not answer it."""
    from kifabrik.kb.build import build_kb
    from kifabrik.kb.grounding import NOT_FOUND, ground
    from kifabrik.kb.search import KnowledgeBase

    kb = KnowledgeBase.open(ws, build_kb(ws, "wissen", [data.chats, data.handbook, data.secret]))
    asked = [{"role": "user", "content": SECRET_QA[0]}]
    grounded = ground(kb, asked, k=2, purpose="serving", refuse_withheld=True)
    assert grounded.withheld and not grounded.found and grounded.not_found == NOT_FOUND
    # without the rule the next-best (non-answering) passages are shown; never the withheld one
    loose = ground(kb, asked, k=2, purpose="serving")
    assert not loose.withheld and all(SECRET_QA[1] not in s.text for s in loose.sources)
    # evaluation may read the secret dataset: its passage is the best match and is shown
    assert any(SECRET_QA[1] in s.text for s in ground(kb, asked, k=2, purpose="evaluation",
                                                      refuse_withheld=True).sources)
    # a question whose best match may be served is answered as before
    assert ground(kb, [{"role": "user", "content": QA[0][0]}], k=2, purpose="serving", refuse_withheld=True).found


def test_sources_say_which_one_the_answer_cites() -> None:
    from kifabrik.kb.grounding import with_citations

    sources = [{"n": 1, "text": "a"}, {"n": 2, "text": "b"}, {"n": 3, "text": "c"}]
    assert [s["cited"] for s in with_citations(sources, "Quelle [2]: b, siehe auch [3].")] == [False, True, True]
    assert not any(s["cited"] for s in with_citations(sources, "Dazu liegen mir keine Informationen vor."))


def test_cli_records_the_precision_of_a_fach_llm_and_refuses_an_unknown_one(cli: Any, ws: Workspace, data: Data,
                                                                            tiny_model: ArtifactRecord) -> None:
    from kifabrik.kb.build import build_kb

    build_kb(ws, "wissen", [data.chats])
    made = cli("fach-llm", "create", "schnell", "--model", "tiny", "--kb", "wissen", "--dtype", "bfloat16")
    assert made.code == 0 and "runs in bfloat16" in made.out
    assert "dtype bfloat16" in cli("fach-llm", "list").out
    bad = cli("fach-llm", "create", "kaputt", "--model", "tiny", "--kb", "wissen", "--dtype", "int4")
    assert bad.code == 1 and "dtype 'int4' is not known" in bad.err and "Traceback" not in bad.err


def test_sources_are_numbered_by_rank_and_the_best_stands_next_to_the_question() -> None:
    from kifabrik.kb.grounding import SOURCES_HEADING, with_sources

    asked = [{"role": "system", "content": "Sie sind der Service."}, {"role": "user", "content": "Frage?"}]
    system, user = with_sources(asked, ["beste Quelle", "zweite", "dritte"])
    assert system["content"] == f"Sie sind der Service.\n\n{SOURCES_HEADING}\n[3] dritte\n[2] zweite\n[1] beste Quelle"
    assert user == asked[1]


def test_related_unanswerable_rows_show_the_asked_machine_without_the_answer() -> None:
    """`related`: a row turned unanswerable shows the best passages about what it asks that cannot hold its
    answer (the same machine, another fact), as a question the documents do not answer meets when served."""
    from kifabrik.kb.contexts import add_contexts, may_hold
    from kifabrik.kb.grounding import NOT_FOUND, SOURCES_HEADING
    from kifabrik.kb.tokenize import Tokenizer

    tok = Tokenizer.default()
    question = "Welchen Luftdruck braucht die Spannvorrichtung der DM 320?"
    answer = "Die Spannvorrichtung der DM 320 braucht 6 bar Luftdruck."
    about = ["Für die Drehmaschine DM 320 empfehlen wir Spindelöl ISO VG 22, gewechselt alle 1500 Betriebsstunden.",
             "Auf die Drehmaschine DM 320 geben wir 24 Monate Garantie ab Inbetriebnahme.",
             "Die DM 320 hat eine Spannvorrichtung, die mit 6 bar Luftdruck arbeitet."]  # holds the answer
    others = ["Die Betriebsanleitung der Bandsäge BS 320 steht im Kundenportal als PDF bereit.",
              "Der Spindelfilter hat die Artikelnummer SM-7702-30.", "Neue Maschinen haben 24 Monate Garantie."]
    assert may_hold(answer, question, about[2], tok) and not any(may_hold(answer, question, t, tok) for t in about[:2])
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in [(question, answer), *((f"Frage {i}?", t) for i, t in enumerate(about + others))]]

    def shown(out: list[dict[str, Any]]) -> str:
        return str(out[0]["messages"][0]["content"].split(SOURCES_HEADING + "\n", 1)[1])

    out, stats = add_contexts(rows, k=2, unanswerable=0.999, related=1.0, seed=1)
    assert out[0]["messages"][-1]["content"] == NOT_FOUND and stats.related >= 1
    assert about[0] in shown(out) and about[1] in shown(out)  # the DM 320's other facts ...
    assert about[2] not in shown(out) and answer not in shown(out)  # ... never one that may hold the answer
    plain, plain_stats = add_contexts(rows, k=2, unanswerable=0.999, seed=1)
    assert plain_stats.related == 0 and "DM 320" not in shown(plain)  # by default: sources that do not name it
    assert add_contexts(rows, k=2, unanswerable=0.999, related=0.0, seed=1)[0] == plain  # off: rows unchanged
