"""Input perturbations for robustness checks: typos, casing, umlaut folding, paraphrase templates.

Perturbations change the item's text fields (never its choices or answer) and are
deterministic for a given seed, so two models see exactly the same perturbed items.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from typing import Any

import yaml

from kifabrik.evaluate.tasks import Item, Task

_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"})
_KEEP = {"id", "lang", "kind"}  # identities and groupings, never perturbed


def typos(text: str, rng: random.Random, rate: float = 0.15) -> str:
    """Swap two neighbouring letters in about `rate` of the words with four or more letters."""
    words = text.split(" ")
    for i, w in enumerate(words):
        if len(w) >= 4 and w.isalpha() and rng.random() < rate:
            j = rng.randrange(1, len(w) - 2)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def fold_umlauts(text: str) -> str:
    """ä -> ae, ö -> oe, ü -> ue, ß -> ss (how German is typed on keyboards without umlauts)."""
    return text.translate(_FOLD)


@cache
def paraphrase_templates() -> dict[str, list[str]]:
    from kifabrik.evaluate.suites import data_file

    return dict(yaml.safe_load(data_file("paraphrases.yaml").read_text(encoding="utf-8")))


def _map_fields(item: Item, fn: Callable[[str], str], keep: set[str]) -> dict[str, Any]:
    return {k: (fn(v) if isinstance(v, str) and k not in keep else v) for k, v in item.fields.items()}


def perturb_task(task: Task, kind: str, seed: int = 0) -> Task:
    """A copy of `task` whose items are perturbed by `kind` (typos, upper, lower, umlauts, paraphrase)."""
    from kifabrik.evaluate.tasks import render_item

    spec = task.spec
    keep = _KEEP | {spec.choices_field, spec.answer_field}
    rng = random.Random(f"{seed}-{kind}")
    items = []
    for n, it in enumerate(task.items):
        if kind == "paraphrase":
            options = paraphrase_templates().get(it.lang or "en") or paraphrase_templates()["en"]
            prompt = options[n % len(options)].replace("{prompt}", it.prompt)
            messages = [m if m["role"] != "user" else {**m, "content": prompt} for m in it.messages]
            items.append(replace(it, prompt=prompt, messages=messages))
            continue
        fn: Callable[[str], str] = {
            "typos": lambda s: typos(s, rng),
            "upper": str.upper,
            "lower": str.lower,
            "umlauts": fold_umlauts,
        }[kind]
        if "messages" in it.fields:  # chat rows: perturb the user's words
            msgs = [{**m, "content": fn(m["content"])} if m.get("role") == "user" else m for m in it.messages]
            items.append(replace(it, messages=msgs, prompt=fn(it.prompt)))
            continue
        new = render_item(spec, _map_fields(it, fn, keep), it.where, 0)
        items.append(replace(new, id=it.id, where=it.where))
    return replace(task, items=items, spec=spec.model_copy(update={"name": f"{spec.name}~{kind}"}))


KINDS = ("typos", "upper", "lower", "umlauts", "paraphrase")
