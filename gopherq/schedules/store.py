"""The schedule store contract: leader lease, per-entry cursors, dynamic entries.

A store lives in the broker's own storage (the same SQLite file, the same
Redis), chosen from the broker by ``open_store``, in a namespace of its own per
app name: apps that share a broker elect their own leaders. It keeps:

- the **leader lease**: one owner token with an expiry, in the store's clock
  (the process clock for memory and SQLite, which share one machine; Redis
  ``TIME`` and key expiry for Redis). ``acquire`` takes a free or expired
  lease, or renews one's own, and always says who holds it;
- a **cursor per entry** (``EntryState``): the last tick claimed, whether it is
  still pending (claimed, its message maybe not yet sent), a lower bound below
  which ticks are never sent, the schedule it was computed for, and a pause
  override. ``claim`` is a batch of compare-and-set steps on the tick, fenced by
  the lease: it does nothing unless ``owner`` holds the lease at that moment;
- **dynamic entries**: opaque encoded specs by name, and a version number that
  every change of an entry or a pause bumps, so a leader polls one number to
  see changes.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from gopherq.brokers import REDIS_SCHEMES, Broker
from gopherq.errors import ConfigurationError
from gopherq.redaction import UrlRepr, redact_url


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds the leader lease, as of store time ``now``."""

    owner: str | None
    """The holder's token; None when nobody holds it."""
    expires: float
    """Store time at which it lapses unless renewed."""
    now: float
    """The store's clock when it answered."""


@dataclass(frozen=True, slots=True)
class EntryState:
    """What the store remembers about one entry between ticks."""

    tick: int | None = None
    """The last tick claimed (Unix seconds)."""
    pending: bool = False
    """The last tick is claimed but its message is not known to be sent."""
    since: float = 0.0
    """Ticks at or before this are never sent (set when an entry is new, changed or resumed)."""
    fingerprint: str = ""
    """The schedule the cursor was computed for."""
    paused: bool | None = None
    """A pause or resume by name; None means as the entry declares."""

    def claimed(self, claim: Claim) -> EntryState:
        """This cursor after ``claim`` applied to it."""
        return EntryState(
            claim.tick,
            claim.pending,
            max(self.since, claim.since),
            claim.fingerprint,
            self.paused,
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """One compare-and-set of a cursor: if its tick is still ``expected``, write the rest.

    ``since`` only ever raises the stored lower bound; the pause override is kept.
    """

    name: str
    expected: int | None
    tick: int | None
    pending: bool
    since: float
    fingerprint: str


class ScheduleStore(UrlRepr, ABC):
    """Where beats meet: see the module docstring."""

    url: str
    local_clock: bool = True
    """The store's clock is this process's clock (memory, SQLite: one machine). When
    False (Redis), a beat corrects its clock by the difference ``Lease.now`` shows."""

    # The leader lease.

    @abstractmethod
    def acquire(self, owner: str, ttl: float) -> Lease:
        """Take the lease for ``ttl`` seconds if it is free, expired or ``owner``'s own
        (a renewal); return who holds it now."""

    @abstractmethod
    def release(self, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""

    # Cursors.

    @abstractmethod
    def states(self) -> dict[str, EntryState]:
        """Every entry's cursor, by name."""

    @abstractmethod
    def claim(self, owner: str, claims: Sequence[Claim]) -> list[bool]:
        """Apply each claim whose cursor still holds its expected tick, in one atomic
        step, only while ``owner`` holds the lease. Returns which were applied."""

    @abstractmethod
    def confirm(self, done: Sequence[tuple[str, int]]) -> None:
        """Clear ``pending`` of each ``(name, tick)`` whose cursor is still at ``tick``."""

    @abstractmethod
    def set_paused(self, name: str, paused: bool) -> None:
        """Pause or resume ``name`` and bump the version. Resuming sets the lower bound
        to now: ticks missed while paused are not caught up."""

    # Dynamic entries.

    @abstractmethod
    def entries(self) -> tuple[int, dict[str, bytes]]:
        """The version and every dynamic entry's encoded spec, read together."""

    @abstractmethod
    def version(self) -> int:
        """A number that changes whenever an entry is put or deleted, or a pause changes."""

    @abstractmethod
    def put(self, name: str, spec: bytes) -> None:
        """Add or replace a dynamic entry; bump the version."""

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Delete a dynamic entry and its cursor; bump the version. False if absent."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store reconnects on next use."""


_MEMORY: weakref.WeakKeyDictionary[Broker, dict[str, ScheduleStore]] = weakref.WeakKeyDictionary()


def open_store(broker: Broker, namespace: str) -> ScheduleStore:
    """The schedule store of ``namespace`` (an app name) beside ``broker``: in its SQLite
    file, its Redis, or (for ``memory://``) in memory, one per broker instance."""
    scheme = broker.url.partition("://")[0].lower()
    if scheme == "memory":
        from gopherq.schedules.memory import MemoryScheduleStore

        stores = _MEMORY.setdefault(broker, {})
        if namespace not in stores:
            stores[namespace] = MemoryScheduleStore()
        return stores[namespace]
    if scheme == "sqlite":
        from gopherq.schedules.sqlite import SQLiteScheduleStore

        return SQLiteScheduleStore(broker.url, namespace)
    if scheme in REDIS_SCHEMES:
        from gopherq.schedules.redis import RedisScheduleStore

        return RedisScheduleStore(broker.url, namespace)
    raise ConfigurationError(f"no schedule store for broker {redact_url(broker.url)!r}")
