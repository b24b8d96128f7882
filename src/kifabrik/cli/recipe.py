"""Running a recipe file from the command line (`kifabrik run`, `kifabrik demo`, `kifabrik train --recipe`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.cli.common import out, workspace
from kifabrik.config import set_offline
from kifabrik.errors import KifabrikError
from kifabrik.workspace import Workspace


def run_recipe_file(path: Path, overrides: list[str], online: bool, check_only: bool, *, reuse: bool = True,
                    executor: str | None = None, dry_run: bool = False, pipeline_id: str | None = None,
                    only: str | None = None) -> None:
    """Validate a recipe file completely, then run it (here, or as Slurm jobs), printing each step's outputs."""
    set_offline(online)
    from kifabrik.pipeline import StepResult, load_recipe, run_recipe

    if executor not in (None, "local", "slurm"):
        raise KifabrikError(f"--executor {executor!r}: unknown executor", hint="use --executor local or --executor slurm")
    ws = workspace()  # --check resolves the recipe's references against this catalog too
    validated = load_recipe(path, overrides, ws)
    kind = executor or (validated.recipe.executor.kind if validated.recipe.executor else "local")
    if only is not None:  # one step of a pipeline, inside an executor's job: it runs here
        kind = "local"
    steps = ", ".join(validated.step_name(i) for i in range(len(validated.steps))) or "none"
    if only is None:
        out.print(f"recipe [bold]{validated.recipe.name}[/bold] is valid: model {validated.recipe.model.source}; "
                  f"steps: {steps}")
    if check_only:
        return
    if kind == "slurm":
        if online:
            raise KifabrikError("--online does not go with --executor slurm: compute nodes download nothing",
                                hint="register the model and data first (kifabrik models add / data import --online), "
                                     "then submit")
        from kifabrik.executors import slurm

        pid = slurm.submit(ws, validated, path, overrides=overrides, reuse=reuse, dry_run=dry_run,
                           echo=lambda text: out.print(text, markup=False, highlight=False, soft_wrap=True))
        if not dry_run:
            out.print(f"pipeline {pid} submitted; follow it: kifabrik runs list --pipeline {pid[:12]}; "
                      f"cancel it: kifabrik runs cancel {pid[:12]}")
        return
    if dry_run:
        raise KifabrikError("--dry-run prints Slurm job scripts", hint="add --executor slurm")

    def show(step: StepResult) -> None:
        out.print(f"[green]✓[/green] {step.name} ({step.stage}), run {step.run_id[:12]}")
        for rec in step.outputs:
            out.print(f"    {rec.kind} {rec.ref}  {ws.path(rec)}")
            if rec.kind == "release":
                out.print(f"    documents: {ws.path(rec) / 'documents'}")
            if rec.kind in ("release", "document"):
                pdf = ws.path(rec) / ("documents/pdf" if rec.kind == "release" else "pdf")
                if pdf.is_dir():
                    out.print(f"    PDF: {pdf} ({', '.join(sorted(p.name for p in pdf.glob('*.pdf')))})")
            if rec.kind == "evaluation" and (ws.path(rec) / "report.html").exists():
                out.print(f"    report: {ws.path(rec) / 'report.html'}")
            answers = ws.path(rec) / "answers.jsonl"
            if rec.kind == "generations" and answers.exists():
                import json

                for line in answers.read_text(encoding="utf-8").splitlines():
                    row = json.loads(line)
                    out.print(f"    [bold]Q[/bold] ({row.get('lang') or '?'}): {row['prompt']}")
                    out.print(f"    [bold]A[/bold]: {row['answer']}")

    result = run_recipe(ws, validated, online=online, on_step=show, reuse=reuse, pipeline_id=pipeline_id, only=only)
    if only is not None:
        return
    print_facts_summary(ws, [rec for step in result.steps for rec in step.outputs if rec.kind == "evaluation"])
    out.print(f"model {result.model.ref} ({result.model.id[:12]})")
    out.print(f"pipeline {result.pipeline_id} finished; runs: kifabrik runs list --pipeline {result.pipeline_id[:12]}")
    out.print(f"results are in {ws.settings.store_dir} (catalog: {ws.settings.database_url})")


def _pct(stats: dict[str, Any] | None, value: float | None) -> str:
    if value is None or value != value:
        return "-"
    if not stats:
        return f"{value:.0%}"
    return f"{value:.0%} [{stats['ci_low']:.0%}-{stats['ci_high']:.0%}] n={stats['n']}"


def print_facts_summary(ws: Workspace, evaluations: list[ArtifactRecord]) -> None:
    """One line per evaluated model (baselines included) of every task with the `facts` metric, with 95 % CIs."""
    import json

    from kifabrik.errors import NotFoundError

    records, seen = list(evaluations), set()
    rows: dict[str, list[tuple[str, str, str, str]]] = {}
    while records:
        rec = records.pop(0)
        if rec.id in seen:
            continue
        seen.add(rec.id)
        results = json.loads((ws.path(rec) / "results.json").read_text(encoding="utf-8"))
        baseline_id = (results.get("baseline") or {}).get("evaluation_id")
        if baseline_id:
            try:
                records.append(ws.catalog.get_artifact(baseline_id, "evaluation"))
            except NotFoundError:
                pass
        model = results["model"]
        knowledge = "-"
        if model.get("kind") == "fach-llm" and model.get("id"):
            knowledge = str(ws.catalog.get_artifact(model["id"]).meta.get("kb") or "-")
        for task in results.get("tasks", []):
            metrics, stats = task.get("metrics", {}), task.get("stats", {})
            if "facts" in metrics:
                rows.setdefault(task["name"], []).append((
                    model["ref"], knowledge, _pct(stats.get("facts"), metrics.get("facts")),
                    _pct(stats.get("hallucination_rate"), metrics.get("hallucination_rate"))))
    from rich.table import Table

    for task_name, lines in rows.items():
        table = Table(title=f"{task_name}: Fakten (95 % Konfidenzintervall, n Fragen)")
        for col in ("Modell", "Wissensbasis", "Fakten richtig", "Halluzinationen"):
            table.add_column(col, overflow="fold")
        for line in lines:
            table.add_row(*line)
        out.print(table, width=max(out.width, 110))
