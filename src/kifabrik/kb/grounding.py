"""Grounded answers: retrieved passages go into the prompt, and no relevant passage means "not known".

One prompt format for everything that answers from a knowledge base — the training rows that
teach a model to use its sources (`train` with `context:`), `generate`, `eval`, the server and
agents — so a model is asked at serving time exactly as it was taught:

    system:  <the system message>\n\nQuellen:\n...[2] <passage>\n[1] <passage>
    user:    <the question>

Sources are numbered by rank ([1] is the best match) and written best *last*, next to the question:
a small model copies most readily from the text nearest to where it writes (the demo's 135M model,
same training budget, trained and asked so: 63 of 92 facts right with the best source first in one
run, 66 / 65 / 62 with it last over three training seeds).

A model trained with `cite` (`kb.contexts`) starts its answer with the number of the source it
answers from ("[2] ..."); `with_citations` marks that source `cited` in what API clients get.

When retrieval finds nothing relevant (every hit under the knowledge base's `min_score`), the
answer is `NOT_FOUND` without running the model: a Fach-LLM says that the information is not in
its documents instead of inventing one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kifabrik.kb.focus import focus as focus_on
from kifabrik.kb.focus import idf_weights
from kifabrik.kb.search import Hit, KnowledgeBase

#: The answer when the knowledge base holds nothing relevant (and the target of training rows whose
#: sources lack the answer). Contains "keine Informationen", which the `facts` metric counts as a refusal.
NOT_FOUND = "Dazu liegen mir keine Informationen vor."
SOURCES_HEADING = "Quellen:"
DEFAULT_SYSTEM = "Sie sind ein hilfreicher Assistent. Antworten Sie nur mit den Angaben aus den Quellen."


@dataclass(frozen=True)
class Source:
    """One passage an answer was grounded on (returned to API clients as `sources`)."""

    n: int
    passage_id: str
    dataset: str
    source: str
    score: float
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "id": self.passage_id, "dataset": self.dataset, "source": self.source,
                "score": self.score, "text": self.text}


@dataclass(frozen=True)
class Grounded:
    """A conversation with its sources written in; `found` is False when nothing relevant was retrieved."""

    messages: list[dict[str, Any]]
    sources: list[Source] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # names asked for that the documents never mention
    withheld: bool = False  # the best match is a passage its policy withholds for this purpose

    @property
    def found(self) -> bool:
        return bool(self.sources)

    @property
    def not_found(self) -> str:
        """The answer when nothing was found, naming what the documents do not mention."""
        if self.unknown:
            return f"{NOT_FOUND} Meine Unterlagen nennen {' und '.join(dict.fromkeys(self.unknown))} nicht."
        return NOT_FOUND


@functools.lru_cache(maxsize=16)
def _answers(kb: KnowledgeBase) -> dict[str, str]:
    """Passage id -> the text put into prompts (a chat passage's answer alone, else the passage)."""
    return {p.id: p.answer or p.text for p in kb.passages}


@functools.lru_cache(maxsize=16)
def _sections(kb: KnowledgeBase) -> frozenset[str]:
    return frozenset(p.id for p in kb.passages if p.kind == "section")


_WEIGHTS: dict[str, Callable[[str], float]] = {}


def _weights(kb: KnowledgeBase) -> Callable[[str], float]:
    """idf of the index's terms (per knowledge base id: ids are content hashes, so it never goes stale)."""
    if kb.record.id not in _WEIGHTS:
        _WEIGHTS[kb.record.id] = idf_weights(set(kb.tokenizer.tokens(p.index_text())) for p in kb.passages)
    return _WEIGHTS[kb.record.id]


def passage_text(kb: KnowledgeBase, hit: Hit) -> str:
    return _answers(kb).get(hit.passage_id, hit.text)


def shown_text(kb: KnowledgeBase, hit: Hit, terms: Sequence[str] | None) -> str:
    """What a prompt shows of a hit: a document section focused on the question's `terms` (None: whole)."""
    text = passage_text(kb, hit)
    if terms is None or hit.passage_id not in _sections(kb):
        return text
    return focus_on(text, terms, kb.tokenizer, weight=_weights(kb))


def diverse(kb: KnowledgeBase, hits: Sequence[Hit], k: int, *, same: float = 0.8) -> list[Hit]:
    """The `k` best hits, skipping any whose words are mostly (Jaccard >= `same`) those of a better one.

    Company data repeats itself (the same answer with a different greeting or an added sentence);
    three copies of one answer would waste the prompt's room for sources.
    """
    words = {h.passage_id: set(kb.tokenizer.tokens(passage_text(kb, h))) for h in hits}
    chosen: list[Hit] = []
    for h in hits:
        w = words[h.passage_id]
        if all(len(w & words[c.passage_id]) / max(1, len(w | words[c.passage_id])) < same for c in chosen):
            chosen.append(h)
        if len(chosen) == k:
            break
    return chosen


_CITATION = re.compile(r"\[(\d{1,2})\]")


def with_citations(sources: Sequence[dict[str, Any]], answer: str) -> list[dict[str, Any]]:
    """`sources` (as `Source.as_dict` gives them) with `cited`: whether the answer names it ("[2] ...").

    A model trained with `cite` names the source it answers from first; any other model may cite too.
    """
    named = {int(m) for m in _CITATION.findall(answer)}
    return [{**s, "cited": s["n"] in named} for s in sources]


def question_of(messages: Sequence[dict[str, Any]]) -> str:
    """What to search for: the last user message."""
    for m in reversed(messages):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return str(m["content"])
    return ""


def with_sources(messages: Sequence[dict[str, Any]], texts: Sequence[str]) -> list[dict[str, Any]]:
    """`messages` with numbered sources appended to the system message (one is added if there is none).

    `texts` are in rank order; they are numbered so ([1] the best) and written from the last to the
    first, so the best source stands next to the question (see the module docstring).
    """
    numbered = [f"[{n}] {t}" for n, t in enumerate(texts, 1)]
    block = SOURCES_HEADING + "\n" + "\n".join(reversed(numbered))
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{out[0].get('content') or ''}\n\n{block}".strip()
    else:
        out.insert(0, {"role": "system", "content": f"{DEFAULT_SYSTEM}\n\n{block}"})
    return out


def ground(kb: KnowledgeBase, messages: Sequence[dict[str, Any]], *, k: int = 3, purpose: str = "serving",
           actor: str = "cli", min_score: float | None = None, relative: float = 0.0, focus: bool = False,
           known_names: bool = False, refuse_withheld: bool = False,
           fits: Callable[[list[dict[str, Any]]], bool] | None = None,
           record: Callable[[dict[str, Any]], None] | None = None) -> Grounded:
    """Retrieve for the last user message (each passage checked against its dataset's policy) and write the sources in.

    `fits(messages)` says whether a prompt still leaves room for the answer in the model's context; the
    lowest-ranked sources are dropped until it does (the best one is always kept). `relative` drops
    sources scoring under that share of the best one: a clear best match is not diluted by
    distractors, which a small model copies from as readily as from the right source. `focus` shows
    document sections cut down to the lines that match the question (`kb.focus`). With `known_names`,
    a question naming a machine or code of a kind the documents use but never this one ("E999" where
    they list E101 ... E840) is not found (`KnowledgeBase.unknown_names`), and no model runs. With
    `refuse_withheld`, a question whose best match is a passage its policy withholds for `purpose` (a
    confidential price list behind a price question) is not found either: the lesser passages that
    remain do not answer it, and a small model would answer from them anyway.
    """
    kwargs: dict[str, Any] = {} if min_score is None else {"min_score": min_score}
    if record is not None:  # the filtering decision goes into the caller's audit entry
        kwargs["record"] = record
    question = question_of(messages)
    unknown = kb.unknown_names(question) if known_names else []
    if unknown:
        return Grounded([dict(m) for m in messages], [], unknown)
    best_withheld: list[float] = []
    hits = diverse(kb, kb.search(question, k=4 * k, purpose=purpose, actor=actor, withheld=best_withheld.append,
                                 **kwargs), k)
    if refuse_withheld and best_withheld and (not hits or best_withheld[0] > hits[0].score):
        return Grounded([dict(m) for m in messages], withheld=True)
    hits = [h for h in hits if h.score >= relative * hits[0].score] if hits else hits
    if not hits:
        return Grounded([dict(m) for m in messages])
    terms = kb.terms(question) if focus else None
    sources = [Source(n, h.passage_id, h.dataset_ref, h.source, h.score, shown_text(kb, h, terms))
               for n, h in enumerate(hits, 1)]
    grounded = with_sources(messages, [s.text for s in sources])
    while fits is not None and len(sources) > 1 and not fits(grounded):
        sources = sources[:-1]
        grounded = with_sources(messages, [s.text for s in sources])
    return Grounded(grounded, sources)


@dataclass(frozen=True)
class GroundedAnswer:
    text: str
    sources: list[Source]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


class Grounding:
    """A knowledge base bound to its retrieval settings, as a Fach-LLM record states them."""

    def __init__(self, kb: KnowledgeBase, *, k: int = 3, min_score: float | None = None, relative: float = 0.0,
                 focus: bool = False, known_names: bool = False, refuse_withheld: bool = False,
                 purpose: str = "serving", actor: str = "cli") -> None:
        self.kb, self.k, self.min_score, self.relative, self.focus = kb, k, min_score, relative, focus
        self.known_names, self.refuse_withheld = known_names, refuse_withheld
        self.purpose, self.actor = purpose, actor

    @classmethod
    def of(cls, ws: Any, runnable: Any, *, purpose: str = "serving", actor: str = "cli") -> Grounding | None:
        """The grounding of a runtime `Runnable` that is a Fach-LLM; None for a plain model."""
        if runnable.knowledge is None:
            return None
        kb_id, k, min_score = runnable.knowledge
        meta = runnable.fach_llm.meta
        relative = float(meta.get("relative") or 0.0)
        return cls(KnowledgeBase.open(ws, ws.catalog.get_artifact(kb_id, "index")), k=k, min_score=min_score,
                   relative=relative, focus=bool(meta.get("focus", False)),
                   known_names=bool(meta.get("known_names", False)),
                   refuse_withheld=bool(meta.get("refuse_withheld", False)), purpose=purpose, actor=actor)

    def ground(self, messages: Sequence[dict[str, Any]],
               fits: Callable[[list[dict[str, Any]]], bool] | None = None,
               record: Callable[[dict[str, Any]], None] | None = None) -> Grounded:
        return ground(self.kb, messages, k=self.k, purpose=self.purpose, actor=self.actor, min_score=self.min_score,
                      relative=self.relative, focus=self.focus, known_names=self.known_names,
                      refuse_withheld=self.refuse_withheld, fits=fits, record=record)

    def answer(self, loaded: Any, conversations: Sequence[Sequence[dict[str, Any]]], opts: Any, *,
               batch_size: int = 8, progress: Any = None) -> list[GroundedAnswer]:
        """Answer every conversation from its sources; NOT_FOUND (no model call) where nothing relevant is found."""
        room = loaded.context_length - opts.max_new_tokens
        grounded = [self.ground(c, fits=lambda m: len(loaded.chat_ids(m)) <= room) for c in conversations]
        todo = [i for i, g in enumerate(grounded) if g.found]
        done = loaded.generate([grounded[i].messages for i in todo], opts, batch_size=batch_size, progress=progress)
        out = [GroundedAnswer(g.not_found, []) for g in grounded]
        for i, c in zip(todo, done, strict=True):
            out[i] = GroundedAnswer(c.text, grounded[i].sources, c.prompt_tokens, c.completion_tokens, c.finish_reason)
        if progress and len(todo) < len(grounded):
            progress(len(grounded) - len(todo))
        return out
