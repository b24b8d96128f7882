"""`kifabrik train`: fine-tune a registered model on dataset artifacts, or resume a run.

    kifabrik train --base smollm2-135m-instruct --data service-chats --max-steps 60
    kifabrik train train.yaml --set lora.rank=8         # a train config (or a whole recipe)
    kifabrik train --resume RUN_ID                       # after Ctrl-C, kill -9, a crash

One GPU is used automatically (bf16 where supported). Multi-GPU is planned as the same
command under `accelerate launch --num_processes N -m kifabrik.cli.main train ...` or
`torchrun --nproc_per_node N -m kifabrik.cli.main train ...` (the Trainer already shards the
data); it is refused for now, because run records, policy counts and checkpoint markers are
not yet written by rank 0 only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kifabrik.cli.common import human, out, workspace
from kifabrik.config import apply_overrides, load_yaml, validation_messages
from kifabrik.errors import KifabrikError

#: CLI flag -> TrainOptions path. Given flags override the config file.
FLAG_FIELDS = {"method": "method", "epochs": "epochs", "max_steps": "max_steps", "batch_size": "batch_size",
               "grad_accum": "grad_accum", "lr": "learning_rate", "max_seq_length": "max_seq_length",
               "packing": "packing", "seed": "seed", "save_steps": "save_steps", "eval_steps": "eval_steps",
               "mlflow": "mlflow", "rank": "lora.rank", "alpha": "lora.alpha", "dropout": "lora.dropout",
               "target": "lora.target_modules"}


def train(
    recipe: Annotated[Path | None, typer.Argument(help="A train config YAML (base, data and options), or a whole "
                                                       "recipe with `stages:` (then run like `kifabrik run`).")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Base model: name, name@version or id.")] = None,
    data: Annotated[list[str] | None, typer.Option("--data", help="Dataset artifact (repeatable).")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the adapter (default <base>-<dataset>-<method>).")] = None,
    resume: Annotated[str | None, typer.Option("--resume",
                                               help="Continue the run RUN_ID from its last checkpoint.")] = None,
    method: Annotated[str | None, typer.Option(help="lora (default) or full (small models).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the training split.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per micro-batch and device.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per optimizer step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    max_seq_length: Annotated[int | None, typer.Option(help="Longest sequence / packed row, in tokens.")] = None,
    packing: Annotated[bool | None, typer.Option("--packing/--no-packing", help="Pack sequences into rows.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    save_steps: Annotated[int | None, typer.Option(help="Checkpoint every N steps.")] = None,
    eval_steps: Annotated[int | None, typer.Option(help="Held-out loss every N steps.")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha.")] = None,
    dropout: Annotated[float | None, typer.Option(help="LoRA dropout.")] = None,
    target: Annotated[list[str] | None, typer.Option("--target", help="LoRA target module (repeatable).")] = None,
    mlflow: Annotated[bool | None, typer.Option("--mlflow/--no-mlflow", help="Also log to MLflow.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override an option: --set lora.rank=8.")] = None,
) -> None:
    """Fine-tune a model (LoRA or full) on chat data, or continue pre-training on text."""
    from kifabrik import train as api

    ws = workspace()
    if resume:
        if recipe or base or data:
            raise KifabrikError("--resume takes no recipe, --base or --data: the run folder holds them",
                                hint=f"kifabrik train --resume {resume}")
        _show(api.resume(ws, resume))
        return
    raw: dict[str, Any] = {}
    source = "command line"
    if recipe is not None:
        raw = load_yaml(recipe) or {}
        if not isinstance(raw, dict):
            raise KifabrikError(f"{recipe}: a train config must be a YAML mapping")
        if "stages" in raw:
            from kifabrik.cli.recipe import run_recipe_file

            run_recipe_file(recipe, set_ or [], False, False)
            return
        source = str(recipe)
    given = {"method": method, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size,
             "grad_accum": grad_accum, "lr": lr, "max_seq_length": max_seq_length, "packing": packing, "seed": seed,
             "save_steps": save_steps, "eval_steps": eval_steps, "mlflow": mlflow, "rank": rank, "alpha": alpha,
             "dropout": dropout, "target": target}
    for flag, value in given.items():
        if value is not None:
            node = raw
            *parents, leaf = FLAG_FIELDS[flag].split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
    apply_overrides(raw, set_ or [])
    base = base or raw.pop("base", None)
    data = data or _as_list(raw.pop("data", None))
    name = name or raw.pop("name", None)
    if not base or not data:
        raise KifabrikError("say what to train: --base MODEL and --data DATASET (or a config file with base and data)",
                            hint="kifabrik train --base smollm2-135m-instruct --data my-chats")
    options = _validate(raw, source)
    _show(api.train(ws, base, data, options, name=name))


def _as_list(v: Any) -> list[str] | None:
    return None if v is None else [v] if isinstance(v, str) else [str(x) for x in v]


def _validate(raw: dict[str, Any], source: str) -> Any:
    from pydantic import ValidationError

    from kifabrik.train.options import TrainOptions

    try:
        return TrainOptions.model_validate(raw)
    except ValidationError as exc:
        problems = validation_messages(exc, raw, source)
        raise KifabrikError("invalid training options:\n  " + "\n  ".join(problems),
                            hint="see `kifabrik train --help`; nothing was run") from None


def _show(rec: Any) -> None:
    acc = rec.meta.get("accounting", {})
    out.print(f"[green]✓[/green] {rec.kind} [bold]{rec.ref}[/bold]  id {rec.id}")
    out.print(f"  base {rec.meta.get('base_model')}; {acc.get('steps')} steps, {human(acc.get('tokens_seen'))} tokens, "
              f"{acc.get('wall_time_s')} s on {acc.get('device')}")
    losses = [f"train loss {rec.meta['final_train_loss']:.4f}" if rec.meta.get("final_train_loss") is not None else "",
              f"eval loss {rec.meta['final_eval_loss']:.4f}" if rec.meta.get("final_eval_loss") is not None else ""]
    if any(losses):
        out.print("  " + ", ".join(x for x in losses if x))
    out.print(f"  energy {acc.get('energy_kwh')} kWh ({acc.get('energy_method')}), ~{acc.get('flops', 0):.3g} FLOPs; "
              f"run {rec.meta.get('run_id')}")
