"""The `facts` metric: checks on answerable items, refusals on unanswerable ones, hallucinations,
per-kind results with counts and Wilson intervals, and the task format that carries them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from evalkit import write_task

from kifabrik.errors import KifabrikError
from kifabrik.evaluate.metrics import checks_met, facts_metrics, facts_outcome, refuses
from kifabrik.evaluate.runner import run_task
from kifabrik.evaluate.stats import wilson_interval
from kifabrik.evaluate.tasks import FactChecks, load_task

REPO = Path(__file__).resolve().parents[2]
FAKTEN = REPO / "src" / "kifabrik" / "recipes" / "tasks" / "schmidt-fakten.yaml"

ITEMS = [
    {"id": "a1", "kind": "oil", "question": "Welches Öl gehört in die FZ 400?", "answerable": True,
     "checks": {"all": ["HLP 46"], "any": [], "regex": None}},
    {"id": "a2", "kind": "oil", "question": "Welches Öl gehört in die DM 250?", "answerable": True,
     "checks": {"all": [], "any": [], "regex": r"VG[ -]?22\b"}},
    {"id": "a3", "kind": "interval", "question": "Wann ist der Ölwechsel fällig?", "answerable": True,
     "checks": {"all": ["500"], "any": ["Betriebsstunden", "Stunden"], "regex": None}},
    {"id": "u1", "kind": "unanswerable", "question": "Was kostet die FZ 400?", "answerable": False,
     "checks": {"all": [], "any": [], "regex": None}},
    {"id": "u2", "kind": "unanswerable", "question": "Wann hat die Hotline sonntags offen?", "answerable": False},
]
ANSWERS = {  # what the stub model says to each question
    "Welches Öl gehört in die FZ 400?": "Bitte verwenden Sie  hlp   46 nach DIN 51524.",  # case and spaces differ
    "Welches Öl gehört in die DM 250?": "Das weiß ich leider nicht.",  # an abstention on an answerable item
    "Wann ist der Ölwechsel fällig?": "Alle 500 Betriebsstunden.",
    "Was kostet die FZ 400?": "Die FZ 400 kostet 89.000 Euro.",  # a hallucination
    "Wann hat die Hotline sonntags offen?": "Dazu liegen mir keine Informationen vor.",
}


class StubBackend:
    """Answers by lookup: the model is the expensive part, not the scoring under test."""

    name, kind, notes = "stub", "stub", []

    def generate(self, prompts: list[Any], opts: Any, *, chat: bool, progress: Any = None) -> list[str]:
        return [ANSWERS[p[-1]["content"]] for p in prompts]


def test_checks_are_case_insensitive_and_whitespace_normalised() -> None:
    assert checks_met("Bitte  HLP\n46 verwenden", FactChecks(all=("hlp 46",)))
    assert not checks_met("Bitte HLP 68 verwenden", FactChecks(all=("hlp 46",)))
    assert checks_met("alle 500 stunden", FactChecks(all=("500",), any=("Betriebsstunden", "Stunden")))
    assert not checks_met("alle 500 Minuten", FactChecks(all=("500",), any=("Betriebsstunden", "Stunden")))
    assert checks_met("Öl ISO vg-22 nehmen", FactChecks(regex=r"VG[ -]?22\b"))
    assert not checks_met("ISO VG 220", FactChecks(regex=r"VG[ -]?22\b"))


@pytest.mark.parametrize("text", ["Das ist mir leider nicht bekannt.", "Dazu liegt mir nichts vor – keine Information.",
                                  "Das kann ich nicht beantworten.", "Das weiss ich nicht.", "I don’t know.",
                                  "That information is NOT available."])
def test_refusal_phrases_from_the_data_file(text: str) -> None:
    assert refuses(text)


def test_ordinary_answers_are_not_refusals() -> None:
    assert not refuses("Die Maschine braucht alle 500 Betriebsstunden einen Ölwechsel.")
    assert not refuses("Unbekannte Fehlercodes bitte an den Service melden.")  # "unbekannt" is no phrase of the list


def test_outcomes_and_aggregates() -> None:
    assert facts_outcome("HLP 46", FactChecks(all=("HLP 46",)), True) == (True, True, False, True)
    assert facts_outcome("Keine Angaben.", None, False) == (False, False, True, True)
    samples = [{"answerable": True, "checks_met": c, "refused": r} for c, r in ((True, False), (False, True), (True, False))]
    samples += [{"answerable": False, "checks_met": False, "refused": r} for r in (False, True)]
    m = facts_metrics(samples)
    assert (float(m["facts"]), m["facts"].n) == (2 / 3, 3)
    assert (float(m["abstain_rate_answerable"]), float(m["hallucination_rate"]), m["hallucination_rate"].n) == (1 / 3, 0.5, 2)
    assert (m["facts"].ci_low, m["facts"].ci_high) == pytest.approx(tuple(wilson_interval(2, 3)))
    assert set(facts_metrics(samples[:3])) == {"facts", "abstain_rate_answerable"}  # no unanswerable items: no rate


def test_a_facts_task_runs_with_counts_intervals_and_a_breakdown_per_kind(tmp_path: Path) -> None:
    path = write_task(tmp_path, "fakten", "name: fakten\ntype: generation\nlanguage: de\nitems: fakten.jsonl\n"
                      "metrics: [facts]\nmax_new_tokens: 64\n", ITEMS)
    res = run_task(StubBackend(), load_task(path))  # type: ignore[arg-type]
    assert res.main == "facts"
    assert {k: float(v) for k, v in res.metrics.items()} == {"facts": 2 / 3, "abstain_rate_answerable": 1 / 3,
                                                             "hallucination_rate": 0.5}
    summary = res.summary()
    assert summary["stats"]["facts"]["n"] == 3 and summary["stats"]["hallucination_rate"]["n"] == 2
    assert (summary["stats"]["hallucination_rate"]["ci_low"], summary["stats"]["hallucination_rate"]["ci_high"]) == \
        pytest.approx(tuple(wilson_interval(1, 2)), abs=1e-6)
    assert [s["score"] for s in res.samples] == [1.0, 0.0, 1.0, 0.0, 1.0]  # u2's refusal is the right answer
    kinds = summary["by_kind"]
    assert set(kinds) == {"oil", "interval", "unanswerable"}
    assert kinds["oil"]["metrics"] == {"facts": 0.5, "abstain_rate_answerable": 0.5} and kinds["oil"]["n"] == 2
    assert kinds["unanswerable"]["metrics"] == {"hallucination_rate": 0.5}
    assert kinds["unanswerable"]["stats"]["hallucination_rate"]["method"] == "wilson"


def test_bad_facts_items_name_file_and_line(tmp_path: Path) -> None:
    bad = [{"question": "q", "answerable": "yes"},
           {"question": "q", "answerable": True, "checks": {"all": [], "any": []}},
           {"question": "q", "answerable": True, "checks": {"all": ["x"], "none": ["y"]}},
           {"question": "q", "answerable": True, "checks": {"regex": "(unclosed"}},
           {"question": "q", "answerable": True, "checks": {"any": ["", "x"]}}]
    path = write_task(tmp_path, "f", "name: f\ntype: generation\nitems: f.jsonl\nmetrics: [facts]\n", bad)
    with pytest.raises(KifabrikError) as err:
        load_task(path)
    msg = str(err.value)
    assert "5 bad item(s)" in msg
    assert "f.jsonl:1: `answerable` must be true or false" in msg
    assert "f.jsonl:2: an answerable item needs at least one check" in msg
    assert "f.jsonl:3: `checks` has unknown keys ['none']" in msg
    assert "f.jsonl:4: `checks.regex` '(unclosed' does not compile" in msg
    assert "f.jsonl:5: `checks.any` must be a list of non-empty strings" in msg
    mc = write_task(tmp_path, "m", "name: m\ntype: multiple_choice\nitems: []\nmetrics: [facts]\n")
    with pytest.raises(KifabrikError, match="metric facts scores generated answers"):
        load_task(mc)


@pytest.mark.skipif(not FAKTEN.exists(), reason="the schmidt-fakten demo task is not in this checkout")
def test_the_schmidt_fakten_demo_task_loads() -> None:
    task = load_task(FAKTEN)
    assert task.spec.metrics == ["facts"] and task.spec.max_new_tokens == 80 and task.spec.language == "de"
    assert task.items and all(it.answerable is not None and it.kind for it in task.items)
    assert any(it.answerable is False for it in task.items) and any(it.answerable for it in task.items)
    assert all(it.checks and (it.checks.all or it.checks.any or it.checks.regex) for it in task.items if it.answerable)
