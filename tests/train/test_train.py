"""End to end on the tiny model: adapter files, record, lineage, policies, bad input, Ctrl-C, recipe."""

from __future__ import annotations

import json
import signal

import pytest
from train_builders import FAST, chat_rows, make_dataset

from kifabrik import files
from kifabrik.errors import KifabrikError
from kifabrik.train import TrainOptions, resume, rundir, train

COUNT_ONCE = {
    "@context": "http://www.w3.org/ns/odrl.jsonld", "@type": "Set", "@id": "urn:test:train-once",
    "permission": [{"action": "use", "constraint": [
        {"leftOperand": "purpose", "operator": "isAnyOf", "rightOperand": ["training", "evaluation"]},
        {"leftOperand": "count", "operator": "lteq", "rightOperand": 1}]}],
}


def _losses(path):
    return {m["step"]: m["loss"] for m in files.read_jsonl(path / "metrics.jsonl", missing_ok=True) if "loss" in m}


def test_cli_lora_sft_writes_a_peft_adapter_with_record_and_lineage(cli, ws, tiny_model, tiny_model_dir, chat_ds):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from kifabrik.train.data import encode_rows, read_dataset
    from kifabrik.train.packing import Collator, PackedRows

    r = cli("train", "--base", "tiny", "--data", "service-chats", "--max-steps", "6", "--epochs", "3",
            "--batch-size", "2", "--save-steps", "3", "--eval-steps", "3", "--lr", "5e-3", "--max-seq-length", "128",
            "--rank", "4", "--alpha", "8", "--name", "service-lora")
    assert r.code == 0, r.err
    assert "adapter service-lora@1" in r.out and "eval loss" in r.out
    rec = ws.catalog.get_artifact("service-lora", "adapter")
    path = ws.path(rec)
    assert {"adapter_model.safetensors", "adapter_config.json", "train_config.json", "accounting.json",
            "metrics.jsonl", "manifest.json"} <= {p.name for p in path.iterdir()}
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))
    meta = rec.meta
    assert meta["base_model_id"] == tiny_model.id and meta["base_weights_sha256"] == tiny_model.meta["weights_sha256"]
    assert (meta["rank"], meta["alpha"], meta["objective"]) == (4, 8, "sft")
    assert meta["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert meta["datasets"][0]["id"] == chat_ds.id
    acc = meta["accounting"]
    assert acc["steps"] == 6 and acc["tokens_seen"] > 0 and acc["wall_time_s"] > 0 and acc["peak_memory_bytes"] > 0
    assert acc["flops"] == (4 * 31_232 + 6 * meta["trainable_parameters"]) * acc["tokens_seen"]
    assert acc["energy_method"] in ("rapl", "estimate") and acc["energy_basis"]
    edges = {(e.parent_id, e.relation) for e in ws.catalog.edges(child=rec.id)}
    assert edges == {(tiny_model.id, "base_model"), (chat_ds.id, "trained_on")}
    run = ws.catalog.get_run(meta["run_id"])
    assert run.status == "succeeded" and run.outputs == [rec.id]
    metrics = files.read_jsonl(rundir.run_dir(ws, run.id) / "metrics.jsonl", missing_ok=True)
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4, 5, 6]
    assert [m["step"] for m in metrics if "eval_loss" in m] == [3, 6]
    assert all(m["tokens_per_s"] > 0 for m in metrics if "loss" in m)

    # Plain PEFT, outside kifabrik, loads the adapter and reproduces the held-out loss the run logged at its end.
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft_model = PeftModel.from_pretrained(base, str(path)).eval()
    from kifabrik.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    test_examples, _ = encode_rows(tok, read_dataset(ws.path(chat_ds), chat_ds).test, "chat", 128)
    rows = PackedRows(test_examples, 128)
    assert len(rows) <= 2  # one eval batch (batch_size 2)
    batch = Collator(tok.pad_token_id, packed=True)([rows[i] for i in range(len(rows))])
    batch.pop("n_tokens")
    with torch.no_grad():
        loss = peft_model(**batch, use_cache=False).loss.item()
    assert loss == pytest.approx(meta["final_eval_loss"], abs=1e-5)


def test_continued_pretraining_on_text(ws, tiny_model, text_ds):
    rec = train(ws, "tiny", [text_ds.id], TrainOptions(**{**FAST, "max_steps": 3}))
    assert rec.kind == "adapter" and rec.meta["objective"] == "cpt"
    stats = rec.meta["data"]["train"]
    assert stats["windows_split"] > 0 and stats["loss_tokens"] == stats["tokens"] - stats["sequences"]


