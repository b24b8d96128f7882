"""The knowledge base ("Wissensbasis"): dataset passages in a BM25 index, searched with each passage's policy checked.

    from kifabrik.kb import KbOptions, KnowledgeBase, build_kb, format_context
    record = build_kb(ws, "wissen", [dataset_record], KbOptions(chunk_tokens=200))
    hits = KnowledgeBase.open(ws, record).search("Welches Öl braucht die DM 320?", purpose="serving")
    print(format_context(hits))

The recipe stage `kb` lives in `kifabrik.kb.stage`. Nothing here imports torch.
"""

from __future__ import annotations

from kifabrik.kb.build import (
           BUILD_PURPOSE,
           KIND,
           KbOptions,
           build_kb,
           get_kb,
           list_kbs,
           resolve_dataset,
)
from kifabrik.kb.manage import remove_kb
from kifabrik.kb.search import MIN_SCORE, Hit, KnowledgeBase, format_context

__all__ = ["BUILD_PURPOSE", "KIND", "MIN_SCORE", "Hit", "KbOptions", "KnowledgeBase", "build_kb", "format_context",
           "get_kb", "list_kbs", "remove_kb", "resolve_dataset"]
