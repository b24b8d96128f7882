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


def adapted(peft_model: Any, names: list[str]) -> list[tuple[int, int]]:
    """The weight shapes (out, in) of every layer that one of the adapters `names` changes."""
    from peft.tuners.lora import LoraLayer

    return [tuple(m.get_base_layer().weight.shape) for m in peft_model.modules()  # type: ignore[misc]
            if isinstance(m, LoraLayer) and any(n in m.lora_A for n in names)]


def svd_cost(method: str, shapes: list[tuple[int, int]], rank: int, into_base: str) -> str:
    """What an SVD-based adapter merge costs and why, and the exact, cheaper command (`into_base`:
    the same merge folded into the base weights; for `svd`, task_arithmetic)."""
    biggest = max(shapes, key=lambda s: s[0] * s[1])
    flops = sum(4 * a * b * min(a, b) for a, b in shapes)  # a thin SVD of an a×b matrix: ~4·a·b·min(a, b)
    why = ("TIES and DARE prune entries of the full weight deltas (TIES also elects a sign per entry), so the "
           "merged delta is no longer low-rank" if method != "svd"
           else "the weighted sum of the deltas has the rank of all adapters together")
    cheaper = ("task_arithmetic gives the same weighted sum exactly, without SVD (an adapter whose rank is the sum of "
               "the ranks)" if method == "svd" else "The same merge folded exactly into the base weights needs no "
               "SVD (one pass over the matrices; it writes a full model instead of an adapter)")
    return (f"{method} into an adapter: {why}. A rank-{rank} adapter is fitted to it with one SVD per adapted "
            f"matrix: {len(shapes)} {'matrices' if len(shapes) != 1 else 'matrix'} up to {biggest[0]}×{biggest[1]}, "
            f"~{flops / 1e9:.3g} GFLOP; the bar shows the time left. {cheaper}:\n  {into_base}")


def _with_progress(peft_model: Any, step: Any) -> None:
    """Advance `step` after each SVD that PEFT's add_weighted_adapter computes (one per adapted matrix)."""
    lora = peft_model.base_model
    svd = getattr(lora, "_svd_generalized_task_arithmetic_weighted_adapter", None)
    if svd is None:  # a PEFT without this helper: no per-matrix progress, the spinner stays
        return

    def counted(*args: Any, **kwargs: Any) -> Any:
        result = svd(*args, **kwargs)
        step(1)
        return result

    object.__setattr__(lora, "_svd_generalized_task_arithmetic_weighted_adapter", counted)


def merged_adapter(ws: Workspace, infos: list[AdapterInfo], options: Any, weights: list[float],
                   out: Path, into_base: str = "") -> tuple[int, list[str]]:
    """Write the combined adapter (PEFT format) into `out`; returns (rank, target modules).

    `into_base` is the command that merges the same adapters exactly into the base; SVD-based
    methods name it, with their cost, before they start.
    """
    import torch

    from kifabrik.merge.methods import methods
    from kifabrik.progress import bar, info

    peft_model = load_with_adapters(ws, infos)
    combination = methods()[options.method]["peft"]
    if options.svd_rank is not None and combination != "cat":
        _check_svd_rank(peft_model, options.svd_rank)
    shapes = adapted(peft_model, _names(infos))
    svd = combination.endswith("svd")
    if svd:
        info(svd_cost(options.method, shapes, options.svd_rank or max(i.rank for i in infos), into_base))
    label = f"{options.method}: SVD of {len(shapes)} matrices" if svd else f"merging with {options.method}"
    with bar(label, len(shapes) if svd else None) as step:
        _with_progress(peft_model, step)
        torch.manual_seed(options.seed)  # DARE draws its random masks from the global generator
        # A thin SVD: the adapter keeps the leading `rank` singular vectors only, which it gives exactly as
        # the full one does, without the full square factors (several times faster on wide layers).
        peft_model.add_weighted_adapter(
            _names(infos), weights, "merged", combination_type=combination, svd_rank=options.svd_rank,
            density=options.density, majority_sign_method=options.majority_sign_method, svd_full_matrices=False)
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
    from kifabrik.progress import bar

    peft_model = load_with_adapters(ws, infos)
    names = _names(infos)
    n = len(adapted(peft_model, names))
    torch.manual_seed(options.seed)
    if methods()[options.method]["exact"] is None:  # svd: the rank reduction is the method
        with bar(f"svd: SVD of {n} matrices", n) as step:
            _with_progress(peft_model, step)
            peft_model.add_weighted_adapter(names, weights, "merged", combination_type="svd",
                                            svd_rank=options.svd_rank, svd_full_matrices=False)
        model = peft_model.merge_and_unload(adapter_names=["merged"])
    else:
        with torch.no_grad(), bar(f"{options.method}: folding the deltas of {n} matrices into the base", n) as step:
            # Same module order as PEFT's add_weighted_adapter, so DARE's random draws line up.
            for _, module in peft_model.base_model.model.named_modules():
                if isinstance(module, LoraLayer) and any(n in module.lora_A for n in names):
                    delta = combined_delta(module, names, weights, options)
                    module.get_base_layer().weight.data += delta.to(module.get_base_layer().weight.dtype)
                    step(1)
        model = peft_model.unload()  # drop the LoRA layers; their deltas are already in the weights
    base = infos[0].base
    stored = base.meta.get("dtype")
    if isinstance(stored, str) and hasattr(torch, stored) and stored != "float32":
        model = model.to(getattr(torch, stored))  # keep the base model's storage precision
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer_of(ws, base).save_pretrained(out)
    meta.update(derived_model_facts(out, base, source=f"merged:{options.method}"))