def test_bf16_on_a_cpu_trains_under_autocast_and_fp16_is_refused(ws, tiny_model, chat_ds, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from kifabrik.train import runner

    monkeypatch.setattr(runner, "native_cpu_bf16", lambda: False)  # emulated bfloat16: trained in fp32, recorded so
    rec = train(ws, "tiny", [chat_ds.id], TrainOptions(**{**FAST, "max_steps": 1, "precision": "bf16"}))
    assert rec.meta["accounting"]["precision"] == "fp32"
    monkeypatch.setattr(runner, "native_cpu_bf16", lambda: True)  # as on a CPU with AMX or AVX-512 BF16
    rec = train(ws, "tiny", [chat_ds.id], TrainOptions(**{**FAST, "max_steps": 2, "precision": "bf16"}))
    assert rec.meta["accounting"]["precision"] == "bf16"
    weights = load_file(str(ws.path(rec) / "adapter_model.safetensors"))
    assert weights and all(t.dtype == torch.float32 for t in weights.values())  # LoRA weights stay fp32
    with pytest.raises(KifabrikError, match="fp16 needs a GPU"):
        train(ws, "tiny", [chat_ds.id], TrainOptions(**{**FAST, "max_steps": 2, "precision": "fp16"}))


def test_top_layers_adapts_only_the_last_blocks_and_a_count_over_the_model_is_refused(ws, tiny_model, chat_ds):
    from safetensors.torch import load_file

    rec = train(ws, "tiny", [chat_ds.id], TrainOptions(**{**FAST, "max_steps": 1, "lora": {"rank": 4, "top_layers": 1}}))
    names = load_file(str(ws.path(rec) / "adapter_model.safetensors")).keys()
    assert names and all(".layers.1." in n for n in names)  # the tiny model has blocks 0 and 1
    assert json.loads((ws.path(rec) / "adapter_config.json").read_text())["layers_to_transform"] == [1]
    with pytest.raises(KifabrikError, match="lora.top_layers is 3, but the model has 2 blocks"):
        train(ws, "tiny", [chat_ds.id], TrainOptions(**{**FAST, "max_steps": 1, "lora": {"rank": 4, "top_layers": 3}}))


def test_full_fine_tuning_makes_a_model_record(ws, tiny_model, chat_ds):
    from kifabrik.models.sources import model_path

    opts = TrainOptions(**{k: v for k, v in FAST.items() if k != "lora"}, method="full")
    opts.max_steps = 2
    rec = train(ws, "tiny", [chat_ds.id], opts, name="tiny-full")
    assert rec.kind == "model" and rec.meta["weights_sha256"] and rec.meta["architecture"] == "LlamaForCausalLM"
    assert (model_path(ws, rec) / "model.safetensors").exists()
    assert rec.meta["accounting"]["flops_basis"].startswith("6·N·T")


def test_adapter_inherits_dataset_policy_and_counted_use(ws, tiny_model):
    ds = make_dataset(ws, "once", chat_rows(24), policy=COUNT_ONCE)
    with pytest.raises(KifabrikError, match="is not a linear layer"):  # refused before the use is counted
        train(ws, "tiny", ["once"], TrainOptions(**{**FAST, "lora": {"target_modules": ["qkv"]}}))
    rec = train(ws, "tiny", ["once"], TrainOptions(**{**FAST, "max_steps": 2}))
    policy_ids = [p[0] for p in ws.catalog.policies_of(ds.id)]
    assert [p[0] for p in ws.catalog.policies_of(rec.id)] == policy_ids == rec.meta["policy_ids"]
    from kifabrik.policy import PolicyDenied

    with pytest.raises(PolicyDenied, match="count"):
        train(ws, "tiny", ["once"], TrainOptions(**{**FAST, "max_steps": 2}))


def test_policy_that_forbids_training_fails_the_run_with_nothing_written(ws, tiny_model, home):
    from kifabrik.policy import PolicyDenied, preset

    make_dataset(ws, "eval-only", chat_rows(12), policy=preset("evaluation-only"))
    with pytest.raises(PolicyDenied, match="eval-only@1"):
        train(ws, "tiny", ["eval-only"], TrainOptions(**FAST))
    run = ws.catalog.list_runs()[0]
    assert run.status == "failed" and "usage policy forbids training" in run.error
    assert ws.catalog.list_artifacts("adapter") == [] and ws.store.leftovers() == []
    assert not (rundir.run_dir(ws, run.id) / "checkpoints").exists()


def test_max_steps_beyond_one_epoch_repeats_the_data(ws, tiny_model, chat_ds):
    from kifabrik.train.prepare import plan_steps

    opts = TrainOptions(**{**FAST, "max_steps": 7, "batch_size": 4, "grad_accum": 1, "epochs": 1})
    assert plan_steps(10, opts) == (3, 7)  # 3 steps per pass over 10 rows; 7 steps repeat the data
    assert plan_steps(10, TrainOptions(**{**FAST, "max_steps": None, "batch_size": 4, "epochs": 2})) == (3, 6)
    adapter = train(ws, "tiny", ["service-chats"], TrainOptions(**{**FAST, "max_steps": 12, "save_steps": 12,
                                                                   "batch_size": 4, "grad_accum": 1}))
    accounting = adapter.meta["accounting"]
    assert accounting["steps"] == 12 and accounting["steps_per_epoch"] < 12 and accounting["epochs"] > 1


@pytest.mark.parametrize("opts, message", [
    ({"max_seq_length": 1024}, "exceeds the context length of tiny@1 (256)"),
])
def test_bad_input_is_refused_with_advice(cli, ws, tiny_model, chat_ds, opts, message):
    args = [f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
    r = cli("train", "--base", "tiny", "--data", "service-chats", *args)
    assert r.code == 1 and message in r.err.replace("\n", " ") and "hint:" in r.err
    assert ws.catalog.list_runs()[0].status == "failed" and ws.catalog.list_artifacts("adapter") == []


def test_out_of_memory_becomes_advice(ws, tiny_model, chat_ds):
    from transformers import TrainerCallback

    class Oom(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            raise MemoryError

    with pytest.raises(KifabrikError, match="out of main memory") as exc:
        train(ws, "tiny", [chat_ds.id], TrainOptions(**FAST), callbacks=[Oom()])
    assert "lower batch_size" in exc.value.hint and ws.catalog.list_artifacts("adapter") == []


def test_ctrl_c_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(ws, tiny_model, chat_ds):
    """Interruption at a step boundary (SIGINT delivered in-process), then resume."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from kifabrik.train.runner import TrainingInterrupted

    opts = TrainOptions(**{**FAST, "max_steps": 8, "save_steps": 50})
    ref = train(ws, "tiny", [chat_ds.id], opts, name="reference")

    class CtrlC(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 4:
                signal.raise_signal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="interrupted .* at step 5 of 8") as exc:
        train(ws, "tiny", [chat_ds.id], opts, name="resumed", callbacks=[CtrlC()])
    run = ws.catalog.list_runs()[0]
    assert run.status == "interrupted" and "interrupted" in run.error and "--resume" in exc.value.hint
    folder = rundir.run_dir(ws, run.id)
    assert rundir.last_checkpoint(folder).name == "checkpoint-5"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    rec = resume(ws, run.id[:10])
    assert ws.catalog.get_run(run.id).status == "succeeded"
    ref_losses, losses = _losses(ws.path(ref)), _losses(ws.path(rec))
    assert list(losses) == list(range(1, 9))
    assert max(abs(ref_losses[s] - losses[s]) for s in losses) < 1e-4
    a, b = load_file(ws.path(ref) / "adapter_model.safetensors"), load_file(ws.path(rec) / "adapter_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert rec.meta["accounting"]["sessions"] == 2 and rec.meta["accounting"]["steps"] == 8
    with pytest.raises(KifabrikError, match="already finished"):
        resume(ws, run.id)


def test_recipe_stage_trains_from_base_on_a_dataset(ws, home, tiny_model, tiny_model_dir, chat_ds):
    from kifabrik.pipeline import run_recipe, validate_recipe

    recipe = {"name": "fach", "model": {"source": "tiny"},
              "stages": [{"stage": "train", "name": "specialise", "model": "base", "data": "service-chats", **FAST}]}
    result = run_recipe(ws, validate_recipe(recipe))
    (rec,) = result.steps[0].outputs
    assert rec.kind == "adapter" and rec.name == "fach-specialise" and rec.meta["base_model_id"] == tiny_model.id
    run = ws.catalog.get_run(result.steps[0].run_id)
    assert run.status == "succeeded" and json.loads((rundir.run_dir(ws, run.id) / "run.json").read_text())["name"] \
        == "fach-specialise"


def test_recipe_validation_rejects_bad_train_options():
    from kifabrik.pipeline import validate_recipe

    with pytest.raises(KifabrikError) as exc:
        validate_recipe({"name": "x", "model": {"source": "tiny"},
                         "stages": [{"stage": "train", "data": ["d"], "lora": {"rank": 0}, "lerning_rate": 1}]})
    assert "stages[0].lora.rank" in str(exc.value) and "stages[0].lerning_rate: unknown key" in str(exc.value)


def test_a_broken_multi_process_launch_and_a_multi_process_resume_are_refused_clearly(ws, tiny_model, chat_ds,
                                                                                       monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # but no RANK / MASTER_ADDR: not started by a launcher
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(KifabrikError, match="the processes cannot meet"):
        train(ws, "tiny", [chat_ds.id], TrainOptions(**FAST))
    assert ws.catalog.list_runs() == []
    with pytest.raises(KifabrikError, match="resume runs in one process"):
        resume(ws, "0" * 12)
