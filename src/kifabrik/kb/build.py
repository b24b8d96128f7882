"""Building a knowledge base: dataset artifacts -> passages -> a BM25 index artifact of kind `index`.

    from kifabrik.kb import KbOptions, build_kb
    record = build_kb(ws, "wissen", [ws.catalog.get_artifact("schmidt-wartung", "dataset")], KbOptions())

The artifact holds `passages.jsonl`, the BM25 arrays under `bm25/` (bm25s's sparse score
matrix and kifabrik's passage lengths as numpy `.npy` files written and read with
`allow_pickle=False`, the vocabulary and parameters as JSON: nothing is ever unpickled) and
`kb.json` (tokenizer settings, BM25 parameters, counts per dataset). Each dataset is a
lineage parent (`indexed_from`) and its policies are attached to the index, so the index
carries their restrictions like a model trained on them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from kifabrik.catalog import ArtifactRecord
from kifabrik.config import StrictModel
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.kb.passages import Passage, dataset_passages, dedup
from kifabrik.kb.tokenize import Tokenizer
from kifabrik.workspace import Workspace

KIND = "index"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: Indexing copies the data into a lasting artifact from which a model's answers are made,
#: which is what "training" grants for a model; showing passages is checked per search
#: (serving, evaluation). So evaluation-only data never ends up in a knowledge base.
BUILD_PURPOSE = "training"
BM25 = {"method": "lucene", "k1": 1.5, "b": 0.75}
FORMAT_VERSION = 1


class KbOptions(StrictModel):
    """How datasets become passages."""

    chunk_tokens: int = Field(default=200, ge=16, le=8192, description="Most words per document passage; a "
                              "heading stays with its text and a Markdown table longer than this stays whole.")
    splits: list[Literal["train", "test"]] = Field(default=["train"], min_length=1, description="Dataset splits to "
                                                   "index; the test split is left out by default so that evaluations "
                                                   "with the knowledge base cannot look up held-out answers.")


def check_name(name: str) -> None:
    if not NAME.match(name or ""):
        raise KifabrikError(f"{name!r} is not a valid knowledge-base name",
                            hint="use letters, digits, '.', '_' and '-' (at most 100, starting with a letter or digit)")


def resolve_dataset(ws: Workspace, ref: str) -> ArtifactRecord:
    """A dataset record by name, name@version or id, with an error that says how to get one."""
    try:
        record = ws.catalog.get_artifact(ref)
    except NotFoundError:
        raise NotFoundError(f"no dataset {ref!r} in the catalog",
                            hint="see `kifabrik data list`, or import it with `kifabrik data import FILE --name "
                                 f"{ref} --policy-preset internal-only`") from None
    if record.kind != "dataset":
        try:
            return ws.catalog.get_artifact(ref, "dataset")
        except NotFoundError:
            raise KifabrikError(f"{ref!r} is a {record.kind}, not a dataset",
                                hint="a knowledge base is built from datasets: see `kifabrik data list`") from None
    return record


def _collect(ws: Workspace, datasets: list[ArtifactRecord],
             options: KbOptions) -> tuple[list[Passage], int, list[dict[str, Any]]]:
    found: list[Passage] = []
    per_dataset = []
    for d in datasets:
        passages, counts = dataset_passages(ws, d, size=options.chunk_tokens, splits=options.splits)
        if not passages:
            rows = ", ".join(f"{s} {n}" for s, n in counts["rows"].items())
            raise KifabrikError(f"dataset {d.ref} has nothing to index: no answers or text in its "
                                f"{'/'.join(options.splits)} split ({rows} rows); nothing was built",
                                hint="leave it out, or choose other splits (e.g. --split train)")
        found += passages
        per_dataset.append({"id": d.id, "ref": d.ref, "format": d.meta.get("format"), **counts})
    passages, merged = dedup(found)
    return passages, merged, per_dataset


def build_kb(ws: Workspace, name: str, datasets: Sequence[ArtifactRecord], options: KbOptions | None = None, *,
             actor: str = "cli") -> ArtifactRecord:
    """Index dataset artifacts as a knowledge base (see the module docstring).

    Args:
        ws: The workspace.
        name: Name of the knowledge base (letters, digits, '.', '_', '-').
        datasets: Dataset records; each one's policy must permit training (see BUILD_PURPOSE).
        options: Passage size and splits.
        actor: Who builds it (audit log).

    Raises:
        KifabrikError: A bad name, a record that is not a dataset, or a dataset with nothing
            to index; `PolicyDenied` when a dataset's policy forbids indexing. Nothing is
            written in either case.
    """
    import bm25s
    import numpy as np

    from kifabrik.policy import PolicyDenied, require

    options = options or KbOptions()
    check_name(name)
    unique = list({d.id: d for d in datasets}.values())
    if not unique:
        raise KifabrikError("no datasets given to index", hint="name at least one with --data DATASET")
    for d in unique:
        if d.kind != "dataset":
            raise KifabrikError(f"{d.ref} is a {d.kind}, not a dataset", hint="see `kifabrik data list`")
    try:
        require(ws, [d.id for d in unique], BUILD_PURPOSE, actor=actor)
    except PolicyDenied as exc:
        exc.hint = (f"indexing data for a knowledge base is checked as {BUILD_PURPOSE} (a lasting copy that "
                    f"answers are made from); {exc.hint}")
        raise
    passages, merged, per_dataset = _collect(ws, unique, options)
    tokenizer = Tokenizer.default()
    corpus = [tokenizer.tokens(p.index_text()) for p in passages]
    if not any(corpus):
        raise KifabrikError("the datasets contain no searchable words (only stopwords or punctuation)",
                            hint="check the datasets with `kifabrik data show NAME`")
    retriever = bm25s.BM25(**BM25)
    retriever.index(corpus, show_progress=False)
    policy_ids = sorted({p[0] for d in unique for p in ws.catalog.policies_of(d.id)})
    facts = {
        "format_version": FORMAT_VERSION, "passages": len(passages), "duplicates_merged": merged,
        "vocabulary": len(retriever.vocab_dict), "chunk_tokens": options.chunk_tokens, "splits": list(options.splits),
        "datasets": per_dataset, "build_purpose": BUILD_PURPOSE, "policy_ids": policy_ids,
        "bm25": {**BM25, "library": "bm25s", "library_version": bm25s.__version__, "score_dtype": "float32"},
        "tokenizer": tokenizer.settings(),
    }
    meta = {k: facts[k] for k in ("passages", "duplicates_merged", "vocabulary", "chunk_tokens", "splits",
                                  "policy_ids")}
    meta["datasets"] = [{k: d[k] for k in ("id", "ref", "format", "passages")} for d in per_dataset]
    config = {"kb": options.model_dump(mode="json"), "dataset_ids": [d.id for d in unique], "bm25": BM25}
    with ws.catalog.transaction():  # record, policies and audit entry commit together
        with ws.create(KIND, name, parents=[(d.id, "indexed_from") for d in unique], config=config, meta=meta,
                       policies=policy_ids) as draft:
            draft.write_text("passages.jsonl", "".join(_json_line(p.to_json()) for p in passages))
            retriever.save(draft.dir / "bm25", allow_pickle=False)  # no corpus given: nothing but arrays and JSON
            # Passage lengths in terms: the search turns raw BM25 into length-aware scores with them.
            np.save(draft.dir / "bm25" / "lengths.npy", np.array([len(t) for t in corpus], dtype=np.int32),
                    allow_pickle=False)
            draft.write_json("kb.json", facts)
        record: ArtifactRecord = draft.record
        ws.catalog.audit("kb.build", actor=actor, subject=record.id, decision="ok",
                         details={"name": record.ref, "datasets": [d.id for d in unique], "passages": len(passages),
                                  "policy_ids": policy_ids})
    return record


def _json_line(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False) + "\n"


def list_kbs(ws: Workspace) -> list[ArtifactRecord]:
    return ws.catalog.list_artifacts(KIND)


def get_kb(ws: Workspace, ref: str) -> ArtifactRecord:
    try:
        return ws.catalog.get_artifact(ref, KIND)
    except NotFoundError:
        raise NotFoundError(f"no knowledge base {ref!r} in the catalog", hint="see `kifabrik kb list`, or build "
                            "one with `kifabrik kb build NAME --data DATASET`") from None
