"""The hash-chained audit log: append under the write lock, anchor the head, verify the chain."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from kifabrik.catalog import schema as t
from kifabrik.catalog.records import DEFAULT_PROJECT, utcnow
from kifabrik.catalog.store import Store
from kifabrik.errors import KifabrikError

GENESIS = "0" * 64


def audit_body(ts: datetime, actor: str, action: str, subject: str | None, decision: str | None,
               details: dict[str, Any], project: str | None) -> dict[str, Any]:
    """What an audit entry's hash covers; its project only outside `default` (older entries hash as before)."""
    body = {"ts": ts.isoformat(), "actor": actor, "action": action, "subject": subject, "decision": decision,
            "details": details}
    if project and project != DEFAULT_PROJECT:
        body["project"] = project
    return body


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()



class AuditLog(Store):
    """The audit-log part of `Catalog`."""

    def audit(self, action: str, *, actor: str = "cli", subject: str | None = None,
              decision: str | None = None, details: dict[str, Any] | None = None) -> str:
        """Append one entry to the hash-chained audit log and return its hash."""
        return self.audit_many([{"action": action, "actor": actor, "subject": subject, "decision": decision,
                                 "details": details}])[0]

    def audit_many(self, entries: Sequence[dict[str, Any]]) -> list[str]:
        """Append entries (each the keyword arguments of `audit`) in one transaction, chained in order;
        their hashes. One commit and one anchor for all: a server writes its requests' entries so
        (`serve.state.ServerState.audit`), where a commit each would cost every request its own sync."""
        # The head is read under the write lock, so writers chain one after another; the unique
        # prev_hash (migration 0007) is the backstop, retried in a savepoint on the new head.
        if not entries:
            return []
        with self._write() as s:
            for _ in range(5):
                prev = s.scalars(select(t.AuditEntry.hash).order_by(t.AuditEntry.seq.desc()).limit(1)).first() or GENESIS
                rows = []
                try:
                    with s.begin_nested():
                        for e in entries:
                            ts = utcnow()
                            details = e.get("details") or {}
                            actor, action = e.get("actor", "cli"), e["action"]
                            subject, decision = e.get("subject"), e.get("decision")
                            body = audit_body(ts, actor, action, subject, decision, details, self.project)
                            digest = hashlib.sha256(prev.encode() + canonical_json(body)).hexdigest()
                            rows.append(t.AuditEntry(ts=ts, project=self.project, actor=actor, action=action,
                                                     subject=subject, decision=decision, details=details,
                                                     prev_hash=prev, hash=digest))
                            prev = digest
                            s.add(rows[-1])
                            s.flush()  # one at a time: each entry's seq follows its predecessor's
                except IntegrityError:  # a writer without the lock chained onto the same predecessor
                    continue
                head, hashes = (rows[-1].seq, rows[-1].hash), [r.hash for r in rows]
                break
            else:
                raise KifabrikError("could not append to the audit log: too many concurrent writers")
        unit = self._unit.get()
        if unit is not None:
            unit.head = head
        else:
            self._anchor(*head)
        return hashes

    def audit_entries(self, action: str | None = None, *, subject: str | None = None) -> list[t.AuditEntry]:
        """Audit entries in order, optionally of one action and/or one subject (detached from the session)."""
        with self._read() as s:
            q = self._theirs(select(t.AuditEntry), t.AuditEntry).order_by(t.AuditEntry.seq)
            if action is not None:
                q = q.where(t.AuditEntry.action == action)
            if subject is not None:
                q = q.where(t.AuditEntry.subject == subject)
            rows = list(s.scalars(q))
            for row in rows:
                s.expunge(row)
            return rows

    def audit_head(self) -> dict[str, Any] | None:
        """The anchored head of the audit chain ({seq, hash, mac}); None when not anchored yet."""
        return self.anchor.read() if self.anchor is not None else None

    def verify_audit(self, heads: list[Path] | None = None) -> list[str]:
        """Re-compute the hash chain and compare it with the anchored head (and with `heads`, copies
        of earlier heads such as a release bundle's); one message per problem (empty: intact)."""
        problems = []
        prev = GENESIS
        seen: dict[int, str] = {}
        with self._read() as s:
            for e in s.scalars(select(t.AuditEntry).order_by(t.AuditEntry.seq)):
                seen[e.seq] = e.hash
                ts = e.ts.replace(tzinfo=UTC) if e.ts.tzinfo is None else e.ts.astimezone(UTC)
                body = audit_body(ts, e.actor, e.action, e.subject, e.decision, e.details, e.project)
                expect = hashlib.sha256(prev.encode() + canonical_json(body)).hexdigest()
                if e.prev_hash != prev:
                    problems.append(f"entry {e.seq}: chain broken (an entry before it was removed or reordered)")
                elif e.hash != expect:
                    problems.append(f"entry {e.seq}: content changed after it was written")
                prev = e.hash
        if self.anchor is not None:
            head = self.anchor.read()
            if head is None and seen:
                problems.append(f"{self.anchor.head_path}: missing, so the newest entries cannot be checked "
                                f"(it is written after every entry: a kill at that moment, a home from before "
                                f"anchoring, or a deleted head; `kifabrik doctor --fix` anchors an intact chain)")
            elif head is not None:
                problems += self.anchor.check(head, seen, source=str(self.anchor.head_path))
        for path in heads or []:
            try:
                saved = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                problems.append(f"{path}: cannot read a head: {exc}")
                continue
            if self.anchor is not None:
                problems += self.anchor.check(saved, seen, source=str(path))
        return problems

    def unanchored(self) -> int:
        """Entries written after the anchored head (a crash between commit and head update leaves some)."""
        head = self.audit_head() or {"seq": 0}
        with self._read() as s:
            last = s.scalar(select(func.max(t.AuditEntry.seq))) or 0
        return max(0, last - int(head.get("seq", 0) or 0))
