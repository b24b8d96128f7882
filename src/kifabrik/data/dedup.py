"""Exact and near-duplicate removal (MinHash LSH), seeded splits, and test-vs-train contamination.

Text is normalised before comparing (case folded, punctuation and runs of whitespace
collapsed), so rows that differ only in spacing or capitalisation are exact duplicates.
Near duplicates are found with datasketch's MinHash LSH on word 3-gram shingles and confirmed
by the estimated Jaccard similarity, so LSH's false candidates do not remove rows.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
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
