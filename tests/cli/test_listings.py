"""`artifacts list`, `runs list` and `lineage` read well at 80 columns: one line per record, short ids,
cut names, each lineage node once."""

from __future__ import annotations

import json

import pytest

from kifabrik.cli.tables import ago, render, took
from kifabrik.workspace import Workspace

LONG = "kundendienst-anfragen-maschinenbau-export-2026-quartal"


@pytest.fixture
def dozen(ws: Workspace) -> list[str]:
    """Twelve artifacts, every other with a 54-character name; their ids."""
    ids = []
    for i in range(12):
        name = f"{LONG}-{i}" if i % 2 else f"ds-{i}"
        with ws.create("dataset" if i < 8 else "generations", name) as draft:
            draft.write_text("train.jsonl", f"{i}\n")
        ids.append(draft.record.id)
    return ids


def test_artifacts_list_fits_80_columns(cli, monkeypatch, dozen: list[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    lines = cli("artifacts", "list").out.splitlines()
    assert len(lines) == 13  # a header and one line per artifact: nothing wraps
    assert max(len(line) for line in lines) == 80  # the longest names are cut to fit, with "…"
    assert lines[0].split() == ["id", "kind", "name", "status", "created"]
    first, long = lines[1].split(), lines[2].split()
    assert first[:4] == [dozen[0][:12], "dataset", "ds-0@1", "ok"] and first[5] == "ago"  # created seconds ago
    # 80 columns less id 12, kind 11 ("generations"), status 6, created 7 and 4 gaps of 2 leave the name 36
    assert long[0] == dozen[1][:12] and long[2] == LONG[:33] + "…@1"  # cut to fit, the version kept
    wide = cli("artifacts", "list", "--wide").out.splitlines()
    assert wide[2].split()[:3] == [dozen[1], "dataset", f"{LONG}-1@1"]  # full id, whole name
    assert len(json.loads(cli("artifacts", "list", "--json").out)) == 12


def test_runs_list_fits_80_columns(cli, monkeypatch, ws: Workspace) -> None:
    for i in range(12):
        run = ws.catalog.start_run("train", {}, name=f"{LONG}-{i}", pipeline_id="p" * 32, recipe="demo")
        ws.catalog.finish_run(run, "failed" if i == 3 else "succeeded",
                              error="CUDA out of memory. Tried to allocate 2.00 GiB\n(GPU 0; 23.6 GiB total)" if i == 3
                              else None)
    monkeypatch.setenv("COLUMNS", "80")
    lines = cli("runs", "list").out.splitlines()
    assert len(lines) == 14 and max(len(line) for line in lines) <= 80  # a header, 12 runs, 1 error line
    assert lines[0].split() == ["run", "step", "stage", "status", "started", "took"]
    at = next(i for i, line in enumerate(lines) if "failed" in line)
    assert f"{LONG[:27]}…" in lines[at]  # a long step name is cut at 28 characters
    # the error under its run, its lines joined, cut at the 80th column
    assert lines[at + 1] == "          error: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.6 Gi…"
    wide = cli("runs", "list", "--wide").out
    assert "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.6 GiB total)" in wide and "p" * 32 in wide


def test_runs_list_shows_the_project_only_when_runs_of_two_share_the_catalog(cli, monkeypatch, ws: Workspace) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    first = ws.catalog.start_run("train", {}, name=f"{LONG}-a", project="schmidt-maschinenbau-gmbh")
    ws.catalog.finish_run(first, "succeeded")
    alone = cli("runs", "list").out.splitlines()
    assert alone[0].split() == ["run", "step", "stage", "status", "started", "took"]  # one project: no column
    assert "schmidt" not in cli("runs", "list", "--wide").out

    second = ws.catalog.start_run("evaluate", {}, name="fakten", project="mueller-ag")
    ws.catalog.finish_run(second, "succeeded")
    lines = cli("runs", "list").out.splitlines()
    assert lines[0].split() == ["run", "project", "step", "stage", "status", "started", "took"]
    assert len(lines) == 3 and max(len(line) for line in lines) == 80  # the step name is cut to fit
    newest, older = lines[1].split(), lines[2].split()
    assert newest[:3] == [second[:8], "mueller-ag", "fakten"]
    # the project cut at 12 characters; the step gets what run 8, project 12, stage 8, status 9, started 7,
    # took (its widest cell, "12ms" or "850ms", at least the header's 4) and 6 gaps of 2 leave of 80
    took = max(4, len(newest[-1]), len(older[-1]))
    step = 80 - (8 + 12 + 8 + 9 + 7 + took + 6 * 2)
    assert older[:3] == [first[:8], "schmidt-mas…", f"{LONG[:step - 1]}…"]
    wide = cli("runs", "list", "--wide").out.splitlines()
    assert wide[0].split()[:5] == ["run", "pipeline", "recipe", "project", "step"]
    assert "schmidt-maschinenbau-gmbh" in wide[2] and f"{LONG}-a" in wide[2]


def test_render_cuts_only_the_flexible_column() -> None:
    lines = render(["a", "b"], [["x" * 10, "y" * 50]], width=30, flex=1)
    assert lines == ["a           b", "xxxxxxxxxx  " + "y" * 17 + "…"]
    assert render(["a", "b"], [["x" * 10, "y" * 50]], width=None, flex=1)[1] == "x" * 10 + "  " + "y" * 50
    assert render(["a", "b"], [["x" * 10, "y" * 50 + "@12"]], width=30, flex=1, keep="@")[1] == \
        "xxxxxxxxxx  " + "y" * 14 + "…@12"


def test_relative_times() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert [ago(now - timedelta(seconds=s), now) for s in (5, 300, 3 * 3600, 6 * 86400, 40 * 86400)] == [
        "5s ago", "5m ago", "3h ago", "6d ago", "2026-10-22"]
    assert [took(now, now + timedelta(seconds=s)) for s in (0.25, 42, 185, 8040)] == ["250ms", "42s", "3m 05s",
                                                                                      "2h 14m"]


def test_lineage_prints_each_node_once(cli, ws: Workspace) -> None:
    # base and data feed two adapters; both are merged (with the base) into one model; a document of it
    # and a release of the model and the document: a DAG in which base and data are reached 5 ways
    def make(kind: str, name: str, parents: list[tuple[str, str]]) -> str:
        with ws.create(kind, name, parents=parents) as draft:
            draft.write_text("x", name)
        return draft.record.id

    base, data = make("model", "base", []), make("dataset", "daten", [])
    a1 = make("adapter", "lora-a", [(base, "base_model"), (data, "trained_on")])
    a2 = make("adapter", "lora-b", [(base, "base_model"), (data, "trained_on")])
    merged = make("model", "fach", [(a1, "merged_from"), (a2, "merged_from"), (base, "base_model")])
    docs = make("document", "fach-docs", [(merged, "documents")])
    make("release", "fach-release", [(merged, "released"), (docs, "bundles")])
    text = cli("lineage", "fach-release").out.split("\nusage restrictions")[0]
    short = {i: i[:12] for i in (base, data, a1, a2, merged, docs)}
    assert text == "\n".join([
        f"release fach-release@1 ({cli_id(ws, 'fach-release')})",
        "ancestors:",
        f"├── <- released: model fach@1 ({short[merged]})",
        f"│   ├── <- merged_from: adapter lora-a@1 ({short[a1]})",
        f"│   │   ├── <- base_model: model base@1 ({short[base]})",
        f"│   │   └── <- trained_on: dataset daten@1 ({short[data]})",
        f"│   ├── <- merged_from: adapter lora-b@1 ({short[a2]})",
        f"│   │   ├── <- base_model: model base@1 ({short[base]})",  # leaves are printed, not referenced
        f"│   │   └── <- trained_on: dataset daten@1 ({short[data]})",
        f"│   └── <- base_model: model base@1 ({short[base]})",
        f"└── <- bundles: document fach-docs@1 ({short[docs]})",
        f"    └── <- documents: model fach@1 ({short[merged]}) (*)",
        "(*) shown above with its own lineage; not repeated",
    ])


def cli_id(ws: Workspace, name: str) -> str:
    return ws.catalog.get_artifact(name).id[:12]


def test_data_and_model_listings_fit_80_columns(cli, monkeypatch, tmp_path, tiny_model) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Frage {i}?"},
                                                     {"role": "assistant", "content": f"Antwort {i}."}]}) + "\n"
                            for i in range(12)), encoding="utf-8")
    for name in (LONG, "kurz"):
        cli("data", "import", str(data), "--name", name, "--policy-preset", "company-internal", "--no-dedup")
    lines = cli("data", "list").out.splitlines()
    assert len(lines) == 3 and max(len(line) for line in lines) <= 80  # a header and one line each: nothing wraps
    assert lines[1].split()[0].endswith("…@1") and lines[2].split()[0] == "kurz@1"
    assert f"{LONG}@1" in cli("data", "list", "--wide").out
    lines = cli("models", "list").out.splitlines()
    assert len(lines) == 2 and max(len(line) for line in lines) <= 80
