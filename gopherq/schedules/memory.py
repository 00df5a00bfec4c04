"""In-process schedule store, one per ``memory://`` broker instance (see ``open_store``).

For tests and for a beat running in the same process as everything else. Its
clock is ``clock`` (``time.time`` unless a test sets another).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence

from gopherq.schedules.store import Claim, EntryState, Lease, ScheduleStore


class MemoryScheduleStore(ScheduleStore):
    """A schedule store in this process's memory. See ``gopherq.schedules.store``."""

    def __init__(self, url: str = "memory://", clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.clock = clock
        self._lock = threading.Lock()
        self._owner: str | None = None
        self._expires = 0.0
        self._states: dict[str, EntryState] = {}
        self._entries: dict[str, bytes] = {}
        self._version = 0

    def acquire(self, owner: str, ttl: float) -> Lease:
        """Take the lease if free, expired or ``owner``'s; return who holds it."""
        with self._lock:
            now = self.clock()
            if self._owner is None or self._expires <= now or self._owner == owner:
                self._owner, self._expires = owner, now + ttl
            return Lease(self._owner, self._expires, now)

    def release(self, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        with self._lock:
            if self._owner == owner:
                self._owner, self._expires = None, 0.0

    def states(self) -> dict[str, EntryState]:
        """Every cursor, by name."""
        with self._lock:
            return dict(self._states)

    def claim(self, owner: str, claims: Sequence[Claim]) -> list[bool]:
        """Apply the claims whose tick is still as expected, while ``owner`` leads."""
        with self._lock:
            if self._owner != owner or self._expires <= self.clock():
                return [False] * len(claims)
            applied = []
            for claim in claims:
                state = self._states.get(claim.name, EntryState())
                ok = state.tick == claim.expected
                if ok:
                    self._states[claim.name] = state.claimed(claim)
                applied.append(ok)
            return applied

    def confirm(self, done: Sequence[tuple[str, int]]) -> None:
        """Clear ``pending`` where the cursor is still at the tick."""
        with self._lock:
            for name, tick in done:
                state = self._states.get(name)
                if state is not None and state.tick == tick:
                    self._states[name] = dataclasses.replace(state, pending=False)

    def set_paused(self, name: str, paused: bool) -> None:
        """Pause or resume; resuming skips the ticks missed meanwhile."""
        with self._lock:
            state = self._states.get(name, EntryState())
            since = state.since if paused else max(state.since, self.clock())
            self._states[name] = dataclasses.replace(state, paused=paused, since=since)
            self._version += 1

    def entries(self) -> tuple[int, dict[str, bytes]]:
        """The version and the dynamic entries."""
        with self._lock:
            return self._version, dict(self._entries)

    def version(self) -> int:
        """Bumped by every put, delete and pause change."""
        with self._lock:
            return self._version

    def put(self, name: str, spec: bytes) -> None:
        """Add or replace a dynamic entry."""
        with self._lock:
            self._entries[name] = spec
            self._version += 1

    def delete(self, name: str) -> bool:
        """Delete a dynamic entry and its cursor."""
        with self._lock:
            found = self._entries.pop(name, None) is not None
            self._states.pop(name, None)
            self._version += 1
            return found

    def close(self) -> None:
        """Nothing to release."""
