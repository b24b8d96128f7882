"""Task files: schema errors with file:line, bad items, empty tasks — all before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from evalkit import MC_ITEMS, write_task

from kifabrik.errors import KifabrikError
from kifabrik.evaluate.tasks import load_task


def test_valid_task_renders_items(mc_task: Path) -> None:
    task = load_task(mc_task)
    assert [it.gold for it in task.items] == [0, 0, 0, 0]  # the answer given as text resolves to its index
    assert task.items[1].prompt == "Please check the hydraulic"
    assert task.items[0].lang == "de"


def test_unknown_key_and_wrong_type_name_file_and_line(tmp_path: Path) -> None:
    path = write_task(tmp_path, "t", "name: t\ntype: multiple_choice\nitems: t.jsonl\nchoice_field: x\n"
                      "max_new_tokens: many\n", MC_ITEMS)
    with pytest.raises(KifabrikError) as err:
        load_task(path)
    msg = str(err.value)
    assert f"{path}:4: choice_field: unknown key" in msg
    assert f"{path}:5: max_new_tokens" in msg


def test_unknown_task_type(tmp_path: Path) -> None:
    path = write_task(tmp_path, "t", "name: t\ntype: essay\nitems: t.jsonl\n", MC_ITEMS)
    with pytest.raises(KifabrikError, match=r"t.yaml:2: type"):
        load_task(path)


def test_answer_not_among_choices_names_the_item_line(tmp_path: Path) -> None:
    items = [*MC_ITEMS[:2], {"question": "q", "choices": ["a", "b"], "answer": "c"},
             {"question": "q", "choices": ["a", "b"], "answer": 5}]
    path = write_task(tmp_path, "t", "name: t\ntype: multiple_choice\nitems: t.jsonl\n", items)
    with pytest.raises(KifabrikError) as err:
        load_task(path)
    msg = str(err.value)
    assert "t.jsonl:3: answer 'c' is not among the choices ['a', 'b']" in msg
    assert "t.jsonl:4: answer index 5 is out of range" in msg


def test_missing_template_field_and_bad_json(tmp_path: Path) -> None:
    path = write_task(tmp_path, "t", "name: t\ntype: generation\nitems: t.jsonl\nprompt: '{{ frage }}'\n",
                      [{"question": "q", "answer": "a"}])
    with pytest.raises(KifabrikError, match=r"t.jsonl:1: the prompt template needs a field the item lacks"):
        load_task(path)
    (tmp_path / "t.jsonl").write_text('{"question": "q", "answer": "a"}\n{broken\n', encoding="utf-8")
    with pytest.raises(KifabrikError, match=r"t.jsonl:2: invalid JSON"):
        load_task(path)


def test_empty_task_and_regex_without_pattern(tmp_path: Path) -> None:
    path = write_task(tmp_path, "t", "name: t\ntype: generation\nitems: t.jsonl\n", [])
    with pytest.raises(KifabrikError, match="has no items"):
        load_task(path)
    path = write_task(tmp_path, "u", "name: u\ntype: generation\nitems: []\nmetrics: [regex]\n")
    with pytest.raises(KifabrikError, match="metric regex needs a `regex:` pattern"):
        load_task(path)
    path = write_task(tmp_path, "v", "name: v\ntype: judge\nitems: [{question: q}]\n")
    with pytest.raises(KifabrikError, match="needs a `judge:` section"):
        load_task(path)


def test_bundled_task_loads() -> None:
    from kifabrik.evaluate.suites import data_file

    task = load_task(data_file("tasks/werkstatt.yaml"))
    assert len(task.items) == 24 and {it.lang for it in task.items} == {"de", "en"}
    assert task.items[0].prompt.endswith("\nAntwort:") and task.items[1].prompt.endswith("\nAnswer:")
