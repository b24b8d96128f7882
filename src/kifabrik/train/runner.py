"""One training session on the transformers Trainer: model, rows, arguments, run, errors.

The Trainer brings the optimizer step, gradient accumulation, mixed precision, evaluation,
checkpoint/resume (optimizer, scheduler, RNG and data position) and multi-GPU through
accelerate. kifabrik adds packing, the run folder, accounting, its progress bar and Ctrl-C
handling through callbacks, and counts real tokens in `compute_loss`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kifabrik.errors import KifabrikError
from kifabrik.models.loading import native_cpu_bf16
from kifabrik.train import rundir
from kifabrik.train.options import TrainOptions
from kifabrik.train.prepare import Prepared, plan_steps


class TrainingInterrupted(KifabrikError):
    """Ctrl-C (or SIGTERM/SIGUSR1) stopped the run after saving a checkpoint: the run is `interrupted`,
    and `kifabrik train --resume RUN` goes on from that checkpoint."""

    resumable = True


@dataclass
class SessionResult:
    model: Any  # the trained (PEFT) model
    tokenizer: Any
    trainer: Any
    run: Any  # callbacks.RunFolder
    targets: list[str] | str | None
    trainable: int
    total: int
    matmul_params: int
    device: str
    precision: str
    batch_units: int  # what a batch draws from: packed sequences with packing, else training sequences
    steps_per_epoch: int


def pick_precision(opts: TrainOptions, device: str) -> str:
    import torch

    if opts.precision != "auto":
        if opts.precision == "fp16" and not device.startswith("cuda"):
            raise KifabrikError("precision fp16 needs a GPU; this run is on the CPU",
                                hint="use precision: bf16 (CPUs with AMX or AVX-512 BF16) or auto (fp32)")
        if opts.precision == "bf16" and device == "cpu" and not native_cpu_bf16():
            from kifabrik.progress import info

            info("precision bf16: this CPU computes bfloat16 only by emulation (no AMX or AVX-512 BF16), which is "
                 "slower than fp32; training in fp32 (recorded as such)")
            return "fp32"
        return opts.precision
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"



def build_model(path: Path, prepared: Prepared, opts: TrainOptions, trust: bool, device: str) -> tuple[Any, Any, int]:
    """The base model, wrapped with LoRA (or all weights trainable); returns (model, targets, matmul params)."""
    import torch

    from kifabrik.models.loading import load_model
    from kifabrik.train.accounting import matmul_parameters
    from kifabrik.train.targets import resolve_targets

    torch.manual_seed(opts.seed)  # LoRA initialisation is random: same seed, same adapter
    dtype = "float32" if opts.method == "full" else "auto"
    model = load_model(path, trust_remote_code=trust, dtype=dtype, device=device)
    model.config.use_cache = False  # a cache object disables the packed-sequence attention mask
    n_matmul = matmul_parameters(model)
    if opts.method == "full":
        model.train()
        return model, None, n_matmul
    from peft import LoraConfig, get_peft_model

    targets = resolve_targets(model, opts.lora.target_modules, prepared.base.meta.get("model_type"))
    layers = None
    if opts.lora.top_layers is not None:
        blocks = int(getattr(model.config, "num_hidden_layers", 0) or 0)
        if not blocks:
            raise KifabrikError("lora.top_layers needs a model whose config names num_hidden_layers",
                                hint="remove lora.top_layers")
        if opts.lora.top_layers > blocks:
            raise KifabrikError(f"lora.top_layers is {opts.lora.top_layers}, but the model has {blocks} blocks",
                                hint=f"use at most {blocks}")
        layers = list(range(blocks - opts.lora.top_layers, blocks))
    config = LoraConfig(r=opts.lora.rank, lora_alpha=opts.lora.alpha, lora_dropout=opts.lora.dropout,
                        target_modules=targets, task_type="CAUSAL_LM", bias="none", layers_to_transform=layers)
    peft_model = get_peft_model(model, config)
    if opts.gradient_checkpointing:
        peft_model.enable_input_require_grads()
    chosen = getattr(peft_model.peft_config["default"], "target_modules", targets)
    resolved = sorted(chosen) if targets == "all-linear" else targets
    return peft_model, resolved, n_matmul


def training_arguments(folder: Path, opts: TrainOptions, total_steps: int, precision: str, has_eval: bool) -> Any:
    from transformers import TrainingArguments

    report_to: list[str] | str = "none"
    if opts.mlflow:
        import importlib.util

        if importlib.util.find_spec("mlflow") is None:
            raise KifabrikError("mlflow: true, but MLflow is not installed",
                                hint="pip install mlflow, or set mlflow: false")
        # Only a tracking server the user named; otherwise a local store next to the catalog.
        os.environ.setdefault("MLFLOW_TRACKING_URI", (folder.parent.parent / "mlruns").resolve().as_uri())
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "kifabrik")
        report_to = ["mlflow"]
    return TrainingArguments(
        output_dir=str(rundir.checkpoints_dir(folder)),
        per_device_train_batch_size=opts.batch_size, per_device_eval_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum, learning_rate=opts.learning_rate,
        lr_scheduler_type=opts.lr_scheduler, warmup_steps=opts.warmup_ratio, weight_decay=opts.weight_decay,
        max_grad_norm=opts.max_grad_norm, max_steps=total_steps, seed=opts.seed, data_seed=opts.seed,
        logging_strategy="steps", logging_steps=opts.logging_steps,
        eval_strategy="steps" if has_eval else "no", eval_steps=opts.evaluation_steps,
        save_strategy="steps", save_steps=opts.save_steps, save_total_limit=opts.keep_checkpoints,
        bf16=precision == "bf16", fp16=precision == "fp16",
        activation_checkpointing=opts.gradient_checkpointing, dataloader_pin_memory=_cuda(),
        report_to=report_to, disable_tqdm=True, remove_unused_columns=False,
        include_num_input_tokens_seen="no",  # counted exactly in compute_loss (padding excluded)
        # group_by_length: transformers' LengthGroupedSampler (the rows in random mega-batches of up to 50
        # batches, sorted by length inside each), so a padded batch pads little
        train_sampling_strategy="group_by_length" if opts.group_by_length else "random",
        dataloader_num_workers=0, use_cache=False, prediction_loss_only=True,
        # accelerate makes a multi-process CPU run data-parallel (gloo), and bf16 autocast on a CPU, only when
        # told it is on CPU
        use_cpu=(int(os.environ.get("WORLD_SIZE", "1")) > 1 or precision == "bf16") and not _cuda(),
    )


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def make_trainer_class() -> type:
    from transformers import Trainer

    from kifabrik.models.loading import causal_lm, output_logits
    from kifabrik.train.data import IGNORE
    from kifabrik.train.packing import N_TOKENS

    class KifabrikTrainer(Trainer):
        """Counts the real (non-padding) tokens of every training micro-batch, and computes the
        output head and the loss only at positions that have a target.

        In chat fine-tuning most tokens (system, user, role headers, retrieved sources) carry no
        loss, yet a plain causal-LM forward projects every position onto the whole vocabulary and
        takes a softmax there. Here the decoder runs alone and the output head sees only the
        positions whose next token is a target, row by row; the loss is the same sum over targets /
        number of targets. (The demo's grounded rows, ~420 tokens with ~50 target tokens each: a
        step of 8 rows takes about half the time of the forward with every position's logits.)
        A model wrapped for data-parallel training keeps its own forward (its wrapper synchronises
        the gradients there), with the kept positions shared by the rows (`logits_to_keep`).
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["compute_loss_func"] = _target_loss
            super().__init__(*args, **kwargs)
            import inspect

            model: Any = self.model
            forward = inspect.signature(model.get_base_model().forward if hasattr(model, "get_base_model")
                                        else model.forward)
            self.sparse_logits = "logits_to_keep" in forward.parameters
            lm = causal_lm(model)
            self.per_row = hasattr(lm, "get_decoder") and lm.get_output_embeddings() is not None

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            import torch

            n = inputs.pop(N_TOKENS, None)
            if n is not None and model.training:
                n = torch.as_tensor(n, device=self.args.device).reshape(1)
                self.state.num_input_tokens_seen += int(self.accelerator.gather(n).sum().item())
            labels = inputs["labels"]
            targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)  # position t predicts t+1
            if self.per_row and model is self.model:
                where = targets != IGNORE
                rest = {k: v for k, v in inputs.items() if k != "labels"}
                with self.accelerator.autocast():
                    out = causal_lm(model).get_decoder()(**rest, use_cache=False)
                    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
                    logits = output_logits(model, hidden[where])
                loss = _target_loss(SimpleNamespace(logits=logits), targets[where], num_items_in_batch)
                return (loss, {"loss": loss}) if return_outputs else loss
            if self.sparse_logits:
                keep = (targets != IGNORE).any(0).nonzero().flatten()
                inputs = {**inputs, "labels": targets[:, keep], "logits_to_keep": keep}
            else:
                inputs = {**inputs, "labels": targets}
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return KifabrikTrainer


