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


def test_plain_rows_get_an_attention_mask():
    rows = PlainRows(_examples([4, 6]))
    batch = Collator(pad_id=3, packed=False)([rows[0], rows[1]])
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert "position_ids" not in batch
