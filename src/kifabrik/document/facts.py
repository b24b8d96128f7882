"""Facts with pointers: every value in a document is a recorded fact or "not recorded" with a reason.

A `Fact` carries its value and the `Source` it was read from (an artifact, a run, the
organisation facts people gave, the catalogue file). A missing value never becomes a guess:
`fact(None, ..., missing="why")` is a `Fact` whose `reason` the documents print instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kifabrik.catalog import ArtifactRecord, RunRecord
from kifabrik.config import Organisation, load_yaml, validation_messages
from kifabrik.errors import KifabrikError


@dataclass(frozen=True)
class Source:
    """Where a fact comes from. `id` is the artifact or run id; `field` the key inside the record."""

    kind: str  # artifact | run | organisation | catalogue | options
    label: str  # for people: "model tiny@1", "run 3f2a…", "recipe organisation section"
    id: str | None = None
    field: str | None = None

    def at(self, field: str) -> Source:
        return Source(self.kind, self.label, self.id, field)

    @property
    def key(self) -> tuple[str, str, str | None]:
        """Citations number records, not fields: one entry per record in a document's source list."""
        return (self.kind, self.label, self.id)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "id": self.id, "field": self.field}


@dataclass(frozen=True)
class Fact:
    """A recorded value with its source, or (value None) the reason it is not recorded."""

    value: Any
    source: Source | None
    reason: str | None = None

    @property
    def recorded(self) -> bool:
        return self.reason is None

    def as_dict(self) -> dict[str, Any]:
        if not self.recorded:
            return {"recorded": False, "reason": self.reason}
        return {"recorded": True, "value": self.value, "source": self.source.as_dict() if self.source else None}


def fact(value: Any, source: Source, field: str | None = None, *, missing: str) -> Fact:
    """A `Fact` of `value` read from `source` (at `field`); `missing` says why when the value is absent."""
    if value is None or value == "" or value == [] or value == {}:
        return Fact(None, None, missing)
    return Fact(value, source.at(field) if field else source)


def not_recorded(reason: str) -> Fact:
    return Fact(None, None, reason)


def get(data: Any, path: str) -> Any:
    """`get(meta, "accounting.flops")`: a dotted lookup that gives None for anything missing."""
    node = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def file_name(path: str | None) -> str | None:
    """The name of a source file without the folders of the machine it was imported on.

    Released documents identify a file by its name and sha256; a path such as
    `/home/anna/daten/service.jsonl` would tell the reader about the machine, not the data.
    `kifabrik:` paths (files shipped with kifabrik) are kept: they name the same file everywhere.
    """
    if not path or path.startswith("kifabrik:"):
        return path
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def artifact_source(record: ArtifactRecord) -> Source:
    return Source("artifact", f"{record.kind} {record.ref}", record.id)


def run_source(run: RunRecord) -> Source:
    return Source("run", f"{run.stage} run" + (f" {run.name}" if run.name else ""), run.id)


def meta_fact(record: ArtifactRecord, path: str, *, missing: str) -> Fact:
    """A fact from the record's `meta` at the dotted `path`."""
    return fact(get(record.meta, path), artifact_source(record), f"meta.{path}", missing=missing)


def as_jsonable(tree: Any) -> Any:
    """The facts tree with every `Fact` as a dict (for facts.json)."""
    if isinstance(tree, Fact):
        return tree.as_dict()
    if isinstance(tree, dict):
        return {k: as_jsonable(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [as_jsonable(v) for v in tree]
    if isinstance(tree, Source):
        return tree.as_dict()
    return tree


# ------------------------------------------------------------------ organisation facts
ORG_MISSING = {
    "provider": "the provider's name is not known to the platform: set `organisation.provider` in the recipe "
                "or pass --org FILE",
    "contact": "no contact was given: set `organisation.contact` in the recipe or pass --org FILE",
    "intended_purpose": "the intended purpose was not stated: set `organisation.intended_purpose` in the recipe "
                        "or pass --org FILE",
    "acceptable_use": "no acceptable-use policy was given: set `organisation.acceptable_use` in the recipe "
                      "or pass --org FILE",
}


def load_organisation(path: Path) -> Organisation:
    """An `--org FILE`: YAML with provider, contact, intended_purpose, acceptable_use (an
    `organisation:` key around them, as in a recipe, is accepted too)."""
    data = load_yaml(path)
    if isinstance(data, dict) and set(data) == {"organisation"}:
        data = data["organisation"]
    if not isinstance(data, dict):
        raise KifabrikError(f"{path}: expected a mapping with provider, contact, intended_purpose, acceptable_use")
    try:
        return Organisation.model_validate(data)
    except ValidationError as exc:
        hint = "keys: provider, contact, intended_purpose, acceptable_use"
        if {"license", "licence"} & set(data):
            # the same organisation releases under different licences: the licence belongs to the release
            hint = ("a licence is chosen per release, not for the organisation: kifabrik release --license SPDX-ID "
                    "(or kifabrik document --license SPDX-ID); " + hint)
        raise KifabrikError("\n".join(validation_messages(exc, data, str(path))), hint=hint) from None


def organisation_facts(org: Organisation | None, label: str) -> dict[str, Fact]:
    """Organisation facts as `Fact`s pointing at where people stated them."""
    src = Source("organisation", label)
    data = org.model_dump() if org else {}
    return {key: fact(data.get(key), src, f"organisation.{key}", missing=why) for key, why in ORG_MISSING.items()}
