"""From dataset artifacts to token ids and labels.

Chat rows are rendered with the base model's own chat template; only the tokens of
assistant turns (including the template's end-of-turn marker, so the model learns to
stop) carry a loss. Text rows (continued pre-training) are tokenized, closed with EOS and
split into windows of `max_seq_length`, so nothing is thrown away.

Three counts, named the same way in every message, record and summary:

- *imported rows*: the lines of a dataset's `train.jsonl` (chats, or chunks of documents);
- *training sequences*: what encoding makes of them, at most `max_seq_length` tokens each (one
  per chat row; a text row longer than that gives several windows);
- *packed sequences*: with packing, training sequences placed back to back into sequences of
  `max_seq_length` tokens. A batch holds `batch_size` packed sequences (training sequences
  when packing is off), and an epoch is one pass over them.

Every sequence's first label is -100. Unpacked, that label is never a target anyway (a
causal LM predicts token t+1 from position t); packed, it stops the last token of one
sequence from being trained to predict the first token of the next. So packed and
unpacked training see exactly the same targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.files import iter_jsonl

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE = -100
Format = Literal["chat", "text"]


@dataclass(frozen=True)
class Example:
    """One training sequence: token ids and labels (IGNORE where there is no loss)."""

    input_ids: list[int]
    labels: list[int]


@dataclass
class EncodeStats:
    """What encoding did to the imported rows; stored in the adapter's record."""

    rows: int = 0  # imported rows
    sequences: int = 0  # training sequences
    tokens: int = 0
    loss_tokens: int = 0
    truncated: int = 0  # chat rows cut at max_seq_length
    dropped: int = 0  # chat rows without a single assistant token left
    windows_split: int = 0  # text rows longer than max_seq_length, split into windows
    examples_truncated: list[str] = field(default_factory=list)  # a few row locations, for the warning

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "examples_truncated"}


@dataclass(frozen=True)
class DatasetRows:
    record: ArtifactRecord
    format: Format
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]


def read_dataset(ws_path: Path, record: ArtifactRecord) -> DatasetRows:
    """Read `train.jsonl` / `test.jsonl` of a dataset artifact (format per the data contract)."""
    if record.kind != "dataset":
        raise KifabrikError(f"{record.ref} is a {record.kind}, not a dataset",
                            hint="list datasets with `kifabrik artifacts list --kind dataset`")
    fmt = record.meta.get("format")
    if fmt not in ("chat", "text"):
        raise KifabrikError(f"dataset {record.ref}: unknown format {fmt!r} (expected chat or text)",
                            hint="re-import the dataset with the data stage")
    splits = {}
    for split in ("train", "test"):
        path = ws_path / f"{split}.jsonl"
        rows = []
        if path.exists():
            for n, row in iter_jsonl(path):  # a bad line raises naming file:line
                key = "messages" if fmt == "chat" else "text"
                if key not in row:
                    raise KifabrikError(f"{path}:{n}: a {fmt} row needs a `{key}` field",
                                        hint="the dataset artifact does not follow the dataset format")
                row["_where"] = f"{record.ref}:{split}:{n}"
                rows.append(row)
        elif split == "train":
            raise KifabrikError(f"dataset {record.ref}: {path} is missing", hint="check it with `kifabrik verify`")
        splits[split] = rows
    return DatasetRows(record, fmt, splits["train"], splits["test"])


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    from kifabrik.models.prompts import (
        render,  # the serving rule: chat template, else the documented fallback
    )

    return render(tokenizer, messages, generation_prompt=generation_prompt)


def assistant_spans(tokenizer: PreTrainedTokenizerBase,
                    messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns.

    A turn's span runs from the end of the prompt that asks for it (`add_generation_prompt`)
    to the end of the conversation rendered up to and including it, so it covers the
    answer and the template's end-of-turn marker, but never the role header.
    """
    full = _render(tokenizer, messages, False)
    spans = []
    for i, msg in enumerate(messages):
        if msg.get("role") != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], True) if i else ""
        upto = _render(tokenizer, messages[: i + 1], False)
        if not (full.startswith(upto) and upto.startswith(prefix)):
            raise KifabrikError(
                "the model's chat template does not render a conversation as a sequence of its turns "
                "(a shorter conversation is not a prefix of the longer one), so the assistant tokens cannot be located",
                hint="use a model whose chat template renders turns incrementally, or train on a text dataset")
        spans.append((len(prefix), len(upto)))
    return full, spans


def encode_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> Example:
    """Tokenize one conversation with labels on assistant tokens only (no truncation)."""
    from kifabrik.models.prompts import special_tokens_added

    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=special_tokens_added(tokenizer), return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [IGNORE] * len(ids)
    for j, (start, end) in enumerate(enc["offset_mapping"]):
        if end > start and any(a <= start < b for a, b in spans):
            labels[j] = ids[j]
    if labels:
        labels[0] = IGNORE
    return Example(ids, labels)


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of one document: the tokenizer's own BOS handling, closed with EOS."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids


def encode_rows(tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], fmt: Format,
                max_len: int) -> tuple[list[Example], EncodeStats]:
    """Encode rows into examples of at most `max_len` tokens (see the module docstring)."""
    stats = EncodeStats()
    out: list[Example] = []
    for row in rows:
        stats.rows += 1
        if fmt == "chat":
            ex = encode_chat(tokenizer, row["messages"])
            if len(ex.input_ids) > max_len:
                stats.truncated += 1
                if len(stats.examples_truncated) < 3:
                    stats.examples_truncated.append(f"{row['_where']} ({len(ex.input_ids)} tokens)")
                ex = Example(ex.input_ids[:max_len], ex.labels[:max_len])
            if all(label == IGNORE for label in ex.labels):
                stats.dropped += 1
                continue
            pieces = [ex]
        else:
            ids = encode_text(tokenizer, row["text"])
            if len(ids) > max_len:
                stats.windows_split += 1
            pieces = []
            for s in range(0, len(ids), max_len):
                chunk = ids[s:s + max_len]
                if len(chunk) < 2:  # a lone token has nothing to predict
                    continue
                pieces.append(Example(chunk, [IGNORE] + chunk[1:]))
        for ex in pieces:
            stats.sequences += 1
            stats.tokens += len(ex.input_ids)
            stats.loss_tokens += sum(1 for label in ex.labels if label != IGNORE)
            out.append(ex)
    return out, stats
