"""The options of one training run: one pydantic model for recipes, the CLI and the Python API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kifabrik.config import StrictModel


class LoraOptions(StrictModel):
    """Low-rank adaptation (PEFT LoRA) of the base model's linear layers."""

    rank: int = Field(default=16, ge=1, le=1024, description="LoRA rank r: size of the low-rank update.")
    alpha: int = Field(default=32, ge=1, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input during training.")
    target_modules: list[str] | None = Field(
        default=None,
        description="Names (or name suffixes) of the linear layers to adapt, e.g. [q_proj, v_proj]; `all-linear` "
        "adapts every linear layer but the output head. Default: per architecture (train/targets.yaml).",
    )
    top_layers: int | None = Field(
        default=None, ge=1, description="Adapt only the last N transformer blocks (PEFT layers_to_transform): "
        "backpropagation then stops below them, so a step costs less. Default: every block.")


class ContextOptions(StrictModel):
    """Train the model to answer from retrieved sources (see `kifabrik.kb.contexts`)."""

    k: int = Field(default=3, ge=1, le=10, description="Sources per row: the right one among k - 1 retrieved others "
                   "(use the k your Fach-LLM retrieves).")
    unanswerable: float = Field(default=0.2, ge=0.0, lt=1.0, description="Share of rows whose sources lack the "
                                "answer; their target is to say that the information is not available.")
    from_documents: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of the answerable rows whose "
                                  "answer a document section of `passages_from` also states that show that section "
                                  "instead of the row's own answer, so the model learns to answer from documents, not "
                                  "only to copy an answer it has seen.")
    related: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of the unanswerable rows whose "
                           "sources are the passages retrieval ranks best for the question less every one that may "
                           "hold its answer (the same machine, another fact), as a question the documents do not "
                           "answer meets them when served; the others show passages that do not name what was asked.")
    cite: bool = Field(default=False, description="Answers start with the number of the source they come from "
                       "(`[2] ...`): the model first points at a source, then says what it says; served answers "
                       "mark the cited source (`cited` in `sources`).")
    passages_from: list[str] = Field(default_factory=list, description="More datasets (catalog refs) whose passages "
                                     "(document sections, answers) appear as sources, as they will in the knowledge "
                                     "base; their policies must permit training and they join the adapter's lineage.")
    focus: bool = Field(default=True, description="Show document passages cut down to the lines that match the "
                        "question, as a Fach-LLM with `focus` shows them (`kb.focus`).")
    chunk_tokens: int = Field(default=200, ge=16, le=8192, description="Most words per document passage of "
                              "`passages_from` (use the `chunk_tokens` of your knowledge base).")


class TrainOptions(StrictModel):
    """Hyper-parameters and behaviour of a training run. Defaults suit a small model on a CPU."""

    method: Literal["lora", "full"] = Field(
        default="lora",
        description="`lora` trains a PEFT LoRA adapter; `full` updates every weight (small models only).")
    lora: LoraOptions = Field(default_factory=LoraOptions, description="LoRA settings (method `lora`).")
    context: ContextOptions | None = Field(default=None, description="Rewrite chat rows into grounded rows "
                                           "(retrieved sources in the prompt) so the model learns to answer from a "
                                           "knowledge base; off by default (plain SFT).")
    epochs: float = Field(default=1.0, gt=0, le=1000, description="Passes over the training split.")
    max_steps: int | None = Field(
        default=None, ge=1,
        description="Stop after this many optimizer steps (wins over `epochs`). More steps than one epoch "
        "repeat the data, as with transformers' Trainer; the run says how many epochs that makes.")
    batch_size: int = Field(default=4, ge=1, description="Training sequences per device and micro-batch (packed "
                            "sequences when packing).")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches accumulated per optimizer step.")
    learning_rate: float = Field(default=2e-4, gt=0, lt=1, description="Peak learning rate (AdamW).")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning-rate schedule after warm-up.")
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1, description="Fraction of the steps spent warming up.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    max_seq_length: int | None = Field(
        default=None, ge=8,
        description="Longest training sequence in tokens (and the length of a packed sequence). Default: "
        "min(model context, 1024). Must not exceed the model's context length.")
    packing: bool = Field(
        default=True,
        description="Pack several training sequences into one packed sequence (best-fit decreasing) with "
        "position ids restarting per sequence, so attention never crosses a boundary and no compute is spent on padding. "
        "`false`: one training sequence per batch row, padded to the batch's longest.")
    group_by_length: bool = Field(
        default=False,
        description="Without packing: draw batches of training sequences of similar length (transformers' "
        "length-grouped sampler), so less compute goes to padding. The demo's grounded rows: 24 steps in 355 s "
        "instead of 475 s on 2 cores (fp32), but 60 instead of 65 of 92 facts right in one run each, so it is "
        "off by default: it changes which rows train together.")
    max_truncated_fraction: float = Field(
        default=0.05, ge=0, le=1,
        description="Chat rows longer than max_seq_length are truncated (warned and counted); if more than this "
        "fraction of rows would be cut, the run is refused. Text rows are split into windows instead (no loss).")
    seed: int = Field(default=42, description="Seed for data order, LoRA init and dropout (same seed, same run).")
    save_steps: int = Field(default=50, ge=1, description="Write a resumable checkpoint every N optimizer steps.")
    eval_steps: int | None = Field(
        default=None, ge=1, description="Held-out loss on the test split every N steps (default: = save_steps).")
    eval_rows: int | None = Field(
        default=None, ge=1, description="Compute the held-out loss on at most this many test sequences (the "
        "first N, so every evaluation sees the same sequences); default: all of them.")
    logging_steps: int = Field(default=1, ge=1, description="Log training loss every N steps.")
    keep_checkpoints: int = Field(default=2, ge=1, description="How many recent checkpoints to keep in the run folder.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="`auto`: bf16 on GPUs that support it, else fp32 (CPU). `bf16` on a CPU computes "
        "in bfloat16 under autocast (LoRA weights stay fp32): fast on CPUs with AMX or AVX-512 BF16.")
    gradient_checkpointing: bool = Field(default=False, description="Trade compute for memory on large models.")
    mlflow: bool = Field(
        default=False,
        description="Also log to MLflow (needs `pip install mlflow`). Uses MLFLOW_TRACKING_URI if you set one, "
        "else a local store under $KIFABRIK_HOME/mlruns; never a remote server unless you set it.")

    @model_validator(mode="after")
    def _check(self) -> TrainOptions:
        if self.method == "full" and "lora" in self.model_fields_set:
            raise ValueError("`lora` settings given but method is `full`; remove them or use method: lora")
        return self

    @property
    def evaluation_steps(self) -> int:
        return self.eval_steps or self.save_steps
