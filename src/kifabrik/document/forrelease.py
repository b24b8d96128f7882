"""The documents a release bundles: made for that release, from what the earlier documents were made from.

The release stage finds this through the registry (`lookup("documents", "release")`), so the two
stages do not import each other. A release states its own name, version, date, licence, audience
and quality gates in the documents it carries, and keeps the provider facts, data-source
categories, MISSION KI catalogue and format that the documents it starts from were made with
(`kifabrik document --org ... --data-source ...`); what the release is given itself wins.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kifabrik.catalog import ArtifactRecord
from kifabrik.config import Organisation
from kifabrik.document.api import DocumentOptions, document
from kifabrik.document.facts import load_organisation
from kifabrik.errors import KifabrikError
from kifabrik.registry import register
from kifabrik.workspace import Workspace


def recorded_inputs(earlier: ArtifactRecord | None) -> tuple[dict[str, Any], Organisation | None, str | None]:
    """(document options, organisation, where it came from) that `earlier` documents were made with."""
    if earlier is None:
        return {}, None, None
    config = dict(earlier.manifest.get("config") or {})
    org = config.pop("organisation", None)
    label = config.pop("organisation_label", None)
    config.pop("release", None)
    options = {k: v for k, v in config.items() if k in DocumentOptions.model_fields}
    return options, (Organisation.model_validate(org) if org else None), label


def release_documents(ws: Workspace, target: ArtifactRecord, release: dict[str, Any], *,
                      earlier: ArtifactRecord | None, org: Organisation | None = None, org_label: str | None = None,
                      data_sources: dict[str, str] | None = None, actor: str = "cli") -> ArtifactRecord:
    """Generate and record the documents of `target` for `release` (see the module docstring).

    Args:
        ws: The workspace.
        target: The released model or adapter.
        release: The release's facts: name, version, license, audience, created_at, gates, purposes
            (and fach_llm when a Fach-LLM is released).
        earlier: Documents of `target` to start from (their provider facts, categories, catalogue, format).
        org: Provider facts given to the release (replace the earlier ones).
        org_label: Where `org` came from, cited in the documents.
        data_sources: Source categories given to the release (added to the earlier ones).
        actor: Who asks (audit log).

    Raises:
        KifabrikError: a category names a dataset outside the lineage or is not a category.
    """
    options, earlier_org, earlier_label = recorded_inputs(earlier)
    sources = {**(options.get("data_sources") or {}), **(data_sources or {})}
    try:
        opts = DocumentOptions.model_validate({**options, "data_sources": sources, "license": release["license"]})
    except ValidationError as exc:
        raise KifabrikError(f"data sources of release {release['name']}: {exc.errors()[0]['msg']}",
                            hint="categories: public, licensed, private, crawled, user, synthetic, other") from None
    if org is None and earlier_org is not None:
        org, org_label = earlier_org, f"{earlier_label or 'organisation facts'} (as given to documents {earlier.ref})"
    result = document(ws, target.id, opts, org=org, org_label=org_label or "organisation facts (none given)",
                      name=f"{release['name']}-{release['version']}-documents", actor=actor, release=release)
    return result.record


register("documents", "release")(release_documents)
register("documents", "organisation")(load_organisation)  # the reader of `--org FILE`, for the release stage
