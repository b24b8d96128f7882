"""`kifabrik eval MODEL --task FILE | --suite NAME ...`: evaluate, judge against MISSION KI, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kifabrik.cli.common import out, print_json, workspace

Multi = list[str] | None


def eval_command(
    model: Annotated[str, typer.Argument(help="Registered model or adapter (name, name@version, id) or an endpoint URL "
                                              "(http://host:port/v1).")],
    task: Annotated[Multi, typer.Option("--task", "-t", help="Task YAML file (repeatable).")] = None,
    suite: Annotated[Multi, typer.Option("--suite", "-s", help="Quality suite: ve, nd, cy, da, tr, lang or all "
                                                                "(repeatable).")] = None,
    baseline: Annotated[str | None, typer.Option(help="Also evaluate this model and compare (e.g. the base model).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the HTML report here (and the JSON results beside it).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most N items per task and suite check.")] = None,
    judge: Annotated[str | None, typer.Option(help="Judge model or endpoint URL for LLM-as-judge tasks.")] = None,
    need: Annotated[Multi, typer.Option("--need", help="Protection need of a criterion, e.g. --need VE1=3 "
                                                       "(1 low, 2 moderate, 3 high; repeatable).")] = None,
    questionnaire: Annotated[Path | None, typer.Option(help="Answers to the MISSION KI protection-needs questionnaire "
                                                            "(JSON/YAML: question id -> answer).")] = None,
    catalogue: Annotated[str | None, typer.Option(help="MISSION KI VCIO.json or its folder "
                                                       "(default $KIFABRIK_MISSION_KI).")] = None,
    thresholds: Annotated[Path | None, typer.Option(help="YAML overriding the packaged score thresholds.")] = None,
    assessments: Annotated[Path | None, typer.Option(help="YAML of indicator levels assessed by people "
                                                          "(e.g. VE1.1: B).")] = None,
    train_data: Annotated[Multi, typer.Option("--train-data", help="Training dataset for the da suite "
                                                                   "(default: from the lineage).")] = None,
    endpoint_model: Annotated[str | None, typer.Option(help="Model name to send to an endpoint.")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="KIFABRIK_EVAL_API_KEY", help="API key for an endpoint.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampling and perturbations.")] = 0,
    name: Annotated[str | None, typer.Option(help="Name of the evaluation record.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Evaluate a model, adapter or endpoint with tasks and MISSION KI quality suites."""
    from kifabrik.evaluate.api import EvalOptions, evaluate, prepare
    from kifabrik.evaluate.verdict import parse_needs

    opts = EvalOptions(tasks=[str(t) for t in task or []], suites=list(suite or []), limit=limit, judge=judge,
                       needs=parse_needs(list(need or [])), questionnaire=str(questionnaire) if questionnaire else None,
                       catalogue=catalogue, thresholds=str(thresholds) if thresholds else None,
                       assessments=str(assessments) if assessments else None, train_data=list(train_data or []),
                       seed=seed, endpoint_model=endpoint_model, api_key=api_key)
    ws = workspace()
    prepared = prepare(ws, opts)  # every input checked before a model is loaded
    outcome = evaluate(ws, model, opts, baseline=baseline, report=report, name=name, prepared=prepared)
    results = outcome.results
    if as_json:
        print_json({k: v for k, v in results.items() if k != "thresholds"})
        return
    base = results.get("baseline", {}).get("metrics", {})
    out.print(f"[bold]evaluation of {results['model']['ref']}[/bold]"
              + (f"  (baseline {results['baseline']['model']['ref']})" if base else ""))
    for key, value in results["metrics"].items():
        extra = f"   baseline {base[key]:.3f}" if isinstance(base.get(key), float) else ""
        out.print(f"  {key:<38} {value:8.3f}{extra}")
    dims = results["verdict"].get("dimensions")
    if dims:
        out.print("[bold]MISSION KI[/bold] (machine evidence; open = indicators still to be assessed by people)")
        for d in dims:
            crits = ", ".join(f"{c['id']} {c['status']}" for c in d["criteria"])
            out.print(f"  {d['id']}: {d['status']}  ({crits})")
    else:
        out.print(f"[yellow]{results['verdict']['message']}[/yellow]")
    if outcome.record:
        out.print(f"evaluation {outcome.record.ref}  id {outcome.record.id[:12]}")
    if report:
        out.print(f"report: {report}  (JSON: {report.with_suffix('.json')})")
