"""Benchmark of the knowledge base on the demo facts task: retrieval recall@k and latency.

    python bench/bench_kb.py                  # imports the demo data into a temporary workspace

Side by side: kifabrik's knowledge base (German-aware terms, one term per model name, compound
parts, length-corrected BM25, near-duplicate removal, policy check per passage) against what a
user would write with the same library: `bm25s` with its own tokenizer over the same passages.
A question counts as found at k when one of the first k passages satisfies the item's fact checks.
Prints recall@1/3/5 with 95 % Wilson intervals, p50/p95 latency per query, and the ratios.
Not a test: nothing here asserts on time.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "src" / "kifabrik" / "recipes" / "tasks" / "schmidt-fakten.jsonl"
DATA = ROOT / "src" / "kifabrik" / "data" / "demo"


def import_demo(ws):  # noqa: ANN001, ANN201
    from kifabrik.data import ImportOptions, import_dataset

    out = []
    for name, path in [("schmidt-wartung", "schmidt-wartung-train.jsonl"), ("schmidt-teile", "schmidt-teile-train.jsonl"),
                       ("schmidt-handbuch", "schmidt-handbuch.md")]:
        opts = ImportOptions(name=name, path=str(DATA / path), policy_preset="internal-only", test_fraction=0.0)
        out.append(import_dataset(ws, opts).record)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    import bm25s

    from kifabrik.evaluate.metrics import checks_met
    from kifabrik.evaluate.stats import wilson_interval
    from kifabrik.evaluate.tasks import FactChecks
    from kifabrik.kb.build import build_kb
    from kifabrik.kb.grounding import diverse, passage_text
    from kifabrik.kb.search import KnowledgeBase
    from kifabrik.workspace import Workspace

    items = [json.loads(line) for line in TASK.read_text(encoding="utf-8").splitlines() if line.strip()]
    answerable = [i for i in items if i["answerable"]]
    with tempfile.TemporaryDirectory() as home:
        ws = Workspace.open(home)
        kb = KnowledgeBase.open(ws, build_kb(ws, "bench", import_demo(ws)))
        ours: dict[int, int] = {1: 0, 3: 0, 5: 0}
        lat_ours: list[float] = []
        for it in answerable:
            t = time.perf_counter()
            hits = diverse(kb, kb.search(it["question"], k=20, purpose="serving"), 5)
            lat_ours.append(time.perf_counter() - t)
            ok = [checks_met(passage_text(kb, h), FactChecks(**it["checks"])) for h in hits]
            for k in ours:
                ours[k] += any(ok[:k])
        # the plain alternative: the same passages (question + answer text), bm25s' own tokenizer
        corpus = [p.text for p in kb.passages]
        answers = [p.answer or p.text for p in kb.passages]
        plain = bm25s.BM25()
        plain.index(bm25s.tokenize(corpus, show_progress=False), show_progress=False)
        theirs: dict[int, int] = {1: 0, 3: 0, 5: 0}
        lat_theirs: list[float] = []
        for it in answerable:
            t = time.perf_counter()
            ids, _ = plain.retrieve(bm25s.tokenize([it["question"]], show_progress=False), k=5, show_progress=False)
            lat_theirs.append(time.perf_counter() - t)
            ok = [checks_met(answers[int(i)], FactChecks(**it["checks"])) for i in ids[0]]
            for k in theirs:
                theirs[k] += any(ok[:k])
        n = len(answerable)
        print(f"facts task: {n} answerable questions, {len(kb.passages)} passages")
        for k in (1, 3, 5):
            a, b = ours[k], theirs[k]
            ia, ib = wilson_interval(a, n), wilson_interval(b, n)
            print(f"recall@{k}: kifabrik {a}/{n} = {a / n:.0%} [{ia.low:.0%}-{ia.high:.0%}]   "
                  f"bm25s plain {b}/{n} = {b / n:.0%} [{ib.low:.0%}-{ib.high:.0%}]   ratio {a / max(b, 1):.2f}")
        for name, lat in (("kifabrik", lat_ours), ("bm25s plain", lat_theirs)):
            print(f"latency {name}: p50 {statistics.median(lat) * 1e3:.2f} ms, p95 {pct(lat, 0.95) * 1e3:.2f} ms")
        print(f"latency ratio (p50, kifabrik / plain): {statistics.median(lat_ours) / statistics.median(lat_theirs):.2f}"
              " (kifabrik also checks each passage's usage policy)")
        ws.close()


if __name__ == "__main__":
    sys.exit(main())
