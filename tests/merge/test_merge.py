"""Merging adapters: exactness against base + adapter, agreement with PEFT, refusals, lineage."""

from __future__ import annotations

import json

import pytest
import torch

from kifabrik.catalog import EdgeRecord
from kifabrik.errors import KifabrikError
from kifabrik.merge.api import MergeOptions, merge
from kifabrik.models.loading import load_model
from kifabrik.models.sources import add_model, model_path

from .conftest import make_adapter

IDS = torch.tensor([[1, 20, 33, 45, 70, 90, 11, 5]])
ATOL = 1e-5  # float32 matmuls in a different order


def logits_with(ws, base, adapter_paths_weights=()):
    """Reference: base weights + sum of w * (B @ A * scaling) per layer, computed by PEFT's own merge."""
    from peft import PeftModel

    model = load_model(model_path(ws, base), dtype="float32", device="cpu")
    for path, weight in adapter_paths_weights:
        peft_model = PeftModel.from_pretrained(model, str(path))
        for module in peft_model.modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                module.get_base_layer().weight.data += weight * module.get_delta_weight("default")
        model = peft_model.unload()
    with torch.inference_mode():
        return model(IDS).logits


def peft_logits(ws, base, adapter_dir):
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_model(model_path(ws, base), dtype="float32", device="cpu"), str(adapter_dir))
    with torch.inference_mode():
        return model(IDS).logits


def opts(method, pairs, **kw):
    return MergeOptions.model_validate({"method": method, "adapters": [{"adapter": a, "weight": w} for a, w in pairs],
                                        **kw})


def test_single_adapter_at_weight_one_equals_base_plus_adapter(ws, tiny_model, adapters):
    a, _ = adapters
    expected = peft_logits(ws, tiny_model, ws.path(a))
    merged = merge(ws, opts("linear", [(a.ref, 1.0)]), "m1")
    assert merged.kind == "adapter" and merged.meta["rank"] == 4
    assert torch.allclose(peft_logits(ws, tiny_model, ws.path(merged)), expected, atol=ATOL)
    full = merge(ws, opts("task_arithmetic", [(a.ref, 1.0)], into_base=True), "m1-full")
    # plain transformers, no kifabrik, no PEFT
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(ws.path(full) / "weights")
    with torch.inference_mode():
        assert torch.allclose(plain(IDS).logits, expected, atol=ATOL)
    assert full.meta["weights_sha256"] and full.meta["source"] == "merged:task_arithmetic"


def test_task_arithmetic_of_different_ranks_is_exact(ws, tiny_model, adapters):
    a, b = adapters
    expected = logits_with(ws, tiny_model, [(ws.path(a), 0.7), (ws.path(b), -0.3)])
    merged = merge(ws, opts("task_arithmetic", [(a.ref, 0.7), (b.ref, -0.3)]), "ta")
    assert merged.meta["rank"] == 12  # concatenated factors: exact, rank 4 + 8
    assert merged.meta["target_modules"] == ["o_proj", "q_proj", "v_proj"]
    assert torch.allclose(peft_logits(ws, tiny_model, ws.path(merged)), expected, atol=ATOL)
    full = merge(ws, opts("task_arithmetic", [(a.ref, 0.7), (b.ref, -0.3)], into_base=True), "ta-full")
    assert torch.allclose(load_model(ws.path(full) / "weights", device="cpu")(IDS).logits, expected, atol=ATOL)
    lin = merge(ws, opts("linear", [(a.ref, 3.0), (b.ref, 1.0)]), "lin")  # normalised to 0.75 / 0.25
    assert lin.meta["weights"] == {a.ref: 0.75, b.ref: 0.25}
    assert torch.allclose(peft_logits(ws, tiny_model, ws.path(lin)),
                          logits_with(ws, tiny_model, [(ws.path(a), 0.75), (ws.path(b), 0.25)]), atol=ATOL)


