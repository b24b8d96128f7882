"""`kifabrik kb ...`: build, list, show, remove and search knowledge bases ("Wissensbasis").

    kifabrik kb build wissen --data schmidt-wartung --data schmidt-teile
    kifabrik kb search wissen "Welches Öl braucht die DM 320?" -k 3 --purpose serving
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from kifabrik.cli import tables
from kifabrik.cli.common import out, print_json, when, workspace
from kifabrik.cli.options import ModelFlags
from kifabrik.kb.build import KbOptions

app = typer.Typer(help="Knowledge bases (Wissensbasis): dataset passages in a BM25 index, searched with each "
                       "passage's usage policy checked.", no_args_is_help=True)


#: Every field of KbOptions is a flag (`splits` is `--split`, one per split).
BUILD = ModelFlags(KbOptions, flags={"splits": "split"})


def _build(
    opts: KbOptions,
    name: Annotated[str, typer.Argument(help="Name of the knowledge base.")],
    data: Annotated[list[str], typer.Option("--data", help="Dataset to index: name, name@version or id (repeatable).")],
) -> None:
    """Index datasets as a knowledge base (an `index` artifact with lineage to each dataset)."""
    from kifabrik.kb import build_kb, resolve_dataset
    from kifabrik.kb.build import check_name

    check_name(name)  # before the datasets, so a bad name is reported first and alone
    ws = workspace()
    record = build_kb(ws, name, [resolve_dataset(ws, ref) for ref in data], opts)
    meta = record.meta
    out.print(f"built knowledge base [bold]{escape(record.ref)}[/bold]  id {record.id}")
    for d in meta["datasets"]:
        out.print(f"  {escape(d['ref'])}: {d['passages']} passages ({d['format']})")
    merged = f", {meta['duplicates_merged']} duplicates merged" if meta["duplicates_merged"] else ""
    out.print(f"  {meta['passages']} passages, {meta['vocabulary']} terms{merged}; splits: {', '.join(meta['splits'])}")


app.command("build")(BUILD.command(_build))


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
          wide: Annotated[bool, typer.Option("--wide", help="Print every cell in full.")] = False) -> None:
    """List knowledge bases."""
    from kifabrik.kb import list_kbs

    recs = list_kbs(workspace())
    if as_json:
        print_json([{"id": r.id, "name": r.name, "version": r.version, "created_at": r.created_at, **r.meta}
                    for r in recs])
        return
    if not recs:
        out.print("no knowledge bases yet; try `kifabrik kb build NAME --data DATASET`")
        return
    rows = [[r.ref, r.id[:12], str(r.meta.get("passages")), ", ".join(d["ref"] for d in r.meta.get("datasets", [])),
             tables.ago(r.created_at)] for r in recs]
    tables.show(["name", "id", "passages", "datasets", "created"], rows, wide=wide, caps={0: 24}, flex=3, keep="@")


@app.command("show")
def show(ref: Annotated[str, typer.Argument(help="Knowledge base: name, name@version or id.")],
         as_json: Annotated[bool, typer.Option("--json", help="Print kb.json.")] = False) -> None:
    """Show a knowledge base: datasets, counts, tokenizer, and the usage restrictions it carries."""
    from kifabrik.cli.records import restriction_text
    from kifabrik.kb import get_kb
    from kifabrik.policy import restrictions

    ws = workspace()
    record = get_kb(ws, ref)
    facts = json.loads((ws.path(record) / "kb.json").read_text(encoding="utf-8"))
    if as_json:
        print_json(facts)
        return
    tok = {k: v for k, v in facts["tokenizer"].items() if k != "stopwords"}
    print(f"knowledge base {record.ref}  id {record.id}  created {when(record.created_at)}")
    print(f"path {ws.path(record)}")
    print(f"passages {facts['passages']} ({facts['duplicates_merged']} duplicates merged), "
          f"terms {facts['vocabulary']}, chunk_tokens {facts['chunk_tokens']}, splits {', '.join(facts['splits'])}")
    print("datasets:")
    for d in facts["datasets"]:
        rows = ", ".join(f"{s} {n}" for s, n in d["rows"].items())
        print(f"  {d['ref']} ({d['id'][:12]}): {d['passages']} passages from {rows} rows")
    print(f"tokenizer: {json.dumps(tok, ensure_ascii=False)} + {len(facts['tokenizer']['stopwords'])} stopwords")
    print(f"bm25: {json.dumps(facts['bm25'])}")
    print(restriction_text(restrictions(ws, record.id)))


@app.command("rm")
def rm(ref: Annotated[str, typer.Argument(help="Knowledge base: name, name@version or id.")]) -> None:
    """Remove a knowledge base (refused while artifacts made from it exist)."""
    from kifabrik.kb import remove_kb

    record = remove_kb(workspace(), ref)
    out.print(f"removed knowledge base {escape(record.ref)} ({record.id[:12]})")


@app.command("search")
def search(
    ref: Annotated[str, typer.Argument(help="Knowledge base: name, name@version or id.")],
    query: Annotated[str, typer.Argument(help="The question.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Most hits to show.")] = 3,
    purpose: Annotated[str, typer.Option(help="Why you retrieve (checked against each passage's dataset policy): "
                                              "serving, evaluation, ...")] = "serving",
    min_score: Annotated[float | None, typer.Option(min=0.0, help="Leave out hits scoring lower (default: the "
                                                    "calibrated kifabrik.kb.MIN_SCORE; 0 keeps all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Search a knowledge base; passages whose dataset policy forbids PURPOSE are never shown."""
    from kifabrik.kb import MIN_SCORE, KnowledgeBase

    threshold = MIN_SCORE if min_score is None else min_score
    hits = KnowledgeBase.open(workspace(), ref).search(query, k, purpose=purpose, min_score=threshold)
    if as_json:
        print_json([h.__dict__ for h in hits])
        return
    if not hits:
        print(f"nothing relevant in the knowledge base (no permitted passage scored {threshold} or more)")
        return
    for h in hits:
        print(f"{h.rank}. score {h.score:.2f}  {h.dataset_ref}, {h.source}")
        print("   " + h.text.replace("\n", "\n   "))
