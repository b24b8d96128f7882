"""Dokumentation: documents generated from recorded facts only — a Hugging Face model card,
AI Act Annex XI and XII, the public summary of training content (AI Office template), the
MISSION KI assessment with its evidence, and a CycloneDX 1.6 ML-BOM.

    from kifabrik.document import DocumentOptions, document
    document(ws, "service-lora", DocumentOptions(catalogue="VCIO.json"), out=Path("docs"))

No torch import here.
"""

from kifabrik.document.api import (
    DOCUMENTS,
    DocumentOptions,
    DocumentResult,
    document,
    gather,
    render_all,
)

__all__ = ["DOCUMENTS", "DocumentOptions", "DocumentResult", "document", "gather", "render_all"]
