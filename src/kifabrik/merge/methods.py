"""The table of merge methods (kept as data in methods.yaml): PEFT combination, exact rule, options."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml


@cache
def methods() -> dict[str, dict[str, Any]]:
    """Method name -> {peft, exact, needs_density, normalise}, from methods.yaml next to this module."""
    table: dict[str, dict[str, Any]] = yaml.safe_load((Path(__file__).parent / "methods.yaml").read_text(encoding="utf-8"))
    return table
