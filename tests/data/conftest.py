"""Fixtures of the data tests: small files of every supported kind, good and bad."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kf_datafiles import chat


@pytest.fixture
def chats(tmp_path: Path) -> Path:
    """40 distinct German service chats, one with an e-mail address."""
    path = tmp_path / "chats.jsonl"
    rows = [chat(f"Wie oft wechsle ich den Filter an Maschine Nummer {i} im Werk {i * 7}?",
                 f"Den Filter von Maschine {i} wechseln Sie alle {100 + i} Betriebsstunden.") for i in range(40)]
    rows[3] = chat("Schreiben Sie mir an max@example.com bitte.", "Gern, wir melden uns per E-Mail.")
    path.write_text("".join(rows), encoding="utf-8")
    return path
