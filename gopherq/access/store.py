"""The access store contract: API keys and the audit log of one app.

A store lives in the broker's own storage (tables in the same SQLite file, keys
under the same Redis prefix), chosen from the broker by ``open_store``, in a
namespace of its own per app name. Key names are unique per namespace, revoked
keys included: the audit log names keys, so a name means one key for good.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence

from gopherq.access.audit import AuditEntry
from gopherq.access.keys import ApiKey
from gopherq.brokers import REDIS_SCHEMES, Broker
from gopherq.errors import ConfigurationError
from gopherq.redaction import UrlRepr, redact_url


class AccessStore(UrlRepr, ABC):
    """Where keys and audit entries are kept: see the module docstring."""

    url: str

    @abstractmethod
    def add_key(self, key: ApiKey) -> bool:
        """Store a new key; False (nothing stored) if its name is taken."""

    @abstractmethod
    def key(self, key_id: str) -> ApiKey | None:
        """The key with id ``key_id``."""

    @abstractmethod
    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked and expired ones included, oldest first."""

    @abstractmethod
    def revoke(self, name: str, at: float) -> ApiKey | None:
        """Mark the key named ``name`` revoked at ``at`` (kept if it already was);
        the key as it is now, or None if there is none by that name."""

    @abstractmethod
    def append(
        self, entries: Sequence[AuditEntry], keep_after: float, max_count: int | None = None
    ) -> None:
        """Append audit entries, then delete those older than ``keep_after`` and the
        oldest past the newest ``max_count`` (None: no count limit)."""

    @abstractmethod
    def entries(self, since: float | None = None, limit: int = 100) -> list[AuditEntry]:
        """Up to ``limit`` audit entries at or after ``since``, newest first."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store reconnects on next use."""


_MEMORY: weakref.WeakKeyDictionary[Broker, dict[str, AccessStore]] = weakref.WeakKeyDictionary()


def open_store(broker: Broker, namespace: str) -> AccessStore:
    """The access store of ``namespace`` (an app name) beside ``broker``: in its SQLite
    file, its Redis, or (for ``memory://``) in memory, one per broker instance."""
    scheme = broker.url.partition("://")[0].lower()
    if scheme == "memory":
        from gopherq.access.memory import MemoryAccessStore

        stores = _MEMORY.setdefault(broker, {})
        if namespace not in stores:
            stores[namespace] = MemoryAccessStore()
        return stores[namespace]
    if scheme == "sqlite":
        from gopherq.access.sqlite import SQLiteAccessStore

        return SQLiteAccessStore(broker.url, namespace)
    if scheme in REDIS_SCHEMES:
        from gopherq.access.redis import RedisAccessStore

        return RedisAccessStore(broker.url, namespace)
    raise ConfigurationError(f"no key store for broker {redact_url(broker.url)!r}")
