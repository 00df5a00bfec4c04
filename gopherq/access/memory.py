"""In-process access store, one per ``memory://`` broker instance (see ``open_store``)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

from gopherq.access.audit import AuditEntry
from gopherq.access.keys import ApiKey
from gopherq.access.store import AccessStore


class MemoryAccessStore(AccessStore):
    """Keys and audit entries in this process's memory. See ``gopherq.access.store``."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKey] = {}  # by id, in creation order
        self._audit: list[AuditEntry] = []  # oldest first

    def add_key(self, key: ApiKey) -> bool:
        """Store a new key unless its name is taken."""
        with self._lock:
            if any(k.name == key.name for k in self._keys.values()):
                return False
            self._keys[key.id] = key
            return True

    def key(self, key_id: str) -> ApiKey | None:
        """The key with this id."""
        return self._keys.get(key_id)

    def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""
        return sorted(self._keys.values(), key=lambda k: k.created)

    def revoke(self, name: str, at: float) -> ApiKey | None:
        """Mark the named key revoked."""
        with self._lock:
            found = next((k for k in self._keys.values() if k.name == name), None)
            if found is not None and found.revoked is None:
                found = self._keys[found.id] = dataclasses.replace(found, revoked=at)
            return found

    def append(
        self, entries: Sequence[AuditEntry], keep_after: float, max_count: int | None = None
    ) -> None:
        """Append, and forget the old entries."""
        with self._lock:
            kept = sorted([*self._audit, *entries], key=lambda e: e.time)
            kept = [e for e in kept if e.time >= keep_after]
            self._audit = kept if max_count is None else kept[max(0, len(kept) - max_count) :]

    def entries(self, since: float | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""
        with self._lock:
            found = [e for e in reversed(self._audit) if since is None or e.time >= since]
        return found[:limit]

    def close(self) -> None:
        """Nothing to release."""
