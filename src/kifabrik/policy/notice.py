"""The NOTICE of everything kifabrik hands out (exported folders, release bundles).

A policy such as `open-with-attribution` permits distribution with a duty: attribute the data.
`export` and `release` ask `require(..., "release")`, which says whether distribution is
permitted; this module writes down what the permission obliges to, so the duty travels with
the copy: one entry per attribution duty of every policy along the lineage (the dataset, the
duty's text, the party to attribute and the licence the policy names, where it names them),
and the licence of every model in the lineage.

    write_notice(ws, record, folder, licence="Apache-2.0")   # folder/NOTICE
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kifabrik
from kifabrik.catalog import ArtifactRecord
from kifabrik.policy.enforce import _policies, ancestors
from kifabrik.policy.odrl import Policy, Rule, _as_list, _unwrap, local
from kifabrik.workspace import Workspace

FILENAME = "NOTICE"


@dataclass(frozen=True)
class Attribution:
    """One attribution duty carried by `record` (its own or inherited from `source`)."""

    source: ArtifactRecord  # the artifact whose policy carries the duty (a dataset, mostly)
    policy: str
    policy_id: str
    rule: str  # where the duty stands in the policy, e.g. `permission[0].duty[0]`
    text: str | None  # the duty's description, e.g. "Attribute the data to Schmidt GmbH."
    party: str | None  # the party to attribute: the duty's, its permission's or the policy's assigner
    licence: str | None  # a licence the policy names (dct:license), if any

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source.ref, "source_id": self.source.id, "source_kind": self.source.kind,
                "policy": self.policy, "policy_id": self.policy_id, "rule": self.rule, "text": self.text,
                "party": self.party, "licence": self.licence}


def _name(value: Any) -> str | None:
    """A party or licence as text: a string, or the name (else the id) of an object."""
    value = _unwrap(value)
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        names = [n for v in value if (n := _name(v))]
        return ", ".join(names) or None
    if isinstance(value, dict):
        by_key = {local(k): v for k, v in value.items()}
        for key in ("name", "fn", "title", "label", "@id", "uid", "id"):
            if isinstance(by_key.get(key), str) and by_key[key].strip():
                return str(by_key[key]).strip()
    return None


def _along(document: dict[str, Any], path: str) -> dict[str, Any]:
    """`assigner` and `license` as the objects on `path` (policy -> permission -> duty) state them, innermost first."""
    found: dict[str, Any] = {}
    node: Any = document
    steps = [s for s in path.split(".") if s]
    for step in [None, *steps]:
        if step is not None:
            name, _, index = step.partition("[")
            child = next((v for k, v in node.items() if local(k) == name), None) if isinstance(node, dict) else None
            items = _as_list(child) if index else [child]
            position = int(index.rstrip("]")) if index else 0
            node = items[position] if position < len(items) else None
        if isinstance(node, dict):
            for key, value in node.items():
                if local(key) in ("assigner", "license", "licence"):
                    found[local(key).replace("licence", "license")] = value
    return found


def _duties(policy: Policy) -> list[Rule]:
    return [d for p in policy.permissions for d in p.duties if d.action == "attribute"] + \
        [o for o in policy.obligations if o.action == "attribute"]


def attributions(ws: Workspace, artifact_id: str) -> list[Attribution]:
    """Every attribution duty along the lineage of `artifact_id`, each once, nearest artifact first."""
    out = []
    for _, source, policy_id, name, parsed in _policies(ws, [artifact_id]):
        if isinstance(parsed, str):
            continue
        for duty in _duties(parsed):
            stated = _along(parsed.document, duty.path)
            out.append(Attribution(source, name, policy_id, duty.path, duty.note or parsed.description,
                                   _name(stated.get("assigner")), _name(stated.get("license"))))
    return out


def notice_text(ws: Workspace, record: ArtifactRecord, *, licence: str | None = None,
                upstream: str | None = None) -> str:
    """The NOTICE for a copy of `record`: its licence, every attribution duty, the models it derives from.

    Args:
        licence: The licence the copy is distributed under (a release's); default the record's own.
        upstream: A NOTICE that came with the model folder (kept below ours, word for word).
    """
    licence = licence or record.meta.get("license") or "not recorded"
    duties = attributions(ws, record.id)
    lines = [FILENAME, "", f"{record.kind} {record.ref} (id {record.id})", f"Licence: {licence}",
             f"Written by kifabrik {kifabrik.__version__} from the usage policies recorded along its lineage.", ""]
    if duties:
        lines += [("Attribution. The usage policies of the data this model was made from permit its distribution "
                   "on condition that the source is attributed. Keep this notice with every copy and name these "
                   "sources where the model is used or described:"), ""]
        for n, a in enumerate(duties, 1):
            lines.append(f"{n}. {a.source.kind} {a.source.name} (version {a.source.version}, id {a.source.id[:12]})")
            lines.append(f"   Policy: {a.policy} (id {a.policy_id[:12]}, {a.rule})")
            lines.append(f"   Duty: {a.text or 'attribute the source'}")
            if a.party:
                lines.append(f"   Party to attribute: {a.party}")
            if a.licence:
                lines.append(f"   Licence of the data: {a.licence}")
        lines.append("")
    else:
        lines += ["Attribution: no usage policy along the lineage asks for one.", ""]
    models = [m for m in ancestors(ws, record.id) if m.kind == "model"]
    if models:
        lines.append("Models in the lineage:")
        for m in models:
            origin = m.meta.get("hub_id") or m.meta.get("upstream") or m.meta.get("source")
            lines.append(f"- {m.ref} (id {m.id[:12]}): licence {m.meta.get('license') or 'not recorded'}"
                         + (f", from {origin}" if origin else ""))
        lines.append("")
    if upstream and upstream.strip():
        lines += ["NOTICE that came with the model folder:", "", upstream.strip(), ""]
    return "\n".join(lines)


def write_notice(ws: Workspace, record: ArtifactRecord, folder: Path, *, licence: str | None = None,
                 upstream: Path | None = None) -> Path:
    """Write `folder/NOTICE` for a copy of `record` (see `notice_text`); returns its path.

    Args:
        upstream: The model folder the copy was made from; a NOTICE it holds is kept inside ours.
    """
    theirs = upstream / FILENAME if upstream is not None else None
    text = theirs.read_text(encoding="utf-8", errors="replace") if theirs is not None and theirs.is_file() else None
    path = folder / FILENAME
    path.write_text(notice_text(ws, record, licence=licence, upstream=text), encoding="utf-8")
    return path
