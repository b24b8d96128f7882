"""Training rows that teach a model to answer from retrieved sources (`train` option `context:`).

For every chat row of the training split, the last user message is searched (BM25, the knowledge
base's tokenizer) among the final answers of *the same training split* — so an adapter trained
this way depends on no data outside its own lineage — and the row is rewritten into the prompt
format of `kb.grounding`:

- answerable rows (the default share 1 - `unanswerable`): the `k` best passages in retrieval order,
  as the knowledge base will give them at serving time, with the row's own answer among them (where
  retrieval ranked it, or at a random place when retrieval missed it, so the model also learns to
  find the answer further down);
- document rows (share `from_documents` of the answerable rows whose answer a document section of
  the pool also states, see `states`): the same, but with that section in place of the row's own
  answer and every copy of it — so the model learns to answer from a handbook section, not only to
  copy a chat answer that already says it (measured: a model trained on copy rows alone copies the
  nearest *chat answer* about the same machine, with the wrong fact, even when the right section is
  source [1]);
- with `cite`, an answerable row's target first names the source it comes from ("[2] ..."):
  the model points at one source before it writes, which a small model does more reliably than
  picking the right source while writing (the demo's 135M model: 60 % -> 68 % facts correct);
- unanswerable rows (share `unanswerable`): sources that do not contain the answer (the row's own
  answer and every passage that shares most of its words are left out), and the target becomes
  `NOT_FOUND` — so the model learns to say that the sources do not answer the question. By default
  the sources are passages that do not name what the question names (its machine, error code, part
  number). With `related`, that share of them shows instead the passages retrieval ranks best for
  the question, less every one that may hold the answer (`may_hold`): the same machine, another fact
  ("Presskraft der KP 160?" with the KP 160's oil, warranty and training) — what a question the
  documents do not answer meets at serving time, where a Fach-LLM with `known_names` already answers
  a name the documents never mention without running the model.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from kifabrik.kb.focus import focus as focus_on
from kifabrik.kb.focus import idf_weights
from kifabrik.kb.grounding import NOT_FOUND, with_sources
from kifabrik.kb.search import search_terms
from kifabrik.kb.tokenize import Tokenizer


@dataclass(frozen=True)
class ContextStats:
    rows: int
    answerable: int
    unanswerable: int
    passages: int
    from_documents: int = 0
    related: int = 0  # unanswerable rows whose sources are about what was asked (`related`)


def cited(n: int, answer: str) -> str:
    """An answer that first names the source it comes from (`cite`): "[2] ..."."""
    return f"[{n}] {answer}"


_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s")


def states(answer: str, question: str, shown: str, tok: Tokenizer, *, share: float = 0.6) -> bool:
    """Whether `shown` (a section as a prompt shows it) states what `answer` answers to `question`.

    The facts of an answer are the terms of its first sentence (a chat answer states its fact first:
    "E422 bedeutet „Achsgrenze überfahren“") and its terms with a digit (an interval, a part number,
    a delivery time), less the question's own terms. The section states them when it holds every
    term with a digit of the first sentence, at least `share` of all the facts, and every specific
    name (letters and digits: "BS 320", "E422") that question and answer both name.
    """
    asked = set(tok.tokens(question))
    first = set(tok.tokens(_FIRST_SENTENCE.split(answer, maxsplit=1)[0])) - asked
    facts = first | ({t for t in tok.tokens(answer) if any(c.isdigit() for c in t)} - asked)
    named = set(tok.tokens(answer))
    names = {t for t in asked if any(c.isdigit() for c in t) and any(c.isalpha() for c in t) and t in named}
    has = set(tok.tokens(shown))
    return (bool(facts) and {t for t in first if any(c.isdigit() for c in t)} <= has and names <= has
            and len(facts & has) >= share * len(facts))


def may_hold(answer: str, question: str, shown: str, tok: Tokenizer, *, share: float = 0.3) -> bool:
    """Whether `shown` may state what `answer` answers to `question`: it holds one of the answer's terms
    with a digit that the question does not name (an interval, a part number, a delivery time), or
    `share` of the facts of its first sentence (see `states`). Stricter than `states`, for leaving out."""
    asked = set(tok.tokens(question))
    has = set(tok.tokens(shown))
    digits = {t for t in tok.tokens(answer) if any(c.isdigit() for c in t)} - asked
    first = set(tok.tokens(_FIRST_SENTENCE.split(answer, maxsplit=1)[0])) - asked
    return bool(digits & has) or (bool(first) and len(first & has) >= share * len(first))


def _final_answer(messages: Sequence[dict[str, Any]]) -> str | None:
    if messages and messages[-1].get("role") == "assistant" and isinstance(messages[-1].get("content"), str):
        return str(messages[-1]["content"])
    return None


def _overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def add_contexts(rows: list[dict[str, Any]], *, k: int = 3, unanswerable: float = 0.2, seed: int = 0,
                 pool: Sequence[str] = (), near_duplicate: float = 0.5,
                 same: float = 0.8, focus: Collection[str] = (),
                 from_documents: float = 0.0, cite: bool = False,
                 related: float = 0.0) -> tuple[list[dict[str, Any]], ContextStats]:
    """Rewrite chat rows (`{"messages": [...]}`) into grounded rows; rows without a final answer stay as they are.

    Args:
        rows: Chat rows of the training (or test) split.
        k: Sources per row.
        unanswerable: Share of rows to turn into "the sources do not say" rows. Only a question that
            names something specific (a machine, an error code, a part number: a term with a digit)
            can be made unanswerable safely: its sources are chosen among passages that do not mention
            it, so they cannot hold its answer. Other questions stay answerable.
        seed: Seed of the choices (same seed, same rows).
        pool: More passages (document sections) that may appear as sources, as they will at serving time.
        near_duplicate: Passages sharing this much of the answer's words count as holding the answer.
        same: Passages this similar to a better one are skipped, as at serving time (`grounding.diverse`).
        focus: Texts of `pool` (document sections) to show cut down to the lines matching the question,
            as a Fach-LLM with `focus` shows them (`kb.focus`); chat answers are shown whole, as there.
        from_documents: Share of the answerable rows whose answer a section of `pool` states (`states`)
            that show that section instead of the row's own answer and its copies.
        cite: Targets of answerable rows first name their source ("[2] ...").
        related: Share of the unanswerable rows whose sources are the best-ranked passages that may not
            hold the answer, at least one of them naming what the question names (see the module docstring).
    """
    import bm25s
    import numpy as np

    tok = Tokenizer.default()
    answers = list(dict.fromkeys(a for r in rows if (a := _final_answer(r["messages"])) is not None))
    texts = answers + [t for t in dict.fromkeys(pool) if t not in set(answers)]
    if len(texts) < 2:
        return rows, ContextStats(len(rows), 0, 0, len(texts))
    terms = [tok.tokens(t) for t in texts]
    word_sets = [set(t) for t in terms]
    index = bm25s.BM25()
    index.index(terms, show_progress=False)
    position = {a: i for i, a in enumerate(answers)}
    weight = idf_weights(word_sets)
    rng = random.Random(seed)

    def shows(i: int, asked: list[str]) -> str:
        return focus_on(texts[i], asked, tok, weight=weight) if texts[i] in focus else texts[i]

    pooled = range(len(answers), len(texts))  # the pool's passages (document sections) beside the rows' answers
    out, n_ans, n_un, n_doc, n_rel = [], 0, 0, 0, 0
    for row in rows:
        messages = row["messages"]
        gold_text = _final_answer(messages)
        question = next((m["content"] for m in reversed(messages[:-1]) if m.get("role") == "user"), None)
        if gold_text is None or not isinstance(question, str):
            out.append(row)
            continue
        gold = position[gold_text]
        asked = search_terms(tok, index.vocab_dict, question)
        q = [t for t in asked if t in index.vocab_dict]
        scores = index.get_scores(q) if q else np.zeros(len(texts))
        order = [int(i) for i in np.argsort(-scores, kind="stable")]
        ranked = [i for i in order if i != gold]
        entities = {t for t in tok.tokens(question) if any(c.isdigit() for c in t)}
        sources: list[int] = []
        about = False
        if entities and rng.random() < unanswerable:
            if related and rng.random() < related:
                # what the best passages for a question the documents do not answer look like: the
                # same machine, another fact; every passage that may hold the answer is left out
                sources = _pick([i for i in ranked if _overlap(word_sets[i], word_sets[gold]) < near_duplicate
                                 and not may_hold(gold_text, question, shows(i, asked), tok)], word_sets, k, same)
                about = len(sources) == k and any(entities & word_sets[i] for i in sources)
                sources = sources if about else []
            if len(sources) < k:
                sources = _pick([i for i in ranked if not entities & word_sets[i]
                                 and _overlap(word_sets[i], word_sets[gold]) < near_duplicate], word_sets, k, same)
        if len(sources) == k:
            target = NOT_FOUND
            n_un += 1
            n_rel += about
        else:
            # a row answered from a document section: the best-ranked section stating the answer stands
            # in for the row's own answer, whose copies leave the sources too
            stating: list[int] = []
            if from_documents and rng.random() < from_documents:
                stating = next(([i] for i in order
                                if i in pooled and states(gold_text, question, shows(i, asked), tok)), [])
            right = stating[0] if stating else gold
            allowed = [i for i in order if i == right or (i != gold and _overlap(word_sets[i], word_sets[gold]) <
                                                          (near_duplicate if stating else same))]
            # the sources in retrieval order, as at serving time; when retrieval misses the answer, it
            # takes a random place, so the model also learns to find it further down
            picked = _pick(allowed, word_sets, k, same)
            if right in picked:
                sources = picked
            else:
                sources = picked[:k - 1]
                sources.insert(rng.randrange(len(sources) + 1), right)
            target = cited(sources.index(right) + 1, gold_text) if cite else gold_text
            n_ans += 1
            n_doc += bool(stating)
        shown = [shows(i, asked) for i in sources]
        grounded = with_sources(messages[:-1], shown)
        out.append({**row, "messages": [*grounded, {"role": "assistant", "content": target}]})
    return out, ContextStats(len(rows), n_ans, n_un, len(texts), n_doc, n_rel)


def _pick(candidates: list[int], word_sets: list[set[str]], k: int, same: float) -> list[int]:
    """The first `k` candidates, skipping near-copies of one already picked."""
    chosen: list[int] = []
    for i in candidates:
        if len(chosen) == k:
            break
        if all(_overlap(word_sets[i], word_sets[c]) < same for c in chosen):
            chosen.append(i)
    return chosen
