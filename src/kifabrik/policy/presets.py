"""Policy presets: ODRL documents kept as data files, some with one argument.

    company-internal | internal-only | evaluation-only | research-non-commercial
    open-with-attribution[:PARTY] | expires-on:YYYY-MM-DD

Each file's `dct:description` says in one sentence what it permits (shown by `policy presets`).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from kifabrik.errors import KifabrikError

PRESETS = Path(__file__).parent / "presets"
#: Presets that take an argument after a colon: (placeholder, required, default).
ARGUMENTS = {"expires-on": ("date", True, None), "open-with-attribution": ("party", False, "the data provider")}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.json"))


def preset_usage() -> list[str]:
    out = []
    for name in preset_names():
        arg = ARGUMENTS.get(name)
        out.append(name if arg is None else f"{name}:{arg[0].upper()}" if arg[1] else f"{name}[:{arg[0].upper()}]")
    return out


def preset(spec: str) -> dict[str, Any]:
    """The ODRL document of a preset such as `internal-only` or `expires-on:2026-12-31`."""
    name, _, arg = spec.partition(":")
    name, arg = name.strip(), arg.strip()
    path = PRESETS / f"{name}.json"
    if not name or not path.exists():
        raise KifabrikError(f"unknown policy preset {spec!r}", hint=f"presets: {', '.join(preset_usage())}")
    placeholder = ARGUMENTS.get(name)
    if placeholder is None and arg:
        raise KifabrikError(f"policy preset {name!r} takes no argument (got {arg!r})", hint=f"use --policy-preset {name}")
    text = path.read_text(encoding="utf-8")
    if placeholder:
        key, required, default = placeholder
        if not arg and required:
            raise KifabrikError(f"policy preset {name!r} needs a {key}", hint=f"e.g. --policy-preset {name}:2026-12-31")
        if key == "date":
            try:
                date.fromisoformat(arg)
            except ValueError:
                raise KifabrikError(f"policy preset {spec!r}: {arg!r} is not a date",
                                    hint="write it as YYYY-MM-DD, e.g. expires-on:2026-12-31") from None
        # json.dumps()[1:-1] escapes the argument for its place inside a JSON string
        text = text.replace("${" + key + "}", json.dumps(arg or default)[1:-1])
    return json.loads(text)
