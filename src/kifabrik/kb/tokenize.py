"""The knowledge base's word tokenizer: German-aware, for BM25 over company texts.

    Tokenizer.default().tokens("Fehler E615 an der DM 320, Teil SM-7702-30?")
    -> ['fehl', 'e615', 'dm', 'dm320', '320', 'teil', 'sm-7702-30', 'sm', '7702', '30']

- Text is NFKC-normalised and lower-cased; accents and umlauts are folded (ä -> a, ß -> ss) so
  that "Öle" and "Ole" and "Geräte"/"Gerät" meet after stemming, as in Lucene's German analyser.
- Words are runs of letters and digits; a hyphenated run (a part number, "Kühlmittel-Pumpe")
  is indexed whole *and* as its parts, so both "sm-7702-30" and "7702" find it.
- A short letter word directly followed by a number ("DM 320", "E 615") is also indexed as one
  token ("dm320"): model names then beat passages that only share the number ("BS 320").
- Stopwords come from `stopwords.json` (German and English function words).
- Light suffix stripping (Savoy's German light stemmer, the one Lucene ships) folds plural and
  case endings of purely alphabetic words; identifiers with digits are never stemmed.

The settings travel with every index (`kb.json`), so a query is always tokenized exactly as
the passages were, even after this module or the stopword list changes.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

STOPWORDS = Path(__file__).with_name("stopwords.json")
WORD = re.compile(r"[^\W_]+(?:-[^\W_]+)*")
_FOLD = str.maketrans({"ä": "a", "à": "a", "á": "a", "â": "a", "ö": "o", "ò": "o", "ó": "o", "ô": "o",
                       "ü": "u", "ù": "u", "ú": "u", "û": "u", "ï": "i", "ì": "i", "í": "i", "î": "i",
                       "é": "e", "è": "e", "ê": "e", "ë": "e", "ç": "c", "ñ": "n", "ß": "ss"})
_S_ENDING = set("bdfghklmnrt")  # letters after which a final -s is an ending (Savoy)
_ST_ENDING = set("bdfghklmnt")
COMPOUND_MIN, COMPOUND_PART = 7, 6
MODEL_PREFIX_MAX = 4  # "DM", "BS", "E", "VG": letter words this short may start a model name


def fold(text: str) -> str:
    """NFKC, lower case, accents and umlauts folded."""
    return unicodedata.normalize("NFKC", text).lower().translate(_FOLD)


def light_stem(word: str) -> str:
    """Savoy's German light stemmer (Lucene `GermanLightStemmer`), for an already folded word."""
    n = len(word)
    if n > 5 and word.endswith("ern"):
        word = word[:-3]
    elif n > 4 and word[-2] == "e" and word[-1] in "mnrs":
        word = word[:-2]
    elif n > 3 and (word[-1] == "e" or (word[-1] == "s" and word[-2] in _S_ENDING)):
        word = word[:-1]
    n = len(word)
    if n > 5 and word.endswith("est"):
        return word[:-3]
    if n > 4 and word[-2] == "e" and word[-1] in "rn":
        return word[:-2]
    if n > 4 and word.endswith("st") and word[-3] in _ST_ENDING:
        return word[:-2]
    return word


@cache
def default_stopwords() -> tuple[str, ...]:
    data = json.loads(STOPWORDS.read_text(encoding="utf-8"))
    return tuple(sorted({fold(w) for lang, words in data.items() if not lang.startswith("_") for w in words}))


@dataclass(frozen=True)
class Tokenizer:
    """Turns text into index terms; `settings()` round-trips through `from_settings()`."""

    stopwords: frozenset[str]
    stem: bool = True
    model_names: bool = True
    #: German compounds: a long word also yields its first and last COMPOUND_PART letters as terms
    #: ("Garantiedauer" meets "Garantie", "Kühlemulsion" meets "Emulsion"); indexes built before
    #: this existed keep it off (their kb.json has no `compounds`).
    compounds: bool = True

    @classmethod
    def default(cls) -> Tokenizer:
        return cls(frozenset(default_stopwords()))

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Tokenizer:
        return cls(frozenset(settings["stopwords"]), bool(settings["stem"]), bool(settings["model_names"]),
                   bool(settings.get("compounds", False)))

    def settings(self) -> dict[str, Any]:
        return {"name": "kifabrik-de-light", "lowercase": True, "fold_accents": True, "stem": self.stem,
                "stemmer": "savoy-german-light" if self.stem else None, "model_names": self.model_names,
                "hyphenated": "whole and parts", "compounds": self.compounds, "stopwords": sorted(self.stopwords)}

    def _term(self, word: str) -> str | None:
        if word in self.stopwords:
            return None
        return light_stem(word) if self.stem and word.isalpha() else word

    def tokens(self, text: str) -> list[str]:
        """Index terms of `text`, in order (duplicates kept: BM25 counts them)."""
        folded = fold(text)
        matches = list(WORD.finditer(folded))
        out: list[str] = []
        for i, m in enumerate(matches):
            word = m.group()
            if "-" in word:
                out.append(word)  # the whole identifier, never stemmed or dropped
                out += [t for part in word.split("-") if (t := self._term(part))]
                continue
            if (term := self._term(word)) is not None:
                out.append(term)
                if self.compounds and word.isalpha() and len(word) >= COMPOUND_MIN:
                    out += [f"{word[:COMPOUND_PART]}>", f"<{word[-COMPOUND_PART:]}"]
            if self.model_names and i + 1 < len(matches) and word.isalpha() and len(word) <= MODEL_PREFIX_MAX \
                    and word not in self.stopwords:
                nxt = matches[i + 1]
                gap = folded[m.end():nxt.start()]
                if nxt.group().isdigit() and gap.isspace() and len(gap) <= 2:
                    out.append(word + nxt.group())
        return out

    def query_terms(self, text: str) -> list[str]:
        """Distinct terms of a query, first occurrence first (a repeated word does not weigh more)."""
        return list(dict.fromkeys(self.tokens(text)))

    def parts_of(self, term: str) -> set[str]:
        """The part terms a joined term was made of ("fz400" -> fz, 400; "sm-7702-30" -> sm, 7702, 30).

        A search that finds the joined term in its index leaves the parts out of the query, else a
        question naming a machine would weigh the machine three times and its actual subject (an
        error code, a part) once.
        """
        if "-" in term:
            return {self._term(p) or p for p in term.split("-")}
        m = re.fullmatch(r"([^\W\d_]+)(\d+)", term)
        if self.model_names and m and len(m.group(1)) <= MODEL_PREFIX_MAX:
            return {self._term(m.group(1)) or m.group(1), m.group(2)}
        return set()
