"""Fixtures of the evaluation tests (helpers live in evalkit.py beside this file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from evalkit import GEN_ITEMS, MC_ITEMS, write_task  # noqa: E402


@pytest.fixture
def mc_task(tmp_path: Path) -> Path:
    return write_task(tmp_path / "tasks", "wartung", "name: wartung\ntype: multiple_choice\nitems: wartung.jsonl\n"
                      "prompt: '{{ question }}'\n", MC_ITEMS)


@pytest.fixture
def gen_task(tmp_path: Path) -> Path:
    return write_task(tmp_path / "tasks", "fragen", "name: fragen\ntype: generation\nitems: fragen.jsonl\n"
                      "max_new_tokens: 6\nmetrics: [exact_match, contains, token_f1, chrf]\n", GEN_ITEMS)
