"""A broker of the hot path alone, as small as a broker gets: a dict under a lock.

``Broker``'s abstract methods and nothing else, so everything of ``BrokerAdmin``
keeps its default. The contract suite runs its hot-path tests on it (kind
``minimal``), and tests/test_minimal_broker.py checks what an app, the admin layer
and the CLI make of the operations it lacks. docs/brokers.md ("Writing a broker")
starts from it. Every scan is linear: a toy, not a model for speed.
"""

from __future__ import annotations

import itertools
import math
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gopherq.brokers import Broker, Delivery, Envelope

READY, SCHEDULED, LEASED, DEAD = "ready", "scheduled", "leased", "dead"


@dataclass(slots=True)
class _Message:
    envelope: Envelope
    seq: int
    """Place in line among ready messages: kept by requeue and lease expiry."""
    state: str = READY
    due: float = 0.0
    """When scheduled: its eta. When leased: when the lease expires."""
    attempt: int = 0
    deliveries: int = 0
    token: str = ""
    holds_key: bool = True
    """Whether its envelope's key (if any) is held by it: not once reserved with
    ``key_until_start``."""


class DictBroker(Broker):
    """Messages in one dict; a condition wakes blocked ``reserve`` calls."""

    def __init__(self, url: str = "minimal://", *, lease_seconds: float = 30.0) -> None:
        self.url = url
        self.lease_seconds = lease_seconds
        self._messages: dict[str, _Message] = {}
        self._changed = threading.Condition()
        self._seq = itertools.count()
        self._finished: dict[tuple[str, str], tuple[str, float]] = {}
        """Keys held past their ack: (queue, key) -> (id, until)."""

    def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]:
        ids = []
        with self._changed:
            now = time.time()
            for env in envelopes:
                holder = self._holder(env.queue, env.key, now)
                ids.append(holder or env.id)
                if holder is None and env.id not in self._messages:
                    message = self._messages[env.id] = _Message(env, next(self._seq))
                    if env.eta is not None and env.eta > now:
                        message.state, message.due = SCHEDULED, env.eta
            self._changed.notify_all()
        return ids

    def reserve(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                now = time.time()
                self._tidy(now)
                ready = [
                    m
                    for m in self._messages.values()
                    if m.state == READY and m.envelope.queue in queues
                ]
                ready.sort(key=lambda m: (m.envelope.priority, m.seq))
                taken = [self._lease(m, now) for m in ready[: max(limit, 0)]]
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0:
                    return taken
                self._changed.wait(min(remaining, self._next_due(now)))

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        with self._changed:
            held = [m for d in deliveries if (m := self._held(d)) is not None]
            now = time.time()
            for message in held:
                env = message.envelope
                if env.key is not None and env.key_ttl and message.holds_key:
                    self._finished[env.queue, env.key] = (env.id, now + env.key_ttl)
                del self._messages[env.id]
            return len(held)

    def retry(self, delivery: Delivery, countdown: float, error: str) -> bool:
        with self._changed:
            if (message := self._held(delivery)) is None:
                return False
            message.attempt, message.deliveries, message.token = message.attempt + 1, 0, ""
            if countdown > 0:
                message.state, message.due = SCHEDULED, time.time() + countdown
            else:
                message.state, message.seq = READY, next(self._seq)
            self._changed.notify_all()
            return True

    def dead(self, delivery: Delivery, reason: str, error: str) -> bool:
        # Kept as DEAD, but listing dead letters is an admin operation it lacks.
        with self._changed:
            if (message := self._held(delivery)) is None:
                return False
            message.state, message.token = DEAD, ""
            return True

    def extend(self, deliveries: Sequence[Delivery]) -> int:
        return len(self.held(deliveries))

    def held(self, deliveries: Sequence[Delivery]) -> set[str]:
        with self._changed:
            until = time.time() + self.lease_seconds
            held = [m for d in deliveries if (m := self._held(d)) is not None]
            for message in held:
                message.due = until
            return {m.envelope.id for m in held}

    def requeue(self, deliveries: Sequence[Delivery], *, started: bool = False) -> int:
        with self._changed:
            held = [m for d in deliveries if (m := self._held(d)) is not None]
            for message in held:
                message.state, message.token = READY, ""
                if not started:  # prefetched, never run: this delivery does not count
                    message.deliveries -= 1
            self._changed.notify_all()
            return len(held)

    def recover(self) -> int:
        with self._changed:
            return self._tidy(time.time())

    def ping(self) -> None:
        """Always answers: it lives in this process."""

    def close(self) -> None:
        """Nothing to release."""

    # Internals; the caller holds the lock.

    def _tidy(self, now: float) -> int:
        """Due scheduled messages join the line in eta order; expired leases go back to
        their place in it."""
        due = [m for m in self._messages.values() if m.state == SCHEDULED and m.due <= now]
        for message in sorted(due, key=lambda m: m.due):
            message.state, message.seq = READY, next(self._seq)
        expired = [m for m in self._messages.values() if m.state == LEASED and m.due <= now]
        for message in expired:
            message.state, message.token = READY, ""
        if due or expired:
            self._changed.notify_all()
        return len(due) + len(expired)

    def _lease(self, message: _Message, now: float) -> Delivery:
        message.state, message.due = LEASED, now + self.lease_seconds
        message.token, message.deliveries = secrets.token_hex(8), message.deliveries + 1
        env, attempt = message.envelope, message.attempt
        if env.key_until_start:
            message.holds_key = False
        return Delivery(
            env.id, env.queue, env.priority, env.body, attempt, message.deliveries, message.token
        )

    def _held(self, delivery: Delivery) -> _Message | None:
        message = self._messages.get(delivery.id)
        if message is None or message.state != LEASED or message.token != delivery.token:
            return None
        return message

    def _holder(self, queue: str, key: str | None, now: float) -> str | None:
        """The id of the live message of ``queue`` holding idempotency ``key``, else of
        the finished one whose key is held past ``now``."""
        if key is None:
            return None
        for message in self._messages.values():
            env = message.envelope
            live = message.state != DEAD and message.holds_key
            if env.queue == queue and env.key == key and live:
                return env.id
        id, until = self._finished.get((queue, key), ("", 0.0))
        return id if until > now else None

    def _next_due(self, now: float) -> float:
        """Seconds until the next eta or lease expiry; infinity if there is none."""
        times = [m.due for m in self._messages.values() if m.state in (SCHEDULED, LEASED)]
        return max(min(times) - now, 0.0) if times else math.inf
