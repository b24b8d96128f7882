"""Fixtures of the train tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from train_builders import chat_rows, make_dataset, text_rows  # noqa: E402

from kifabrik.workspace import Workspace  # noqa: E402


@pytest.fixture
def chat_ds(ws: Workspace) -> Any:
    return make_dataset(ws, "service-chats", chat_rows(24), chat_rows(4))


@pytest.fixture
def text_ds(ws: Workspace) -> Any:
    return make_dataset(ws, "manual-text", text_rows(16), text_rows(3), fmt="text")
