"""LoRA targets per architecture; FLOPs formula; energy from RAPL counters or an estimate."""

from __future__ import annotations

import pytest

from kifabrik.errors import KifabrikError
from kifabrik.train.accounting import EnergyMeter, training_flops
from kifabrik.train.targets import default_targets, linear_modules, resolve_targets


@pytest.fixture(scope="module")
def llama(tiny_model_dir):
    from kifabrik.models.loading import load_model

    return load_model(tiny_model_dir)


def test_llama_defaults_cover_attention_and_mlp(llama):
    assert resolve_targets(llama, None, "llama") == ["q_proj", "k_proj", "v_proj", "o_proj",
                                                     "gate_proj", "up_proj", "down_proj"]
    assert "lm_head" not in linear_modules(llama)
    assert default_targets("some-new-arch") == ["all-linear"]
    assert resolve_targets(llama, ["all-linear"], "llama") == "all-linear"


def test_unknown_target_module_lists_the_linear_layers(llama):
    with pytest.raises(KifabrikError) as exc:
        resolve_targets(llama, ["q_proj", "query_key_value"], "llama")
    msg = str(exc.value)
    assert "'query_key_value' is not a linear layer" in msg
    assert "down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj" in msg


def test_flops_formulas():
    full, basis = training_flops("full", 1000, 1000, 10)
    assert full == 6 * 1000 * 10 and basis.startswith("6·N·T")
    lora, basis = training_flops("lora", 1000, 20, 10)
    assert lora == (4 * 1000 + 6 * 20) * 10 and "(4·N + 6·N_lora)·T" in basis
    ckpt, basis = training_flops("lora", 1000, 20, 10, gradient_checkpointing=True)
    assert ckpt == lora + 2 * 1000 * 10 and "recomputation" in basis


def test_energy_from_rapl_counters_with_wraparound(tmp_path):
    zone = tmp_path / "intel-rapl:0"
    sub = tmp_path / "intel-rapl:0:0"  # a sub-zone is inside its package: not counted twice
    for z in (zone, sub):
        z.mkdir()
        (z / "energy_uj").write_text("999000000")
        (z / "max_energy_range_uj").write_text("1000000000")
    meter = EnergyMeter("cpu", rapl_root=tmp_path).start()
    (zone / "energy_uj").write_text("4000000")  # wrapped: 1e9 - 999e6 + 4e6 µJ = 5 J
    e = meter.read()
    assert e["method"] == "rapl" and e["joules"] == pytest.approx(5.0)


def test_energy_without_counters_is_a_marked_estimate(tmp_path):
    e = EnergyMeter("cpu", rapl_root=tmp_path / "none").start().read()
    assert e["method"] == "estimate" and e["basis"].startswith("estimate") and "assumed" in e["basis"]
