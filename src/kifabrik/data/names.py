"""Person names need a statistical NER model; regexes cannot find them. Use one only if it is installed.

kifabrik looks for a spaCy pipeline installed as a Python package (`KIFABRIK_NER_MODEL`, else
de_core_news_lg/md/sm, then xx_ent_wiki_sm). None of these is published on PyPI (spaCy ships
its models from its own release pages) and GLiNER/Presidio fetch weights from a model hub at
run time, so on an offline PyPI-only machine names are usually *not* detected — and the
dataset card says so instead of pretending.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache

from kifabrik.data.pii import NameDetector

CANDIDATES = ("de_core_news_lg", "de_core_news_md", "de_core_news_sm", "xx_ent_wiki_sm")
NO_MODEL = ("person names were NOT detected: no spaCy NER pipeline is installed (spaCy's German models are not "
            "published on PyPI, and GLiNER/Presidio download weights from a model hub at run time, which kifabrik "
            "does not do offline). Install spaCy and a pipeline package (e.g. de_core_news_md) to detect names, "
            "or set KIFABRIK_NER_MODEL.")


@cache
def name_detector() -> tuple[NameDetector | None, str]:
    """(detector or None, a sentence for the card saying how names were handled)."""
    wanted = os.environ.get("KIFABRIK_NER_MODEL")
    if importlib.util.find_spec("spacy") is None:
        return None, NO_MODEL
    for name in ([wanted] if wanted else list(CANDIDATES)):
        if importlib.util.find_spec(name) is not None:
            import spacy

            nlp = spacy.load(name, disable=["parser", "lemmatizer", "tagger", "morphologizer", "attribute_ruler"])

            def find(text: str, nlp=nlp) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
                return [(e.start_char, e.end_char) for e in nlp(text).ents if e.label_ in ("PER", "PERSON")]

            return NameDetector(f"spaCy {spacy.__version__} pipeline {name}", find), \
                f"person names detected with the spaCy pipeline {name} (statistical NER: some names are missed)"
    return None, NO_MODEL
