"""Facts about a dataset for its card: characters, tokens with the base tokenizer, languages."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from kifabrik.data.rows import Row, row_text


def token_counts(rows: list[Row], tokenizer: Any, batch: int = 512) -> int:
    total = 0
    for i in range(0, len(rows), batch):
        texts = [row_text(r.record) for r in rows[i:i + batch]]
        total += sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return total


def languages(rows: list[Row], sample: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Share of each detected language over a seeded sample of rows (py3langid, 97 languages)."""
    if not rows:
        return {"detector": None, "sample": 0, "shares": {}}
    try:
        import py3langid
    except ImportError:  # pragma: no cover - py3langid is a core dependency
        return {"detector": None, "sample": 0, "shares": {}, "note": "py3langid is not installed"}
    picked = rows if len(rows) <= sample else random.Random(seed).sample(rows, sample)
    counts = Counter(py3langid.classify(row_text(r.record)[:2000])[0] for r in picked)
    shares = {lang: round(n / len(picked), 4) for lang, n in counts.most_common()}
    return {"detector": "py3langid (per row, first 2,000 characters)", "sample": len(picked), "shares": shares}
