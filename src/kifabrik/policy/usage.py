"""Persistent use counters for count-limited permissions (ODRL `count` constraints).

One row per (dataset, policy, rule): how many uses were consumed. Consuming is an
optimistic compare-and-set (`UPDATE ... WHERE used = :seen`), so two processes training
at once on SQLite or PostgreSQL can never both take the last permitted use.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kifabrik.catalog.db import session_factory
from kifabrik.catalog.schema import PolicyUsage
from kifabrik.workspace import Workspace


def _sessions(ws: Workspace):  # type: ignore[no-untyped-def]
    return session_factory(ws.catalog.engine)


def read_counts(ws: Workspace, artifact_id: str, policy_id: str) -> dict[str, int]:
    """`{rule: used}` for one artifact's policy."""
    with _sessions(ws)() as s:
        rows = s.scalars(select(PolicyUsage).where(PolicyUsage.artifact_id == artifact_id,
                                                   PolicyUsage.policy_id == policy_id))
        return {r.rule: r.used for r in rows}


def consume(ws: Workspace, keys: list[tuple[str, str, str, int]]) -> bool:
    """Add one use to each `(artifact, policy, rule, seen)` in one transaction.

    Returns False (and changes nothing) when any counter moved away from `seen` since it
    was read: another process consumed a use meanwhile, so the caller decides again.
    """
    now = datetime.now(UTC)
    try:
        with _sessions(ws).begin() as s:
            for artifact_id, policy_id, rule, seen in keys:
                if not _bump(s, artifact_id, policy_id, rule, seen, now):
                    s.rollback()
                    return False
    except IntegrityError:  # two first uses raced to insert the row
        return False
    return True


def _bump(s: Session, artifact_id: str, policy_id: str, rule: str, seen: int, now: datetime) -> bool:
    if seen == 0 and s.get(PolicyUsage, (artifact_id, policy_id, rule)) is None:
        s.add(PolicyUsage(artifact_id=artifact_id, policy_id=policy_id, rule=rule, used=1, updated_at=now))
        s.flush()
        return True
    result = s.execute(update(PolicyUsage).where(
        PolicyUsage.artifact_id == artifact_id, PolicyUsage.policy_id == policy_id, PolicyUsage.rule == rule,
        PolicyUsage.used == seen).values(used=seen + 1, updated_at=now))
    return bool(result.rowcount)  # type: ignore[attr-defined]
