"""Enforcing usage policies along lineage: every consumer calls `require` before use.

    require(ws, [model.id], "serving")                    # raises PolicyDenied or returns
    require(ws, [dataset.id, base.id], "training", count=True)

`require` walks each artifact's lineage upwards, evaluates every policy attached to the
artifact or to any ancestor (a model trained on two datasets must satisfy both; their
prohibitions add up), writes one audit entry per decision and, with `count=True`,
consumes one use of each count-limited permission that granted the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.policy import usage
from kifabrik.policy.evaluate import Decision, Request, decide
from kifabrik.policy.odrl import Policy, PolicyError, Rule, parse_policy, vocabulary
from kifabrik.policy.words import rule_words
from kifabrik.workspace import Workspace

PURPOSES: tuple[str, ...] = tuple(vocabulary()["purposes"])


@dataclass(frozen=True)
class Check:
    """One policy of one (ancestor) artifact, decided for one request."""

    artifact: ArtifactRecord  # what was asked about
    source: ArtifactRecord  # the artifact that carries the policy (the artifact itself or an ancestor)
    policy_id: str
    policy_name: str
    decision: Decision
    uses: dict[str, int]

    def details(self, purpose: str, region: str) -> dict[str, Any]:
        d = self.decision
        return {"purpose": purpose, "region": region, "artifact": self.artifact.id, "artifact_ref": self.artifact.ref,
                "source": self.source.id, "source_ref": self.source.ref, "source_kind": self.source.kind,
                "policy_id": self.policy_id, "policy": self.policy_name, "rule": d.rule, "constraint": d.constraint,
                "reason": d.reason, "duties": [rule_words(r) for r in d.duties],
                "counted": [r.label for r in d.counted], "uses": self.uses}


class PolicyDenied(KifabrikError):
    """A usage policy forbids the request; `denials` holds one `Check` per refusing policy."""

    def __init__(self, purpose: str, denials: list[Check]) -> None:
        self.purpose = purpose
        self.denials = denials
        lines = [f"{c.source.kind} {c.source.ref} ({c.source.id[:12]}), policy {c.policy_name!r}: {c.decision.reason}"
                 + ("" if c.source.id == c.artifact.id else f" [inherited by {c.artifact.ref}]") for c in denials]
        super().__init__(f"usage policy forbids {purpose}:\n  " + "\n  ".join(lines),
                         hint="see the restrictions with `kifabrik policy show REF`; use data whose policy "
                              f"permits {purpose}, or ask the data owner for a policy that does")


def ancestors(ws: Workspace, artifact_id: str) -> list[ArtifactRecord]:
    """The artifact and every ancestor, breadth first, each once."""
    first = ws.catalog.get_artifact(artifact_id)
    out, frontier, seen = [first], [first.id], {first.id}
    while frontier:
        nxt = []
        for node in frontier:
            for edge in ws.catalog.edges(child=node):
                if edge.parent_id not in seen:
                    seen.add(edge.parent_id)
                    out.append(ws.catalog.get_artifact(edge.parent_id))
                    nxt.append(edge.parent_id)
        frontier = nxt
    return out


def _ancestry(ws: Workspace, artifact_id: str) -> list[ArtifactRecord]:
    """`ancestors`, kept per catalog while its `lineage_version` stays: a server checks the same
    lineage for every request (walking it was most of a policy check's ~2 ms there), while the
    policies on it are read fresh each time."""
    catalog = ws.catalog
    version = catalog.lineage_version()
    cache: dict[str, tuple[tuple[int, int, int], list[ArtifactRecord]]] = catalog.__dict__.setdefault("_ancestry", {})
    hit = cache.get(artifact_id)
    if hit is not None and hit[0] == version:
        return hit[1]
    chain = ancestors(ws, artifact_id)
    cache[artifact_id] = (version, chain)
    return chain


def _policies(ws: Workspace, artifact_ids: list[str]) -> list[tuple[ArtifactRecord, ArtifactRecord, str, str, Policy | str]]:
    """(asked, source, policy id, name, parsed policy or the reason it cannot be parsed), each policy once."""
    found, seen = [], set()
    for ref in artifact_ids:
        chain = _ancestry(ws, ref)
        for source in chain:
            for policy_id, name, doc in ws.catalog.policies_of(source.id):
                if (source.id, policy_id) in seen:
                    continue
                seen.add((source.id, policy_id))
                try:
                    parsed: Policy | str = parse_policy(doc, f"policy {name}")
                except PolicyError as exc:
                    parsed = f"the attached policy is not valid ODRL any more: {exc.problems[0]}"
                found.append((chain[0], source, policy_id, name, parsed))
    return found


def check(ws: Workspace, artifact_ids: list[str], purpose: str, *, region: str | None = None,
          now: datetime | None = None, count: bool = False) -> list[Check]:
    """Decide every applicable policy without writing anything (see `require`)."""
    if purpose not in PURPOSES:
        raise KifabrikError(f"unknown purpose {purpose!r}", hint=f"purposes: {', '.join(PURPOSES)}")
    if not artifact_ids:
        raise KifabrikError("no artifacts given to check against usage policies")
    region = region or ws.settings.region
    now = now or datetime.now(UTC)
    checks = []
    for asked, source, policy_id, name, parsed in _policies(ws, artifact_ids):
        uses = usage.read_counts(ws, source.id, policy_id)
        if isinstance(parsed, str):
            decision = Decision(False, parsed)
        else:
            def used(rule: Rule, uses: dict[str, int] = uses) -> int:
                return uses.get(rule.label, 0)

            decision = decide(parsed, Request(purpose, now, region, used, count))
        checks.append(Check(asked, source, policy_id, name, decision, uses))
    return checks


def require(ws: Workspace, artifact_ids: list[str], purpose: str, *, actor: str = "cli", region: str | None = None,
            count: bool = False, now: datetime | None = None) -> None:
    """Raise `PolicyDenied` unless every policy along the lineage of `artifact_ids` permits `purpose`.

    Args:
        ws: The workspace.
        artifact_ids: Artifacts about to be used (ids or refs), e.g. a dataset and a base model.
        purpose: One of training, evaluation, serving, merging, release, commercialUse.
        actor: Who asks (recorded in the audit log).
        region: Deployment region for `spatial` constraints; default the settings' region.
        count: Consume one use of each count-limited permission that grants the request.
        now: The moment to decide for (default: now); for tests and dry runs.
    """
    region = region or ws.settings.region
    for _ in range(10):  # retried only when another process consumed a counted use meanwhile
        checks = check(ws, artifact_ids, purpose, region=region, now=now, count=count)
        denied = [c for c in checks if not c.decision.permitted]
        keys = [(c.source.id, c.policy_id, r.label, c.uses.get(r.label, 0)) for c in checks for r in c.decision.counted]
        if denied or not keys or usage.consume(ws, keys):
            break
    else:
        raise KifabrikError("could not consume a counted use: too many concurrent uses of the same dataset")
    for c in checks:
        details = c.details(purpose, region)
        if c.decision.counted and not denied:
            details["uses"] = {**c.uses, **{r.label: c.uses.get(r.label, 0) + 1 for r in c.decision.counted}}
        ws.catalog.audit("policy.check", actor=actor, subject=c.source.id,
                         decision="permit" if c.decision.permitted else "deny", details=details)
    if not checks:
        for ref in artifact_ids:
            rec = ws.catalog.get_artifact(ref)
            ws.catalog.audit("policy.check", actor=actor, subject=rec.id, decision="permit",
                             details={"purpose": purpose, "region": region, "artifact": rec.id, "artifact_ref": rec.ref,
                                      "reason": "no usage policy is attached to the artifact or its ancestors"})
    if denied:
        raise PolicyDenied(purpose, denied)


def restrictions(ws: Workspace, artifact_id: str) -> list[dict[str, Any]]:
    """The prohibitions and duties an artifact carries, its own and inherited along lineage.

    One entry per (policy, rule), with every artifact it comes from in `sources`:
    `{"kind": "prohibition"|"duty", "action", "constraints", "text", "rule", "policy_id", "policy", "sources"}`.
    """
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for _, source, policy_id, name, parsed in _policies(ws, [artifact_id]):
        if isinstance(parsed, str):
            rules: list[tuple[str, Rule | None]] = [("invalid", None)]
        else:
            rules = [("prohibition", r) for r in parsed.prohibitions] + [("duty", r) for r in parsed.obligations]
            rules += [("duty", d) for p in parsed.permissions for d in p.duties]
        for kind, rule in rules:
            key = (policy_id, rule.path if rule else "invalid")
            entry = entries.setdefault(key, {
                "kind": kind, "action": rule.action if rule else None,
                "constraints": [n.text() for n in rule.constraints] if rule else [],
                "text": rule_words(rule) if rule else str(parsed), "rule": rule.label if rule else None,
                "policy_id": policy_id, "policy": name, "sources": []})
            entry["sources"].append({"id": source.id, "ref": source.ref, "kind": source.kind})
    return list(entries.values())
