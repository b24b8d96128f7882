"""The tensor work of merging (imports torch and PEFT; only called by `merge.api`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from kifabrik.errors import KifabrikError
from kifabrik.merge.compat import AdapterInfo
from kifabrik.workspace import Workspace


def _names(infos: list[AdapterInfo]) -> list[str]:
    return [f"a{i}" for i in range(len(infos))]


def load_with_adapters(ws: Workspace, infos: list[AdapterInfo]) -> Any:
    """The base model in float32 on the CPU with every adapter loaded under names a0, a1, ..."""
    from kifabrik.models.runtime import attach_adapters, load_weights

    base = infos[0].base
    # a fresh copy: merging changes the weights in place, so the runtime's cached models must not be used
    model = load_weights(ws, base, dtype="float32", device="cpu")
    return attach_adapters(model, list(zip(_names(infos), [i.path for i in infos], strict=True)), base_ref=base.ref)


def merged_adapter(ws: Workspace, infos: list[AdapterInfo], options: Any, weights: list[float],
                   out: Path) -> tuple[int, list[str]]:
    """Write the combined adapter (PEFT format) into `out`; returns (rank, target modules)."""
    import torch

    from kifabrik.merge.methods import methods

    peft_model = load_with_adapters(ws, infos)
    if options.svd_rank is not None and methods()[options.method]["peft"] != "cat":
        _check_svd_rank(peft_model, options.svd_rank)
    torch.manual_seed(options.seed)  # DARE draws its random masks from the global generator
    peft_model.add_weighted_adapter(
        _names(infos), weights, "merged", combination_type=methods()[options.method]["peft"],
        svd_rank=options.svd_rank, density=options.density, majority_sign_method=options.majority_sign_method)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        peft_model.save_pretrained(tmp, selected_adapters=["merged"], safe_serialization=True)
        saved = Path(tmp) / "merged"  # PEFT puts non-default adapters into a sub-folder
        for f in saved.iterdir():
            shutil.move(str(f), out / f.name)
    cfg = peft_model.peft_config["merged"]
    targets = sorted(cfg.target_modules) if isinstance(cfg.target_modules, set | list) else [str(cfg.target_modules)]
    return int(cfg.r), targets


def _check_svd_rank(peft_model: Any, rank: int) -> None:
    """A rank above a layer's smaller dimension cannot be represented (PEFT would save unloadable shapes)."""
    from peft.tuners.lora import LoraLayer

    limit = min(min(m.get_base_layer().weight.shape) for m in peft_model.modules() if isinstance(m, LoraLayer))
    if rank > limit:
        raise KifabrikError(f"--svd-rank {rank} exceeds the smallest adapted layer dimension ({limit})",
                            hint=f"use --svd-rank {limit} or less")


def combined_delta(module: Any, names: list[str], weights: list[float], options: Any) -> Any:
    """The exact combined delta weight of one LoRA layer (PEFT's merge_utils on full deltas)."""
    import torch
    from peft.utils import merge_utils

    from kifabrik.merge.methods import methods

    present = [(n, w) for n, w in zip(names, weights, strict=True) if n in module.lora_A]
    deltas = [module.get_delta_weight(n) for n, _ in present]
    wt = torch.tensor([w for _, w in present], dtype=deltas[0].dtype)
    exact = methods()[options.method]["exact"]
    if exact == "task_arithmetic":
        return merge_utils.task_arithmetic(deltas, wt)
    if exact == "dare_linear":
        return merge_utils.dare_linear(deltas, wt, options.density)
    if exact == "ties":
        return merge_utils.ties(deltas, wt, options.density, options.majority_sign_method)
    if exact == "dare_ties":
        return merge_utils.dare_ties(deltas, wt, options.density, options.majority_sign_method)
    raise ValueError(f"no exact computation for {options.method}")


def merged_model(ws: Workspace, infos: list[AdapterInfo], options: Any, weights: list[float], out: Path,
                 meta: dict[str, Any]) -> None:
    """Fold the combined deltas into the base weights and save a Hugging Face folder into `out`."""
    import torch
    from peft.tuners.lora import LoraLayer

    from kifabrik.merge.methods import methods
    from kifabrik.models.folder import derived_model_facts
    from kifabrik.models.runtime import load_tokenizer_of

    peft_model = load_with_adapters(ws, infos)
    names = _names(infos)
    torch.manual_seed(options.seed)
    if methods()[options.method]["exact"] is None:  # svd: the rank reduction is the method
        peft_model.add_weighted_adapter(names, weights, "merged", combination_type="svd", svd_rank=options.svd_rank)
        model = peft_model.merge_and_unload(adapter_names=["merged"])
    else:
        with torch.no_grad():
            # Same module order as PEFT's add_weighted_adapter, so DARE's random draws line up.
            for _, module in peft_model.base_model.model.named_modules():
                if isinstance(module, LoraLayer) and any(n in module.lora_A for n in names):
                    delta = combined_delta(module, names, weights, options)
                    module.get_base_layer().weight.data += delta.to(module.get_base_layer().weight.dtype)
        model = peft_model.unload()  # drop the LoRA layers; their deltas are already in the weights
    base = infos[0].base
    stored = base.meta.get("dtype")
    if isinstance(stored, str) and hasattr(torch, stored) and stored != "float32":
        model = model.to(getattr(torch, stored))  # keep the base model's storage precision
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer_of(ws, base).save_pretrained(out)
    meta.update(derived_model_facts(out, base, source=f"merged:{options.method}"))
