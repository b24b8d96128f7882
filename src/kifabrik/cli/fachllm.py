"""`kifabrik fach-llm`: a model or adapter plus a knowledge base as one deployable model name."""

from __future__ import annotations

from typing import Annotated

import typer

from kifabrik.cli.common import out, workspace

app = typer.Typer(help="Fach-LLMs: a model or adapter plus a knowledge base, served under one name.",
                  no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Name of the Fach-LLM (the served model name).")],
    model: Annotated[str, typer.Option("--model", help="Model or adapter (name, name@version or id).")],
    kb: Annotated[str, typer.Option("--kb", help="Knowledge base (name, name@version or id).")],
    k: Annotated[int, typer.Option("-k", min=1, max=20, help="Passages retrieved per answer.")] = 3,
    relative: Annotated[float, typer.Option(min=0.0, max=1.0, help="Drop sources scoring under this share of the "
                                            "best one (0 keeps the k best).")] = 0.0,
    focus: Annotated[bool, typer.Option(help="Show long document sections cut down to the lines that match the "
                                        "question.")] = True,
    known_names: Annotated[bool, typer.Option(help="Answer a question naming a machine or code the documents never "
                                              "mention (of a kind they use) as not found.")] = True,
    refuse_withheld: Annotated[bool, typer.Option(help="Answer as not found when the best match is a passage its "
                                                  "policy withholds from serving (a confidential price list).")] = True,
    dtype: Annotated[str, typer.Option(help="Precision it runs in wherever it is evaluated or served: auto "
                                       "(float32 on CPUs), float32, bfloat16 (about twice as fast on CPUs with "
                                       "AMX), float16.")] = "auto",
) -> None:
    """Record MODEL + KB as the Fach-LLM NAME."""
    from kifabrik.kb.fachllm import create_fach_llm

    ws = workspace()
    record = create_fach_llm(ws, name, ws.catalog.get_artifact(model), ws.catalog.get_artifact(kb, "index"), k=k,
                             relative=relative, focus=focus, known_names=known_names,
                             refuse_withheld=refuse_withheld, dtype=dtype)
    runs = f", runs in {dtype}" if dtype != "auto" else ""
    out.print(f"fach-llm {record.ref}: {record.meta['model']} + knowledge base {record.meta['kb']} (k={k}{runs})")


@app.command("list")
def list_command() -> None:
    """All Fach-LLMs with their model and knowledge base."""
    ws = workspace()
    rows = ws.catalog.list_artifacts("fach-llm")
    if not rows:
        out.print("no Fach-LLMs yet: kifabrik fach-llm create NAME --model M --kb K")
    for r in rows:
        dtype = f"  dtype {r.meta['dtype']}" if r.meta.get("dtype") else ""
        out.print(f"{r.ref}  model {r.meta.get('model')}  kb {r.meta.get('kb')}  k={r.meta.get('k')}{dtype}")
