"""Packing: rows fit, nothing lost, and attention never crosses a sequence boundary."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kifabrik.train.data import IGNORE, Example
from kifabrik.train.packing import Collator, PackedRows, PlainRows, pack_bfd


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 64), min_size=1, max_size=80), st.integers(64, 200))
def test_bfd_places_every_sequence_once_within_capacity(lengths, capacity):
    rows = pack_bfd(lengths, capacity)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= capacity for r in rows)
    # best fit never needs more rows than twice the lower bound
    assert len(rows) <= 2 * -(-sum(lengths) // capacity)


def test_bfd_refuses_a_sequence_longer_than_a_row():
    with pytest.raises(ValueError, match="more than the row capacity"):
        pack_bfd([5, 20], 10)


def _examples(lengths, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(8, 300, (n,), generator=g).tolist()
        out.append(Example(ids, [IGNORE] + ids[1:]))
    return out


def test_collator_restarts_positions_and_pads_as_its_own_segment():
    rows = PackedRows(_examples([5, 3, 6]), capacity=9)
    batch = Collator(pad_id=3, packed=True)([rows[0], rows[1]])
    assert "attention_mask" not in batch and int(batch["n_tokens"]) == 14
    for r, pos in zip([rows[0], rows[1]], batch["position_ids"].tolist(), strict=True):
        n = len(r["input_ids"])
        assert pos[:n] == r["position_ids"] and pos[n:] == list(range(len(pos) - n))
    assert (batch["labels"][batch["input_ids"] == 3] == IGNORE).all()


def test_packed_logits_and_loss_equal_separate_sequences(tiny_model_dir):
    """The property packing rests on: no token attends across a boundary."""
    import torch

    from kifabrik.models.loading import load_model

    model = load_model(tiny_model_dir)
    model.config.use_cache = False
    examples = _examples([7, 12, 5, 9])
    packed = PackedRows(examples, capacity=40)
    assert len(packed) == 1
    batch = Collator(pad_id=3, packed=True)([packed[0]])
    batch.pop("n_tokens")
    with torch.no_grad():
        out = model(**batch)
        offset = 0
        order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))  # BFD: longest first
        losses, counts = [], []
        for i in order:
            ex = examples[i]
            n = len(ex.input_ids)
            alone = model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels]))
            torch.testing.assert_close(out.logits[0, offset:offset + n], alone.logits[0], atol=1e-5, rtol=1e-5)
            losses.append(alone.loss * (n - 1))
            counts.append(n - 1)
            offset += n
        # the packed loss is the token-weighted mean of the separate losses
        torch.testing.assert_close(out.loss, sum(losses) / sum(counts), atol=1e-5, rtol=1e-5)


def test_plain_rows_are_right_padded_without_a_mask():
    rows = PlainRows(_examples([4, 6]))
    batch = Collator(pad_id=3, packed=False)([rows[0], rows[1]])
    assert batch["input_ids"][0, 4:].tolist() == [3, 3] and batch["labels"][0, 4:].tolist() == [IGNORE, IGNORE]
    assert "attention_mask" not in batch and "position_ids" not in batch


def test_right_padding_without_a_mask_changes_no_logit_and_no_loss(tiny_model_dir):
    """What leaving out the mask rests on: causal attention never lets a token see the padding after it."""
    import torch

    from kifabrik.models.loading import load_model

    model = load_model(tiny_model_dir)
    model.config.use_cache = False
    examples = _examples([9, 4, 7])
    rows = PlainRows(examples)
    batch = Collator(pad_id=3, packed=False)([rows[i] for i in range(len(examples))])
    batch.pop("n_tokens")
    with torch.no_grad():
        out = model(**batch)
        losses, counts = [], []
        for r, ex in enumerate(examples):
            n = len(ex.input_ids)
            alone = model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels]))
            torch.testing.assert_close(out.logits[r, :n], alone.logits[0], atol=1e-5, rtol=1e-5)
            losses.append(alone.loss * (n - 1))
            counts.append(n - 1)
        torch.testing.assert_close(out.loss, sum(losses) / sum(counts), atol=1e-5, rtol=1e-5)


def test_the_trainer_loss_at_target_positions_equals_the_models_own_loss(tiny_model_dir, tmp_path):
    """The trainer runs the decoder and the output head only where a target is; loss and gradients stay the model's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import TrainingArguments

    from kifabrik.models.loading import load_model
    from kifabrik.train.runner import make_trainer_class

    model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                                  init_lora_weights=False))
    model.config.use_cache = False
    examples = []
    for ex in _examples([9, 5, 7], seed=3):  # targets only at the end of each row, as in chat rows
        examples.append(Example(ex.input_ids, [IGNORE] * (len(ex.labels) - 3) + ex.labels[-3:]))
    rows = PlainRows(examples)
    batch = Collator(pad_id=3, packed=False)([rows[i] for i in range(len(examples))])
    trainer = make_trainer_class()(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none",
                                                                       use_cpu=True))
    assert trainer.per_row
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    reference = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss  # shifts the labels itself
    reference.backward()
    torch.testing.assert_close(loss, reference, atol=1e-5, rtol=1e-5)
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(got[n], p.grad, atol=1e-5, rtol=1e-4)


def test_group_by_length_draws_batches_of_similar_length(tmp_path) -> None:
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from kifabrik.train.options import TrainOptions
    from kifabrik.train.runner import training_arguments

    plain = training_arguments(tmp_path, TrainOptions(packing=False), 4, "fp32", False)
    grouped = training_arguments(tmp_path, TrainOptions(packing=False, group_by_length=True), 4, "fp32", False)
    assert plain.train_sampling_strategy == "random" and grouped.train_sampling_strategy == "group_by_length"
    # what that sampler does with rows of mixed lengths: a batch of 8 spans a fraction of the range
    import torch

    lengths = [int(x) for x in torch.randint(100, 600, (320,), generator=torch.Generator().manual_seed(0))]
    order = get_length_grouped_indices(lengths, 8, generator=torch.Generator().manual_seed(0))
    spread = [max(lengths[i] for i in order[b:b + 8]) - min(lengths[i] for i in order[b:b + 8]) for b in range(8, 320, 8)]
    assert sorted(order) == list(range(320)) and max(spread) < 150  # random batches of 8 span ~380 tokens
