"""Builders of the knowledge-base test data: small chat, Markdown and no-serving datasets, imported for real."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kifabrik.catalog import ArtifactRecord
from kifabrik.data import ImportOptions, import_dataset
from kifabrik.workspace import Workspace

#: (question, answer) of the service chats; every answer is about one distinct thing.
QA = [
    ("Welches Öl brauche ich für die DM 320?",
     "Für die Drehmaschine DM 320 empfehlen wir Spindelöl ISO VG 22, gewechselt alle 1500 Betriebsstunden."),
    ("Was bedeutet der Fehler E615 an der Fräse?",
     "E615 bedeutet Kühlmittelmangel: füllen Sie Kühlschmierstoff nach und quittieren Sie die Meldung."),
    ("Welche Artikelnummer hat der Spindelfilter?", "Der Spindelfilter hat die Artikelnummer SM-7702-30."),
    ("Wo finde ich das Handbuch zur BS 320?",
     "Die Betriebsanleitung der Bandsäge BS 320 steht im Kundenportal als PDF zum Download bereit."),
    ("Wie lange gilt die Garantie auf neue Maschinen?", "Neue Maschinen haben 24 Monate Garantie ab Lieferung."),
    ("Wann kommt der Servicetechniker zu uns?",
     "Ein Servicetechniker meldet sich innerhalb von zwei Werktagen zur Terminabsprache."),
    ("Welche Spannung braucht die DM 250?", "Die DM 250 läuft mit 400 Volt Drehstrom, abgesichert mit 32 Ampere."),
    ("How do I reset error E205?",
     "Switch the machine off, wait ten seconds and press the green reset button to clear E205."),
]

HANDBOOK = """# Wartungshandbuch DM 320

## Ölwechsel

Das Spindelöl der DM 320 wird alle 1500 Betriebsstunden gewechselt. Lassen Sie das alte Öl bei
betriebswarmer Maschine vollständig ab und reinigen Sie das Sieb.

## Verschleißteile

Die Tabelle nennt jedes Verschleißteil mit Artikelnummer und Wechselintervall.

| Teil | Artikelnummer | Intervall |
|---|---|---|
{rows}

## Störungen

### Kühlmittel

Die Meldung E615 zeigt Kühlmittelmangel an. Prüfen Sie zuerst den Füllstand im Tank und danach die Pumpe.
"""
PARTS = ["Spindelfilter", "Keilriemen", "Kohlebürste", "Dichtring", "Lüftermatte", "Kugellager", "Zahnriemen",
         "Abstreifer", "Schutzscheibe", "Ölfilter", "Luftfilter", "Spannzange"]
TABLE_ROWS = [f"| {p} | TB-{1000 + i * 37}-{10 + i} | {250 * (i + 1)} h |" for i, p in enumerate(PARTS)]

#: ODRL: training and evaluation permitted, serving prohibited.
NO_SERVING = {
    "@context": ["http://www.w3.org/ns/odrl.jsonld", {"dct": "http://purl.org/dc/terms/"}],
    "@type": "Set", "@id": "urn:kifabrik:test:no-serving", "dct:title": "no-serving",
    "permission": [{"action": "use", "constraint": [
        {"leftOperand": "purpose", "operator": "isAnyOf", "rightOperand": ["training", "evaluation"]}]}],
    "prohibition": [{"action": "use", "constraint": [
        {"leftOperand": "purpose", "operator": "eq", "rightOperand": "serving"}]}],
}
SECRET_QA = ("Welches Spindelöl braucht der Prototyp DM 900?",
             "Der Prototyp DM 900 braucht Spindelöl ISO VG 46; die Angabe ist vertraulich.")


def chat_line(*turns: tuple[str, str]) -> str:
    messages = [m for q, a in turns for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    return json.dumps({"messages": messages}, ensure_ascii=False) + "\n"


@dataclass
class Data:
    chats: ArtifactRecord
    handbook: ArtifactRecord
    secret: ArtifactRecord
    dir: Path


def _import(ws: Workspace, name: str, path: Path, **kw: object) -> ArtifactRecord:
    opts = ImportOptions.model_validate({"name": name, "path": str(path), "test_fraction": 0.0, **kw})
    return import_dataset(ws, opts).record


def make_data(ws: Workspace, tmp_path: Path) -> Data:
    """Three datasets imported through the data stage: chats (the fifth pair again inside a
    two-turn chat, so one passage has two sources), a Markdown handbook, a no-serving chat."""
    chats = tmp_path / "service.jsonl"
    greeting = ("Hallo, ich hätte zwei Anliegen zu unserer Bestellung und zur Rechnung.", "Gern, worum geht es genau?")
    chats.write_text("".join(chat_line(qa) for qa in QA) + chat_line(greeting, QA[4]), encoding="utf-8")
    handbook = tmp_path / "handbuch.md"
    handbook.write_text(HANDBOOK.format(rows="\n".join(TABLE_ROWS)), encoding="utf-8")
    secret = tmp_path / "geheim.jsonl"
    secret.write_text(chat_line(SECRET_QA), encoding="utf-8")
    policy = tmp_path / "no-serving.json"
    policy.write_text(json.dumps(NO_SERVING), encoding="utf-8")
    return Data(_import(ws, "service", chats, policy_preset="internal-only"),
                _import(ws, "handbuch", handbook, policy_preset="internal-only"),
                _import(ws, "geheim", secret, policy=str(policy)), tmp_path)
