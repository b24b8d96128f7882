"""Running a recipe file from the command line (`kifabrik run`, `kifabrik demo`, `kifabrik train --recipe`)."""

from __future__ import annotations

from pathlib import Path

from kifabrik.cli.common import out, workspace
from kifabrik.config import set_offline


def run_recipe_file(path: Path, overrides: list[str], online: bool, check_only: bool) -> None:
    """Validate a recipe file completely, then run it, printing each step's outputs."""
    set_offline(online)
    from kifabrik.pipeline import StepResult, load_recipe, run_recipe

    validated = load_recipe(path, overrides)
    steps = ", ".join(validated.step_name(i) for i in range(len(validated.steps))) or "none"
    out.print(f"recipe [bold]{validated.recipe.name}[/bold] is valid: model {validated.recipe.model.source}; steps: {steps}")
    if check_only:
        return
    ws = workspace()

    def show(step: StepResult) -> None:
        out.print(f"[green]✓[/green] {step.name} ({step.stage}), run {step.run_id[:12]}")
        for rec in step.outputs:
            out.print(f"    {rec.kind} {rec.ref}  {ws.path(rec)}")
            if rec.kind == "release":
                out.print(f"    documents: {ws.path(rec) / 'documents'}")
            if rec.kind == "evaluation" and (ws.path(rec) / "report.html").exists():
                out.print(f"    report: {ws.path(rec) / 'report.html'}")
            answers = ws.path(rec) / "answers.jsonl"
            if rec.kind == "generations" and answers.exists():
                import json

                for line in answers.read_text(encoding="utf-8").splitlines():
                    row = json.loads(line)
                    out.print(f"    [bold]Q[/bold] ({row.get('lang') or '?'}): {row['prompt']}")
                    out.print(f"    [bold]A[/bold]: {row['answer']}")

    result = run_recipe(ws, validated, online=online, on_step=show)
    out.print(f"model {result.model.ref} ({result.model.id[:12]})")
    out.print(f"pipeline {result.pipeline_id} finished; runs: kifabrik runs list --pipeline {result.pipeline_id[:12]}")
    out.print(f"results are in {ws.settings.store_dir} (catalog: {ws.settings.database_url})")
