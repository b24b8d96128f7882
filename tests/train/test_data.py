"""Encoding: chat template rendering, assistant-only labels, text windows, overlong rows."""

from __future__ import annotations

import pytest
from train_builders import chat_rows, make_dataset, text_rows

from kifabrik.errors import KifabrikError
from kifabrik.train.data import IGNORE, encode_chat, encode_rows, read_dataset
from kifabrik.train.options import TrainOptions
from kifabrik.train.prepare import encode


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from kifabrik.models.loading import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def _labelled_text(tok, ex):
    return tok.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE])


def test_only_assistant_tokens_carry_loss(tok):
    msgs = [{"role": "system", "content": "Kurz antworten."}, {"role": "user", "content": "Ölwechsel?"},
            {"role": "assistant", "content": "Alle 500 Stunden."}, {"role": "user", "content": "Danke"},
            {"role": "assistant", "content": "Gern."}]
    ex = encode_chat(tok, msgs)
    # the answers and each turn's end marker (so the model learns to stop); never the role header or the user
    assert _labelled_text(tok, ex) == "Alle 500 Stunden.<|end|>Gern.<|end|>"
    assert tok.decode(ex.input_ids) == tok.apply_chat_template(msgs, tokenize=False)
    assert ex.labels[0] == IGNORE and len(ex.labels) == len(ex.input_ids)


def test_text_rows_are_split_into_windows_with_eos(tok):
    rows = [{"text": "Die Maschine braucht alle 500 Betriebsstunden einen Ölwechsel. " * 10, "_where": "t:1"}]
    examples, stats = encode_rows(tok, rows, "text", 16)
    assert stats.windows_split == 1 and len(examples) > 1
    assert all(len(e.input_ids) <= 16 for e in examples)
    assert examples[-1].input_ids[-1] == tok.eos_token_id
    assert all(e.labels[0] == IGNORE and e.labels[1:] == e.input_ids[1:] for e in examples)


def test_overlong_chat_rows_are_truncated_with_a_count(ws, tiny_model, tok):
    long = {"messages": [{"role": "user", "content": "Frage"},
                         {"role": "assistant", "content": "Bitte prüfen Sie den Hydraulikdruck. " * 30}]}
    ds = make_dataset(ws, "some-long", chat_rows(40) + [long])
    prepared = encode(ws, tok, tiny_model, [ds], TrainOptions(max_seq_length=96))
    assert prepared.train_stats.truncated == 1
    assert all(len(e.input_ids) <= 96 for e in prepared.train)
    assert "truncated" in prepared.warnings[0] and "some-long@1:train:41" in prepared.warnings[0]


def test_mostly_overlong_chat_rows_are_refused(ws, tiny_model, tok):
    ds = make_dataset(ws, "all-long", chat_rows(10))
    with pytest.raises(KifabrikError, match="longer than max_seq_length 8") as exc:
        encode(ws, tok, tiny_model, [ds], TrainOptions(max_seq_length=8))
    assert "max_truncated_fraction" in exc.value.hint


def test_chat_rows_without_a_template_train_on_the_serving_fallback(tok):
    import copy

    from kifabrik.models import prompts
    from kifabrik.train.data import IGNORE

    bare = copy.deepcopy(tok)
    bare.chat_template = None  # a base model: the documented fallback renders its conversations
    msgs = [{"role": "user", "content": "Wann ist der Ölwechsel fällig?"},
            {"role": "assistant", "content": "Alle 500 Betriebsstunden."}]
    (ex,), _ = encode_rows(bare, [{"messages": msgs, "_where": "x:1"}], "chat", 256)
    asked = prompts.chat_ids(bare, msgs[:1])
    assert ex.input_ids[:len(asked)] == asked  # trained on exactly the prompt that serving sends
    assert all(label == IGNORE for label in ex.labels[:len(asked)])
    taught = [i for i, label in zip(ex.input_ids, ex.labels, strict=True) if label != IGNORE]
    assert bare.decode(taught).strip().startswith("Alle 500 Betriebsstunden.")
    assert bare.eos_token_id in taught  # the answer ends with EOS: the trained model stops


def test_read_dataset_names_the_bad_line(ws):
    ds = make_dataset(ws, "texts", text_rows(3), fmt="text")
    path = ws.path(ds) / "train.jsonl"
    rows = read_dataset(ws.path(ds), ds)
    assert len(rows.train) == 3 and rows.format == "text"
    path.chmod(0o644)
    path.write_text(path.read_text() + "{broken\n")
    with pytest.raises(KifabrikError, match=r"train.jsonl:4: invalid JSON"):
        read_dataset(ws.path(ds), ds)


def test_eval_rows_limits_the_held_out_loss_to_the_first_rows(ws, tiny_model, chat_ds, tok):
    from kifabrik.train.options import TrainOptions
    from kifabrik.train.prepare import encode

    every = encode(ws, tok, tiny_model, [chat_ds], TrainOptions())
    first = encode(ws, tok, tiny_model, [chat_ds], TrainOptions(eval_rows=2))
    assert len(every.test) > 2 and first.test == every.test[:2]
    assert first.train == every.train


def test_context_options_reach_the_grounded_rows(ws, tiny_model, chat_ds, tok, capsys):
    """Every `context:` option goes to both splits' grounded rows (one set of options, `prepare.encode`)."""
    from kifabrik.train.options import ContextOptions, TrainOptions
    from kifabrik.train.prepare import encode

    plain = encode(ws, tok, tiny_model, [chat_ds], TrainOptions(max_seq_length=512))
    grounded = encode(ws, tok, tiny_model, [chat_ds], TrainOptions(
        max_seq_length=512, context=ContextOptions(k=2, unanswerable=0.2, related=1.0, cite=True)))
    assert len(grounded.train) == len(plain.train) and len(grounded.test) == len(plain.test)
    said = [tok.decode(ex.input_ids) for ex in grounded.train + grounded.test]
    assert all("Quellen:" in s for s in said)  # sources in every row of both splits
    from kifabrik.kb.grounding import NOT_FOUND

    # the final answer of each chat (earlier assistant turns stay as they were) names its source (`cite`)
    targets = [[t for t in _labelled_text(tok, ex).split("<|end|>") if t.strip()][-1].strip() for ex in grounded.train]
    assert all(t.startswith(("[1]", "[2]", NOT_FOUND)) for t in targets), targets[:4]
    assert any(t.startswith("[") for t in targets)
