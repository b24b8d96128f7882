"""German and English for the web UI: English source strings, a German catalogue per page module.

Each page module adds its own strings (`add({...})` at import), so no shared file grows with every
page. The language comes from the user's choice (cookie `kf_lang`, set on the language switch),
else the browser's `Accept-Language`, else German.
"""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("de", "en")
_DE: dict[str, str] = {}


def add(german: dict[str, str]) -> None:
    """Register German translations of English source strings (a page module calls it once)."""
    _DE.update(german)


def translator(lang: str) -> Callable[..., str]:
    """`t("Datasets")` in `lang`; `t("{n} runs", n=3)` formats after translating."""
    table = _DE if lang == "de" else {}

    def t(text: str, **values: object) -> str:
        out = table.get(text, text)
        return out.format(**values) if values else out

    return t


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    """The language to answer in: the user's choice, else the browser's first supported, else German."""
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return "de"


add({
    "Sign in": "Anmelden",
    "Sign out": "Abmelden",
    "User name": "Benutzername",
    "Password": "Passwort",
    "Wrong user name or password.": "Benutzername oder Passwort falsch.",
    "Your session has expired. Please sign in again.": "Ihre Sitzung ist abgelaufen. Bitte melden Sie sich erneut an.",
    "Projects": "Projekte",
    "Project": "Projekt",
    "Your projects": "Ihre Projekte",
    "You are not a member of any project yet. Ask an administrator to add you.":
        "Sie sind noch in keinem Projekt Mitglied. Bitte wenden Sie sich an eine Administratorin oder einen Administrator.",
    "Role": "Rolle",
    "viewer": "Betrachter",
    "engineer": "Entwicklung",
    "approver": "Freigabe",
    "admin": "Administration",
    "Dashboard": "Übersicht",
    "Data": "Daten",
    "Models": "Modelle",
    "Training": "Training",
    "Evaluations": "Evaluierungen",
    "Documents": "Dokumente",
    "Releases": "Freigaben",
    "Chat": "Chat",
    "API keys": "API-Schlüssel",
    "Audit log": "Audit-Protokoll",
    "Members": "Mitglieder",
    "Language": "Sprache",
    "Main navigation": "Hauptnavigation",
    "Skip to content": "Zum Inhalt springen",
    "Not found": "Nicht gefunden",
    "This page does not exist, or it belongs to a project you are not a member of.":
        "Diese Seite gibt es nicht, oder sie gehört zu einem Projekt, in dem Sie nicht Mitglied sind.",
    "Not allowed": "Nicht erlaubt",
    "Your role in this project does not allow this.": "Ihre Rolle in diesem Projekt erlaubt das nicht.",
    "Something went wrong": "Etwas ist schiefgegangen",
    "Back to the overview": "Zurück zur Übersicht",
    "The form has expired. Please reload the page and try again.":
        "Das Formular ist abgelaufen. Bitte laden Sie die Seite neu und versuchen Sie es noch einmal.",
    "Signed in as {user}": "Angemeldet als {user}",
    "Name": "Name",
    "Version": "Version",
    "Created": "Erstellt",
    "Status": "Status",
    "Kind": "Art",
    "Actions": "Aktionen",
    "Datasets": "Datensätze",
    "Adapters": "Adapter",
    "Running jobs": "Laufende Aufträge",
    "Knowledge bases": "Wissensbasen",
    "none yet": "noch keine",
    "Open": "Öffnen",
    "Download": "Herunterladen",
    "Save": "Speichern",
    "Cancel": "Abbrechen",
    "Error": "Fehler",
    "How to fix it": "So beheben Sie es",
})
add({"Fach-LLMs": "Fach-LLMs", "Running": "Läuft"})
