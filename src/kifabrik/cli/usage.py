"""`kifabrik usage`: the resources the runs used, summed per project and stage."""

from __future__ import annotations

from typing import Annotated

import typer

from kifabrik.cli import tables
from kifabrik.cli.common import out, print_json, workspace


def usage(project: Annotated[str | None, typer.Option(help="Only this project's runs.")] = None,
          since: Annotated[str | None, typer.Option(help="Only runs started on this day (YYYY-MM-DD, UTC) or later.")] = None,
          wide: Annotated[bool, typer.Option("--wide", help="Project names never cut, however wide.")] = False,
          as_json: Annotated[bool, typer.Option("--json", help="Print the sums as JSON.")] = False) -> None:
    """Sum what the runs used per project and stage: runs, wall hours, cpu-hours, gpu-hours.

    A run counts the cpus and gpus it had for its wall time (from Slurm where it ran as a job);
    runs still going are not counted yet.
    """
    from kifabrik.usage import parse_since, summarise

    start = parse_since(since) if since is not None else None  # a bad date fails before the catalog opens
    rows = summarise(workspace().catalog.list_runs(limit=None, project=project, since=start))
    if as_json:
        print_json([row.__dict__ for row in rows])
        return
    if not rows:
        out.print("no finished runs" + (f" of project {project!r}" if project else "")
                  + (f" since {since}" if since else ""))
        return
    body = [[r.project, r.stage, str(r.runs), f"{r.wall_hours:.3f}", f"{r.cpu_hours:.3f}", f"{r.gpu_hours:.3f}"]
            for r in rows]
    lines: list[list[str]] = []
    for name in dict.fromkeys(r.project for r in rows):
        mine = [r for r in rows if r.project == name]
        lines += [b for r, b in zip(rows, body, strict=True) if r.project == name]
        if len(mine) > 1:
            lines.append([name, "(all)", str(sum(r.runs for r in mine)), f"{sum(r.wall_hours for r in mine):.3f}",
                          f"{sum(r.cpu_hours for r in mine):.3f}", f"{sum(r.gpu_hours for r in mine):.3f}"])
    tables.show(["project", "stage", "runs", "wall h", "cpu h", "gpu h"], lines, wide=wide, caps={0: 24}, flex=0)
