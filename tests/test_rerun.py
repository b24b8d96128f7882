"""A recipe run twice on the same inputs records the identical artifacts and reuses its trainings."""

from __future__ import annotations

import json

from kifabrik.workspace import Workspace

ROWS = [{"messages": [{"role": "user", "content": f"Wie oft wechsle ich das Öl der Maschine {i}?"},
                      {"role": "assistant", "content": f"Alle {500 + i} Betriebsstunden."}]} for i in range(16)]

RECIPE = """\
name: twice
model:
  source: {source}
  name: tiny
datasets:
  chats:
    path: {data}
    policy_preset: internal-only
  more:
    path: {more}
    policy_preset: evaluation-only
stages:
  - stage: data
  - stage: kb
    name: wissen
    data: [chats]
  - stage: train
    name: fach
    data: [chats]
    max_steps: 2
    batch_size: 2
    save_steps: 2
    max_seq_length: 64
  - stage: fach-llm
    name: fach-kb
    model: fach
    kb: wissen
"""


def test_second_run_reuses_identical_artifacts(cli, home, tiny_model_dir, tmp_path):
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    recipe = tmp_path / "twice.yaml"
    more = tmp_path / "more.jsonl"  # a second dataset: each import then sees other datasets in the catalog
    more.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Lieferzeit Teil {i}?"},
                                                     {"role": "assistant", "content": f"{i} Werktage."}]}) + "\n"
                            for i in range(8)), encoding="utf-8")
    recipe.write_text(RECIPE.format(source=tiny_model_dir, data=data, more=more), encoding="utf-8")
    first = cli("run", str(recipe))
    assert first.code == 0, first.err
    ws = Workspace.open(home)
    before = {(r.kind, r.name): (r.id, r.version) for r in ws.catalog.list_artifacts()}
    ws.close()

    second = cli("run", str(recipe))
    assert second.code == 0, second.err
    ws = Workspace.open(home)
    try:
        after = {(r.kind, r.name): (r.id, r.version) for r in ws.catalog.list_artifacts()}
        assert after == before  # the same ids, no version 2 of anything
        runs = [r for r in ws.catalog.list_runs() if r.name in ("wissen", "fach", "fach-kb")]
        reused = [r for r in runs if r.config.get("reused_from")]
        assert sorted(r.name for r in reused) == ["fach", "fach-kb", "wissen"]
        assert all(r.outputs for r in reused)
    finally:
        ws.close()

    fresh = cli("run", str(recipe), "--no-reuse")  # run everything again: training writes a new version
    assert fresh.code == 0, fresh.err
    ws = Workspace.open(home)
    try:
        assert ws.catalog.get_artifact("twice-fach", "adapter").version == 2
    finally:
        ws.close()
