"""Exact and near-duplicate removal (MinHash LSH), seeded splits (by row, or by whole document or
section for document chunks), and test-vs-train contamination.

Text is normalised before comparing (case folded, punctuation and runs of whitespace
collapsed), so rows that differ only in spacing or capitalisation are exact duplicates.
Near duplicates are found with datasketch's MinHash LSH on word 3-gram shingles and confirmed
by the estimated Jaccard similarity, so LSH's false candidates do not remove rows.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kifabrik.data.rows import Row, row_text

_WORDS = re.compile(r"\w+")


def normalise(text: str) -> list[str]:
    return _WORDS.findall(text.casefold())


def exact_key(words: list[str]) -> bytes:
    """The key under which two rows are exact duplicates: sha256 of the normalised words."""
    return hashlib.sha256(" ".join(words).encode()).digest()


def shingles(words: list[str]) -> set[bytes]:
    """Word 3-grams, the features of a row's MinHash (a row under three words is one shingle)."""
    return {" ".join(words[j:j + 3]).encode() for j in range(max(1, len(words) - 2))}


class Hasher:
    """MinHash signatures with one set of permutations, so that any two signatures compare."""

    def __init__(self, num_perm: int = 128) -> None:
        from datasketch import MinHash

        template = MinHash(num_perm=num_perm, seed=1)  # permutations are made once and shared
        self.num_perm, self._perms, self._scheme = num_perm, template.permutations, template.scheme

    def __call__(self, words: list[str]) -> Any:
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=1, permutations=self._perms, scheme=self._scheme)
        m.update_batch(list(shingles(words)))
        return m


@dataclass
class DedupReport:
    exact: int = 0
    near: int = 0
    threshold: float = 0.9
    method: str = "sha256 of normalised text; MinHash LSH (datasketch), word 3-grams, 128 permutations"
    examples: list[dict[str, Any]] = field(default_factory=list)  # {"removed": "file:line", "kept": "file:line"}


def dedup(rows: list[Row], *, near: bool = True, threshold: float = 0.9, num_perm: int = 128,
          max_examples: int = 20) -> tuple[list[Row], DedupReport]:
    """Keep the first of every group of duplicates; rows earlier in `rows` win."""
    report = DedupReport(threshold=threshold, method=DedupReport.method.replace("128", str(num_perm)))
    seen: dict[bytes, Row] = {}
    unique: list[tuple[Row, list[str]]] = []
    for row in rows:
        words = normalise(row_text(row.record))
        key = exact_key(words)
        if key in seen:
            report.exact += 1
            _example(report, row, seen[key], "exact", max_examples)
            continue
        seen[key] = row
        unique.append((row, words))
    if not near or len(unique) < 2:
        return [r for r, _ in unique], report
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    minhash = Hasher(num_perm)
    kept: list[Row] = []
    hashes: dict[str, Any] = {}
    for row, words in unique:
        m = minhash(words)
        match = next((k for k in lsh.query(m) if hashes[k].jaccard(m) >= threshold), None)
        if match is not None:
            report.near += 1
            _example(report, row, kept[int(match)], "near", max_examples)
            continue
        key = str(len(kept))
        lsh.insert(key, m)
        hashes[key] = m
        kept.append(row)
    return kept, report


def _example(report: DedupReport, row: Row, kept: Row, kind: str, limit: int) -> None:
    if len(report.examples) < limit:
        report.examples.append({"kind": kind, "removed": f"{row.source}:{row.line}", "kept": f"{kept.source}:{kept.line}"})


