"""Limits on the JSON and YAML a user gives: nesting depth and file size, one error naming the file.

Input nested a few thousand levels deep used to end in Python's `RecursionError` (a 2,990-line
traceback); every reader now refuses it at `MAX_DEPTH` levels with a `KifabrikError`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kifabrik import files
from kifabrik.config import load_yaml
from kifabrik.data.readers import read_json_array, read_jsonl
from kifabrik.document.facts import load_organisation
from kifabrik.errors import KifabrikError
from kifabrik.evaluate.tasks import load_task
from kifabrik.files import MAX_DEPTH, MAX_FILE_BYTES, iter_jsonl, parse_json
from kifabrik.pipeline import load_recipe
from kifabrik.policy import load_policy_file

DEPTH_MESSAGE = f"nested deeper than {MAX_DEPTH} levels"
#: Far beyond Python's recursion limit (1,000): the depth at which json and PyYAML crashed.
DEEP = 5000


def nested_json(depth: int) -> str:
    """`{"a": {"a": ... 1 ...}}`, `depth` mappings deep."""
    return '{"a": ' * depth + "1" + "}" * depth


def test_json_depth_limit_is_exact() -> None:
    assert parse_json(nested_json(MAX_DEPTH)) is not None
    with pytest.raises(files.NestingError, match=DEPTH_MESSAGE):
        parse_json(nested_json(MAX_DEPTH + 1))
    with pytest.raises(files.NestingError, match=DEPTH_MESSAGE):  # json's own RecursionError, converted
        parse_json("[" * DEEP + "]" * DEEP)


def test_yaml_depth_limit_is_exact_and_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH, encoding="utf-8")
    assert load_yaml(path) is not None
    path.write_text("[" * (MAX_DEPTH + 1) + "1" + "]" * (MAX_DEPTH + 1), encoding="utf-8")
    with pytest.raises(KifabrikError, match=f"{path}:1: {DEPTH_MESSAGE}"):
        load_yaml(path)
    # block style: level n starts on line n, so the 65th level is named by its line
    path.write_text("".join("  " * i + "- \n" for i in range(200)), encoding="utf-8")
    with pytest.raises(KifabrikError, match=f"{path}:{MAX_DEPTH + 1}: {DEPTH_MESSAGE}"):
        load_yaml(path)


def test_yaml_aliases_cannot_hide_depth_or_size(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 200)), encoding="utf-8")
    with pytest.raises(KifabrikError, match=DEPTH_MESSAGE):  # 200 levels through 200 aliases
        load_yaml(path)
    path.write_text("a: &a [*a]\n", encoding="utf-8")
    with pytest.raises(KifabrikError, match="refers to its own anchor"):
        load_yaml(path)
    # "billion laughs": 10 ** 12 nodes once expanded, from 13 short lines
    path.write_text("a0: &a0 [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 12)), encoding="utf-8")
    with pytest.raises(KifabrikError, match="aliases expand to more than"):
        load_yaml(path)
    path.write_text("system: &s Sie sind hilfreich.\nother: *s\n", encoding="utf-8")
    assert load_yaml(path) == {"system": "Sie sind hilfreich.", "other": "Sie sind hilfreich."}


def test_recipe_nested_thousands_deep_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("name: t\nmodel: {source: embedded:x}\nstages: " + "[" * DEEP + "]" * DEEP + "\n", encoding="utf-8")
    with pytest.raises(KifabrikError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}:3: {DEPTH_MESSAGE}")


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("name: t\n" + "# padding\n" * 200, encoding="utf-8")
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 1000)  # the limit is one constant, read at every call
    with pytest.raises(KifabrikError, match=f"{path}: the file is 2,008 bytes, more than the limit of 1,000 bytes"):
        load_recipe(path)
    assert MAX_FILE_BYTES == 4 * 2**20


def test_policy_file_nested_thousands_deep(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"@type": "Set", "permission": ' + "[" * DEEP + "]" * DEEP + "}", encoding="utf-8")
    with pytest.raises(KifabrikError) as info:
        load_policy_file(path)
    assert str(info.value).startswith(f"{path}: {DEPTH_MESSAGE}")


def test_policy_file_through_the_cli_gives_no_traceback(cli, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text("[" * DEEP + "]" * DEEP, encoding="utf-8")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "Hallo"}) + "\n", encoding="utf-8")
    result = cli("data", "import", str(data), "--name", "d", "--policy", str(policy))
    assert result.code == 1
    assert f"{policy}: {DEPTH_MESSAGE}" in result.err and "Traceback" not in result.err + result.out


def test_task_yaml_and_items_jsonl(tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text("name: t\ntype: generate\nitems: " + "[" * DEEP + "]" * DEEP + "\n", encoding="utf-8")
    with pytest.raises(KifabrikError, match=f"{task}:3: {DEPTH_MESSAGE}"):
        load_task(task)
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"prompt": "a", "target": "b"}) + "\n" + '{"prompt": ' + "[" * DEEP + "]" * DEEP
                     + "}\n", encoding="utf-8")
    with pytest.raises(KifabrikError, match=f"{items}:2: {DEPTH_MESSAGE}"):
        list(iter_jsonl(items))


def test_organisation_file(tmp_path: Path) -> None:
    path = tmp_path / "org.yaml"
    path.write_text("provider: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n", encoding="utf-8")
    with pytest.raises(KifabrikError, match=f"{path}:1: {DEPTH_MESSAGE}"):
        load_organisation(path)


def test_dataset_rows_too_deep_are_problems_of_their_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"text": "ok"}) + "\n" + '{"text": ' + "[" * DEEP + "]" * DEEP + "}\n"
                    + '{"text": ' + nested_json(MAX_DEPTH) + "}\n", encoding="utf-8")
    rows, problems = read_jsonl(path, "auto", "utf-8", 8 * 2**20)
    assert [r.line for r in rows] == [1]
    assert [(p.line, p.reason.split(" (")[0]) for p in problems] == [
        (2, DEPTH_MESSAGE), (3, DEPTH_MESSAGE)]  # line 3: the row's own mapping makes MAX_DEPTH + 1 levels
    array = tmp_path / "rows.json"
    array.write_text("[" * DEEP + "]" * DEEP, encoding="utf-8")
    assert [str(p) for p in read_json_array(array, "auto", "utf-8")[1]] == [
        f"{array}: {DEPTH_MESSAGE} (the limit for JSON and YAML input, kifabrik.files.MAX_DEPTH)"]


def test_evaluation_inputs_thresholds_catalogue_and_questionnaire(tmp_path: Path) -> None:
    from kifabrik.evaluate.verdict import load_thresholds, needs_from_questionnaire
    from kifabrik.mission_ki import load_catalogue

    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("acc: " + "[" * DEEP + "]" * DEEP + "\n", encoding="utf-8")
    with pytest.raises(KifabrikError, match=f"{thresholds}:1: {DEPTH_MESSAGE}"):
        load_thresholds(thresholds)
    catalogue = tmp_path / "VCIO.json"
    catalogue.write_text('{"VE": ' + "[" * DEEP + "]" * DEEP + "}", encoding="utf-8")
    with pytest.raises(KifabrikError, match=f"{catalogue}: {DEPTH_MESSAGE}"):
        load_catalogue(catalogue)
    questionnaire = tmp_path / "ProtectionNeedsAnalysis.json"  # read from beside VCIO.json
    questionnaire.write_text("[" * DEEP + "]" * DEEP, encoding="utf-8")
    with pytest.raises(KifabrikError, match=f"{questionnaire}: {DEPTH_MESSAGE}"):
        needs_from_questionnaire(catalogue, {})
