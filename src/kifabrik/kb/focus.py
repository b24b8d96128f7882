"""A long source cut down to the lines that answer the question, before it goes into a prompt.

A knowledge base keeps a handbook section whole (heading, paragraphs, a table), which is right for
finding it and for citing it. A small model given the whole section must still find the one table
row or sentence that answers; asked "Ab wie vielen Betriebsstunden sind die Filter der BS 320
fällig?" with an eight-row, seven-column table it copies a neighbouring row as readily as the
right one. So a prompt shows a long section *focused* on the question:

- the section's headings stay (they say what the lines are about);
- a table keeps the rows that match, each written out with its column names
  (`Maschine: BS 320; ...; Filterwechsel alle: 800 Betriebsstunden; ...`), so no column has to be
  counted; when the question names a column ("Filterwechsel", "Garantie"), a row shows its first
  column and the named ones only (`Maschine: BS 320; Filterwechsel alle: 800 Betriebsstunden`): of
  a seven-column row the model copies the oil interval as readily as the filter interval;
- list items and sentences stay where they match.

"Match" is measured in the knowledge base's own terms. When the question names something specific
— a term of letters and digits: a machine ("BS 320"), an error code, a part number — only the lines
naming the most of it count, weighted by how rare each name is (a line under a heading that names it
names it too): asked about "E101 an der FZ 400", the row of E101 wins over a sentence naming every
machine. A line that lists more than `LIST_NAMES` names ("gelten für alle Maschinen (FZ 400, FZ 600,
DM 250, ...)") is about none of them in particular: its match counts once per name it lists. Otherwise the lines that share the most
question terms, each weighted by how rare it is in the index (at least half the best line's weight).
A passage with no matching line, or a short one, is shown unchanged; the citation (`sources`) still
names the whole passage it came from. Training rows with sources (`kb.contexts`) are focused the same
way, so a model is taught on what it is shown when serving.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kifabrik.kb.tokenize import Tokenizer

#: Passages with fewer words are shown whole (a chat answer or a short section is already focused).
MIN_WORDS = 40
#: A line naming more specific things than this is a list of them (see the module docstring).
LIST_NAMES = 3
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-ZÄÖÜ0-9„\"])")
_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


@dataclass(frozen=True)
class _Unit:
    kind: str  # heading | row | item | sentence
    text: str  # as shown (a table row written out with its column names)
    raw: str  # as matched (a table row's own cells: every row holds the column names once written out)
    header: str = ""  # a table row's column names
    table: int = -1  # which table of the passage a row belongs to
    cells: tuple[tuple[str, str], ...] = ()  # a table row's (column name, cell) pairs


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _units(text: str) -> list[_Unit]:
    """Headings, table rows (written out with their column names), list items and sentences, in order."""
    out: list[_Unit] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
        elif line.startswith("#"):
            out.append(_Unit("heading", line, line))
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i].strip())
                i += 1
            header = _cells(block[0]) if len(block) > 1 and _RULE.match(block[1]) else None
            table = i
            for row in block[2:] if header else block:
                cells = _cells(row)
                if header and len(cells) == len(header):
                    pairs = tuple(zip(header, cells, strict=True))
                    out.append(_Unit("row", "; ".join(f"{h}: {c}" for h, c in pairs), row, " ".join(header), table,
                                     pairs))
                else:
                    out.append(_Unit("row", row, row, "", table))
        elif _ITEM.match(line):
            out.append(_Unit("item", line, line))
            i += 1
        else:
            para = []
            while i < len(lines) and (s := lines[i].strip()) and not s.startswith(("#", "|")) and not _ITEM.match(s):
                para.append(s)
                i += 1
            out += [_Unit("sentence", s, s) for s in _SENTENCE.split(" ".join(para)) if s]
    return out


def _specific(term: str) -> bool:
    """A term naming one thing: letters and digits together ("bs320", "e840", "sm-2290-11"), not a bare number."""
    return any(c.isdigit() for c in term) and any(c.isalpha() for c in term)


def focus(text: str, question_terms: Iterable[str], tokenizer: Tokenizer, *,
          weight: Callable[[str], float] | None = None, min_words: int = MIN_WORDS) -> str:
    """`text` cut down to its headings and the lines matching the question (see the module docstring).

    `weight(term)` says how much a matched term counts (the index's idf: "Zahnriemen" more than
    "Artikelnummer", which every part answer says); by default every term counts once.
    """
    if len(text.split()) < min_words:
        return text
    terms = set(question_terms)
    specific = {t for t in terms if _specific(t)}
    units = _units(text)
    def weigh(found: set[str]) -> float:
        return sum(weight(t) if weight else 1.0 for t in found)

    named: list[float] = []  # the weight of the specific terms a unit names (a list: shared by its names)
    total: list[float] = []  # the weight of every question term a unit matches (a row: its column names too)
    own: list[float] = []  # a table row: what its own cells match (what tells it from the other rows)
    under: set[str] = set()  # what the nearest heading names counts for the lines below it
    for u in units:
        words = set(tokenizer.tokens(u.raw))
        found = words & terms
        if u.kind == "heading":
            under = found & specific
            named.append(0.0)
            total.append(0.0)
            own.append(0.0)
            continue
        names = sum(1 for t in words if _specific(t))
        named.append(weigh((found & specific) | under) / (names if names > LIST_NAMES else 1))
        own.append(weigh(found))
        total.append(weigh(found | (set(tokenizer.tokens(u.header)) & terms)))
    if specific and any(named):
        keep = [n == max(named) for n in named]
    else:
        best = max(total, default=0.0)
        keep = [best > 0 and t * 2 >= best for t in total]
        for table in {u.table for u in units if u.kind == "row"}:  # of a table, the rows that match most
            rows = [i for i, u in enumerate(units) if u.table == table and keep[i]]
            top = max((own[i] for i in rows), default=0.0)
            for i in rows:
                keep[i] = own[i] == top
    if not any(keep):
        return text
    shown = [_columns(u, terms, tokenizer) for u, k in zip(units, keep, strict=True) if k or u.kind == "heading"]
    return "\n".join(shown)


def _names(column: str, terms: set[str], tokenizer: Tokenizer) -> bool:
    """Whether the question names a column: one of its words is a word of the column name, or the start
    of one ("Filter" for "Filterwechsel alle"); the ends of compounds do not count ("Kühlschmierstoff"
    does not name "Schmierstoff", "Filterwechsel" not "Ölwechsel")."""
    words = {t for t in terms if not t.startswith("<") and not t.endswith(">")}
    for t in tokenizer.tokens(column):
        if t.startswith("<"):
            continue
        if t.endswith(">"):
            if any(len(w) >= 4 and t[:-1].startswith(w) for w in words):
                return True
        elif t in words:
            return True
    return False


def _columns(unit: _Unit, terms: set[str], tokenizer: Tokenizer) -> str:
    """A unit as shown; a table row the question names columns of: its first column and those (see the docstring)."""
    if len(unit.cells) < 3:
        return unit.text
    named = [j for j, (h, _) in enumerate(unit.cells) if j and _names(h, terms, tokenizer)]
    if not named or len(named) == len(unit.cells) - 1:
        return unit.text
    return "; ".join(f"{h}: {c}" for j, (h, c) in enumerate(unit.cells) if j == 0 or j in named)


def idf_weights(term_sets: Iterable[set[str]]) -> Callable[[str], float]:
    """BM25's idf over documents given as term sets: a term in fewer of them weighs more (unknown: the most)."""
    import math
    from collections import Counter

    df: Counter[str] = Counter()
    n = 0
    for terms in term_sets:
        df.update(terms)
        n += 1
    return lambda t: math.log1p((n - df[t] + 0.5) / (df[t] + 0.5))

