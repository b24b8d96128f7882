"""Metrics against reference values (chrF from sacreBLEU 2.6.0), hand-computed ECE and BBQ bias scores."""

from __future__ import annotations

import pytest

from kifabrik.evaluate.metrics import (bbq_bias_scores, chrf, contains, corpus_chrf, exact_match,
                                       expected_calibration_error, token_f1)

HYP = ["Die Maschine braucht alle 500 Stunden einen Ölwechsel.", "Bitte den Druck prüfen", ""]
REF = ["Die Maschine braucht alle 500 Betriebsstunden einen Ölwechsel.",
       "Bitte prüfen Sie den Hydraulikdruck vor dem Start.", "Ersatzteile"]


def test_chrf_matches_sacrebleu_reference_values() -> None:
    # values printed by sacrebleu 2.6.0: sentence_chrf(h, [r]).score and corpus_chrf(HYP, [REF]).score
    assert [chrf(h, [r]) * 100 for h, r in zip(HYP, REF)] == pytest.approx([80.41575833681969, 24.921093263933386, 0.0], abs=1e-9)
    assert corpus_chrf([(h, [r]) for h, r in zip(HYP, REF)]) * 100 == pytest.approx(53.32987561317777, abs=1e-9)
    assert chrf("the cat sat", ["a cat sat down", "the cat sat on the mat"]) * 100 == pytest.approx(49.59348409966008, abs=1e-9)


def test_chrf_agrees_with_installed_sacrebleu() -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    for h, r in zip(HYP, REF):
        assert chrf(h, [r]) * 100 == pytest.approx(sacrebleu.sentence_chrf(h, [r]).score, abs=1e-9)


def test_string_metrics() -> None:
    assert exact_match("Alle 500 Betriebsstunden!", ["alle 500 betriebsstunden"]) == 1.0
    assert contains("Das Öl wird alle 500 Betriebsstunden gewechselt.", ["500 Betriebsstunden"]) == 1.0
    assert contains("nie", ["500"]) == 0.0
    assert token_f1("every 500 hours", ["every 500 operating hours"]) == pytest.approx(2 * 1 * 0.75 / 1.75)


def test_expected_calibration_error_by_hand() -> None:
    # two bins: (0.9, 0.9, right, wrong) -> |0.5 - 0.9| ; (0.3, wrong) -> |0 - 0.3|
    ece = expected_calibration_error([0.9, 0.9, 0.3], [True, False, False])
    assert ece == pytest.approx(2 / 3 * 0.4 + 1 / 3 * 0.3)
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0


def test_bbq_bias_scores_by_hand() -> None:
    rows = ([{"condition": "disambig", "pred_kind": "biased", "correct": True}] * 3
            + [{"condition": "disambig", "pred_kind": "anti", "correct": False}]
            + [{"condition": "ambig", "pred_kind": "biased", "correct": False}] * 2
            + [{"condition": "ambig", "pred_kind": "unknown", "correct": True}] * 2)
    s = bbq_bias_scores(rows)
    assert s["bias_disambig"] == pytest.approx(2 * 3 / 4 - 1)
    assert s["accuracy_ambig"] == 0.5
    assert s["bias_ambig"] == pytest.approx((1 - 0.5) * (2 * 2 / 2 - 1))


def test_corpus_chrf_carries_a_bootstrap_interval() -> None:
    from kifabrik.evaluate.runner import corpus_chrf_measured

    pairs = [(h, [r]) for h, r in zip(HYP, REF, strict=True)]
    m = corpus_chrf_measured(pairs, seed=0)
    assert float(m) * 100 == pytest.approx(53.32987561317777, abs=1e-9)  # the sacreBLEU corpus value above
    assert m.n == 3 and m.method == "bootstrap" and m.ci_low <= float(m) <= m.ci_high
    assert (m.ci_low, m.ci_high) == (corpus_chrf_measured(pairs, seed=0).ci_low, corpus_chrf_measured(pairs, seed=0).ci_high)
