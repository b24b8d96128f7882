"""The audit chain's head, anchored outside the database.

The audit log is hash-chained (`hash = sha256(prev_hash + entry)`), which shows a changed or removed
entry in the middle. Someone who can write the database could still delete the newest entries, or
rewrite an entry and recompute every hash after it. So after every commit that appends to the log,
the newest entry's (seq, hash) is written to a head file outside the database, with an HMAC-SHA256
under a key that is also kept outside the database:

    $KIFABRIK_HOME/audit.key         32 random bytes, mode 0600 (or KIFABRIK_AUDIT_KEY_FILE)
    $KIFABRIK_HOME/audit-head.json   {"seq": N, "hash": "...", "mac": "..."}

`kifabrik audit verify` recomputes the chain and checks that entry N still has that hash, and the
head's MAC. Every release bundle carries the head at its release (`audit-head.json`), so a bundle
handed to someone else pins the log as it was then (`kifabrik audit verify --head BUNDLE/audit-head.json`).

What this protects against, and what not:
- With write access to the database only: deleting the newest entries (fewer than the head says),
  rewriting any entry (even with the whole chain recomputed) and inserting entries before the head
  are detected. Entries written after the head's last update (a crash between commit and head
  write) are reported as not yet anchored.
- With write access to `$KIFABRIK_HOME` as well (the key and the head file), an attacker can
  rewrite the log and re-anchor it; only heads copied elsewhere before (release bundles, a
  printed head, a copy of the head file on another machine) still show the change. Keep the key
  on another volume (KIFABRIK_AUDIT_KEY_FILE) or copy heads out regularly for stronger evidence.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

HEAD_FILE = "audit-head.json"
KEY_FILE = "audit.key"


class Anchor:
    """Reads and advances the head file of one installation."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.head_path = home / HEAD_FILE
        self.key_path = Path(os.environ.get("KIFABRIK_AUDIT_KEY_FILE") or home / KEY_FILE)

    def _key(self, create: bool) -> bytes | None:
        try:
            return self.key_path.read_bytes()
        except FileNotFoundError:
            if not create:
                return None
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.key_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:  # another process made it first
            return self.key_path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
        return self.key_path.read_bytes()

    @staticmethod
    def mac(key: bytes, seq: int, digest: str) -> str:
        return hmac.new(key, f"{seq}:{digest}".encode(), hashlib.sha256).hexdigest()

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.head_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"seq": -1, "hash": "", "mac": "", "unreadable": True}

    def advance(self, seq: int, digest: str) -> None:
        """Move the head to (seq, digest) unless it is already there or further (writers race)."""
        key = self._key(create=True)
        assert key is not None
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / (HEAD_FILE + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read()
            if current is not None and not current.get("unreadable") and int(current.get("seq", -1)) >= seq:
                return
            tmp = self.head_path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"seq": seq, "hash": digest, "mac": self.mac(key, seq, digest)}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.head_path)

    def check(self, head: dict[str, Any], entries: dict[int, str], *, source: str) -> list[str]:
        """Problems of the log (`seq -> hash`) against one head (the head file or a bundle's copy)."""
        if head.get("unreadable"):
            return [f"{source}: unreadable"]
        seq, digest = int(head.get("seq", -1)), str(head.get("hash", ""))
        problems = []
        key = self._key(create=False)
        if key is None:
            problems.append(f"{source}: cannot check its MAC, the audit key {self.key_path} is missing")
        elif not hmac.compare_digest(self.mac(key, seq, digest), str(head.get("mac", ""))):
            problems.append(f"{source}: MAC does not match (the head was edited, or was made with another key)")
        last = max(entries) if entries else 0
        if seq > last:
            problems.append(f"{source}: the log ends at entry {last} but entry {seq} was written "
                            f"(the newest {seq - last} entr{'y was' if seq - last == 1 else 'ies were'} removed)")
        elif entries.get(seq) != digest:
            problems.append(f"{source}: entry {seq} differs from the anchored one (the log was rewritten)")
        return problems
