"""Everything before the first training step: resolve inputs, check policies, encode, build rows.

The order matters: cheap checks and the policy decision come before any data is read, and
every check that can refuse the run comes before the count-limited policy use is consumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.progress import info
from kifabrik.train.data import EncodeStats, Example, encode_rows, read_dataset
from kifabrik.train.options import TrainOptions
from kifabrik.workspace import Workspace

DEFAULT_MAX_SEQ = 1024
FULL_FT_MAX_PARAMETERS = 2_000_000_000  # beyond this, full fine-tuning does not fit where kifabrik runs; use LoRA


@dataclass(frozen=True)
class RunSpec:
    """What a run trains; saved as run.json so `--resume` rebuilds exactly the same run."""

    base_id: str
    dataset_ids: list[str]
    options: TrainOptions
    name: str

    def to_json(self) -> dict[str, Any]:
        return {"base_id": self.base_id, "dataset_ids": self.dataset_ids, "name": self.name,
                "options": self.options.model_dump(mode="json")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        return cls(data["base_id"], list(data["dataset_ids"]), TrainOptions.model_validate(data["options"]),
                   data["name"])


@dataclass
class Prepared:
    base: ArtifactRecord
    datasets: list[ArtifactRecord]
    objective: str  # "sft" (chat) or "cpt" (text)
    max_seq_length: int
    train: list[Example]
    test: list[Example]
    train_stats: EncodeStats
    test_stats: EncodeStats
    warnings: list[str] = field(default_factory=list)
    context_datasets: list[ArtifactRecord] = field(default_factory=list)  # sources of grounded rows, not trained on


def resolve_inputs(ws: Workspace, spec: RunSpec) -> tuple[ArtifactRecord, list[ArtifactRecord]]:
    base = ws.catalog.get_artifact(spec.base_id)
    if base.kind != "model":
        raise KifabrikError(f"{base.ref} is a {base.kind}; training needs a base model",
                            hint="list models with `kifabrik models list`")
    if not spec.dataset_ids:
        raise KifabrikError("no dataset given", hint="name at least one dataset: --data DATASET")
    datasets = [ws.catalog.get_artifact(d) for d in spec.dataset_ids]
    for d in datasets:
        if d.kind != "dataset":
            raise KifabrikError(f"{d.ref} is a {d.kind}, not a dataset",
                                hint="list datasets with `kifabrik artifacts list --kind dataset`")
    formats = {d.meta.get("format") for d in datasets}
    if len(formats) > 1:
        raise KifabrikError(f"the datasets mix formats ({', '.join(sorted(map(str, formats)))}); one run trains "
                            "either on chat data (fine-tuning) or on text (continued pre-training)",
                            hint="train twice, or convert one dataset")
    opts = spec.options
    params = int(base.meta.get("parameters") or 0)
    if opts.method == "full" and params > FULL_FT_MAX_PARAMETERS:
        raise KifabrikError(f"full fine-tuning of {base.ref} ({params / 1e9:.1f}B parameters) needs far more memory "
                            f"than LoRA; kifabrik allows it up to {FULL_FT_MAX_PARAMETERS / 1e9:.0f}B parameters",
                            hint="use method: lora")
    ctx = base.meta.get("context_length")
    if opts.max_seq_length and ctx and opts.max_seq_length > int(ctx):
        raise KifabrikError(f"max_seq_length {opts.max_seq_length} exceeds the context length of {base.ref} ({ctx})",
                            hint=f"set max_seq_length to at most {ctx}")
    return base, datasets


def context_datasets(ws: Workspace, opts: TrainOptions) -> list[ArtifactRecord]:
    """The datasets whose passages grounded rows may show (`context.passages_from`)."""
    if opts.context is None:
        return []
    return [ws.catalog.get_artifact(ref, "dataset") for ref in opts.context.passages_from]


def check_policies(ws: Workspace, records: list[ArtifactRecord], *, count: bool) -> None:
    """The policy engine decides whether these artifacts (base model, datasets) may be used for training (audited)."""
    from kifabrik.policy import require

    require(ws, [r.id for r in records], "training", count=count)


def encode(ws: Workspace, tokenizer: Any, base: ArtifactRecord, datasets: list[ArtifactRecord],
           opts: TrainOptions, extra_sources: list[ArtifactRecord] | None = None) -> Prepared:
    """Encode every split; refuse data that would make a meaningless run."""
    pool: list[str] = []
    sections: set[str] = set()  # document sections: shown focused on the question, as a Fach-LLM shows them
    for d in extra_sources or []:
        from kifabrik.kb.passages import dataset_passages

        passages, _ = dataset_passages(ws, d, size=opts.context.chunk_tokens if opts.context else 200)
        pool += [p.answer or p.text for p in passages]
        sections |= {p.text for p in passages if p.kind == "section"}
    ctx = int(base.meta.get("context_length") or DEFAULT_MAX_SEQ)
    max_len = opts.max_seq_length or min(ctx, DEFAULT_MAX_SEQ)
    train: list[Example] = []
    test: list[Example] = []
    train_stats, test_stats = EncodeStats(), EncodeStats()
    fmt = "text"
    for d in datasets:
        rows = read_dataset(ws.path(d), d)
        fmt = rows.format
        if opts.context is not None and rows.format == "chat":
            from kifabrik.kb.contexts import add_contexts

            c = opts.context
            shared: dict[str, Any] = {"k": c.k, "unanswerable": c.unanswerable, "pool": pool,
                                      "focus": sections if c.focus else (), "from_documents": c.from_documents,
                                      "cite": c.cite, "related": c.related}
            train_rows, cst = add_contexts(rows.train, seed=opts.seed, **shared)
            test_rows, _ = add_contexts(rows.test, seed=opts.seed + 1, **shared)
            rows = replace(rows, train=train_rows, test=test_rows)
            info(f"{d.ref}: {cst.answerable} rows with their answer among {opts.context.k} sources, "
                 f"{cst.unanswerable} whose sources lack it"
                 + (f" ({cst.related} of them about what was asked)" if cst.related else "")
                 + f" (from {cst.passages} passages)"
                 + (f"; {cst.from_documents} answered from a document section" if cst.from_documents else ""))
        ex, st = encode_rows(tokenizer, rows.train, rows.format, max_len)
        train += ex
        _add(train_stats, st)
        ex, st = encode_rows(tokenizer, rows.test, rows.format, max_len)
        test += ex
        _add(test_stats, st)
    if opts.eval_rows is not None:
        test = test[: opts.eval_rows]
    names = ", ".join(d.ref for d in datasets)
    warnings = []
    if train_stats.truncated:
        share = train_stats.truncated / max(train_stats.rows, 1)
        where = "; e.g. " + ", ".join(train_stats.examples_truncated)
        if share > opts.max_truncated_fraction:
            raise KifabrikError(
                f"{train_stats.truncated} of {train_stats.rows} chat rows ({share:.0%}) are longer than max_seq_length "
                f"{max_len}{where}. Truncating that many would mostly teach cut-off answers, so kifabrik refuses",
                hint=f"raise max_seq_length (the model allows {ctx}), shorten or split those conversations, or "
                     f"allow it with max_truncated_fraction: {math.ceil(share * 100) / 100}")
        warnings.append(f"{train_stats.truncated} chat row(s) longer than {max_len} tokens were truncated{where}")
    if not train:
        raise KifabrikError(f"{names}: no training sequences left to learn from ({train_stats.rows} imported rows, "
                            f"{train_stats.dropped} without an assistant answer within {max_len} tokens)",
                            hint="check that chat rows contain assistant messages, or raise max_seq_length")
    if train_stats.dropped:
        warnings.append(f"{train_stats.dropped} chat row(s) had no assistant tokens within {max_len} tokens "
                        "and were left out")
    for w in warnings:
        info(f"warning: {w}")
    return Prepared(base, datasets, "sft" if fmt == "chat" else "cpt", max_len, train, test, train_stats,
                    test_stats, warnings, list(extra_sources or []))


def _add(total: EncodeStats, part: EncodeStats) -> None:
    for k, v in part.__dict__.items():
        if isinstance(v, int):
            setattr(total, k, getattr(total, k) + v)
        else:
            getattr(total, k).extend(v[: max(0, 3 - len(getattr(total, k)))])


def plan_steps(n_rows: int, opts: TrainOptions, world_size: int = 1) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps). `max_steps`, when given, wins over `epochs` and
    repeats the data as often as needed (as in transformers' Trainer); the caller says so."""
    batches = math.ceil(n_rows / (opts.batch_size * world_size))
    per_epoch = max(1, math.ceil(batches / opts.grad_accum))
    if opts.max_steps is None:
        return per_epoch, max(math.floor(per_epoch * opts.epochs), 1)
    return per_epoch, opts.max_steps
