"""The YAML metadata of the Hugging Face model card (license, base_model, datasets, language, model-index).

YAML cannot carry citations, so every key is a recorded fact copied as is (its source is
cited in the card's body) and every fact that is not recorded is left out with a comment line
saying why — never filled with a guess.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

RELATION = {"lora": "adapter", "full": "finetune"}


def _results(ev: dict[str, Any]) -> list[dict[str, Any]]:
    """model-index results of one evaluation: one entry per task and per quality suite."""
    out = []
    groups = [(t["name"], t["metrics"], t["stats"]) for t in ev["tasks"]]
    groups += [(f"kifabrik suite {s['name']}", s["metrics"], s["stats"]) for s in ev["suites"]]
    for name, metrics, stats in groups:
        values = [{"type": k, "value": round(float(v.value), 6), "name": _label(k, stats.get(k)), "verified": False}
                  for k, v in metrics.items()
                  if isinstance(v.value, int | float) and not (isinstance(v.value, float) and math.isnan(v.value))]
        if values:
            out.append({"task": {"type": "text-generation"},
                        "dataset": {"name": name, "type": name.replace(" ", "-")}, "metrics": values,
                        "source": {"name": f"kifabrik evaluation {ev['record'].value} ({ev['id'].value[:12]})"}})
    return out


def _label(metric: str, stats: dict[str, Any] | None) -> str:
    """The metric's display name with its item count and interval: a score means little without them."""
    if not stats or not stats["n"].recorded:
        return f"{metric} (item count not recorded)"
    ci = f", 95 % CI {stats['ci'].value}" if stats["ci"].recorded else ""
    return f"{metric} (n = {stats['n'].value}{ci})"


def front_matter(ctx: dict[str, Any]) -> str:
    """The YAML block (without the --- lines) for README.md."""
    m, base = ctx["m"], ctx["base"]
    data: dict[str, Any] = {}
    missing: list[str] = []
    lic = m["license"]
    if lic.recorded and str(lic.value).startswith("LicenseRef-"):
        # The Hub's way to name a licence of one's own: `other` with its name.
        data["license"] = "other"
        data["license_name"] = str(lic.value).removeprefix("LicenseRef-").lower()
    elif lic.recorded and not str(lic.value).startswith("unknown"):
        data["license"] = str(lic.value).lower()
    else:
        missing.append(f"license: {lic.reason or lic.value}")
    if base is not None:
        up = base["upstream"]
        data["base_model"] = up.value if up.recorded else base["name"].value
        if m["method"].recorded:
            data["base_model_relation"] = RELATION.get(m["method"].value, "merge")
    else:
        missing.append("base_model: a registered base model (no base in its lineage)")
    if ctx["datasets"]:
        data["datasets"] = [d["name"].value for d in ctx["datasets"]]
    else:
        missing.append("datasets: no training dataset is recorded in the lineage")
    langs = m["languages"]
    found: list[str] = []
    if langs.recorded:
        found = list(langs.value) if isinstance(langs.value, list | tuple) else [langs.value]
    # A specialised model also speaks the languages of the data it was trained on.
    for d in ctx["datasets"]:
        shares = d["languages"].value if d["languages"].recorded else None
        found += [lang for lang in (shares or {}) if lang not in found]
    if found:
        data["language"] = found
    else:
        missing.append(f"language: {langs.reason}")
    data["library_name"] = "peft" if m["kind"].value == "adapter" else "transformers"
    data["pipeline_tag"] = "text-generation"
    data["tags"] = ["kifabrik"]
    results = [r for ev in ctx["evaluations"] for r in _results(ev)]
    if results:
        data["model-index"] = [{"name": m["name"].value, "results": results}]
    else:
        missing.append("model-index: no evaluation of this model is recorded")
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)
    return text + "".join(f"# not recorded: {line}\n" for line in missing)
