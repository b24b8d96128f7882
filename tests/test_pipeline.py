"""Recipes: validation before any work (file:line errors), overrides, runs recorded per stage."""

from __future__ import annotations

import json
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kifabrik.config import apply_overrides, load_yaml
from kifabrik.errors import KifabrikError
from kifabrik.pipeline import load_recipe

GOOD = """\
name: t
model:
  source: {source}
stages:
  - stage: generate
    name: ask
    prompts: ["Hallo?", {{text: "Wie geht es?", lang: de}}]
    max_new_tokens: 4
"""


def _write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _error(path, overrides=None) -> str:
    with pytest.raises(KifabrikError) as info:
        load_recipe(path, overrides)
    return str(info.value)


def test_valid_recipe(tmp_path):
    v = load_recipe(_write(tmp_path, GOOD.format(source="embedded:smollm2-135m-instruct")))
    assert v.recipe.name == "t" and v.step_name(0) == "ask"
    assert [p.text for p in v.steps[0].prompt_list()] == ["Hallo?", "Wie geht es?"]


def test_unknown_key_and_wrong_type_name_the_line(tmp_path):
    path = _write(tmp_path, """\
        name: t
        modell: x
        model:
          source: embedded:smollm2-135m-instruct
        stages:
          - stage: generate
            prompts: [hi]
            max_new_tokens: many
            temprature: 0.5
        """)
    msg = _error(path)
    assert "3 problems" in msg
    assert f"{path}:2: modell: unknown key" in msg
    assert f"{path}:8: stages[0].max_new_tokens:" in msg and "integer" in msg
    assert f"{path}:9: stages[0].temprature: unknown key" in msg


def test_missing_fields(tmp_path):
    msg = _error(_write(tmp_path, "name: t\nstages: []\n"))
    assert "model: required field is missing" in msg


def test_planned_stage_is_refused_not_skipped(tmp_path, monkeypatch):
    from kifabrik import pipeline

    monkeypatch.setitem(pipeline.PLANNED_STAGES, "teleport", "moving models by magic")
    path = _write(tmp_path, GOOD.format(source="x") + "  - stage: teleport\n    name: r\n")
    msg = _error(path)
    assert "stage 'teleport'" in msg and "not built yet" in msg and f"{path}:9: stages[1].stage" in msg


def test_unknown_stage_lists_known_ones(tmp_path):
    msg = _error(_write(tmp_path, GOOD.format(source="x") + "  - stage: frobnicate\n"))
    assert "unknown stage 'frobnicate'" in msg and "generate" in msg


def test_stage_key_missing_and_duplicate_names(tmp_path):
    path = _write(tmp_path, GOOD.format(source="x") + "  - name: x\n  - stage: generate\n    name: ask\n    prompts: [a]\n")
    msg = _error(path)
    assert "needs a `stage:` key" in msg
    assert "step name 'ask' is used twice" in msg


def test_invalid_yaml_names_the_line(tmp_path):
    msg = _error(_write(tmp_path, "name: t\nmodel: [unclosed\n"))
    assert "recipe.yaml:3" in msg or "recipe.yaml:2" in msg
    assert "invalid YAML" in msg


def test_missing_file(tmp_path):
    assert "no such file" in _error(tmp_path / "nope.yaml")


def test_overrides_by_index_and_by_step_name(tmp_path):
    path = _write(tmp_path, GOOD.format(source="x"))
    v = load_recipe(path, ["stages.ask.max_new_tokens=9", "model.source=embedded:y", "stages.0.temperature=0.5"])
    assert v.steps[0].max_new_tokens == 9 and v.steps[0].temperature == 0.5
    assert v.recipe.model.source == "embedded:y"
    assert "index 3 out of range" in _error(path, ["stages.3.seed=1"])
    assert "expected KEY=VALUE" in _error(path, ["stages.0.seed"])
    # An override can make a recipe invalid; the error still names the field.
    assert "stages[0].max_new_tokens" in _error(path, ["stages.ask.max_new_tokens=0"])


@given(st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True),
                       st.one_of(st.integers(), st.text(alphabet="abc xyz", max_size=5), st.booleans()), max_size=5))
def test_override_sets_exactly_the_value(pairs):
    data: dict = {"a": {"b": 1}}
    apply_overrides(data, [f"x.{k}={json.dumps(v)}" for k, v in pairs.items()])
    assert data["a"] == {"b": 1}
    assert data.get("x", {}) == pairs


def test_load_yaml_keeps_lines(tmp_path):
    data = load_yaml(_write(tmp_path, "a:\n  b: 1\n  c:\n    - x\n    - y\n"))
    assert data.lines == {"a": 1} and data["a"].lines == {"b": 2, "c": 3}
    assert data["a"]["c"].lines == [4, 5]


def test_recipe_datasets_are_typed_at_load_with_their_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent("""\
        name: r
        model: {source: embedded:smollm2-135m-instruct}
        datasets:
          a:
            path: x.jsonl
            polcy_preset: internal-only
          b:
            test_fraction: 2
        stages:
          - stage: generate
            prompts: [hi]
    """))
    with pytest.raises(KifabrikError) as info:
        load_recipe(path)
    message = str(info.value)
    assert f"{path}:6: datasets.a.polcy_preset: unknown key" in message
    assert f"{path}:7: datasets.b.path: required field is missing" in message  # the line of `b:`
    assert f"{path}:8: datasets.b.test_fraction" in message