@pytest.mark.parametrize("method,combination", [("ties", "ties_svd"), ("dare_ties", "dare_ties_svd"),
                                                ("dare_linear", "dare_linear_svd"), ("svd", "svd")])
def test_adapter_outputs_match_peft_for_the_same_inputs_and_seed(ws, tiny_model, adapters, method, combination):
    from peft import PeftModel
    from safetensors.torch import load_file

    a, b = adapters
    kw = {} if method == "svd" else {"density": 0.4}
    merged = merge(ws, opts(method, [(a.ref, 0.6), (b.ref, 0.5)], seed=7, **kw), f"m-{method}")
    model = PeftModel.from_pretrained(load_model(model_path(ws, tiny_model), dtype="float32", device="cpu"),
                                      str(ws.path(a)), adapter_name="x")
    model.load_adapter(str(ws.path(b)), adapter_name="y")
    torch.manual_seed(7)
    # kifabrik asks PEFT for the thin SVD (the leading singular vectors only)
    model.add_weighted_adapter(["x", "y"], [0.6, 0.5], "ref", combination_type=combination, svd_full_matrices=False,
                               **kw)
    ours = load_file(ws.path(merged) / "adapter_model.safetensors")
    theirs = {k.replace(".ref.", "."): v for k, v in model.state_dict().items() if ".ref." in k}
    assert ours.keys() == {k.replace(".weight", ".weight") for k in theirs}
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key


def _ties_reference(deltas, weights, density):
    """TIES written out from the paper: trim to the top-k magnitudes, elect signs, disjoint mean."""
    trimmed = []
    for d in deltas:
        k = int(density * d.numel())
        keep = torch.zeros(d.numel())
        keep[d.abs().flatten().argsort(descending=True)[:k]] = 1
        trimmed.append(d * keep.reshape(d.shape))
    stacked = torch.stack(trimmed)
    elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)  # signs elected before weighting
    agree = (stacked.sign() == elected).float()
    weighted = torch.stack([t * w for t, w in zip(trimmed, weights, strict=True)])
    return (weighted * agree).sum(0) / agree.sum(0).clamp(min=1)


def test_exact_ties_into_base_matches_a_hand_written_ties(ws, tiny_model, adapters):
    from peft import PeftModel
    from safetensors.torch import load_file

    a, b = adapters
    full = merge(ws, opts("ties", [(a.ref, 0.6), (b.ref, 0.5)], density=0.5, into_base=True), "ties-full")
    merged = load_file(ws.path(full) / "weights" / "model.safetensors")
    base = load_file(model_path(ws, tiny_model) / "model.safetensors")
    model = PeftModel.from_pretrained(load_model(model_path(ws, tiny_model), dtype="float32", device="cpu"),
                                      str(ws.path(a)), adapter_name="x")
    model.load_adapter(str(ws.path(b)), adapter_name="y")
    checked = 0
    for name, module in model.base_model.model.named_modules():
        if hasattr(module, "lora_A") and ("x" in module.lora_A or "y" in module.lora_A):
            present = [(n, w) for n, w in (("x", 0.6), ("y", 0.5)) if n in module.lora_A]
            delta = _ties_reference([module.get_delta_weight(n) for n, _ in present], [w for _, w in present], 0.5)
            key = name + ".weight"
            assert torch.allclose(merged[key], base[key] + delta, atol=1e-6), key
            checked += 1
    assert checked == 6  # q_proj and v_proj of both adapters, o_proj of the second, in 2 layers


def test_dare_is_seeded_and_reduces_to_task_arithmetic_at_density_one(ws, tiny_model, adapters):
    a, b = adapters
    pairs = [(a.ref, 0.6), (b.ref, 0.5)]
    d1 = merge(ws, opts("dare_linear", pairs, density=0.5, seed=1, into_base=True), "d1")
    d1b = merge(ws, opts("dare_linear", pairs, density=0.5, seed=1, into_base=True), "d1b")
    d2 = merge(ws, opts("dare_linear", pairs, density=0.5, seed=2, into_base=True), "d2")
    assert d1.meta["weights_sha256"] == d1b.meta["weights_sha256"] != d2.meta["weights_sha256"]
    keep_all = merge(ws, opts("dare_linear", pairs, density=1.0, into_base=True), "keep-all")
    expected = logits_with(ws, tiny_model, [(ws.path(a), 0.6), (ws.path(b), 0.5)])
    assert torch.allclose(load_model(ws.path(keep_all) / "weights", device="cpu")(IDS).logits, expected, atol=ATOL)


