"""Tests use the catalog through its public methods: no test opens `Catalog._session` itself."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).parent
PRIVATE = re.compile(r"\._session\b")


def test_no_test_reaches_into_a_private_session() -> None:
    hits = [f"{path.relative_to(TESTS.parent)}:{n}: {line.strip()}"
            for path in sorted(TESTS.rglob("*.py")) if path != Path(__file__)
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if PRIVATE.search(line)]
    assert hits == [], "use (or add) a public Catalog method instead:\n" + "\n".join(hits)
