"""`kifabrik train`: fine-tune a registered model on dataset artifacts, or resume a run.

    kifabrik train --base smollm2-135m-instruct --data service-chats --max-steps 60
    kifabrik train train.yaml --set lora.rank=8         # a train config (or a whole recipe)
    kifabrik train --resume RUN_ID                       # after Ctrl-C, kill -9, a crash

One GPU is used automatically (bf16 where supported). Data-parallel over several processes:
`kifabrik train ... --nproc N` on one machine, or the same command under `torchrun` / `srun`
(`kifabrik.train.distributed`): rank 0 alone records the run, counts policy uses, writes the
run folder and publishes the adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kifabrik.cli.common import human, out, workspace
from kifabrik.cli.options import Flag, ModelFlags, overlay
from kifabrik.config import apply_overrides, load_yaml
from kifabrik.errors import KifabrikError
from kifabrik.train.options import TrainOptions

#: Every field of TrainOptions is a flag; these keep the short names users know.
TRAIN = ModelFlags(TrainOptions, flags={"learning_rate": Flag("lr", short="--learning-rate"), "lora.rank": "rank", "lora.alpha": "alpha",
                                        "lora.dropout": "dropout", "lora.target_modules": "target"},
                   what="training options", hint="see `kifabrik train --help`; nothing was run")


def _train(
    given: dict[str, Any],
    recipe: Annotated[Path | None, typer.Argument(help="A train config YAML (base, data and options), or a whole "
                                                       "recipe with `stages:` (then run like `kifabrik run`).")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Base model: name, name@version or id.")] = None,
    data: Annotated[list[str] | None, typer.Option("--data", help="Dataset artifact (repeatable).")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the adapter (default <base>-<dataset>-<method>).")] = None,
    resume: Annotated[str | None, typer.Option("--resume",
                                               help="Continue the run RUN_ID from its last checkpoint.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override an option: --set lora.rank=8.")] = None,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="Data-parallel processes on this machine "
                                       "(torch.distributed: gloo on CPU, nccl on GPU); batch_size is per process. "
                                       "Under torchrun/srun leave it out.")] = 1,
) -> None:
    """Fine-tune a model (LoRA or full) on chat data, or continue pre-training on text."""
    from kifabrik import train as api

    if nproc > 1:
        import sys

        from kifabrik.train.distributed import launch

        if resume:
            raise KifabrikError("--resume runs in one process for now", hint=f"kifabrik train --resume {resume}")
        argv = sys.argv[1:]
        keep = [a for i, a in enumerate(argv) if not (a == "--nproc" or a.startswith("--nproc=")
                                                     or (i > 0 and argv[i - 1] == "--nproc"))]
        code = launch(nproc, keep)
        if code != 0:
            raise typer.Exit(code)
        return
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
    overlay(raw, given)  # defaults < config file < flags < --set
    apply_overrides(raw, set_ or [])
    base = base or raw.pop("base", None)
    data = data or _as_list(raw.pop("data", None))
    name = name or raw.pop("name", None)
    if not base or not data:
        raise KifabrikError("say what to train: --base MODEL and --data DATASET (or a config file with base and data)",
                            hint="kifabrik train --base smollm2-135m-instruct --data my-chats")
    options = TRAIN.validate(raw, given=given, source=source)
    _show(api.train(ws, base, data, options, name=name))


train = TRAIN.command(_train, layered=True)


def _as_list(v: Any) -> list[str] | None:
    return None if v is None else [v] if isinstance(v, str) else [str(x) for x in v]


def _show(rec: Any) -> None:
    acc = rec.meta.get("accounting", {})
    out.print(f"[green]✓[/green] {rec.kind} [bold]{rec.ref}[/bold]  id {rec.id}")
    out.print(f"  base {rec.meta.get('base_model')}; {acc.get('steps')} steps, {human(acc.get('tokens_seen'))} tokens, "
              f"{acc.get('wall_time_s')} s on {acc.get('device')}")
    if acc.get("imported_rows") is not None:  # records written before the three counts were kept lack them
        packed = f" → {acc['packed_sequences']} packed sequences" if acc.get("packed_sequences") is not None else ""
        out.print(f"  data: {acc['imported_rows']} imported rows → {acc['training_sequences']} training sequences"
                  f"{packed}; {acc.get('steps_per_epoch')} steps per epoch, {acc.get('epochs')} epochs")
    losses = [f"train loss {rec.meta['final_train_loss']:.4f}" if rec.meta.get("final_train_loss") is not None else "",
              f"eval loss {rec.meta['final_eval_loss']:.4f}" if rec.meta.get("final_eval_loss") is not None else ""]
    if any(losses):
        out.print("  " + ", ".join(x for x in losses if x))
    out.print(f"  energy {acc.get('energy_kwh')} kWh ({acc.get('energy_method')}), ~{acc.get('flops', 0):.3g} FLOPs; "
              f"run {rec.meta.get('run_id')}")
