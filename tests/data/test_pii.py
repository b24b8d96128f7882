"""PII detection: checksums, kinds, no false alarms on machine-shop numbers, properties."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from kifabrik.data.pii import (
    Scanner,
    card_ok,
    iban_ok,
    luhn_ok,
    social_insurance_ok,
    tables,
    tax_id_ok,
)

SCANNER = Scanner()


def make_iban(bban: str, country: str = "DE") -> str:
    """`bban` with the ISO 7064 MOD 97-10 check digits of ISO 13616 (the rule, not a table)."""
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


#: The example IBAN the SWIFT IBAN Registry gives for each country of the length table.
PUBLISHED_IBANS = [
    "AT611904300234573201", "BE68539007547034", "BG80BNBG96611020345678", "CH9300762011623852957",
    "CY17002001280000001200527600", "CZ6508000000192000145399", "DE89370400440532013000", "DK5000400440116243",
    "EE382200221020145685", "ES9121000418450200051332", "FI2112345600000785", "FR1420041010050500013M02606",
    "GB82WEST12345698765432", "GR1601101250000000012300695", "HR1210010051863000160", "HU42117730161111101800000000",
    "IE29AIBK93115212345678", "IS140159260076545510730339", "IT60X0542811101000000123456", "LI21088100002324013AA",
    "LT121000011101001000", "LU280019400644750000", "LV80BANK0000435195001", "MT84MALT011000012345MTLCAST001S",
    "NL91ABNA0417164300", "NO9386011117947", "PL61109010140000071219812874", "PT50000201231234567890154",
    "RO49AAAA1B31007593840000", "SE4550000000058398257466", "SI56263300012039086", "SK3112000000198742637541",
]
# German social-insurance numbers checked by hand with the rule of § 2 VKVV: the letter becomes its
# place in the alphabet (two digits), the 12 digits are multiplied by 2 1 2 5 7 1 2 1 2 1 2 1, the
# digit sums of the products are added, and the check digit is that sum mod 10.
VALID_SV = [
    # 6 5 1 7 0 8 3 9 | J=1 0 | 0 0 -> 12 5 2 35 0 8 6 9 2 0 0 0 -> 3+5+2+8+0+8+6+9+2+0+0+0 = 43 -> 3
    "65170839J003",
    # 1 5 1 1 1 2 7 9 | A=0 1 | 1 9 -> 2 5 2 5 7 2 14 9 0 1 2 9 -> 2+5+2+5+7+2+5+9+0+1+2+9 = 49 -> 9
    "15111279A199",
    # 3 8 2 9 1 1 6 4 | Z=2 6 | 5 7 -> 6 8 4 45 7 1 12 4 4 6 10 7 -> 6+8+4+9+7+1+3+4+4+6+1+7 = 60 -> 0
    "38291164Z570",
]
INVALID_SV = [
    "65170839J004", "15111279A198", "38291164Z571",  # check digit one off
    "15111379A190",  # month 13 (its check digit is right: 49 - 2 + 3 = 50 -> 0)
    "15321279A199",  # day 32 (its check digit is right: 49 - (2+5) + (6+1) = 49 -> 9)
]

#: Test card numbers published by the payment providers (PayPal, Stripe), one or two per issuer in the table.
PUBLISHED_CARDS = {
    "Visa": ["4111111111111111", "4012888888881881", "4222222222222"],
    "Mastercard": ["5555555555554444", "5105105105105100", "2223003122003222"],
    "American Express": ["378282246310005", "371449635398431"],
    "Maestro": ["6759649826438453"],
    "Discover": ["6011111111111117", "6011000990139424"],
    "JCB": ["3530111333300000", "3566002020360505"],
    "Diners Club": ["36227206271667", "38520000023237"],
}
#: Luhn-valid numbers made for the prefixes and lengths of the issuers' rules that no published one shows.
BUILT_CARDS = {
    "Visa": ["4111111111111111102"],  # 19 digits
    "American Express": ["343434343434301"],  # prefix 34
    "Maestro": ["501234567896", "5612345678905", "57123456789017", "581234567890126", "6304123456789015",
                "63123456789012345", "671234567890123452", "6759123456789012342"],  # 50, 56-58, 63, 67; 12-19 digits
}
#: Luhn-valid numbers with an issuer's prefix but a length that issuer does not use.
WRONG_LENGTH_CARDS = {
    "Visa": ["411111111117", "411111111111116", "41111111111111113", "41111111111111111115"],  # 12, 15, 17, 20 (13, 16, 19)
    "Mastercard": ["555555555555442", "55555555555544440", "22230031220032222"],  # 15, 17, 17 (16)
    "American Express": ["37828224631003", "3782822463100052"],  # 14, 16 (15)
    "Maestro": ["67596498260", "67596498264384536759"],  # 11, 20 (12-19)
    "Discover": ["601111111111116", "60111111111111170"],  # 15, 17 (16)
    "JCB": ["353011133330001", "35301113333000001"],  # 15, 17 (16)
    "Diners Club": ["362272062716672", "3852000002320"],  # 15, 13 (14)
}


def test_checksums() -> None:
    assert iban_ok("DE89 3704 0044 0532 0130 00") and not iban_ok("DE88 3704 0044 0532 0130 00")
    assert not iban_ok("DE89 3704 0044 0532 0130 0")  # wrong length for DE
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert not card_ok("4111111111111112") and not card_ok("1234567812345670")  # Luhn-valid, no issuer
    # 36574261809, ISO 7064 MOD 11,10 from product 10: digit d gives s = (d + p) mod 10 (0 -> 10), p = 2s mod 11;
    # 3->p6 6->p4 5->p7 7->p8 4->p4 2->p1 6->p3 1->p8 8->p1 0->p2; check = 11 - 2 = 9. The 6 stands twice.
    assert tax_id_ok("36574261809") and not tax_id_ok("36574261808") and not tax_id_ok("06574261809")
    assert not tax_id_ok("12345678903")  # no repeated digit


def test_published_ibans_pass_and_wrong_lengths_fail() -> None:
    assert sorted(i[:2] for i in PUBLISHED_IBANS) == sorted(tables().iban_lengths)  # a new country needs its example
    for iban in PUBLISHED_IBANS:
        assert iban_ok(iban), iban
        spaced = " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))
        assert [s.kind for s in SCANNER.find(f"Konto: {spaced}.")] == ["iban"], spaced
        # one character more or less, with the check digits made right again: only the length is wrong
        country, bban = iban[:2], iban[4:]
        assert not iban_ok(make_iban(bban + "0", country)), iban
        assert not iban_ok(make_iban(bban[:-1], country)), iban


def test_hand_checked_social_insurance_numbers() -> None:
    for sv in VALID_SV:
        assert social_insurance_ok(sv), sv
        assert social_insurance_ok(f"{sv[:2]} {sv[2:8]} {sv[8]} {sv[9:11]} {sv[11]}"), sv
    for sv in INVALID_SV:
        assert not social_insurance_ok(sv), sv


def test_published_test_cards_pass_and_wrong_lengths_fail() -> None:
    for issuer, numbers in PUBLISHED_CARDS.items():
        for number in numbers + BUILT_CARDS.get(issuer, []):
            assert card_ok(number), (issuer, number)
        for number in WRONG_LENGTH_CARDS[issuer]:
            assert luhn_ok(number) and not card_ok(number), (issuer, number)


def test_every_kind_is_found_and_redacted() -> None:
    sv = VALID_SV[0]
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
def test_any_valid_german_iban_is_found_and_a_typo_is_a_possible_iban(bban: str) -> None:
    iban = make_iban(bban)
    spaced = " ".join(iban[i:i + 4] for i in range(0, 22, 4))
    assert [s.kind for s in SCANNER.find(f"Konto: {spaced}.")] == ["iban"]
    pos = random.Random(bban).randrange(4, 22)
    typo = iban[:pos] + str((int(iban[pos]) + 1) % 10) + iban[pos + 1:]
    # one changed digit always breaks mod 97, and it is still somebody's account number
    assert not iban_ok(typo)
    assert [s.kind for s in SCANNER.find(f"Konto: {typo}.")] == ["iban_possible"]
    redacted, counts = SCANNER.redact(f"Konto: {typo}.")
    assert redacted == "Konto: [IBAN]." and counts == {"iban_possible": 1}


def test_a_possible_iban_needs_the_country_and_length_of_an_iban() -> None:
    assert [s.kind for s in SCANNER.find("Konto DE88 3704 0044 0532 0130 00 bitte")] == ["iban_possible"]
    # the length of no IBAN of that country, or no IBAN country at all: not an account number
    assert all(s.kind not in ("iban", "iban_possible") for s in SCANNER.find("DE88 3704 0044 0532 0130 0"))
    assert all(s.kind not in ("iban", "iban_possible") for s in SCANNER.find("QQ88 3704 0044 0532 0130 00"))


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_redaction_is_idempotent_and_never_grows_pii(text: str) -> None:
    once, _ = SCANNER.redact(text)
    twice, counts = SCANNER.redact(once)
    assert twice == once and not counts
