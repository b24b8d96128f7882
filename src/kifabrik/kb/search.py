"""Searching a knowledge base, with every passage's own dataset policy checked for the asking purpose.

    kb = KnowledgeBase.open(ws, "wissen")
    hits = kb.search("Welches Öl braucht die DM 320?", k=3, purpose="serving", actor="api-key:ab12")
    prompt_context = format_context(hits)

Scores. `Hit.score` is BM25 normalised to a unit that means the same in every index: the
score of one word that occurs in no other passage, found once in a passage of average length
(`idf_1 / (1 + k1)`, where `idf_1 = ln(1 + (N - 0.5) / 1.5)` is the idf of a word in 1 of N
passages). A score of 1.0 is as strong as one exact match of such a word; a single common
word matched scores about 0.3. BM25's length penalty is taken back for passages longer than
average (a table or a long section that holds the one rare word asked for is as relevant as
a short answer that holds it); shorter passages keep their advantage. Hits are ranked by this
score; hits under `min_score` are irrelevant, and `search` returns [] when nothing passes, so
callers can say that the answer is not in the knowledge base. `MIN_SCORE` notes its calibration.

Policies. Before ranking is cut to `k`, passages whose dataset (any dataset the identical
text came from) does not permit `purpose` are dropped, so they are never shown and the next
permitted passages move up. A search that dropped passages writes one audit entry
(`kb.search`, decision `filtered`) naming the datasets and the reasons; the query itself is
recorded only as a sha256, because the append-only audit log cannot forget personal data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.files import read_jsonl
from kifabrik.kb.build import FORMAT_VERSION, KIND, get_kb
from kifabrik.kb.passages import Passage, source_label
from kifabrik.kb.tokenize import Tokenizer, fold
from kifabrik.workspace import Workspace

if TYPE_CHECKING:  # numpy is imported when a knowledge base is opened, not by `kifabrik --help`
    import numpy as np

#: Calibrated on the demo datasets schmidt-wartung + schmidt-teile (train splits, 320 passages),
#: re-measured after model names and compounds count once per query: all 110 held-out questions of
#: their test splits score 2.10-11.6 at rank 1 (median 4.4); ten unrelated questions (weather,
#: cooking, travel, sport; German and English) score 0 or 0.34-0.43; short in-domain queries of one
#: word ("Lieferzeit", "Servicetechniker") 1.6-1.7. The threshold stays at 0.5, above every
#: unrelated question measured; questions from the domain that the data cannot answer ("Was kostet
#: ...?") share domain words and pass it: saying "not in the documents" for them is the model's job.
MIN_SCORE = 0.5

_CACHE: dict[tuple[str, str], _Index] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Hit:
    """One retrieved passage, `rank` 1 = best; `bm25` is the raw score, `score` the normalised one."""

    rank: int
    score: float  # BM25 in units of one unique word matched once (see the module docstring)
    passage_id: str
    text: str
    dataset_ref: str
    dataset_id: str
    source: str  # German citation label, e.g. "Zeile 12" or "handbuch.md, Abschnitt Wartung, Zeile 3"
    bm25: float


@dataclass(frozen=True)
class _Index:
    passages: list[Passage]
    retriever: Any  # bm25s.BM25
    scale: np.ndarray  # per passage: 1 / unit, times the length penalty taken back where longer than average
    members: dict[str, np.ndarray]  # dataset id -> bool mask over passages
    tokenizer: Tokenizer
    facts: dict[str, Any]


def score_unit(n_passages: int, k1: float) -> float:
    """BM25 of a word that occurs in 1 of `n_passages` passages, matched once in a passage of average length.

    Lucene idf (what bm25s scores with for method="lucene") times the term-frequency part
    tf / (tf + k1 * (1 - b + b * dl / avgdl)), which is 1 / (1 + k1) at tf = 1, dl = avgdl.
    """
    return math.log1p((n_passages - 0.5) / 1.5) / (1.0 + k1)


def score_scale(lengths: np.ndarray, k1: float, b: float) -> np.ndarray:
    """Per passage: the factor from raw BM25 to `Hit.score` (see the module docstring)."""
    import numpy as np

    relative = lengths / max(float(lengths.mean()), 1e-9)
    # At tf = 1 the term-frequency part is 1 / (1 + k1 * (1 - b + b * dl / avgdl)); relative to an
    # average-length passage that is (1 + k1) / (1 + k1 * (1 - b + b * dl / avgdl)), undone above average.
    penalty = np.maximum(1.0, (1.0 + k1 * (1.0 - b + b * relative)) / (1.0 + k1))
    return penalty / score_unit(len(lengths), k1)


def _load(ws: Workspace, record: ArtifactRecord) -> _Index:
    import bm25s
    import numpy as np

    root = ws.path(record)
    kb_json = root / "kb.json"
    if not kb_json.exists():
        raise KifabrikError(f"knowledge base {record.ref}: {kb_json} is missing",
                            hint=f"check it with `kifabrik verify {record.ref}`, then rebuild it")
    facts = json.loads(kb_json.read_text(encoding="utf-8"))
    if facts.get("format_version") != FORMAT_VERSION:
        raise KifabrikError(f"knowledge base {record.ref} has format {facts.get('format_version')}, this kifabrik "
                            f"reads format {FORMAT_VERSION}", hint="rebuild it with `kifabrik kb build`")
    try:
        # allow_pickle=False: the arrays are plain numbers, so a crafted .npy is refused instead of run.
        retriever = bm25s.BM25.load(root / "bm25", allow_pickle=False, mmap=False, load_corpus=False)
        lengths = np.load(root / "bm25" / "lengths.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise KifabrikError(f"knowledge base {record.ref}: the index files cannot be read ({exc})",
                            hint=f"check them with `kifabrik verify {record.ref}`, then rebuild it") from None
    passages = [Passage.from_json(obj) for obj in read_jsonl(root / "passages.jsonl")]
    n = len(passages)
    if n != retriever.scores["num_docs"]:
        raise KifabrikError(f"knowledge base {record.ref}: {n} passages but {retriever.scores['num_docs']} indexed",
                            hint=f"check it with `kifabrik verify {record.ref}`, then rebuild it")
    members: dict[str, np.ndarray] = {}
    for i, p in enumerate(passages):
        for dataset_id in p.dataset_ids():
            members.setdefault(dataset_id, np.zeros(n, dtype=bool))[i] = True
    scale = score_scale(lengths.astype(np.float64), float(facts["bm25"]["k1"]), float(facts["bm25"]["b"]))
    return _Index(passages, retriever, scale, members, Tokenizer.from_settings(facts["tokenizer"]), facts)


def forget(artifact_id: str) -> None:
    """Drop a removed knowledge base from the per-process cache."""
    with _LOCK:
        for key in [k for k in _CACHE if k[1] == artifact_id]:
            del _CACHE[key]


class KnowledgeBase:
    """An opened knowledge base: `KnowledgeBase.open(ws, ref).search(query)`."""

    def __init__(self, ws: Workspace, record: ArtifactRecord, index: _Index) -> None:
        self.ws = ws
        self.record = record
        self._index = index

    @classmethod
    def open(cls, ws: Workspace, record_or_ref: ArtifactRecord | str) -> KnowledgeBase:
        """Open by record or ref (name, name@version, id); the loaded index is cached per process by artifact id."""
        record = get_kb(ws, record_or_ref) if isinstance(record_or_ref, str) else record_or_ref
        if record.kind != KIND:
            raise KifabrikError(f"{record.ref} is a {record.kind}, not a knowledge base", hint="see `kifabrik kb list`")
        key = (str(ws.store.root), record.id)  # ids are content hashes, so a cached index never goes stale
        with _LOCK:
            index = _CACHE.get(key)
            if index is None:
                index = _CACHE[key] = _load(ws, record)
        return cls(ws, record, index)

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer this index was built with (queries and passages are compared in its terms)."""
        return self._index.tokenizer

    @property
    def passages(self) -> list[Passage]:
        return self._index.passages

    def terms(self, query: str) -> list[str]:
        """The index terms `query` is searched with."""
        return search_terms(self._index.tokenizer, self._index.retriever.vocab_dict, query)

    def unknown_names(self, query: str) -> list[str]:
        """Names in `query` of a kind the documents use but that they never mention ("E999", "FZ 900").

        A name is capital letters and a number ("FZ 900", "E312"; hyphenated numbers such as order
        numbers are not names); it is unknown when the index holds other names with the same letters
        ("fz400", "fz600") but not this one. The documents describe every machine and error code of
        the company, so asked about one they do not name, the right answer is that they do not name
        it — not the facts of the nearest name.
        """
        vocab = self._index.retriever.vocab_dict
        families = _families(self.record.id, vocab)
        out = []
        for m in _NAME.finditer(query):
            prefix = fold(m.group(1))
            if prefix + m.group(2) not in vocab and prefix in families:
                out.append(m.group(0))
        return out

    def scores(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """(raw BM25, normalised score) of every passage for `query`."""
        import numpy as np

        ix = self._index
        vocab = ix.retriever.vocab_dict
        terms = search_terms(ix.tokenizer, vocab, query)
        ids = list(dict.fromkeys(vocab[t] for t in terms if t in vocab))
        if not ids:
            return np.zeros(len(ix.passages), dtype=np.float32), np.zeros(len(ix.passages))
        raw = np.asarray(ix.retriever.get_scores(ids), dtype=np.float32)
        return raw, raw.astype(np.float64) * ix.scale

    def _denied(self, dataset_ids: list[str], purpose: str, region: str | None) -> dict[str, str]:
        """dataset id -> why its policy does not permit `purpose` (only the refused ones)."""
        from kifabrik.policy import check

        out = {}
        for dataset_id in dataset_ids:
            try:
                refused = [c for c in check(self.ws, [dataset_id], purpose, region=region) if not c.decision.permitted]
            except NotFoundError:  # fail closed: a dataset that left the catalog can no longer permit anything
                out[dataset_id] = "the dataset is no longer in the catalog"
                continue
            if refused:
                out[dataset_id] = "; ".join(f"{c.source.ref}, policy {c.policy_name!r}: {c.decision.reason}"
                                            for c in refused)
        return out

    def search(self, query: str, k: int = 3, *, purpose: str = "serving", actor: str = "cli",
               min_score: float = MIN_SCORE, region: str | None = None,
               record: Callable[[dict[str, Any]], None] | None = None,
               withheld: Callable[[float], None] | None = None) -> list[Hit]:
        """The `k` best passages whose datasets permit `purpose`, best first; [] when none is relevant.

        Args:
            query: The question, in any words (German or English).
            k: Most hits to return.
            purpose: Why the passages are retrieved (serving, evaluation, ...); checked against
                the policy of each passage's dataset.
            actor: Who asks (audit log).
            min_score: Hits with a lower normalised score are left out (0 keeps every match).
            region: Deployment region for `spatial` constraints (default: the settings' region).
            record: Receives the filtering decision (passages a policy withheld) instead of a
                `kb.search` audit entry of its own, for callers that write one entry per request.
            withheld: Receives the best normalised score among the passages a policy withheld
                (called only when one was), so a caller can tell that the best match is not shown.
        """
        import numpy as np

        from kifabrik.policy import PURPOSES

        if purpose not in PURPOSES:  # refused up front, also when no passage would need a policy check
            raise KifabrikError(f"unknown purpose {purpose!r}", hint=f"purposes: {', '.join(PURPOSES)}")
        if k < 1:
            raise KifabrikError(f"k must be at least 1 (got {k})", hint="ask for -k 3, for example")
        if not min_score >= 0.0:
            raise KifabrikError(f"min_score must be 0 or more (got {min_score})",
                                hint=f"the default {MIN_SCORE} keeps relevant hits; 0 keeps every match")
        ix = self._index
        raw, norm = self.scores(query)
        relevant = (raw > 0) & (norm >= min_score)
        present = [d for d, mask in ix.members.items() if (mask & relevant).any()]
        denied = self._denied(present, purpose, region)
        blocked = np.zeros(len(ix.passages), dtype=bool)
        for dataset_id in denied:
            blocked |= ix.members[dataset_id]
        dropped = relevant & blocked
        order = np.flatnonzero(relevant & ~blocked)
        order = order[np.argsort(-norm[order], kind="stable")][:k]
        hits = [self._hit(rank, int(i), raw, norm) for rank, i in enumerate(order, 1)]
        if dropped.any() and withheld is not None:
            withheld(round(float(norm[dropped].max()), 4))
        if dropped.any():
            filtered = {
                "kb": self.record.ref, "purpose": purpose, "region": region or self.ws.settings.region,
                "dropped": int(dropped.sum()), "returned": len(hits), "k": k, "min_score": min_score,
                "denied": [{"dataset_id": d, "dataset_ref": self._ref(d), "reason": why} for d, why in denied.items()
                           if (ix.members[d] & dropped).any()],
                "query_sha256": hashlib.sha256(query.encode()).hexdigest(), "query_chars": len(query)}
            if record is not None:  # the caller writes it into its own audit entry (serve: one per request)
                record(filtered)
            else:
                self.ws.catalog.audit("kb.search", actor=actor, subject=self.record.id, decision="filtered",
                                      details=filtered)
        return hits

    def _ref(self, dataset_id: str) -> str:
        for d in self._index.facts.get("datasets", []):
            if d["id"] == dataset_id:
                return str(d["ref"])
        return dataset_id[:12]

    def _hit(self, rank: int, i: int, raw: np.ndarray, norm: np.ndarray) -> Hit:
        p = self._index.passages[i]
        return Hit(rank, round(float(norm[i]), 4), p.id, p.text, p.dataset_ref, p.dataset_id,
                   source_label(p.sources[0]), round(float(raw[i]), 4))


_NAME = re.compile(r"(?<![\w-])([A-ZÄÖÜ]{1,4}) ?(\d{2,5})(?![\w-])")
_FAMILIES: dict[str, frozenset[str]] = {}


def _families(kb_id: str, vocab: Any) -> frozenset[str]:
    """The letter prefixes of the index's names ("fz" for fz400), per knowledge base id."""
    if kb_id not in _FAMILIES:
        _FAMILIES[kb_id] = frozenset(m.group(1) for t in vocab if (m := re.fullmatch(r"([a-z]{1,4})\d{2,5}", t)))
    return _FAMILIES[kb_id]


def search_terms(tokenizer: Tokenizer, vocab: Any, query: str) -> list[str]:
    """The terms a query is searched with in an index of vocabulary `vocab` (used for every BM25 search).

    A joined term the index knows ("fz400") stands for its parts, which are left out; a compound the
    index never uses whole is looked for by its parts (`split_compound`).
    """
    terms = tokenizer.query_terms(query)
    parts = {p for t in terms if t in vocab for p in tokenizer.parts_of(t)}
    terms = [t for t in terms if t not in parts]
    for t in list(terms):
        if t not in vocab and t.isalpha():
            terms += [p for p in split_compound(t, vocab) if p not in terms]
    return terms


def split_compound(word: str, vocab: Any, *, shortest: int = 3) -> list[str]:
    """`word` as a sequence of index terms ("olwechselintervall" -> olwechsel, intervall), or [].

    German writes compounds as one word; a question's "Ölwechselintervall" should meet passages
    that say "Ölwechsel" and "Intervall". The split with the fewest parts wins (longest parts first);
    a joint "s" (Fugen-s, "Betriebsstunden") may sit between parts. Parts are tried as written and
    in the tokenizer's stemmed form, so they must be words of this index.
    """
    from kifabrik.kb.tokenize import light_stem

    def known(part: str) -> str | None:
        for cand in (part, light_stem(part)):
            if cand in vocab and len(cand) >= shortest:
                return cand
        return None

    @functools.cache
    def best(start: int) -> tuple[str, ...] | None:
        if start == len(word):
            return ()
        found: tuple[str, ...] | None = None
        for end in range(len(word), start + shortest - 1, -1):
            term = known(word[start:end])
            if term is None:
                continue
            nxt = end + 1 if end < len(word) and word[end] == "s" and best(end + 1) is not None else end
            rest = best(nxt) if nxt != end else None
            rest = rest if rest is not None else best(end)
            if rest is not None and (found is None or 1 + len(rest) < len(found)):
                found = (term, *rest)
        return found

    parts = best(0)
    return list(parts) if parts and len(parts) > 1 else []


def format_context(hits: list[Hit]) -> str:
    """Hits as numbered sources for a prompt: `[1] (schmidt-wartung, Zeile 12) text`; "" for no hits."""
    return "\n\n".join(f"[{n}] ({h.dataset_ref.rpartition('@')[0] or h.dataset_ref}, {h.source}) {h.text}"
                       for n, h in enumerate(hits, 1))