def test_lineage_weights_and_policies_of_the_merged_artifact(ws, tiny_model, adapters):
    a, b = adapters
    merged = merge(ws, opts("task_arithmetic", [(a.ref, 0.6), (b.ref, 0.4)]), "lin-m")
    edges = {(e.parent_id, e.relation): e.attributes for e in ws.catalog.edges(child=merged.id)}
    assert edges[(a.id, "merged_from")]["weight"] == 0.6 and edges[(b.id, "merged_from")]["weight"] == 0.4
    assert (tiny_model.id, "base_model") in edges
    assert json.loads((ws.path(merged) / "adapter_config.json").read_text())["peft_type"] == "LORA"


def test_a_policy_that_forbids_merging_is_enforced(ws, tiny_model):
    from kifabrik.policy import PolicyDenied, preset

    with ws.create("dataset", "eval-only-data", policies=[ws.catalog.add_policy("evaluation-only",
                                                                                preset("evaluation-only"))]) as d:
        d.write_text("train.jsonl", "")
    restricted = make_adapter(ws, tiny_model, "restricted", seed=3)
    ws.catalog.add_edge(EdgeRecord(d.record.id, restricted.id, "trained_on"))  # the adapter was trained on it
    free = make_adapter(ws, tiny_model, "free", seed=4)
    with pytest.raises(PolicyDenied, match="merging") as info:
        merge(ws, opts("linear", [(restricted.ref, 0.5), (free.ref, 0.5)]), "forbidden")
    assert "eval-only-data" in str(info.value)
    assert "forbidden" not in {x.name for x in ws.catalog.list_artifacts()}


def test_incompatible_adapters_are_refused(ws, tiny_model, adapters, tmp_path):
    from helpers import build_tiny_model

    a, _ = adapters
    other_base = add_model(ws, str(build_tiny_model(tmp_path / "other", seed=5)), name="other")
    foreign = make_adapter(ws, other_base, "foreign", seed=6)
    with pytest.raises(KifabrikError, match="different base models"):
        merge(ws, opts("linear", [(a.ref, 0.5), (foreign.ref, 0.5)]), "x")
    dora = make_adapter(ws, tiny_model, "dora", seed=8, dora=True)
    with pytest.raises(KifabrikError, match="DoRA"):
        merge(ws, opts("linear", [(a.ref, 0.5), (dora.ref, 0.5)]), "x")
    with pytest.raises(KifabrikError, match="is a model, not an adapter"):
        merge(ws, opts("linear", [(tiny_model.ref, 1.0)]), "x")
    with pytest.raises(KifabrikError, match="listed twice"):
        merge(ws, opts("linear", [(a.ref, 0.5), (a.id, 0.5)]), "x")
    with pytest.raises(ValueError, match="density does not apply"):
        opts("linear", [(a.ref, 1.0)], density=0.3)
    with pytest.raises(ValueError, match="sum to 0"):
        opts("linear", [(a.ref, 1.0), ("b", -1.0)])


