"""Fixtures of the knowledge-base tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kb_datafiles import Data, make_data

from kifabrik.workspace import Workspace


@pytest.fixture
def data(ws: Workspace, tmp_path: Path) -> Data:
    """The chat, handbook and no-serving datasets in the test's workspace (see kb_datafiles)."""
    return make_data(ws, tmp_path)
