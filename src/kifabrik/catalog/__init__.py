"""The catalog: artifacts, lineage, runs, policies and the audit log."""

from kifabrik.catalog.catalog import Catalog
from kifabrik.catalog.records import ArtifactRecord, EdgeRecord, RunRecord

__all__ = ["ArtifactRecord", "Catalog", "EdgeRecord", "RunRecord"]
