"""Every name a recipe step uses is resolved at check time, the way the run resolves it.

`kifabrik run --check` used to accept a stage naming an undefined dataset; the run then failed
at that step, after the steps before it had run.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from kifabrik.data import ImportOptions, import_dataset
from kifabrik.errors import KifabrikError
from kifabrik.pipeline import load_recipe, run_recipe, validate_recipe
from kifabrik.workspace import Workspace

RECIPE = """\
name: t
model: {source: embedded:smollm2-135m-instruct}
datasets:
  kunden: {path: kunden.jsonl, policy_preset: internal-only}
stages:
  - stage: data
    name: import
  - stage: train
    name: fach
    data: [kunden, %s]
  - stage: generate
    model: fach
    prompts: ["Hallo?"]
"""


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _error(path: Path, ws: Workspace | None = None) -> list[str]:
    with pytest.raises(KifabrikError) as info:
        load_recipe(path, ws=ws)
    return str(info.value).splitlines()


def test_an_undefined_dataset_is_one_error_with_what_is_known(ws: Workspace, tmp_path: Path) -> None:
    path = _recipe(tmp_path, RECIPE % "gibtsnicht")
    assert _error(path, ws) == [
        f"{path}: the recipe is invalid (1 problem):",
        (f"  {path}:10: stages[1].data[1]: unknown dataset 'gibtsnicht'; known: kunden, import "
         "(or a registered dataset: kifabrik data list)"),
        "  hint: fix these and run again; nothing was run"]


def test_earlier_steps_recipe_datasets_and_registered_datasets_resolve(ws: Workspace, tmp_path: Path) -> None:
    rows = tmp_path / "alt.jsonl"
    rows.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Frage {i}?"},
                                                     {"role": "assistant", "content": f"Antwort {i}."}]}) + "\n"
                            for i in range(10)), encoding="utf-8")
    import_dataset(ws, ImportOptions(path=str(rows), name="altbestand", policy_preset="internal-only"))
    for ref in ("import", "altbestand", "altbestand@1"):  # a data step, a registered dataset by name and version
        validated = load_recipe(_recipe(tmp_path, RECIPE % ref), ws=ws)
        assert [o.name or o.stage for o in validated.steps] == ["import", "fach", "generate"]


def test_a_name_is_resolved_only_among_the_steps_before(tmp_path: Path) -> None:
    path = _recipe(tmp_path, """\
        name: t
        model: {source: embedded:smollm2-135m-instruct}
        datasets:
          kunden: {path: kunden.jsonl, policy_preset: internal-only}
        stages:
          - stage: kb
            name: wissen
            data: kunden
          - stage: data
            only: [kunden, kundn]
          - stage: kb
            name: wissen2
            data: [wissen]
          - stage: fach-llm
            model: spaeter
            kb: wissen2
          - stage: generate
            name: spaeter
            prompts: ["Hallo?"]
        """)
    # no workspace: only what is certain without the catalog (a name that is none of these may be registered)
    assert _error(path)[1:5] == [
        f"  {path}:10: stages[1].only[1]: unknown dataset 'kundn'; known (the recipe's datasets:): kunden",
        (f"  {path}:13: stages[2].data[0]: step 'wissen' (kb) produces no dataset; name a data step or a dataset; "
         "known: kunden, data"),
        (f"  {path}:15: stages[3].model: step 'spaeter' runs later; a step can only use the steps before it; "
         "known: base, wissen, data, wissen2"),
        "  hint: fix these and run again; nothing was run"]


def test_with_a_workspace_a_recipe_dataset_needs_an_earlier_data_step(ws: Workspace, tmp_path: Path) -> None:
    path = _recipe(tmp_path, """\
        name: t
        model: {source: embedded:smollm2-135m-instruct}
        datasets:
          kunden: {path: kunden.jsonl, policy_preset: internal-only}
        stages:
          - stage: kb
            data: kunden
          - stage: data
        """)
    assert _error(path, ws)[1] == (
        f"  {path}:7: stages[0].data[0]: dataset 'kunden' is in the recipe's datasets:, but no data step before "
        "this step imports it (put a `- stage: data` step first); known: none (or a registered dataset: "
        "kifabrik data list)")


def test_run_check_refuses_an_undefined_dataset(cli, tmp_path: Path) -> None:
    path = _recipe(tmp_path, RECIPE % "gibtsnicht")
    result = cli("run", str(path), "--check")
    assert result.code == 1
    assert f"{path}:10: stages[1].data[1]: unknown dataset 'gibtsnicht'; known: kunden, import" in result.err
    assert "is valid" not in result.out


def test_run_recipe_checks_references_before_anything_runs(ws: Workspace, tmp_path: Path) -> None:
    validated = validate_recipe({"name": "t", "model": {"source": "embedded:smollm2-135m-instruct"},
                                 "stages": [{"stage": "generate", "model": "gibtsnicht", "prompts": ["Hallo?"]}]})
    with pytest.raises(KifabrikError, match=r"<recipe>: stages\[0\]\.model: unknown model 'gibtsnicht'; known: base"):
        run_recipe(ws, validated)
    assert ws.catalog.list_artifacts() == [] and ws.catalog.list_runs() == []


def test_an_unknown_stage_lists_the_stages_there_are(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "name: t\nmodel: {source: x}\nstages:\n  - stage: trian\n")
    assert _error(path)[1] == (
        f"  {path}:4: stages[0].stage: unknown stage 'trian' (known stages: data, document, evaluate, fach-llm, "
        "generate, kb, merge, merge-gate, release, train)")