def test_cli_merge_adapters_and_export(cli, ws, tiny_model, adapters, tmp_path):
    a, b = adapters
    r = cli("merge", "--method", "ties", "--adapters", f"{a.ref}:0.5,{b.ref}:0.5", "--density", "0.5",
            "--into-base", "--name", "shop-model")
    assert r.code == 0, r.err
    assert "into model shop-model@1" in r.out
    listed = json.loads(cli("adapters", "list", "--json").out)
    assert {x["name"] for x in listed} == {"service", "parts"}
    assert listed[0]["base_weights_sha256"] == tiny_model.meta["weights_sha256"]
    bad = cli("merge", "--method", "ties", "--adapters", f"{a.ref}:x", "--name", "n")
    assert bad.code == 1 and "is not a number" in bad.err
    exported = cli("export", "shop-model", "--out", str(tmp_path / "hf"))
    assert exported.code == 0, exported.err
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    AutoTokenizer.from_pretrained(tmp_path / "hf")
    again = cli("export", "shop-model", "--out", str(tmp_path / "hf"))
    assert again.code == 1 and "not empty" in again.err
    # an adapter exports as its PEFT folder (transformers/vLLM load it on the base), with the notice
    assert cli("export", a.ref, "--out", str(tmp_path / "x")).code == 0
    assert {"adapter_config.json", "adapter_model.safetensors", "NOTICE"} <= {p.name for p in (tmp_path / "x").iterdir()}
    from peft import PeftModel

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "hf"), tmp_path / "x")


def test_thin_svd_gives_the_adapter_of_the_full_svd(ws, tiny_model, adapters):
    """The adapter keeps the leading singular vectors, which the thin SVD gives as the full one does:
    the merged delta weights agree with PEFT's default (full_matrices=True) to float32 precision."""
    from peft import PeftModel

    a, b = adapters
    merged = merge(ws, opts("ties", [(a.ref, 0.6), (b.ref, 0.5)], density=0.4, seed=7), "m-thin")
    model = PeftModel.from_pretrained(load_model(model_path(ws, tiny_model), dtype="float32", device="cpu"),
                                      str(ws.path(a)), adapter_name="x")
    model.load_adapter(str(ws.path(b)), adapter_name="y")
    model.load_adapter(str(ws.path(merged)), adapter_name="ours")
    torch.manual_seed(7)
    model.add_weighted_adapter(["x", "y"], [0.6, 0.5], "full", combination_type="ties_svd", density=0.4)
    layers = [m for m in model.modules() if hasattr(m, "lora_A") and "full" in m.lora_A]
    assert len(layers) == 2 * 3  # q, v and o projections of the 2 layers
    for m in layers:
        assert torch.allclose(m.get_delta_weight("ours"), m.get_delta_weight("full"), atol=1e-6)


def test_svd_methods_state_their_cost_and_the_exact_command(cli, ws, tiny_model, adapters, monkeypatch):
    import io

    from rich.console import Console

    from kifabrik import progress

    a, b = adapters
    shown = io.StringIO()
    monkeypatch.setenv("KIFABRIK_QUIET", "0")
    monkeypatch.setattr(progress, "console", Console(file=shown, width=1000))
    r = cli("merge", "--method", "dare_ties", "--adapters", f"{a.ref}:0.6,{b.ref}:0.5", "--density", "0.4",
            "--seed", "3", "--name", "shop")
    assert r.code == 0, r.err
    text = shown.getvalue()
    # the tiny model's 2 layers × (q, v, o), of at most 32×32 (its hidden size)
    assert ("dare_ties into an adapter: TIES and DARE prune entries of the full weight deltas (TIES also elects a "
            "sign per entry), so the merged delta is no longer low-rank. A rank-8 adapter is fitted to it with one SVD "
            "per adapted matrix: 6 matrices up to 32×32") in text
    assert "dare_ties: SVD of 6 matrices" in text and "6/6" in text  # the bar counted every SVD
    command = (f"kifabrik merge --method dare_ties --adapters {a.ref}:0.6,{b.ref}:0.5 --density 0.4 --seed 3 "
               "--into-base --name shop-model")
    assert f"\n  {command}\n" in text
    folded = cli(*command.split()[1:])  # the command as printed runs, and writes the model
    assert folded.code == 0, folded.err
    assert ws.catalog.get_artifact("shop-model").kind == "model"
    text = shown.getvalue()
    assert "dare_ties: folding the deltas of 6 matrices into the base" in text and "6/6" in text
    assert text.count("SVD of") == 1  # folding into the base computed none
