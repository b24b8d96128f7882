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
    shown = focus(TABLE, _terms(tok, "Welchen Schmierstoff braucht die BS 320?"), tok)
    assert shown.splitlines() == ["## Maschinenübersicht", "Maschine: BS 320; Schmierstoff: Getriebeöl CLP 220"]
    # no column named: the whole row
    shown = focus(TABLE, _terms(tok, "Was gilt für die BS 320?"), tok)
    assert shown.splitlines() == [
        "## Maschinenübersicht",
        ("Maschine: BS 320; Schmierstoff: Getriebeöl CLP 220; Ölwechsel alle: 3000 Betriebsstunden; "
        "Filterwechsel alle: 800 Betriebsstunden; Garantie: 12 Monate")]


def test_a_row_shows_the_columns_the_question_names() -> None:
    tok = Tokenizer.default()
    rows = {q: focus(TABLE, _terms(tok, q), tok).splitlines()[1] for q in (
        "Ab wie vielen Betriebsstunden sind die Filter der BS 320 fällig?",  # a word starting the column name
        "Nach wie vielen Stunden steht beim FZ 400 der Ölwechsel an?",
        "Wie lange Garantie hat die KP 160?",
        "Welchen Kühlschmierstoff nimmt die DM 250?")}  # a compound's end names no column
    assert list(rows.values()) == [
        "Maschine: BS 320; Filterwechsel alle: 800 Betriebsstunden",
        "Maschine: FZ 400; Ölwechsel alle: 2000 Betriebsstunden",
        "Maschine: KP 160; Garantie: 36 Monate",
        ("Maschine: DM 250; Schmierstoff: Spindelöl ISO VG 22; Ölwechsel alle: 1500 Betriebsstunden; "
        "Filterwechsel alle: 400 Betriebsstunden; Garantie: 24 Monate")]


CODES = """## Fehlercodes

Die Fehlercodes gelten für alle Maschinen (FZ 400, FZ 600, DM 250, DM 320, BS 320 und KP 160). Die Steuerung
zeigt den Code im Display, zusammen mit der Uhrzeit, zu der die Störung zum ersten Mal aufgetreten ist.

| Code | Bedeutung | Abhilfe |
|---|---|---|
| E101 | Schmierdruck zu niedrig | Ölstand im Zentralschmieraggregat prüfen. |
| E205 | Spindeltemperatur zu hoch | Spindel 30 Minuten abkühlen lassen. |
"""


def test_a_line_listing_many_machines_is_about_none_of_them() -> None:
    tok = Tokenizer.default()
    # the row naming the error code wins over the sentence that lists the machine among all others
    assert focus(CODES, _terms(tok, "Was heißt E101 an der FZ 400?"), tok).splitlines() == [
        "## Fehlercodes", "Code: E101; Bedeutung: Schmierdruck zu niedrig; Abhilfe: Ölstand im Zentralschmieraggregat prüfen."]
    # where only the list names the machine, it is still the line shown
    listed = focus(CODES, _terms(tok, "Gilt das für die DM 320?"), tok).splitlines()
    assert listed[0] == "## Fehlercodes" and listed[1].startswith("Die Fehlercodes gelten für alle Maschinen")


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
