"""Fixtures of the release tests: the record builders of the document tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "document"))
