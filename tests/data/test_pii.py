"""PII detection: checksums, kinds, no false alarms on machine-shop numbers, properties."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from kifabrik.data.pii import Scanner, card_ok, iban_ok, luhn_ok, social_insurance_ok, tax_id_ok

SCANNER = Scanner()


def make_iban(bban: str, country: str = "DE") -> str:
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


def make_sv(body: str, letter: str, serial: str) -> str:
    digits = body + f"{ord(letter) - 64:02d}" + serial
    total = sum(sum(divmod(int(d) * w, 10)) for d, w in zip(digits, (2, 1, 2, 5, 7, 1, 2, 1, 2, 1, 2, 1), strict=True))
    return f"{body}{letter}{serial}{total % 10}"


def test_checksums() -> None:
    assert iban_ok("DE89 3704 0044 0532 0130 00") and not iban_ok("DE88 3704 0044 0532 0130 00")
    assert not iban_ok("DE89 3704 0044 0532 0130 0")  # wrong length for DE
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert card_ok("4111111111111111") and card_ok("5555555555554444") and card_ok("378282246310005")
    assert not card_ok("4111111111111112") and not card_ok("1234567812345670")  # Luhn-valid, no issuer
    assert tax_id_ok("36574261809") and not tax_id_ok("36574261808") and not tax_id_ok("06574261809")
    assert not tax_id_ok("12345678903")  # no repeated digit
    sv = make_sv("12150385", "M", "01")
    assert social_insurance_ok(sv) and social_insurance_ok(f"{sv[:2]} {sv[2:8]} {sv[8]} {sv[9:11]} {sv[11]}")
    assert not social_insurance_ok(sv[:-1] + str((int(sv[-1]) + 1) % 10))
    assert not social_insurance_ok(make_sv("12153385", "M", "01"))  # month 33


def test_every_kind_is_found_and_redacted() -> None:
    sv = make_sv("65170839", "J", "00")
    text = (f"Mail: anna.berger@example.com, Tel. 0711 123 4567, mobil +49 151 23456789, IBAN DE89 3704 0044 0532 "
            f"0130 00, Karte 4111-1111-1111-1111, Steuer-ID 36 574 261 809, SV-Nr. {sv}, Server 203.0.113.7, "
            f"IPv6 2001:db8::8a2e:370:7334.")
    redacted, counts = SCANNER.redact(text)
    assert counts == {"email": 1, "phone": 2, "iban": 1, "payment_card": 1, "tax_id": 1, "social_insurance": 1,
                      "ipv4": 1, "ipv6": 1}
    for raw in ("anna.berger", "123 4567", "23456789", "3704", "4111", "574 261", sv, "203.0.113", "8a2e"):
        assert raw not in redacted
    assert "[EMAIL]" in redacted and "[SV_NUMBER]" in redacted


def test_machine_shop_numbers_are_not_pii() -> None:
    text = ("Artikel SM-2201-10 und Teil 0815-4711, Auftrag A-2026-48213, Seriennummer SMB-FZ400-1234, "
            "Lieferung am 2026-03-01 um 12:30:00, Preis 1.234,56 EUR, 2000 Betriebsstunden, Fehler E205, "
            "Version 3.2.1, Konzentration 6 %, Drehzahl 12000 1/min, Maß 12.5.2026")
    assert SCANNER.find(text) == []


@given(st.text(alphabet="0123456789", min_size=18, max_size=18))
@settings(max_examples=200, deadline=None)
def test_any_valid_german_iban_is_found_and_a_typo_is_not(bban: str) -> None:
    iban = make_iban(bban)
    spaced = " ".join(iban[i:i + 4] for i in range(0, 22, 4))
    assert [s.kind for s in SCANNER.find(f"Konto: {spaced}.")] == ["iban"]
    pos = random.Random(bban).randrange(4, 22)
    typo = iban[:pos] + str((int(iban[pos]) + 1) % 10) + iban[pos + 1:]
    assert all(s.kind != "iban" for s in SCANNER.find(f"Konto: {typo}."))


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_redaction_is_idempotent_and_never_grows_pii(text: str) -> None:
    once, _ = SCANNER.redact(text)
    twice, counts = SCANNER.redact(once)
    assert twice == once and not counts
