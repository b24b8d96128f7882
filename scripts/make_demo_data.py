"""Write the demo dataset: German customer-service chats of the fictional "Schmidt Maschinenbau GmbH".

Written for kifabrik from templates and made-up facts (nothing is copied from anywhere).
Deterministic: the same seed gives byte-identical files. Some customer messages carry
planted FAKE personal data so that the data stage has something to redact: e-mail
addresses under example.com/.org (RFC 2606), IP addresses from the documentation ranges
(RFC 5737, RFC 3849), the public test card numbers of the card networks, and IBANs, tax IDs
and social-insurance numbers generated here so that their check digits are right while the
bank code 99990000 and the numbers themselves are invented.

    python scripts/make_demo_data.py            # writes src/kifabrik/data/demo/
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "kifabrik" / "data" / "demo"
SYSTEM = ("Sie sind der Kundenservice-Assistent der Schmidt Maschinenbau GmbH. Antworten Sie freundlich, "
          "knapp und fachlich korrekt auf Deutsch.")

MACHINES = [
    # name, kind, oil, oil interval h, filter interval h, coolant, warranty months
    ("FZ 400", "Fräszentrum", "Hydrauliköl HLP 46", 2000, 500, "Kühlschmierstoff-Emulsion 6 %", 24),
    ("FZ 600", "Fräszentrum", "Hydrauliköl HLP 46", 2000, 500, "Kühlschmierstoff-Emulsion 6 %", 24),
    ("DM 250", "Drehmaschine", "Spindelöl ISO VG 22", 1500, 400, "Kühlschmierstoff-Emulsion 5 %", 24),
    ("DM 320", "Drehmaschine", "Spindelöl ISO VG 22", 1500, 400, "Kühlschmierstoff-Emulsion 5 %", 24),
    ("BS 320", "Bandsäge", "Getriebeöl CLP 220", 3000, 800, "Minimalmengenschmierung", 12),
    ("KP 160", "Abkantpresse", "Hydrauliköl HLP 68", 4000, 1000, "keines", 36),
    ("LS 3015", "Laserschneidanlage", "Vakuumpumpenöl", 1000, 250, "Kühlwasser mit Korrosionsschutz", 24),
    ("SR 80", "Schleifroboter", "Getriebefett NLGI 2", 2500, 600, "Schleiföl", 12),
]
ERRORS = [
    ("E101", "Schmierdruck zu niedrig", "Prüfen Sie den Ölstand im Zentralschmieraggregat und füllen Sie bei Bedarf nach"),
    ("E205", "Spindeltemperatur zu hoch", "Lassen Sie die Spindel 30 Minuten abkühlen und kontrollieren Sie den Lüfter der Spindelkühlung"),
    ("E310", "Tür nicht verriegelt", "Schließen Sie die Schutztür vollständig und prüfen Sie den Sicherheitsschalter auf Verschmutzung"),
    ("E422", "Achsgrenze überfahren", "Fahren Sie die Achse im Einrichtbetrieb vorsichtig zurück in den zulässigen Bereich"),
    ("E508", "Kühlmittelstand niedrig", "Füllen Sie Kühlmittel bis zur Markierung am Schauglas nach"),
    ("E615", "Druckluft fehlt", "Prüfen Sie, ob die Druckluftversorgung mit mindestens 6 bar anliegt"),
    ("E733", "Werkzeugwechsler blockiert", "Schalten Sie in den Einrichtbetrieb und entfernen Sie Späne aus dem Werkzeugmagazin"),
    ("E840", "Encoder-Signal gestört", "Prüfen Sie den Stecker des Messsystems; bleibt der Fehler, ist ein Technikereinsatz nötig"),
]
PARTS = [
    ("Hydraulikfilter", "SM-2201-10", 3), ("Spindellager-Satz", "SM-3410-02", 10), ("Keilriemen", "SM-1105-44", 2),
    ("Sägeband 3660 mm", "SM-5120-07", 2), ("Schutzscheibe", "SM-6003-15", 5), ("Kühlmittelpumpe", "SM-4470-01", 7),
    ("Linsenschutzglas", "SM-7702-30", 3), ("Näherungsschalter", "SM-8120-05", 4), ("Luftfilter Schaltschrank", "SM-2290-11", 2),
    ("Abstreifer Führungsbahn", "SM-3301-21", 6),
]
CITIES = ["Stuttgart", "Ulm", "Heilbronn", "Reutlingen", "Augsburg", "Freiburg", "Karlsruhe", "Pforzheim", "Esslingen",
          "Würzburg", "Nürnberg", "Mannheim"]
FIRMS = ["Bauer Metallbau", "Keller Präzisionsteile", "Wagner Fahrzeugtechnik", "Roth Blechbearbeitung",
         "Neumann Formenbau", "Huber Antriebstechnik", "Vogel Stahlbau", "Schuster Feinmechanik", "Franke Apparatebau",
         "Lang Zerspanungstechnik"]
PEOPLE = ["Frau Berger", "Herr Kaiser", "Frau Lehmann", "Herr Schäfer", "Frau Ziegler", "Herr Brandt", "Frau Winter",
          "Herr Krüger", "Frau Seidel", "Herr Horn"]
GREET = ["", "Guten Tag, ", "Hallo, ", "Guten Morgen, ", "Sehr geehrte Damen und Herren, ", "Moin, "]
THANKS = ["", " Danke!", " Vielen Dank im Voraus.", " Danke für die schnelle Hilfe.", " Grüße aus {city}."]


# --------------------------------------------------------------------------- fake identifiers with valid check digits
def iban(rng: random.Random) -> str:
    bban = "99990000" + f"{rng.randrange(10**9, 10**10)}"  # bank code 99990000 does not exist
    check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
    raw = f"DE{check:02d}{bban}"
    return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def tax_id(rng: random.Random) -> str:
    while True:
        digits = [rng.randrange(1, 10)] + [rng.randrange(10) for _ in range(9)]
        counts = {d: digits.count(d) for d in digits}
        if sorted(counts.values(), reverse=True)[:2] != [2, 1]:
            continue
        product = 10
        for d in digits:
            s = (d + product) % 10 or 10
            product = (s * 2) % 11
        s = "".join(map(str, digits)) + str((11 - product) % 10)
        return f"{s[:2]} {s[2:5]} {s[5:8]} {s[8:]}"


def sv_number(rng: random.Random) -> str:
    area, day, month, year = rng.randrange(10, 80), rng.randrange(1, 29), rng.randrange(1, 13), rng.randrange(60, 99)
    letter, serial = rng.choice("ABDKLMSW"), rng.randrange(0, 100)
    body = f"{area:02d}{day:02d}{month:02d}{year:02d}"
    digits = body + f"{ord(letter) - 64:02d}" + f"{serial:02d}"
    total = sum(sum(divmod(int(d) * w, 10)) for d, w in zip(digits, (2, 1, 2, 5, 7, 1, 2, 1, 2, 1, 2, 1)))
    return f"{body[:2]} {body[2:]} {letter} {serial:02d} {total % 10}"


def contact(rng: random.Random, person: str) -> tuple[str, str]:
    """A sentence with planted fake personal data, and a reply that does not repeat it."""
    last = person.split()[-1].lower().replace("ä", "ae").replace("ü", "ue").replace("ö", "oe")
    kind = rng.choice(["mail", "phone", "iban", "card", "tax", "sv", "ip", "ip6"])
    if kind == "mail":
        return f" Sie erreichen mich unter {last}@example.com.", "Wir antworten Ihnen per E-Mail."
    if kind == "phone":
        return (f" Rückruf bitte unter +49 711 {rng.randrange(100, 999)} {rng.randrange(1000, 9999)}.",
                "Wir rufen Sie zurück.")
    if kind == "iban":
        return f" Bitte buchen Sie die Gutschrift auf unser Konto {iban(rng)}.", \
            "Die Buchhaltung veranlasst die Gutschrift; Bankdaten bitte künftig nur über das Kundenportal senden."
    if kind == "card":
        card = rng.choice(["4111 1111 1111 1111", "5555 5555 5555 4444"])
        return f" Zahlen möchte ich mit der Kreditkarte {card}.", \
            "Bitte senden Sie Kartendaten nie per Chat; nutzen Sie die Zahlungsseite im Kundenportal."
    if kind == "tax":
        return f" Für die Rechnung: meine Steuer-ID ist {tax_id(rng)}.", "Die Steuer-ID benötigen wir für Firmenrechnungen nicht."
    if kind == "sv":
        return f" Unser Monteur hat die Sozialversicherungsnummer {sv_number(rng)}, falls das für den Werksausweis nötig ist.", \
            "Für den Werksausweis genügen Name und Firma; die Sozialversicherungsnummer brauchen wir nicht."
    if kind == "ip":
        return f" Die Steuerung hat die Adresse 192.0.2.{rng.randrange(2, 250)} im Firmennetz.", \
            "Für die Fernwartung richtet unser Support einen VPN-Zugang ein."
    return f" Die Maschine ist per IPv6 unter 2001:db8:{rng.randrange(16, 4095):x}::{rng.randrange(1, 255):x} erreichbar.", \
        "Für die Fernwartung richtet unser Support einen VPN-Zugang ein."


# --------------------------------------------------------------------------- topics: (question variants, answer)
def topics(rng: random.Random) -> list[tuple[str, list[str], str]]:
    m_name, m_kind, oil, oil_h, filt_h, coolant, warranty = rng.choice(MACHINES)
    code, meaning, fix = rng.choice(ERRORS)
    part, number, days = rng.choice(PARTS)
    qty = rng.choice([1, 2, 3, 4, 5, 10])
    order = f"A-{rng.randrange(2024, 2027)}-{rng.randrange(10000, 99999)}"
    serial = f"SMB-{m_name.replace(' ', '')}-{rng.randrange(1000, 9999)}"
    hours = rng.choice([480, 950, 1480, 1990, 2400, 3100])
    weekday = rng.choice(["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag"])
    return [
        ("oil", [f"wie oft muss das Öl an der {m_kind} {m_name} gewechselt werden?",
                 f"welches Öl brauche ich für unsere {m_name} und wann ist der nächste Wechsel fällig? Sie hat jetzt {hours} Betriebsstunden.",
                 f"unsere {m_kind} {m_name} steht bei {hours} Stunden. Ist ein Ölwechsel nötig?"],
         f"Für die {m_kind} {m_name} empfehlen wir {oil}. Das Öl wird alle {oil_h} Betriebsstunden gewechselt."
         f"<<HOURS: Bei {hours} Stunden ist der Wechsel "
         f"{'fällig' if hours >= oil_h else f'in etwa {oil_h - hours} Stunden fällig'}.>>"
         " Die Anleitung finden Sie im Wartungshandbuch, Kapitel 7."),
        ("filter", [f"wann muss der Filter an der {m_name} getauscht werden?",
                    f"in welchem Intervall wechseln wir die Filter der {m_kind} {m_name}?",
                    f"wir haben bei der {m_name} ({serial}) vergessen, den Filter zu wechseln. Wie oft sollte das passieren?"],
         f"Die Filter der {m_name} tauschen Sie alle {filt_h} Betriebsstunden, bei staubiger Umgebung früher. "
         f"Den passenden Filtersatz erhalten Sie über das Kundenportal unter Ihrer Seriennummer."),
        ("coolant", [f"welches Kühlmittel ist für die {m_name} freigegeben?",
                     f"wir möchten das Kühlmittel der {m_kind} {m_name} wechseln. Was verwenden wir?"],
         f"Für die {m_name} ist {coolant} freigegeben. Prüfen Sie Konzentration und pH-Wert wöchentlich "
         f"und wechseln Sie die Füllung spätestens alle sechs Monate."),
        ("error", [f"die {m_name} zeigt den Fehler {code}. Was bedeutet das?",
                   f"Störung an unserer {m_kind}: Meldung {code} im Display. Was tun?",
                   f"seit heute früh meldet die {m_name} ({serial}) {code} und stoppt. Können Sie helfen?"],
         f"{code} bedeutet „{meaning}“. {fix}. Quittieren Sie danach die Meldung mit der Reset-Taste. "
         f"Tritt der Fehler erneut auf, melden Sie sich bitte mit der Seriennummer bei unserer Service-Hotline."),
        ("part", [f"ich brauche {qty} × {part} für die {m_name}. Wie lange dauert die Lieferung?",
                  f"was ist die Artikelnummer für den {part} der {m_kind} {m_name}?",
                  f"können Sie {qty} Stück {part} ({number}) liefern?"],
         f"Der {part} hat die Artikelnummer {number}. Die Lieferzeit beträgt etwa {days} Werktage; "
         f"Sie können {qty} Stück direkt im Kundenportal bestellen oder uns die Bestellung per E-Mail senden."),
        ("order", [f"wo ist unsere Bestellung {order}?",
                   f"wann wird Auftrag {order} geliefert?",
                   f"können Sie mir den Status der Bestellung {order} nennen?"],
         f"Zur Bestellung {order}: Die Ware ist kommissioniert und geht am {weekday} in den Versand. "
         f"Die Sendungsnummer erhalten Sie am Versandtag per E-Mail."),
        ("invoice", [f"auf der Rechnung zu {order} fehlt unsere Bestellnummer. Können Sie das korrigieren?",
                     f"bitte schicken Sie die Rechnung zu Auftrag {order} noch einmal."],
         f"Gern. Wir stellen die Rechnung zu {order} neu aus und senden sie Ihnen innerhalb von zwei Werktagen zu."),
        ("warranty", [f"gilt für die {m_name} noch Garantie? Sie wurde vor {rng.randrange(6, 40)} Monaten geliefert.",
                      f"wie lange ist die Gewährleistung auf eine neue {m_kind} {m_name}?"],
         f"Auf die {m_kind} {m_name} geben wir {warranty} Monate Garantie ab Inbetriebnahme. "
         f"Verschleißteile wie Filter und Riemen sind ausgenommen."),
        ("technician", [f"wir brauchen einen Techniker für die {m_name} in {rng.choice(CITIES)}. Wann ist jemand frei?",
                        f"können Sie für nächste Woche einen Servicetechniker für unsere {m_kind} schicken?"],
         f"Unser Servicetechniker kann am {weekday} vor Ort sein. Bitte halten Sie die Seriennummer und eine Beschreibung "
         f"der Störung bereit; die Einsatzbestätigung kommt per E-Mail."),
        ("training", [f"bieten Sie Schulungen für die Bedienung der {m_name} an?",
                      f"unsere neuen Mitarbeiter sollen die {m_kind} {m_name} kennenlernen. Gibt es ein Training?"],
         f"Ja, wir bieten für die {m_name} eine zweitägige Bedienerschulung im Werk und vor Ort an. "
         f"Termine und Anmeldung finden Sie im Kundenportal unter „Schulungen“."),
        ("manual", [f"wo finde ich das Handbuch zur {m_name}?",
                    f"wir haben die Betriebsanleitung der {m_kind} {m_name} verloren. Bekommen wir eine neue?"],
         f"Die Betriebsanleitung der {m_name} steht im Kundenportal als PDF zum Download bereit. "
         f"Ein gedrucktes Exemplar senden wir Ihnen auf Wunsch kostenlos zu."),
    ]


def example(rng: random.Random, variant_filter: str) -> tuple[str, dict[str, object]]:
    topic, variants, answer = rng.choice(topics(rng))
    # Held-out examples use the last wording of each question, training examples the others,
    # so the evaluation set asks in words the training set never used.
    pool = variants[-1:] if variant_filter == "test" else variants[:-1] or variants
    question = rng.choice(pool)
    firm, city, person = rng.choice(FIRMS), rng.choice(CITIES), rng.choice(PEOPLE)
    greet = rng.choice(GREET)
    user = (greet + question) if greet else question[0].upper() + question[1:]
    if rng.random() < 0.35:
        user += f" ({person}, {firm}, {city})"
    reply_extra = ""
    if rng.random() < 0.18:
        planted, reply_extra = contact(rng, person)
        user += planted
    user += rng.choice(THANKS).format(city=city)
    # The oil answer names the machine's hours only when the question gave them.
    head, _, rest = answer.partition("<<HOURS:")
    if rest:
        note, _, tail = rest.partition(">>")
        answer = head + (note if "Stunden" in question else "") + tail
    answer = answer + (" " + reply_extra if reply_extra else "")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user},
                {"role": "assistant", "content": answer}]
    return topic, {"messages": messages}


# The two halves the demo trains separate adapters on (and then merges).
GROUPS = {"wartung": {"oil", "filter", "coolant", "error", "technician", "manual", "training", "warranty"},
          "teile": {"part", "order", "invoice"}}


def build(n: int, split: str, rng: random.Random, seen: set[str]) -> list[tuple[str, dict[str, object]]]:
    rows: list[tuple[str, dict[str, object]]] = []
    while len(rows) < n:
        topic, row = example(rng, split)
        key = json.dumps(row, ensure_ascii=False, sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append((topic, row))
    return rows


def write(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{path}: {len(rows)} chats, {path.stat().st_size:,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--train", type=int, default=320)
    parser.add_argument("--test", type=int, default=110)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rng, seen = random.Random(args.seed), set()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", args.train), ("test", args.test)):
        rows = build(n, split, rng, seen)
        write(args.out / f"schmidt-service-{split}.jsonl", [r for _, r in rows])
        for group, group_topics in GROUPS.items():
            write(args.out / f"schmidt-{group}-{split}.jsonl", [r for t, r in rows if t in group_topics])


if __name__ == "__main__":
    main()
