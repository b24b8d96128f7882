"""`kifabrik agent RECIPE`: run a tool-using agent on a served or local model."""

from __future__ import annotations

from typing import Annotated

import typer

from kifabrik.cli.common import out, print_json, workspace
from kifabrik.cli.options import ModelFlags
from kifabrik.errors import KifabrikError
from kifabrik.models.backend import BackendOptions


def _agent(
    runtime: BackendOptions,
    recipe: Annotated[str, typer.Argument(help="Agent recipe YAML, or a bundled one: schmidt-demo.")],
    task: Annotated[list[str] | None, typer.Option("--task", help="Task to run (repeatable; default: the recipe's).")] = None,
    model: Annotated[str | None, typer.Option(help="Use this registered model/adapter instead of the recipe's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Run a tool-using agent: the model calls allow-listed tools until it answers (bounded steps and retries)."""
    from kifabrik.agents.loop import Step
    from kifabrik.agents.recipe import as_dict, load_agent_recipe, open_agent

    spec = load_agent_recipe(recipe)
    if model:
        spec = spec.model_copy(update={"model": model, "server": None})
    if runtime.model_fields_set:  # --backend / --gguf-type given: over the recipe's
        spec = spec.model_copy(update=runtime.model_dump(exclude_unset=True))
    tasks = task or spec.tasks
    if not tasks:
        raise KifabrikError(f"agent {spec.name!r} has no tasks", hint="pass --task \"...\"")
    ws = workspace()
    run = open_agent(ws, spec)
    results = []
    try:
        for t in tasks:
            if not as_json:
                out.print(f"[bold]task:[/bold] {t}")

            def show(step: Step) -> None:
                if as_json:
                    return
                kind, text = step.kind, step.text
                if kind == "tool":
                    out.print(f"  [green]tool[/green] {step.tool}({step.arguments}) -> {text[:300]}")
                elif kind == "error":
                    out.print(f"  [red]error[/red] {text[:300]}")
                    if step.raw:
                        out.print(f"    model wrote: {step.raw[:300]!r}")

            result = run.run(t, on_step=show)
            ws.catalog.audit("agent.task", actor="agent", subject=None,
                             details={"recipe": spec.name, "status": result.status, "reason": result.reason,
                                      "tool_calls": [s.tool for s in result.steps if s.tool]})
            results.append({"task": t, **as_dict(result)})
            if not as_json:
                if result.status == "answered":
                    out.print(f"  [bold]answer:[/bold] {result.answer}\n")
                else:
                    label = "[red]gave up[/red]" if result.status == "gave_up" else "[yellow]stopped[/yellow]"
                    out.print(f"  {label}: {result.reason}\n")
    finally:
        run.close()
    if as_json:
        print_json(results)


#: `--backend` and `--gguf-type` (the runtime's option model) go over the recipe's fields of the same name.
agent = ModelFlags(BackendOptions).command(_agent)
