"""A long document section shown focused on the question: headings kept, matching table rows written
out with their column names, matching items and sentences kept; short passages and chat answers whole."""

from __future__ import annotations

from kifabrik.kb.focus import focus
from kifabrik.kb.tokenize import Tokenizer

TABLE = """## Maschinenübersicht

Die folgende Tabelle nennt für jede Maschine den Schmierstoff, die Wechselintervalle in Betriebsstunden und die Garantie.

| Maschine | Schmierstoff | Ölwechsel alle | Filterwechsel alle | Garantie |
|---|---|---|---|---|
| FZ 400 | Hydrauliköl HLP 46 | 2000 Betriebsstunden | 500 Betriebsstunden | 24 Monate |
| DM 250 | Spindelöl ISO VG 22 | 1500 Betriebsstunden | 400 Betriebsstunden | 24 Monate |
| BS 320 | Getriebeöl CLP 220 | 3000 Betriebsstunden | 800 Betriebsstunden | 12 Monate |
| KP 160 | Hydrauliköl HLP 68 | 4000 Betriebsstunden | 1000 Betriebsstunden | 36 Monate |
"""

SECTION = """### Kühlmittel

Für jede Maschine ist genau ein Kühlmittel freigegeben. Prüfen Sie die Füllung regelmäßig und wechseln
Sie sie nach dem Intervall, das die Betriebsanleitung der Maschine nennt.

- Fräszentrum FZ 400: Kühlschmierstoff-Emulsion 6 %, Wechsel alle sechs Monate.
- Drehmaschine DM 250: Kühlschmierstoff-Emulsion 5 %, Wechsel alle sechs Monate.
- Abkantpresse KP 160: keines, die KP 160 braucht kein Kühlmittel.
"""


def _terms(tok: Tokenizer, question: str) -> list[str]:
    return tok.query_terms(question)


def test_a_table_keeps_the_asked_machines_row_with_its_column_names() -> None:
    tok = Tokenizer.default()
    shown = focus(TABLE, _terms(tok, "Ab wie vielen Betriebsstunden sind die Filter der BS 320 fällig?"), tok)
    assert shown.splitlines() == [
        "## Maschinenübersicht",
        "Maschine: BS 320; Schmierstoff: Getriebeöl CLP 220; Ölwechsel alle: 3000 Betriebsstunden; "
        "Filterwechsel alle: 800 Betriebsstunden; Garantie: 12 Monate"]


def test_list_items_and_sentences_are_kept_where_they_match() -> None:
    tok = Tokenizer.default()
    shown = focus(SECTION, _terms(tok, "Welches Kühlmittel braucht die KP 160?"), tok)
    assert shown.splitlines() == ["### Kühlmittel", "- Abkantpresse KP 160: keines, die KP 160 braucht kein Kühlmittel."]
    # no machine named: the lines sharing the most question words (at least half as many as the best)
    general = focus(SECTION, _terms(tok, "Wann wechsle ich die Füllung laut Betriebsanleitung?"), tok)
    assert general.splitlines()[0] == "### Kühlmittel" and "Betriebsanleitung" in general
    assert "KP 160" not in general


def test_a_line_under_a_heading_that_names_the_machine_counts_as_naming_it() -> None:
    tok = Tokenizer.default()
    text = ("### Bandsäge BS 320\n\nDas Getriebe wird mit Getriebeöl CLP 220 geschmiert, das die Schmidt "
            "Maschinenbau GmbH für alle Bandsägen freigegeben hat. Der Ölwechsel ist alle 3000 Betriebsstunden "
            "fällig. Die Anleitung zum Wechsel steht im Wartungshandbuch der Maschine, Kapitel 7, mit Bildern.\n")
    assert focus(text, _terms(tok, "Wie oft Ölwechsel an der BS 320?"), tok) == (
        "### Bandsäge BS 320\nDas Getriebe wird mit Getriebeöl CLP 220 geschmiert, das die Schmidt Maschinenbau GmbH "
        "für alle Bandsägen freigegeben hat.\nDer Ölwechsel ist alle 3000 Betriebsstunden fällig.\n"
        "Die Anleitung zum Wechsel steht im Wartungshandbuch der Maschine, Kapitel 7, mit Bildern.")


def test_short_passages_and_passages_without_a_match_are_shown_whole() -> None:
    tok = Tokenizer.default()
    short = "Der Keilriemen hat die Artikelnummer SM-1105-44. Die Lieferzeit beträgt etwa 2 Werktage."
    assert focus(short, _terms(tok, "Lieferzeit Keilriemen?"), tok) == short
    assert focus(TABLE, _terms(tok, "Wie ist das Wetter in Berlin?"), tok) == TABLE
    # a bare number is no machine: "20 Monate" does not select lines
    assert "FZ 400" in focus(TABLE, _terms(tok, "Gilt die Garantie nach 20 Monaten noch?"), tok)
