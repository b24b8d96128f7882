"""Which linear layers LoRA adapts: per-architecture defaults and a check against the model."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from kifabrik.errors import KifabrikError

if TYPE_CHECKING:
    from torch import nn

ALL_LINEAR = "all-linear"


@cache
def default_table() -> dict[str, list[str]]:
    return yaml.safe_load((Path(__file__).parent / "targets.yaml").read_text(encoding="utf-8"))


def default_targets(model_type: str | None) -> list[str]:
    """The table's targets for `model_type`, else `["all-linear"]`."""
    return list(default_table().get(model_type or "", [ALL_LINEAR]))


def linear_modules(model: nn.Module) -> list[str]:
    """Leaf names of the model's linear layers (and GPT-2 style Conv1D), output head excluded."""
    from torch import nn

    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    names = set()
    for full, module in model.named_modules():
        if module is head:
            continue
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def resolve_targets(model: nn.Module, requested: list[str] | None, model_type: str | None) -> list[str] | str:
    """Targets to hand PEFT: validated names, or `"all-linear"`.

    Raises:
        KifabrikError: a requested name matches no linear layer of the model; the message
            lists the linear layers it has.
    """
    names = requested if requested else default_targets(model_type)
    if names == [ALL_LINEAR] or names == ALL_LINEAR:
        return ALL_LINEAR
    available = linear_modules(model)
    unknown = [n for n in names if n not in available]
    if unknown:
        what = "the default targets for " + str(model_type) if not requested else "lora.target_modules"
        raise KifabrikError(
            f"{what}: {', '.join(repr(u) for u in unknown)} "
            f"{'is not a linear layer' if len(unknown) == 1 else 'are not linear layers'} of this model "
            f"({type(model).__name__}); its linear layers are: {', '.join(available)}",
            hint=f"pick target modules from that list, or `{ALL_LINEAR}` for every linear layer but the output head")
    return list(names)
