"""Four-eyes releases: requested by one user, decided by another, every step audited."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from kifabrik.catalog import schema as t
from kifabrik.catalog.auditlog import AuditLog
from kifabrik.catalog.records import ReleaseRequestRecord, request_record, utcnow
from kifabrik.errors import KifabrikError, NotFoundError


class ReleaseRequests(AuditLog):
    """The release-request part of `Catalog` (its decisions go into the audit log)."""

    def request_release(self, artifact_id: str, *, name: str, version: str, audience: str, user: str,
                        options: dict[str, Any] | None = None) -> ReleaseRequestRecord:
        """Record that `user` asks for a release of one of this project's artifacts (audited)."""
        with self.transaction(), self._write() as s:
            if self._own(s, artifact_id) is None:
                raise NotFoundError(f"no artifact {artifact_id}")
            row = t.ReleaseRequest(id=uuid.uuid4().hex[:12], project=self.project, artifact_id=artifact_id, name=name,
                                   version=version, audience=audience, options=dict(options or {}),
                                   requested_by=user, requested_at=utcnow(), status="pending")
            s.add(row)
            s.flush()
            record = request_record(row)
            self.audit("release.request", actor=f"user:{user}", subject=artifact_id,
                       details={"request": record.id, "name": name, "version": version, "audience": audience})
        return record

    def release_requests(self, status: str | None = None) -> list[ReleaseRequestRecord]:
        with self._read() as s:
            q = self._mine(select(t.ReleaseRequest), t.ReleaseRequest).order_by(t.ReleaseRequest.requested_at.desc())
            if status is not None:
                q = q.where(t.ReleaseRequest.status == status)
            return [request_record(r) for r in s.scalars(q)]

    def get_release_request(self, request_id: str) -> ReleaseRequestRecord:
        with self._read() as s:
            row = s.get(t.ReleaseRequest, request_id)
            if row is None or row.project != self.project:
                raise NotFoundError(f"no release request {request_id!r}")
            return request_record(row)

    def _open_request(self, s: Session, request_id: str, user: str, *, claimed: bool = False) -> t.ReleaseRequest:
        row = s.get(t.ReleaseRequest, request_id)
        if row is None or row.project != self.project:
            raise NotFoundError(f"no release request {request_id!r}")
        if row.requested_by == user:
            raise KifabrikError("a release request cannot be approved by the user who made it",
                                hint="four eyes: another user with the approver role decides")
        if not (row.status == "pending" or (claimed and row.status == "approving" and row.decided_by == user)):
            raise KifabrikError(f"release request {request_id} is already {row.status}"
                                + (f" (by {row.decided_by})" if row.decided_by else ""))
        return row

    def claim_release(self, request_id: str, *, user: str) -> ReleaseRequestRecord:
        """Take a pending request for approval (`approving`), so that one approver alone runs its release;
        `decide_release(..., claimed=True)` closes it, `unclaim_release` hands it back."""
        with self._write() as s:
            row = self._open_request(s, request_id, user)
            row.status, row.decided_by = "approving", user
            return request_record(row)

    def unclaim_release(self, request_id: str, *, user: str) -> None:
        """A claimed request whose release did not run to an answer goes back to `pending`."""
        with self._write() as s:
            row = s.get(t.ReleaseRequest, request_id)
            if row is not None and row.project == self.project and row.status == "approving" and row.decided_by == user:
                row.status, row.decided_by = "pending", None

    def decide_release(self, request_id: str, *, user: str, status: Literal["released", "refused", "rejected"],
                       reason: str | None = None, release_id: str | None = None,
                       claimed: bool = False) -> ReleaseRequestRecord:
        """Close a pending request (or one `user` claimed). Four eyes: the user who requested it can never decide it."""
        with self.transaction(), self._write() as s:
            row = self._open_request(s, request_id, user, claimed=claimed)
            row.status, row.decided_by, row.decided_at = status, user, utcnow()
            row.reason, row.release_id = reason, release_id
            record = request_record(row)
            action = {"released": "release.approve", "refused": "release.approve", "rejected": "release.reject"}[status]
            self.audit(action, actor=f"user:{user}", subject=row.artifact_id,
                       decision="deny" if status != "released" else "permit",
                       details={"request": request_id, "outcome": status, "reason": reason, "release": release_id,
                                "requested_by": row.requested_by})
        return record