def _target_loss(outputs: Any, targets: Any, num_items_in_batch: Any = None) -> Any:
    """Cross-entropy over the kept positions: sum over targets / targets in the (accumulated) batch."""
    import torch

    logits = outputs.logits.float()
    flat_targets = targets.reshape(-1).to(logits.device)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat_targets, ignore_index=-100,
                                             reduction="sum")
    if num_items_in_batch is None:
        num_items_in_batch = (targets != -100).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def run_session(ws_path: Path, folder: Path, prepared: Prepared, opts: TrainOptions, *, trust: bool,
                session: int, resume_from: Path | None, fingerprint_expected: str | None,
                before_first_step: Any, extra_callbacks: list[Any]) -> SessionResult:
    """Build everything, then train (from scratch or from `resume_from`) until done or interrupted."""
    import torch
    from transformers import PrinterCallback

    from kifabrik.models.loading import best_device, load_tokenizer
    from kifabrik.train.accounting import EnergyMeter
    from kifabrik.train.callbacks import ProgressBar, RunFolder, StopOnInterrupt
    from kifabrik.train.packing import Collator, PackedRows, PlainRows, rows_fingerprint

    # transformers 5 warns about its own internal use of renamed attributes; nothing the user can act on
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)
    device = best_device()
    precision = pick_precision(opts, device)
    rows_cls: Any = (lambda ex: PackedRows(ex, prepared.max_seq_length)) if opts.packing else PlainRows
    train_rows, test_rows = rows_cls(prepared.train), rows_cls(prepared.test) if prepared.test else None
    fingerprint = rows_fingerprint(train_rows.rows)
    if fingerprint_expected and fingerprint != fingerprint_expected:
        raise KifabrikError("the training data encode differently than when this run started (a changed tokenizer "
                            "or kifabrik version?), so the run cannot be resumed exactly",
                            hint="start a new run instead of resuming this one")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_epoch, total = plan_steps(len(train_rows), opts, world)
    from kifabrik.progress import info

    info(describe_plan(prepared.train_stats.rows, len(prepared.train), len(train_rows) if opts.packing else None,
                       prepared.max_seq_length, opts, per_epoch, total, world))
    if world > 1 and len(train_rows) % (opts.batch_size * world):
        info(f"{len(train_rows)} sequences do not fill batches of {opts.batch_size} × {world} processes: the last "
             "batch of an epoch is filled with sequences from the start (as torch's DistributedSampler does)")
    args = training_arguments(folder, opts, total, precision, test_rows is not None)
    tokenizer = load_tokenizer(ws_path, trust_remote_code=trust)
    model, targets, n_matmul = build_model(ws_path, prepared, opts, trust, device)
    meter = EnergyMeter(device).start()
    main = int(os.environ.get("RANK", "0")) == 0  # rank 0 alone writes the run folder and shows progress
    run_cb = RunFolder(folder, session, meter, fingerprint, writes=main)
    stop_cb = StopOnInterrupt()
    shown = [ProgressBar(run_cb, f"training {prepared.base.ref}")] if main else []
    trainer = make_trainer_class()(
        model=model, args=args, data_collator=Collator(tokenizer.pad_token_id or 0, opts.packing),
        train_dataset=train_rows, eval_dataset=test_rows, processing_class=tokenizer,
        callbacks=[run_cb, *shown, stop_cb, *extra_callbacks])
    trainer.remove_callback(PrinterCallback)  # our progress bar and metrics.jsonl replace its prints
    before_first_step(fingerprint)
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except torch.OutOfMemoryError as exc:
        raise _oom(opts, device, exc) from None
    except MemoryError as exc:
        raise _oom(opts, device, exc) from None
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
            raise _oom(opts, device, exc) from None
        raise
    finally:
        stop_cb.restore()
    run_cb.write_session(trainer.state, "interrupted" if stop_cb.requested else "finished")
    if stop_cb.requested:
        why = "Ctrl-C" if stop_cb.signal_name == "SIGINT" else stop_cb.signal_name
        raise TrainingInterrupted(f"training interrupted ({why}) at step {trainer.state.global_step} of "
                                  f"{trainer.state.max_steps}; a checkpoint was saved",
                                  hint=f"continue with `kifabrik train --resume {folder.name}`")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())
    return SessionResult(model, tokenizer, trainer, run_cb, targets, trainable, total_params, n_matmul, device,
                         precision, len(train_rows), per_epoch)


