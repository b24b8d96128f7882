"""The catalog: artifacts, lineage, runs, policies and the audit log."""

from kifabrik.catalog.catalog import ArtifactRecord, Catalog, EdgeRecord, RunRecord

__all__ = ["ArtifactRecord", "Catalog", "EdgeRecord", "RunRecord"]
