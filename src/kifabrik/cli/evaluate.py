"""`kifabrik eval MODEL --task FILE | --suite NAME ...`: evaluate, judge against MISSION KI, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kifabrik.cli.common import out, print_json, workspace
from kifabrik.cli.options import Flag, ModelFlags, key_values
from kifabrik.evaluate.api import EvalOptions


def _needs(items: list[str]) -> dict[str, Any]:
    from kifabrik.evaluate.verdict import parse_needs

    return parse_needs(key_values(items, flag="--need", expected="CRITERION=NEED", hint="e.g. --need VE1=3"))


#: Every field of EvalOptions is a flag (`tasks` is `--task`, one per file).
EVAL = ModelFlags(EvalOptions, flags={
    "tasks": Flag("task", short="-t"), "suites": Flag("suite", short="-s"),
    "needs": Flag("need", type=list[str], parse=_needs, metavar="CRITERION=NEED"),
    "api_key": Flag(envvar="KIFABRIK_EVAL_API_KEY")})


def _eval(
    opts: EvalOptions,
    model: Annotated[str, typer.Argument(help="Registered model or adapter (name, name@version, id) or an endpoint URL "
                                              "(http://host:port/v1).")],
    baseline: Annotated[str | None, typer.Option(help="Also evaluate this model and compare (e.g. the base model).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the HTML report here (and the JSON results beside it).")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the evaluation record.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Evaluate a model, adapter or endpoint with tasks and MISSION KI quality suites."""
    from kifabrik.evaluate.api import evaluate, prepare

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
    stats = results.get("stats", {})
    for key, value in results["metrics"].items():
        extra = f"   baseline {base[key]:.3f}" if isinstance(base.get(key), float) else ""
        out.print(f"  {key:<38} {value:8.3f}{_interval(stats.get(key))}{extra}")
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


def _interval(stat: dict | None) -> str:
    """`  [0.12-0.45] n=40`: the 95 % interval and the item count every reported figure carries."""
    if not stat or stat.get("n") is None:
        return ""
    if stat.get("ci_low") is None or stat.get("ci_high") is None:
        return f"  n={stat['n']}"
    return f"  [{stat['ci_low']:.3f}-{stat['ci_high']:.3f}] n={stat['n']}"


eval_command = EVAL.command(_eval)
