"""Finding personal data in text: patterns confirmed by checksums, person names by NER where available.

Every numeric identifier is confirmed before it counts: IBANs by their ISO 13616 mod-97
check and country length (a string of an IBAN's country, length and shape whose check fails is
still a bank account with a typo, or one altered on purpose: it is reported and redacted as a
possible IBAN, `iban_possible`), payment cards by issuer prefix and Luhn, the German tax ID by
ISO 7064 MOD 11,10 and its digit-repetition rule, the German social-insurance number by
its DRV check digit and embedded birth date, IP addresses by `ipaddress`, phone numbers by
libphonenumber (`phonenumbers`). Raw values never leave this module: callers get spans,
counts and redacted text.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

PII_TYPES = ("email", "phone", "iban", "iban_possible", "payment_card", "tax_id", "social_insurance", "ipv4", "ipv6",
             "person")
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "iban": "[IBAN]", "iban_possible": "[IBAN]", "payment_card": "[CARD]",
                "tax_id": "[TAX_ID]", "social_insurance": "[SV_NUMBER]", "ipv4": "[IP]", "ipv6": "[IP]",
                "person": "[NAME]"}
#: Checksum tables (IBAN lengths, SV-number factors, card issuers) with their sources.
TABLES = Path(__file__).parent / "tables" / "pii.json"

EMAIL = re.compile(r"(?<![\w.+%-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}(?![\w-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
TAX_ID = re.compile(r"(?<!\d)(?<!\d )[1-9]\d(?: ?\d{3}){3}(?! ?\d)")
SV_NUMBER = re.compile(r"\b\d{2} ?[0-3]\d[01]\d\d{2} ?[A-Z] ?\d{2} ?\d\b")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]|\.\d)")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
PHONE_HINT = re.compile(r"(?:\+|\b0)\d[\d ()/.-]{5,}\d")
# A national number (0711 ...) counts when written like one (space, slash, brackets) or when a word
# such as "Tel." stands just before it: article numbers like 0815-4711 are valid numbers too.
PHONE_CONTEXT = re.compile(r"(?i)(tel|telefon|phone|handy|mobil|fax|ruf|erreich|call|durchwahl|nummer)\W{0,3}\S{0,20}\W*$")


class CardIssuer(NamedTuple):
    issuer: str
    prefixes: tuple[tuple[str, str], ...]  # (low, high): the leading len(low) digits lie in that range
    lengths: frozenset[int]


class Tables(NamedTuple):
    iban_lengths: dict[str, int]
    iban_any_length: tuple[int, int]  # (shortest, longest) for countries not in iban_lengths
    sv_weights: tuple[int, ...]
    card_issuers: tuple[CardIssuer, ...]


@cache
def tables() -> Tables:
    """The checksum tables of `tables/pii.json`, read once per process."""
    data: dict[str, Any] = json.loads(TABLES.read_text(encoding="utf-8"))
    shortest, longest = data["iban"]["any_length"]
    return Tables(
        iban_lengths=dict(data["iban"]["lengths"]),
        iban_any_length=(shortest, longest),
        sv_weights=tuple(data["social_insurance"]["weights"]),
        card_issuers=tuple(CardIssuer(c["issuer"], tuple((low, high) for low, high in c["prefixes"]),
                                      frozenset(c["lengths"])) for c in data["payment_card"]["issuers"]),
    )


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def card_ok(digits: str) -> bool:
    """Issuer prefix and length (Visa, Mastercard, Amex, Maestro, Discover, JCB, Diners) and Luhn."""
    n = len(digits)
    # digit strings of equal length compare like their numbers
    issuer = any(n in c.lengths and any(low <= digits[:len(low)] <= high for low, high in c.prefixes)
                 for c in tables().card_issuers)
    return issuer and luhn_ok(digits)


def iban_ok(iban: str) -> bool:
    iban = iban.replace(" ", "")
    shortest, longest = tables().iban_any_length
    if tables().iban_lengths.get(iban[:2], len(iban)) != len(iban) or not shortest <= len(iban) <= longest:
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def iban_shaped(iban: str) -> bool:
    """The country code and length of an IBAN of that country (the check digits not checked): a typo is still one."""
    iban = iban.replace(" ", "")
    return tables().iban_lengths.get(iban[:2]) == len(iban) and not iban_ok(iban)


def tax_id_ok(digits: str) -> bool:
    """Steuerliche Identifikationsnummer: one digit of the first ten repeats (2 or 3 times), MOD 11,10 check."""
    if len(digits) != 11 or digits[0] == "0":
        return False
    counts = Counter(digits[:10])
    repeated = [d for d, c in counts.items() if c > 1]
    if len(repeated) != 1 or counts[repeated[0]] > 3:
        return False
    if counts[repeated[0]] == 3 and repeated[0] * 3 in digits[:10]:
        return False  # a digit may not stand three times in a row
    product = 10
    for ch in digits[:10]:
        s = (int(ch) + product) % 10 or 10
        product = (s * 2) % 11
    return (11 - product) % 10 == int(digits[10])


def social_insurance_ok(value: str) -> bool:
    """Rentenversicherungsnummer: area, birth date DDMMYY, letter, serial, DRV check digit."""
    v = value.replace(" ", "")
    if len(v) != 12 or not v[8].isalpha():
        return False
    day, month = int(v[2:4]), int(v[4:6])
    if not (1 <= day <= 31 and 1 <= month <= 12):
        return False
    digits = v[:8] + f"{ord(v[8].upper()) - 64:02d}" + v[9:11]
    total = sum(sum(divmod(int(d) * w, 10)) for d, w in zip(digits, tables().sv_weights, strict=True))
    return total % 10 == int(v[11])


def _ip_ok(text: str, version: int) -> bool:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    return addr.version == version and (version == 4 or text.count(":") >= 2 and len(text) >= 6)


class Span(NamedTuple):
    start: int
    end: int
    kind: str


@dataclass
class NameDetector:
    """Person names from an NER model; `find(text)` -> [(start, end)]."""

    method: str
    find: Callable[[str], list[tuple[int, int]]]


class Scanner:
    """Finds PII spans of the selected kinds; overlapping hits keep the longer, earlier one."""

    def __init__(self, kinds: tuple[str, ...] = PII_TYPES, names: NameDetector | None = None,
                 region: str = "DE") -> None:
        self.kinds = set(kinds)
        self.names = names if "person" in self.kinds else None
        self.region = region
        self._phonenumbers = None
        if "phone" in self.kinds:
            import phonenumbers  # small, pure Python: libphonenumber's metadata for every country

            self._phonenumbers = phonenumbers

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []
        add = spans.append
        has_digit = any(ch.isdigit() for ch in text)
        if "email" in self.kinds and "@" in text:
            for m in EMAIL.finditer(text):
                add(Span(m.start(), m.end(), "email"))
        if has_digit:
            checks: list[tuple[str, re.Pattern[str], Callable[[str], bool]]] = [
                ("iban", IBAN, iban_ok),
                ("iban_possible", IBAN, iban_shaped),
                ("payment_card", CARD, lambda s: card_ok(re.sub(r"\D", "", s))),
                ("tax_id", TAX_ID, lambda s: tax_id_ok(s.replace(" ", ""))),
                ("social_insurance", SV_NUMBER, social_insurance_ok),
                ("ipv4", IPV4, lambda s: _ip_ok(s, 4)),
            ]
            for kind, pattern, ok in checks:
                if kind in self.kinds:
                    add_all(spans, kind, pattern, ok, text)
            if self._phonenumbers is not None and PHONE_HINT.search(text):
                pn = self._phonenumbers
                for match in pn.PhoneNumberMatcher(text, self.region, leniency=pn.Leniency.VALID):
                    raw = match.raw_string
                    if raw.startswith(("+", "00")) or any(c in raw for c in " /()") \
                            or PHONE_CONTEXT.search(text[max(0, match.start - 40):match.start]):
                        add(Span(match.start, match.end, "phone"))
        if "ipv6" in self.kinds and text.count(":") >= 2:
            add_all(spans, "ipv6", IPV6, lambda s: _ip_ok(s, 6), text)
        if self.names is not None:
            spans += [Span(s, e, "person") for s, e in self.names.find(text)]
        return _resolve(spans)

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """Text with every hit replaced by its placeholder, and the count per kind."""
        spans = self.find(text)
        if not spans:
            return text, Counter()
        out, pos = [], 0
        for s in spans:
            out.append(text[pos:s.start])
            out.append(PLACEHOLDERS[s.kind])
            pos = s.end
        out.append(text[pos:])
        return "".join(out), Counter(s.kind for s in spans)


def add_all(spans: list[Span], kind: str, pattern: re.Pattern[str], ok: Callable[[str], bool], text: str) -> None:
    for m in pattern.finditer(text):
        if ok(m.group()):
            spans.append(Span(m.start(), m.end(), kind))


_PRIORITY = {k: i for i, k in enumerate(("iban", "iban_possible", "payment_card", "social_insurance", "tax_id", "email", "ipv6",
                                         "ipv4", "phone", "person"))}


def _resolve(spans: list[Span]) -> list[Span]:
    """Non-overlapping spans in text order; on overlap the checksum-confirmed kind wins, then the longer."""
    chosen: list[Span] = []
    for s in sorted(spans, key=lambda s: (_PRIORITY[s.kind], -(s.end - s.start), s.start)):
        if all(s.end <= c.start or s.start >= c.end for c in chosen):
            chosen.append(s)
    return sorted(chosen)