def describe_plan(imported: int, sequences: int, packed: int | None, max_len: int, opts: TrainOptions,
                  per_epoch: int, total: int, world: int = 1) -> str:
    """The data and steps of a run in one line, in the words of `kifabrik.train.data`.

    `24 imported rows → 24 training sequences → 9 packed sequences of ≤ 128 tokens; 3 steps per
    epoch (batch 4 × grad_accum 1); 12 steps = 4.0 epochs (the data repeats)`.
    """
    chain = f"{imported} imported rows → {sequences} training sequences"
    chain += f" → {packed} packed sequences of ≤ {max_len} tokens" if packed is not None else f" of ≤ {max_len} tokens"
    batch = f"batch {opts.batch_size}" + (f" × {world} processes" if world > 1 else "") + f" × grad_accum {opts.grad_accum}"
    epochs = total / per_epoch
    span = (f"{total} steps = {epochs:.1f} epochs (the data repeats, as with transformers' Trainer)"
            if total > per_epoch else f"{total} step{'s' if total != 1 else ''} = "
            + ("1 epoch" if total == per_epoch else f"{epochs:.2f} of an epoch"))
    return f"data: {chain}; {per_epoch} step{'s' if per_epoch != 1 else ''} per epoch ({batch}); {span}"


def _oom(opts: TrainOptions, device: str, exc: BaseException) -> KifabrikError:
    where = "GPU" if device.startswith("cuda") else "main"
    advice = [f"lower batch_size (now {opts.batch_size}) and raise grad_accum (now {opts.grad_accum}) to keep the "
              "effective batch", f"lower max_seq_length (now {opts.max_seq_length or 'default'})"]
    if not opts.gradient_checkpointing:
        advice.append("set gradient_checkpointing: true")
    if opts.method == "full":
        advice.append("use method: lora")
    return KifabrikError(f"out of {where} memory during training ({type(exc).__name__}); the last complete "
                         "checkpoint (if any) is kept", hint="; ".join(advice))
