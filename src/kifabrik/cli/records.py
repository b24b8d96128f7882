"""Commands over catalog records: runs, artifacts, audit log, verify, lineage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kifabrik.cli import tables
from kifabrik.cli.common import err, out, print_json, when, workspace
from kifabrik.errors import KifabrikError

runs_app = typer.Typer(help="Runs: one record per executed stage.", no_args_is_help=True)
artifacts_app = typer.Typer(help="All artifacts in the store.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@runs_app.command("list")
def runs_list(pipeline: Annotated[str | None, typer.Option(help="Only the runs of this pipeline (id prefix).")] = None,
              limit: Annotated[int, typer.Option(help="How many.")] = 50,
              wide: Annotated[bool, typer.Option("--wide", help="Every column in full: ids, pipeline, recipe, "
                                                               "times and errors, however wide.")] = False,
              as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False) -> None:
    """List recent runs, newest first (`kifabrik runs show RUN` for one in full)."""
    ws = workspace()
    runs = ws.catalog.list_runs(limit=limit if not pipeline else 10_000)
    if pipeline:
        runs = [r for r in runs if r.pipeline_id and r.pipeline_id.startswith(pipeline)]
    runs = _with_jobs(ws, runs)
    if as_json:
        print_json([r.__dict__ for r in runs])
        return
    # One project, as on a laptop: the column would repeat one word. On a shared cluster catalog,
    # runs of several projects: it says whose each run is (what `kifabrik usage` sums per project).
    projects = len({r.project for r in runs}) > 1
    if wide:
        tables.show(["run", "pipeline", "recipe", *(["project"] if projects else []), "step", "stage", "status",
                     "started", "ended", "took", "error"],
                    [[r.id, r.pipeline_id or "-", r.recipe or "-", *([r.project] if projects else []), r.name or "-",
                      r.stage, _status(r), when(r.started_at), when(r.ended_at), tables.took(r.started_at, r.ended_at),
                      " ".join((r.error or "").split())]
                     for r in runs], wide=True)
        return
    width = tables.terminal_width()
    step = 2 if projects else 1
    lines = tables.render(["run", *(["project"] if projects else []), "step", "stage", "status", "started", "took"],
                          [[r.id[:8], *([r.project] if projects else []), r.name or "-", r.stage, _status(r),
                            tables.ago(r.started_at), tables.took(r.started_at, r.ended_at)] for r in runs],
                          width=width, caps={1: 12, step: 28} if projects else {step: 28}, flex=step)
    tables.echo(lines[0])
    for r, line in zip(runs, lines[1:], strict=True):
        tables.echo(line)
        if r.error:  # under its run, on one line cut at the terminal's edge (`runs show RUN` has all of it)
            tables.echo(tables.cut(f"          error: {' '.join(r.error.split())}", width))


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="Run id or prefix.")]) -> None:
    """Show one run with its resolved config, error and outputs (and its Slurm job's state)."""
    ws = workspace()
    print_json(_with_jobs(ws, [ws.catalog.get_run(run_id)])[0].__dict__)


@runs_app.command("cancel")
def runs_cancel(ref: Annotated[str, typer.Argument(help="Run id or pipeline id (or a prefix of either).")]) -> None:
    """Cancel a run's Slurm job, or every job of a pipeline (scancel), and mark the runs cancelled."""
    from kifabrik.errors import NotFoundError
    from kifabrik.executors import slurm

    ws = workspace()
    runs = [r for r in ws.catalog.list_runs(limit=100_000) if r.pipeline_id and r.pipeline_id.startswith(ref)]
    if not runs:
        try:
            runs = [ws.catalog.get_run(ref)]
        except NotFoundError:
            raise NotFoundError(f"no run or pipeline {ref!r}", hint="list them with `kifabrik runs list`") from None
    cancelled = slurm.cancel_runs(ws, slurm.refresh(ws, runs))
    for r in cancelled:
        out.print(f"cancelled run {r.id[:12]} ({r.name}): {r.error}")
    if not cancelled:
        out.print(f"nothing to cancel: {len(runs)} run(s), none queued or running")


def _with_jobs(ws: Any, runs: list[Any]) -> list[Any]:
    """The runs, those on Slurm with their jobs' current state (`scontrol show job`)."""
    if not any(r.executor for r in runs):
        return runs
    from kifabrik.executors import slurm

    return slurm.refresh(ws, runs)


def _status(run: Any) -> str:
    from kifabrik.executors.slurm import slurm_text

    text = slurm_text(run) if run.executor else ""
    return f"{run.status} ({text})" if text else run.status


@artifacts_app.command("list")
def artifacts_list(kind: Annotated[str | None, typer.Option(help="Only this kind (model, generations, ...).")] = None,
                   wide: Annotated[bool, typer.Option("--wide", help="Full ids and times, names never cut.")] = False,
                   as_json: Annotated[bool, typer.Option("--json", help="Print the artifacts as JSON.")] = False) -> None:
    """List artifacts, oldest first: short id, kind, name@version, status, age."""
    recs = workspace().catalog.list_artifacts(kind)
    if as_json:
        print_json([{"id": r.id, "kind": r.kind, "name": r.name, "version": r.version, "status": r.status,
                     "created_at": r.created_at} for r in recs])
        return
    if wide:
        tables.show(["id", "kind", "name", "status", "created"],
                    [[r.id, r.kind, r.ref, r.status, when(r.created_at)] for r in recs], wide=True)
        return
    tables.show(["id", "kind", "name", "status", "created"],
                [[r.id[:12], r.kind, r.ref, r.status, tables.ago(r.created_at)] for r in recs], wide=False, flex=2,
                keep="@")  # a cut name keeps its version


@audit_app.command("list")
def audit_list(action: Annotated[str | None, typer.Option(help="Only entries of this action, e.g. policy.check.")] = None,
               subject: Annotated[str | None, typer.Option(help="Only entries about this artifact (name, name@version or id).")] = None,
               limit: Annotated[int, typer.Option(min=1, help="The newest N entries.")] = 50,
               as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON.")] = False) -> None:
    """Read the audit log: who did what to which artifact, with the decision, newest last."""
    ws = workspace()
    subject_id = ws.catalog.get_artifact(subject).id if subject else None
    entries = ws.catalog.audit_entries(action, subject=subject_id)[-limit:]
    if as_json:
        print_json([{"seq": e.seq, "ts": e.ts, "actor": e.actor, "action": e.action, "subject": e.subject,
                     "decision": e.decision, "details": e.details, "hash": e.hash} for e in entries])
        return
    table = Table("seq", "time", "actor", "action", "subject", "decision", "details")
    for e in entries:
        details = json.dumps(e.details, ensure_ascii=False, default=str)
        table.add_row(str(e.seq), when(e.ts), e.actor, e.action, (e.subject or "-")[:12], e.decision or "-",
                      details if len(details) <= 80 else details[:77] + "...")
    out.print(table)


@audit_app.command("verify")
def audit_verify(head: Annotated[list[Path] | None, typer.Option(
        "--head", help="Also check against an earlier head, e.g. a release bundle's audit-head.json (repeatable).")] = None
) -> None:
    """Re-compute the audit log's hash chain and check it against its anchored head (and --head copies)."""
    catalog = workspace().catalog
    problems = catalog.verify_audit(list(head or []))
    if problems:
        for p in problems:
            err.print(f"[red]{p}[/red]")
        raise typer.Exit(1)
    anchored = catalog.audit_head() or {}
    late = catalog.unanchored()
    out.print(f"audit log intact; anchored head: entry {anchored.get('seq', '-')}"
              + (f" ({late} newer entr{'y' if late == 1 else 'ies'} not anchored yet)" if late else ""))


def verify(ref: Annotated[str, typer.Argument(help="Artifact name, name@version or id.")]) -> None:
    """Re-hash an artifact's files and report any change."""
    ws = workspace()
    record = ws.catalog.get_artifact(ref)
    result = ws.store.verify(record.id)
    if result.ok:
        out.print(f"[green]ok[/green] {record.kind} {record.ref} ({record.id[:12]}): {result.files_checked} files unchanged")
        return
    err.print(f"[red]changed[/red] {record.kind} {record.ref} ({record.id[:12]}):")
    for p in result.problems:
        err.print(f"  {p}")
    raise typer.Exit(1)


def lineage(ref: Annotated[str, typer.Argument(help="Artifact name, name@version or id.")],
            format: Annotated[str, typer.Option("--format", help="text, json or dot.")] = "text") -> None:
    """Show an artifact's ancestors and descendants."""
    from kifabrik.catalog import lineage as lin

    if format not in ("text", "json", "dot"):
        raise KifabrikError(f"--format {format!r} is not known", hint="use text, json or dot")
    from kifabrik.policy import restrictions

    ws = workspace()
    graph = lin.lineage(ws.catalog, ref)
    carried = restrictions(ws, graph.root.id)
    if format == "json":
        data = json.loads(lin.as_json(graph))
        data["restrictions"] = carried
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif format == "dot":
        print(lin.as_dot(graph))
    else:
        print(lin.as_text(graph))
        print(restriction_text(carried))


def restriction_text(carried: list[dict[str, Any]]) -> str:
    """Usage restrictions an artifact carries (own and inherited), one line each."""
    if not carried:
        return "usage restrictions: none recorded"
    lines = ["usage restrictions (own and inherited along lineage):"]
    for r in carried:
        where = ", ".join(f"{s['kind']} {s['ref']}" for s in r["sources"])
        lines.append(f"  - {r['kind']}: {r['text']} (policy {r['policy']!r}, from {where})")
    return "\n".join(lines)


def doctor(fix: Annotated[bool, typer.Option("--fix", help="Remove the leftovers and mark dead runs interrupted.")] = False,
           older_than: Annotated[float, typer.Option(
               "--older-than", metavar="MINUTES", min=0,
               help="Count drafts and unrecorded folders as left behind only when nothing in them changed for this "
                    "many minutes; younger ones may be another job's work in progress on a shared store and are "
                    "kept.")] = 60,
           ) -> None:
    """Find what crashes left behind: draft folders, unrecorded artifacts, runs whose process died."""
    from kifabrik import doctor as doc

    def human(n: int) -> str:
        return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"

    ws = workspace()
    found = doc.examine(ws, older_than)
    for label, items in (("unfinished draft", found.drafts), ("folder without a catalog record", found.orphans)):
        for path, size in items:
            out.print(f"{label}: {path} ({human(size)})")
    for run_id in found.interrupted:
        out.print(f"run {run_id[:12]}: its process is gone (interrupted; it can be run again)")
    if found.unanchored:
        out.print(f"audit log: {found.unanchored} entr{'y' if found.unanchored == 1 else 'ies'} newer than the "
                  f"anchored head (the chain is intact; a process died before updating the head)")
    for ref in found.missing:
        err.print(f"[red]record without files[/red]: {ref} — restore its folder or remove the record")
    for kept in found.kept:
        label = "unfinished draft" if kept.kind == "draft" else "folder without a catalog record"
        out.print(f"kept {label}: {kept.path} ({human(kept.bytes)}): changed {kept.age_minutes:.0f} min ago, less "
                  f"than --older-than {older_than:g} min, so it may be a running job's work in progress")
    if found.clean:
        out.print("[green]nothing to clean[/green]" + (f" ({len(found.kept)} young folder(s) kept)" if found.kept else ""))
        return
    if fix:
        doc.fix(ws, found)
        freed = sum(n for _, n in found.drafts + found.orphans)
        out.print(f"[green]fixed[/green]: {len(found.drafts) + len(found.orphans)} folder(s) removed ({human(freed)}), "
                  f"{len(found.interrupted)} run(s) marked interrupted"
                  + (", audit head anchored" if found.unanchored else "")
                  + (f", {len(found.kept)} young folder(s) kept" if found.kept else ""))
        if found.missing:
            raise typer.Exit(1)
    else:
        out.print("run `kifabrik doctor --fix` to clean up")
        raise typer.Exit(1)
