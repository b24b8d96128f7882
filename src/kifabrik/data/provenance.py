"""Where an imported dataset's rows came from: rows that an existing dataset already holds keep its restrictions.

Importing the store's own `train.jsonl` of an evaluation-only dataset under a permissive policy
would otherwise launder it. So before a dataset is recorded, its rows are compared with the rows
of every dataset in the catalog, the way deduplication compares rows (normalised words; exact:
sha256, near: MinHash of word 3-grams with Jaccard >= `NEAR`). System messages are left out: a
shared system prompt is boilerplate, and changing it must not hide copied rows.

The new dataset is linked (lineage `derived_from`, so it carries every policy of that dataset and
its ancestors) to each existing dataset it shares rows with when at least `SHARE` of its own rows
are found in existing datasets, or when it holds at least `SHARE` of that dataset's rows.
Matches under both thresholds are reported in the dataset card, not inherited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from kifabrik.catalog import ArtifactRecord
from kifabrik.data.dedup import Hasher, exact_key, normalise
from kifabrik.data.rows import Row, row_text
from kifabrik.files import iter_jsonl
from kifabrik.workspace import Workspace

#: Share of rows from which restrictions are inherited (of the new dataset's rows, or of the existing dataset's).
SHARE = 0.5
#: Estimated Jaccard similarity of word 3-grams from which two rows count as the same row.
NEAR = 0.8
RELATION = "derived_from"
METHOD = (f"rows compared without system messages: sha256 of the normalised words, and MinHash (word 3-grams, "
          f"128 permutations) with Jaccard >= {NEAR}; restrictions are inherited at >= {SHARE:.0%} of the rows")


def _words(record: dict[str, Any]) -> list[str]:
    if "messages" in record:
        record = {"messages": [m for m in record["messages"] if m["role"] != "system"]}
    return normalise(row_text(record))


class Source(NamedTuple):
    """An existing dataset that shares rows with the new one."""

    dataset: ArtifactRecord
    rows: int  # rows of the new dataset found in it
    exact: int  # of those, exact copies
    share: float  # `rows` / rows of the new dataset
    covered: float  # share of its own rows found in the new dataset
    inherited: bool

    def fact(self, ws: Workspace) -> dict[str, Any]:
        from kifabrik.policy import restrictions

        return {"id": self.dataset.id, "ref": self.dataset.ref, "rows": self.rows, "exact": self.exact,
                "near": self.rows - self.exact, "share": round(self.share, 4), "covered": round(self.covered, 4),
                "inherited": self.inherited,
                "restrictions": [r["text"] for r in restrictions(ws, self.dataset.id)] if self.inherited else []}


@dataclass(frozen=True)
class Provenance:
    """What the comparison with the catalog's datasets found for the rows of one import."""

    rows: int  # rows of the new dataset
    matched: int  # of those, rows found in some existing dataset
    checked: int  # datasets compared
    sources: list[Source]

    @property
    def inherited(self) -> list[Source]:
        return [s for s in self.sources if s.inherited]

    def parents(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The lineage edges of the new dataset."""
        return [(s.dataset.id, RELATION, {"rows": s.rows, "share": round(s.share, 4), "covered": round(s.covered, 4),
                                          "match": "same_content"}) for s in self.inherited]

    def facts(self, ws: Workspace) -> dict[str, Any]:
        """The `provenance` section of card.json."""
        return {"method": METHOD, "datasets_checked": self.checked, "rows": self.rows, "rows_matched": self.matched,
                "share_matched": round(self.matched / self.rows, 4) if self.rows else 0.0,
                "sources": [s.fact(ws) for s in self.sources]}


def trace(ws: Workspace, rows: list[Row], *, same_import: Callable[[ArtifactRecord], bool] | None = None) -> Provenance:
    """Compare `rows` (the rows about to be recorded) with the rows of every dataset in the catalog.

    `same_import` marks earlier runs of this very import (same files, name and policy): they are not
    sources, so that running an import twice records the identical dataset (the same content id).
    """
    from datasketch import MinHashLSH

    datasets = [d for d in ws.catalog.list_artifacts("dataset") if same_import is None or not same_import(d)]
    new_words = [_words(r.record) for r in rows]
    new_keys: dict[bytes, list[int]] = {}
    for i, words in enumerate(new_words):
        new_keys.setdefault(exact_key(words), []).append(i)
    minhash = Hasher()
    lsh = MinHashLSH(threshold=NEAR, num_perm=minhash.num_perm)
    signatures = [minhash(words) for words in new_words]
    for i, m in enumerate(signatures):
        lsh.insert(str(i), m)
    found: dict[int, set[str]] = {}  # new row -> ids of the datasets holding it
    exact: dict[str, set[int]] = {}
    covered: dict[str, float] = {}
    for d in datasets:
        total = hit = 0
        for split in ("train.jsonl", "test.jsonl"):
            path = ws.path(d) / split
            if not path.exists():
                continue
            for _, record in iter_jsonl(path):
                words = _words(record)
                total += 1
                same = new_keys.get(exact_key(words))
                if same:
                    exact.setdefault(d.id, set()).update(same)
                    near = same
                else:
                    m = minhash(words)
                    near = [int(k) for k in lsh.query(m) if signatures[int(k)].jaccard(m) >= NEAR]
                hit += bool(near)
                for i in near:
                    found.setdefault(i, set()).add(d.id)
        covered[d.id] = hit / total if total else 0.0
    share_all = len(found) / len(rows) if rows else 0.0
    sources = []
    for d in datasets:
        held = [i for i, ids in found.items() if d.id in ids]
        if not held:
            continue
        n_exact = len(exact.get(d.id, set()))
        sources.append(Source(d, len(held), n_exact, len(held) / len(rows), covered[d.id],
                              share_all >= SHARE or covered[d.id] >= SHARE))
    sources.sort(key=lambda s: -s.rows)
    return Provenance(len(rows), len(found), len(datasets), sources)
