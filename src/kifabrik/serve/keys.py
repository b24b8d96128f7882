"""API keys: created once, stored as sha256 hashes, scoped to models, optionally rate limited.

A key looks like `kf-<id>-<secret>`: `id` (8 hex digits) is public and names the key in
listings and the audit log; `secret` is 32 random bytes. Only `sha256(key)` is stored.
A plain hash suffices (no scrypt) because the key has 256 bits of entropy: there is no
dictionary to attack, and a fast hash keeps per-request authentication cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from kifabrik.catalog.records import utcnow
from kifabrik.catalog.schema import ApiKey
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.workspace import Workspace

_KEY = re.compile(r"^kf-([0-9a-f]{8})-([A-Za-z0-9_-]{20,})$")
_RATE = re.compile(r"^\s*(\d+)\s*(?:/\s*(?:min|m|minute))?\s*$")
SERVABLE_KINDS = ("model", "adapter", "fach-llm")




@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str | None
    models: list[str]
    rate_limit: int | None
    created_at: datetime
    revoked_at: datetime | None

    def allows(self, model: str) -> bool:
        return "*" in self.models or model in self.models

    @property
    def actor(self) -> str:
        return f"api-key:{self.id}"


def _record(row: ApiKey) -> KeyRecord:
    return KeyRecord(row.id, row.name, list(row.models), row.rate_limit, row.created_at, row.revoked_at)


def _sessions(ws: Workspace) -> sessionmaker[Any]:
    return sessionmaker(ws.catalog.engine, expire_on_commit=False, future=True)


def _own(ws: Workspace, row: ApiKey | None) -> ApiKey | None:
    """A key of the workspace's project, else None: a server, a listing and the UI see only their project's keys."""
    return row if row is not None and (row.project or "default") == ws.catalog.project else None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_rate_limit(text: str | None) -> int | None:
    """`"60/min"` or `"60"` -> 60 requests per minute; None -> unlimited."""
    if text is None:
        return None
    m = _RATE.match(text)
    if not m or int(m.group(1)) < 1:
        raise KifabrikError(f"--rate-limit {text!r} is not N/min", hint="e.g. --rate-limit 60/min")
    return int(m.group(1))


def servable_names(ws: Workspace) -> set[str]:
    return {r.name for kind in SERVABLE_KINDS for r in ws.catalog.list_artifacts(kind)}


def create_key(ws: Workspace, models: list[str], *, rate_limit: int | None = None,
               name: str | None = None, actor: str = "cli") -> tuple[KeyRecord, str]:
    """Create a key for `models` (names of models/adapters, or `*`); returns (record, the key).

    The key itself is returned once and never stored.
    """
    models = sorted({m.strip() for m in models if m.strip()})
    if not models:
        raise KifabrikError("a key needs at least one model", hint="--models NAME1,NAME2 (or '*' for all)")
    unknown = [m for m in models if m != "*" and m not in servable_names(ws)]
    if unknown:
        raise NotFoundError(f"no model or adapter named {', '.join(map(repr, unknown))}",
                            hint="list them with `kifabrik models list` and `kifabrik artifacts list --kind adapter`")
    key_id = secrets.token_hex(4)
    key = f"kf-{key_id}-{secrets.token_urlsafe(32)}"
    with _sessions(ws).begin() as s:
        row = ApiKey(id=key_id, project=ws.catalog.project, hash=hash_key(key), name=name, models=models, rate_limit=rate_limit,
                     created_at=utcnow(), revoked_at=None)
        s.add(row)
        rec = _record(row)
    ws.catalog.audit("key.create", actor=actor, subject=f"api-key:{key_id}",
                     details={"models": models, "rate_limit_per_min": rate_limit, "name": name})
    return rec, key


def list_keys(ws: Workspace) -> list[KeyRecord]:
    with _sessions(ws)() as s:
        return [_record(r) for r in s.scalars(select(ApiKey).where(ApiKey.project == ws.catalog.project)
                                              .order_by(ApiKey.created_at))]


def revoke_key(ws: Workspace, key_id: str, *, actor: str = "cli") -> KeyRecord:
    key_id = key_id.removeprefix("api-key:")
    m = _KEY.match(key_id)
    key_id = m.group(1) if m else key_id  # the whole key works too
    with _sessions(ws).begin() as s:
        row = _own(ws, s.get(ApiKey, key_id))
        if row is None:
            raise NotFoundError(f"no API key {key_id!r}", hint="list keys with `kifabrik keys list`")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        rec = _record(row)
    ws.catalog.audit("key.revoke", actor=actor, subject=f"api-key:{key_id}")
    return rec


def authenticate(ws: Workspace, key: str) -> KeyRecord | None:
    """The record of a valid, unrevoked key, else None (never says which part was wrong)."""
    m = _KEY.match(key.strip())
    if not m:
        return None
    with _sessions(ws)() as s:
        row = _own(ws, s.get(ApiKey, m.group(1)))
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.hash, hash_key(key.strip())):
            return None
        return _record(row)
