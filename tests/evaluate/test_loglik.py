"""Prefix sharing gives the same log-likelihoods as scoring each choice on its own (|diff| < 1e-4, float32)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kifabrik.evaluate.loglik import Request, build_request, encode_pair, score

TOL = 1e-4  # float32 on CPU; the two computations differ only in summation order
ITEMS = [
    ("Bitte prüfen Sie den", ["Hydraulikdruck", "Ölwechsel vor dem Start", "Kundenportal bestellen"]),
    ("The machine needs an oil change every ", ["500 hours", "week", "customer portal please"]),  # trailing space
    ("", ["Ersatzteile", "x"]),  # empty context: the BOS token stands in, as in lm-eval
    ("Order spare parts through the customer portal. " * 6, ["Yes.", "No, through the machine."]),
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    from kifabrik.models.loading import load_model, load_tokenizer

    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def plain_logliks(model: Any, req: Request) -> list[float]:
    """The naive reference: one ordinary forward pass per choice, no custom mask, full logits."""
    import torch

    out = []
    with torch.inference_mode():
        for cont in req.choices:
            ids = torch.tensor([req.context + cont])
            lp = torch.log_softmax(model(ids).logits[0].float(), -1)
            n = len(req.context)
            out.append(sum(float(lp[n - 1 + i, tok]) for i, tok in enumerate(cont)))
    return out


def requests(tok: Any) -> list[Request]:
    return [build_request(tok, ctx, [" " + c for c in choices], 256) for ctx, choices in ITEMS]


@pytest.mark.parametrize("batch_tokens", [64, 4096])  # many small batches with padding, and one batch
def test_shared_prefix_equals_per_choice_forward(tiny: tuple[Any, Any], batch_tokens: int) -> None:
    model, tok = tiny
    reqs = requests(tok)
    shared = score(model, reqs, mode="shared", batch_tokens=batch_tokens)
    naive = score(model, reqs, mode="naive", batch_tokens=batch_tokens)
    for req, a, b in zip(reqs, shared, naive):
        ref = plain_logliks(model, req)
        assert [s.loglik for s in a] == pytest.approx(ref, abs=TOL)
        assert [s.loglik for s in b] == pytest.approx(ref, abs=TOL)
        assert [s.tokens for s in a] == [len(c) for c in req.choices]


def test_encode_pair_moves_trailing_space_like_lm_eval(tiny: tuple[Any, Any]) -> None:
    _, tok = tiny
    ctx, cont = encode_pair(tok, "The machine needs ", "oil")
    assert ctx == tok.encode("The machine needs")
    assert tok.encode("The machine needs oil")[len(ctx):] == cont


def test_adapter_without_merging_and_merged_give_the_same_scores(ws: Any, tiny_model: Any) -> None:
    from evalkit import make_adapter

    from kifabrik.evaluate.backends import open_target

    adapter = make_adapter(ws, tiny_model, [])
    backend = open_target(ws, adapter.ref)
    assert backend.kind == "adapter" and hasattr(backend.model, "peft_config")  # PEFT on the base, not merged
    reqs = requests(backend.tokenizer)
    shared = score(backend.model, reqs, mode="shared")
    merged = backend.model.merge_and_unload()
    base_only = open_target(ws, tiny_model.ref)
    differs = False
    for req, a in zip(reqs, shared):
        ref = plain_logliks(merged, req)
        assert [s.loglik for s in a] == pytest.approx(ref, abs=TOL)
        differs |= any(abs(x - y) > 1e-3 for x, y in zip(ref, plain_logliks(base_only.model, req)))
    assert differs  # the adapter really changes the model


def test_mc_metrics_follow_lm_eval_definitions(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    from kifabrik.evaluate.backends import LocalBackend
    from kifabrik.evaluate.runner import run_task
    from kifabrik.evaluate.tasks import TaskSpec, build_task
    from kifabrik.models.runtime import LoadedModel

    model, tok = tiny
    items = [{"question": c or "x", "choices": ch, "answer": 0} for c, ch in ITEMS]
    task = build_task(TaskSpec(name="t", type="multiple_choice", items=items))
    loaded = LoadedModel(None, model, tok, model.config.max_position_embeddings)  # type: ignore[arg-type]
    res = run_task(LocalBackend("tiny", "model", None, loaded), task)
    for s in res.samples:
        lls = s["logliks"]
        assert s["pred"] == max(range(len(lls)), key=lambda i: lls[i])
        norm = [ll / len(c) for ll, c in zip(lls, s["choices"])]  # acc_norm: per character of the choice
        assert s["pred_norm"] == max(range(len(norm)), key=lambda i: norm[i])
    assert res.metrics["acc"] == sum(s["acc"] for s in res.samples) / len(res.samples)