def split(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(train, test): a seeded shuffle, then the first `round(n * fraction)` rows are the test set."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_test = round(len(rows) * fraction)
    test_idx = set(order[:n_test])
    return ([r for i, r in enumerate(rows) if i not in test_idx], [r for i, r in enumerate(rows) if i in test_idx])


def _closest(sizes: dict[Any, int], target: float, seed: int) -> list[Any]:
    """Units in a seeded order, each taken when it brings the held-out rows closer to `target`.

    At least one is always left; when no unit brings it closer, the smallest is taken only if it
    holds at most twice the asked rows (a 2-section handbook asked for 10 % keeps both sections
    rather than losing half of itself to the test split).
    """
    order = sorted(sizes, key=str)
    random.Random(seed).shuffle(order)
    taken: list[Any] = []
    held = 0
    for unit in order:
        if len(taken) < len(order) - 1 and abs(held + sizes[unit] - target) < abs(held - target):
            taken.append(unit)
            held += sizes[unit]
    smallest = min(order, key=lambda u: sizes[u]) if order else None
    if not taken and target > 0 and len(order) > 1 and sizes[smallest] <= 2 * target:
        taken = [smallest]
    return taken


def split_documents(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row], dict[str, Any]]:
    """(train, test, facts for the card) of document rows: whole documents or whole top-level sections.

    A chunk of a document is never held out without the rest of its document or section, so
    the test split cannot take a fragment of a table whose other rows were trained on, and
    training cannot miss a table because its one chunk fell into the test split. By document
    when the import has several documents and a seeded choice of whole ones comes within half
    of the asked share; else by top-level section (`Row.section`) of each document; a single
    document without sections holds nothing out. A text row of a JSONL file (no `section`) is a
    document of its own.
    """
    def doc(r: Row) -> str:
        return r.source if r.section is not None else f"{r.source}:{r.line}"

    target = fraction * len(rows)
    facts: dict[str, Any] = {"seed": seed, "test_fraction": fraction}
    by_doc = Counter(doc(r) for r in rows)
    by_section = Counter((doc(r), r.section or "") for r in rows)
    chosen: list[Any] = []
    unit = "document"
    if len(by_doc) > 1 and target > 0:
        chosen = _closest(dict(by_doc), target, seed)
        if abs(sum(by_doc[d] for d in chosen) - target) > target / 2 and len(by_section) > len(by_doc):
            chosen = []
    if not chosen and len(by_section) > 1 and target > 0:
        unit, chosen = "section", _closest(dict(by_section), target, seed)
    held = set(chosen)
    if unit == "document":
        names, total = [Path(d).name for d in chosen], len(by_doc)
        is_test = [doc(r) in held for r in rows]
    else:
        names = [f"{Path(d).name} § {s or '(before the first section)'}" for d, s in chosen]
        total, is_test = len(by_section), [(doc(r), r.section or "") in held for r in rows]
    test = [r for r, t in zip(rows, is_test, strict=True) if t]
    train = [r for r, t in zip(rows, is_test, strict=True) if not t]
    if target <= 0:
        method = "none held out (test fraction 0)"
    elif not test and len(by_section) > 1:
        method = (f"none held out: the smallest whole {unit} holds more than twice the asked share of "
                  f"{fraction:.0%} (give held-out files with --test-path, or --test-fraction 0)")
    elif not test:
        method = ("none held out: one document without top-level sections cannot be split without cutting it "
                  "(give held-out files with --test-path)")
    elif unit == "document":
        method = f"whole documents, seeded: {len(chosen)} of {total} held out"
    else:
        method = f"whole top-level sections, seeded: {len(chosen)} of {total} held out"
    facts.update({"method": method, "unit": unit if test else None, "held_out": sorted(names), "units": total})
    return train, test, facts


def contamination(train: list[Row], test: list[Row], n: int = 13, flag_at: float = 0.5,
                  max_rows: int = 50) -> dict[str, Any]:
    """How much of each test row's word n-grams also occur in the training rows.

    A test row shorter than `n` words is compared as one whole n-gram. Rows with at least
    `flag_at` of their n-grams in the training set are flagged as contaminated. System
    messages are left out: a shared system prompt is boilerplate, not leaked test data.
    """
    def grams(row: Row) -> set[int]:
        record = row.record
        if "messages" in record:
            record = {"messages": [m for m in record["messages"] if m["role"] != "system"]}
        words = normalise(row_text(record))
        return {hash(tuple(words[i:i + n])) for i in range(max(1, len(words) - n + 1))}

    train_grams: set[int] = set()
    for row in train:
        train_grams |= grams(row)
    any_overlap, flagged, worst = 0, [], 0.0
    for row in test:
        g = grams(row)
        share = len(g & train_grams) / len(g) if g else 0.0
        worst = max(worst, share)
        any_overlap += share > 0
        if share >= flag_at:
            flagged.append(f"{row.source}:{row.line}")
    return {"ngram": n, "flag_at": flag_at, "test_rows": len(test), "rows_with_any_overlap": any_overlap,
            "rows_flagged": len(flagged), "fraction_flagged": round(len(flagged) / len(test), 4) if test else 0.0,
            "max_overlap": round(worst, 4), "flagged": flagged[:max_rows]}
