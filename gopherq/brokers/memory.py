"""In-process broker: fast, thread-safe, gone with the process.

For unit tests and eager mode. Each ``MemoryBroker`` is its own store: share one
instance between threads to share its messages.

Supports the whole broker contract: batch enqueue, delayed messages (``eta``),
strict priority with FIFO within a priority, leases with tokens and renewal,
idempotency keys (per queue; held past the ack for ``key_ttl``, or freed at
reserve), fair keys (taking turns within a queue and priority; a step in line is
one enqueued message here), rate limits (GCRA buckets, ``defer``), cancellation
(a leased message carries its cancel mark through requeue, lease expiry and
retry), pause and resume, dead letters with a time to live, and a blocking
``reserve`` that sleeps on a condition until an enqueue, requeue or resume, the
next due ``eta`` or the next lease expiry (no polling).

Concurrency limits (``admit``): holders per key with lease ends; a parked message
is scheduled until its parking ends and waits in its key's line meanwhile.

URL: ``memory://`` (the rest is ignored).

Options:
    lease_seconds (float): how long ``reserve`` leases a message. Default 30.
    dead_letter_ttl (float): seconds a dead letter is kept. Default 7 days.

Layout (heap entries are dropped lazily: one that no longer matches its message
is skipped when it surfaces)::

    _messages    id -> _Message, wherever it is
    _ready       queue -> priority -> heap of (priority, seq, id) of ready messages
    _fair        (queue, priority) -> fair key -> the seq its next message takes at
                 the least (see ``_fair_seq``)
    _scheduled   heap of (eta, seq, id) of delayed messages
    _leases      heap of (lease_until, id) of leased messages
    _dead        queue -> {id: _Message} in the order they died
    _keys        (queue, idempotency key) -> id of the live message holding it
    _holders     concurrency key -> {(id, token): lease end} of the deliveries admitted
    _parked      concurrency key -> heap of (priority, seq, parked until, id) of the
                 messages parked (scheduled until then, unless woken first)
    _buckets     rate limit key -> its theoretical arrival time (GCRA, ``gopherq.limits``)
    _slots       rate limit key -> {(queue, id): slot} of messages put back for a slot
                 (or kept for one another bucket makes wait, ``rate_keep``)
    _limits      task -> ``RateSetting``: rate limits set at run time, holds
    _finished    (queue, idempotency key) -> (id, until): keys held past their ack
    _finished_expiry  heap of (until, queue, key) of _finished
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from gopherq.brokers.base import (
    Broker,
    Cancellation,
    DeadLetter,
    Delivery,
    Envelope,
    Peeked,
    QueueDepth,
    QueueStats,
    ReserveOrder,
    aged,
    rate_slot,
)
from gopherq.limits import RateSetting
from gopherq.states import State

_Heap = list[tuple[int, int, str]]
_FAIR_TIDY = 64
"""Fair counters of a queue and priority from which an enqueue drops those passed."""


@dataclass(slots=True)
class _Message:
    id: str
    queue: str
    priority: int
    body: bytes
    key: str | None
    key_ttl: float | None
    key_until_start: bool
    state: State = State.QUEUED
    seq: int = 0
    """Place in line: requeue and lease expiry put a message back there."""
    eta: float = 0.0
    ready_at: float = 0.0
    """When it became runnable (enqueued, retried, requeued from the dead, or its eta)."""
    attempt: int = 0
    deliveries: int = 0
    token: str = ""
    lease_until: float = 0.0
    reason: str = ""
    error: str = ""
    died: float = 0.0
    cancelled: bool = False
    """A cancel was requested while it was leased; dropped when it dies."""
    deferred: bool = False
    """Scheduled by ``defer``: due, it goes back to its old place in line (``seq``)."""

    def delivery(self) -> Delivery:
        return Delivery(
            self.id,
            self.queue,
            self.priority,
            self.body,
            self.attempt,
            self.deliveries,
            self.token,
            self.cancelled,
        )

    def dead_letter(self) -> DeadLetter:
        return DeadLetter(
            self.id,
            self.queue,
            self.priority,
            self.body,
            self.attempt,
            self.reason,
            self.error,
            self.died,
        )


class MemoryBroker(Broker):
    """A broker held in this process's memory. See the module docstring."""

    def __init__(
        self,
        url: str = "memory://",
        *,
        lease_seconds: float = 30.0,
        dead_letter_ttl: float = 7 * 86400.0,
    ) -> None:
        self.url = url
        self.lease_seconds = lease_seconds
        self.dead_letter_ttl = dead_letter_ttl
        self._changed = threading.Condition()
        self._messages: dict[str, _Message] = {}
        self._ready: dict[str, dict[int, _Heap]] = {}  # its keys are every queue ever seen
        self._fair: dict[tuple[str, int], dict[str, int]] = {}
        self._fair_kept: dict[tuple[str, int], int] = {}  # counters left by the last sweep
        self._scheduled: list[tuple[float, int, str]] = []
        self._leases: list[tuple[float, str]] = []
        self._dead: dict[str, dict[str, _Message]] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._finished: dict[tuple[str, str], tuple[str, float]] = {}
        self._finished_expiry: list[tuple[float, str, str]] = []
        self._paused: set[str] = set()
        self._seq = itertools.count()
        self._holders: dict[str, dict[tuple[str, str], float]] = {}
        self._parked: dict[str, list[tuple[int, int, float, str]]] = {}
        self._buckets: dict[str, float] = {}
        self._slots: dict[str, dict[tuple[str, str], float]] = {}
        self._limits: dict[str, RateSetting] = {}

    def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]:
        """Store messages; a live idempotency key or an id already stored stores nothing."""
        ids: list[str] = []
        with self._changed:
            now = time.time()
            self._tidy(now)
            for env in envelopes:
                held = self._key_holder(env.queue, env.key, now) if env.key is not None else None
                ids.append(env.id if held is None else held)
                if held is not None or env.id in self._messages:
                    continue
                message = _Message(
                    env.id,
                    env.queue,
                    env.priority,
                    env.body,
                    env.key,
                    env.key_ttl,
                    env.key_until_start,
                )
                self._messages[env.id] = message
                if env.key is not None:
                    self._keys[env.queue, env.key] = env.id
                self._ready.setdefault(env.queue, {})
                self._place(message, env.eta, now, env.fair_key)
            self._changed.notify_all()
        return ids

    def reserve(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Lease up to ``limit`` messages, sleeping until one is runnable or ``timeout``."""
        return self._reserve(queues, limit, timeout, None)

    def reserve_ordered(
        self, queues: Sequence[str], limit: int, timeout: float, order: ReserveOrder
    ) -> list[Delivery]:
        """``reserve`` in ``order`` (strict queue order, priority aging). It looks
        through every ready message of the queues: this broker is for tests."""
        return self._reserve(queues, limit, timeout, order)

    def _reserve(
        self, queues: Sequence[str], limit: int, timeout: float, order: ReserveOrder | None
    ) -> list[Delivery]:
        if limit <= 0:
            return []
        deadline = time.monotonic() + timeout
        wanted = list(dict.fromkeys(queues))
        with self._changed:
            while True:
                now = time.time()
                self._tidy(now)
                if order is None:
                    taken = self._take(wanted, limit, now)
                else:
                    taken = self._take_ordered(wanted, limit, now, order)
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0:
                    return taken
                self._changed.wait(min(remaining, self._next_due(now)))

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        """Forget finished messages; returns how many were still held."""
        count = 0
        with self._changed:
            now = time.time()
            for delivery in deliveries:
                if (message := self._held(delivery)) is not None:
                    if message.key_ttl and not message.cancelled:
                        self._keep_finished_key(message, now + message.key_ttl)
                    self._forget(message)
                    count += 1
        return count

    def retry(self, delivery: Delivery, countdown: float, error: str) -> bool:
        """Schedule the message ``countdown`` seconds from now with ``attempt + 1``;
        ``error`` is not kept."""
        with self._changed:
            message = self._held(delivery)
            if message is None:
                return False
            message.attempt += 1
            message.deliveries = 0
            now = time.time()
            self._place(message, now + countdown, now)
            self._changed.notify_all()
        return True

    def dead(self, delivery: Delivery, reason: str, error: str) -> bool:
        """Move the message to its queue's dead letters; False if the lease was lost."""
        with self._changed:
            message = self._held(delivery)
            if message is None:
                return False
            message.state, message.token, message.seq = State.DEAD, "", next(self._seq)
            message.cancelled = False
            self._release_key(message)  # it keeps the key, to take again if requeued
            message.reason, message.error, message.died = reason, error, time.time()
            self._dead.setdefault(message.queue, {})[message.id] = message
        return True

    def extend(self, deliveries: Sequence[Delivery]) -> int:
        """Renew leases for ``lease_seconds`` from now; returns how many were still held."""
        return len(self.held(deliveries))

    def held(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The ids still leased under their token, whose leases are renewed."""
        ids: set[str] = set()
        with self._changed:
            until = time.time() + self.lease_seconds
            for delivery in deliveries:
                if (message := self._held(delivery)) is not None:
                    message.lease_until = until
                    heapq.heappush(self._leases, (until, message.id))
                    ids.add(message.id)
        return ids

    def requeue(self, deliveries: Sequence[Delivery], *, started: bool = False) -> int:
        """Give messages back to their place in line; ``started=False`` uncounts the delivery."""
        count = 0
        with self._changed:
            for delivery in deliveries:
                if (message := self._held(delivery)) is not None:
                    if not started:
                        message.deliveries -= 1
                    self._push_ready(message, message.seq)
                    count += 1
            if count:
                self._changed.notify_all()
        return count

    def recover(self) -> int:
        """Make expired leases and due scheduled messages ready; returns how many moved."""
        with self._changed:
            return self._tidy(time.time())

    def cancel(self, ids: Sequence[str]) -> list[Cancellation]:
        """Remove ready and scheduled messages, mark leased ones; in the order of ``ids``.

        Due etas and expired leases count as ready, as ``reserve`` would find them.
        """
        done: list[Cancellation] = []
        with self._changed:
            self._tidy(time.time())
            for id in dict.fromkeys(ids):
                message = self._messages.get(id)
                if message is None or message.state is State.DEAD:
                    continue
                done.append(
                    Cancellation(id, message.queue, message.state, message.body, message.attempt)
                )
                if message.state is State.STARTED:
                    message.cancelled = True
                else:
                    self._forget(message)
        return done

    def cancel_requested(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The ids among ``deliveries`` whose message carries the cancel mark."""
        with self._changed:
            return {
                d.id
                for d in deliveries
                if (message := self._messages.get(d.id)) is not None and message.cancelled
            }

    # Concurrency limits.

    def admit(self, delivery: Delivery, key: str, limit: int) -> bool:
        """Make ``delivery`` a holder of ``key`` if fewer than ``limit`` hold it, else
        park its message (see ``BrokerAdmin.admit``)."""
        with self._changed:
            now = time.time()
            message = self._held(delivery)
            if message is None:
                return False
            holders = self._holders.setdefault(key, {})
            expired = [h for h, until in holders.items() if until <= now]
            for holder in expired:
                del holders[holder]
            holder = (delivery.id, delivery.token)
            admitted = holder in holders or len(holders) < limit
            if admitted:
                holders[holder] = now + self.lease_seconds
            else:
                until = now + self.lease_seconds
                message.deliveries -= 1
                message.state, message.eta, message.token = State.SCHEDULED, until, ""
                heapq.heappush(self._scheduled, (until, next(self._seq), message.id))
                heapq.heappush(
                    self._parked.setdefault(key, []),
                    (message.priority, message.seq, until, message.id),
                )
            self._wake_parked(key, min(len(expired), limit - len(holders)))
            return admitted

    def release_admitted(self, admitted: Sequence[tuple[str, Delivery]]) -> int:
        """Free these holders' slots, waking a parked message of the key for each."""
        count = 0
        with self._changed:
            for key, delivery in admitted:
                if self._holders.get(key, {}).pop((delivery.id, delivery.token), None):
                    self._wake_parked(key, 1)
                    count += 1
        return count

    def renew_admitted(self, admitted: Sequence[tuple[str, Delivery]]) -> int:
        """Renew these holders' leases for ``lease_seconds`` from now."""
        count = 0
        with self._changed:
            until = time.time() + self.lease_seconds
            for key, delivery in admitted:
                holders = self._holders.get(key, {})
                if (delivery.id, delivery.token) in holders:
                    holders[delivery.id, delivery.token] = until
                    count += 1
        return count

    # Rate limits.

    def rate_admit(
        self, key: str, interval: float, burst: int, deliveries: Sequence[Delivery]
    ) -> list[float]:
        """Seconds until each delivery's slot of bucket ``key`` (0.0: now), claimed in order."""
        waits: list[float] = []
        with self._changed:
            now = time.time()
            tat = self._buckets.get(key, 0.0)
            slots = self._slots.setdefault(key, {})
            for delivery in deliveries:
                place = (delivery.queue, delivery.id)
                slot, tat = rate_slot(slots.pop(place, None), tat, now, interval, burst)
                if slot > now:
                    slots[place] = slot
                waits.append(max(slot - now, 0.0))
            self._buckets[key] = tat
        return waits

    def rate_keep(self, key: str, deliveries: Sequence[Delivery]) -> int:
        """Remember a slot due now of bucket ``key`` for each delivery (see ``BrokerAdmin``)."""
        kept = 0
        with self._changed:
            now = time.time()
            slots = self._slots.setdefault(key, {})
            for delivery in deliveries:
                if slots.setdefault((delivery.queue, delivery.id), now) == now:
                    kept += 1
        return kept

    def defer(self, deliveries: Sequence[Delivery], countdowns: Sequence[float]) -> int:
        """Put held messages back, scheduled ``countdowns`` from now, nothing counted."""
        count = 0
        with self._changed:
            now = time.time()
            for delivery, countdown in zip(deliveries, countdowns, strict=True):
                if (message := self._held(delivery)) is None:
                    continue
                message.deliveries -= 1
                if countdown > 0:
                    self._place(message, now + countdown, now)
                    message.deferred = True
                else:
                    self._push_ready(message, message.seq)
                count += 1
            self._changed.notify_all()
        return count

    def rate_release(self, key: str) -> int:
        """Forget bucket ``key``; its messages waiting for a slot become ready at once."""
        moved = 0
        with self._changed:
            self._buckets.pop(key, None)
            for _, id in self._slots.pop(key, {}):
                message = self._messages.get(id)
                if message is not None and message.state is State.SCHEDULED:
                    self._push_ready(message, message.seq)
                    message.deferred = False
                    moved += 1
            self._changed.notify_all()
        return moved

    def rate_limits(self) -> dict[str, RateSetting]:
        """Run-time rate limits and holds by task; holds that ended go."""
        with self._changed:
            now = time.time()
            for task, setting in list(self._limits.items()):
                if setting.hold_until is not None and setting.hold_until <= now:
                    self._keep_limit(task, dataclasses.replace(setting, hold_until=None))
            return dict(self._limits)

    def set_rate_limit(self, task: str, rate: str | None, burst: int = 1) -> None:
        """Set or (``rate`` None) remove the run-time rate limit of ``task``."""
        with self._changed:
            setting = self._limits.get(task, RateSetting())
            self._keep_limit(task, dataclasses.replace(setting, rate=rate, burst=burst))

    def hold_rate(self, task: str, seconds: float) -> float:
        """Hold ``task`` until ``seconds`` from now (or a later hold already set)."""
        with self._changed:
            setting = self._limits.get(task, RateSetting())
            until = max(time.time() + seconds, setting.hold_until or 0.0)
            self._keep_limit(task, dataclasses.replace(setting, hold_until=until))
        return until

    def _keep_limit(self, task: str, setting: RateSetting) -> None:
        if setting.rate is None and setting.hold_until is None:
            self._limits.pop(task, None)
        else:
            self._limits[task] = setting

    # Administration: the rest of BrokerAdmin (cancel is above).

    def stats(self) -> dict[str, QueueStats]:
        """Counts per queue ever seen or paused, by name."""
        return {name: depth.stats() for name, depth in self.queue_depths().items()}

    def queue_depths(self) -> dict[str, QueueDepth]:
        """``stats`` with ready counts per priority and the oldest ready message's age."""
        with self._changed:
            now = time.time()
            self._tidy(now)
            counts: Counter[tuple[str, State]] = Counter()
            ready: dict[str, Counter[int | None]] = {q: Counter() for q in self._ready}
            oldest: dict[str, float] = {}
            for m in self._messages.values():
                counts[m.queue, m.state] += 1
                if m.state is State.QUEUED:
                    ready[m.queue][m.priority] += 1
                    oldest[m.queue] = min(oldest.get(m.queue, m.ready_at), m.ready_at)
            return {
                queue: QueueDepth(
                    queue,
                    dict(ready[queue]),
                    scheduled=counts[queue, State.SCHEDULED],
                    running=counts[queue, State.STARTED],
                    dead=counts[queue, State.DEAD],
                    paused=queue in self._paused,
                    oldest_age=max(now - oldest[queue], 0.0) if queue in oldest else None,
                )
                for queue in sorted(self._ready)
            }

    def pause(self, queue: str) -> None:
        """Stop handing out messages from ``queue``."""
        with self._changed:
            self._ready.setdefault(queue, {})
            self._paused.add(queue)

    def resume(self, queue: str) -> None:
        """Hand out messages from ``queue`` again."""
        with self._changed:
            self._paused.discard(queue)
            self._changed.notify_all()

    def purge(self, queue: str) -> int:
        """Delete ready and scheduled messages of ``queue``; leased ones stay."""
        with self._changed:
            self._tidy(time.time())
            doomed = [
                m
                for m in self._messages.values()
                if m.queue == queue and m.state in (State.QUEUED, State.SCHEDULED)
            ]
            for message in doomed:
                self._forget(message)
            if queue in self._ready:
                self._ready[queue].clear()  # it held only the messages just purged
        return len(doomed)

    def dead_letters(
        self, queue: str | None = None, offset: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters, newest first, of one queue or all."""
        with self._changed:
            self._tidy(time.time())
            newest_first = sorted(self._dead_of(queue), key=lambda m: m.seq, reverse=True)
            return [m.dead_letter() for m in newest_first[offset : offset + limit]]

    def dead_letter(self, id: str) -> DeadLetter | None:
        """The dead letter ``id``; None if ``id`` is not a dead letter."""
        with self._changed:
            self._tidy(time.time())
            message = self._messages.get(id)
            return message.dead_letter() if message and message.state is State.DEAD else None

    def requeue_dead(self, ids: Sequence[str] | None = None, queue: str | None = None) -> int:
        """Make dead letters ready with attempt 0: ``ids`` (of ``queue``), else all (of it)."""
        with self._changed:
            now = time.time()
            self._tidy(now)
            if ids is None:
                chosen = sorted(self._dead_of(queue), key=lambda m: m.seq)
            else:
                found = (self._messages.get(id) for id in dict.fromkeys(ids))
                chosen = [
                    m
                    for m in found
                    if m is not None and m.state is State.DEAD and queue in (None, m.queue)
                ]
            # One whose key another live message took meanwhile stays a dead letter.
            chosen = [m for m in chosen if self._take_key(m)]
            for message in chosen:
                del self._dead[message.queue][message.id]
                message.attempt = message.deliveries = 0
                message.reason = message.error = ""
                message.ready_at = now
                self._push_ready(message, next(self._seq))
            self._changed.notify_all()
        return len(chosen)

    def purge_dead(self, queue: str | None = None) -> int:
        """Delete dead letters of ``queue`` (or all); returns how many."""
        with self._changed:
            self._tidy(time.time())
            doomed = list(self._dead_of(queue))
            for message in doomed:
                self._forget(message)
        return len(doomed)

    def delete(self, id: str) -> bool:
        """Remove one message wherever it is; its lease, if any, goes stale."""
        with self._changed:
            self._tidy(time.time())
            message = self._messages.get(id)
            if message is None:
                return False
            self._forget(message)
        return True

    def locate(self, id: str) -> State | None:
        """QUEUED, SCHEDULED, STARTED or DEAD; None if gone."""
        with self._changed:
            self._tidy(time.time())
            message = self._messages.get(id)
            return None if message is None else message.state

    def peek(self, id: str, queue: str | None = None) -> Peeked | None:
        """The message ``id`` and where it is; None if gone. One dict lookup: ``queue``
        is not needed."""
        with self._changed:
            self._tidy(time.time())
            m = self._messages.get(id)
            if m is None:
                return None
            return Peeked(m.id, m.queue, m.priority, m.body, m.attempt, m.state)

    def ping(self) -> None:
        """Always answers: the store is in this process."""

    def close(self) -> None:
        """Nothing to release; the store stays usable."""

    # Internals; the caller holds the lock.

    def _place(
        self, message: _Message, eta: float | None, now: float, fair_key: str | None = None
    ) -> None:
        """Schedule ``message`` if ``eta`` is in the future, else make it ready (in its
        place by ``fair_key`` if given)."""
        message.token = ""
        if eta is not None and eta > now:
            message.state, message.eta, message.ready_at = State.SCHEDULED, eta, eta
            heapq.heappush(self._scheduled, (eta, next(self._seq), message.id))
        else:
            message.ready_at = now
            seq = next(self._seq) if fair_key is None else self._fair_seq(message, fair_key)
            self._push_ready(message, seq)

    def _fair_seq(self, message: _Message, fair_key: str) -> int:
        """The place in line of a message made ready with a fair key: ``max(next[key],
        head)`` (gopherq.brokers.base, "Fair keys"). Counters the head passed go once
        their number doubles since the last sweep, all of them when the line is empty."""
        line = (message.queue, message.priority)
        heap = self._ready[message.queue].get(message.priority)
        counters = self._fair.setdefault(line, {})
        if heap and self._has_ready(heap):
            head = heap[0][1]
            if len(counters) >= max(_FAIR_TIDY, 2 * self._fair_kept.get(line, 0)):
                self._fair[line] = counters = {k: n for k, n in counters.items() if n > head}
                self._fair_kept[line] = len(counters)
        else:
            head = next(self._seq)
            counters.clear()
        seq = max(counters.get(fair_key, head), head)
        counters[fair_key] = seq + 1
        return seq

    def _push_ready(self, message: _Message, seq: int) -> None:
        message.state, message.seq, message.token = State.QUEUED, seq, ""
        line = self._ready[message.queue].setdefault(message.priority, [])
        heapq.heappush(line, (message.priority, seq, message.id))

    def _take(self, queues: list[str], limit: int, now: float) -> list[Delivery]:
        heaps = [
            heap
            for q in queues
            if q in self._ready and q not in self._paused
            for heap in self._ready[q].values()
        ]
        taken: list[Delivery] = []
        while len(taken) < limit:
            live = [heap for heap in heaps if self._has_ready(heap)]
            if not live:
                break
            _, _, id = heapq.heappop(min(live, key=lambda heap: heap[0]))
            taken.append(self._lease(self._messages[id], now))
        return taken

    def _take_ordered(
        self, queues: list[str], limit: int, now: float, order: ReserveOrder
    ) -> list[Delivery]:
        """``_take`` in ``order``: ranked by (queue position when strict, aged level or
        priority, place in line). A queue without aging offers the first ``limit`` of
        each priority's heap (popped, the others pushed back); one with aging is looked
        through whole (this broker is for tests), its heaps rebuilt if it gave."""
        ranked: list[tuple[int, int, int, _Message]] = []
        popped: list[tuple[int, int, str]] = []
        scanned: list[str] = []
        for position, queue in enumerate(queues):
            heaps = self._ready.get(queue)
            if heaps is None or queue in self._paused:
                continue
            rank = position if order.strict else 0
            period = order.aging.get(queue)
            if period is None:
                for heap in heaps.values():
                    entries: _Heap = []
                    while len(entries) < limit and self._has_ready(heap):
                        entries.append(heapq.heappop(heap))
                    popped += entries
                    ranked += [(rank, p, seq, self._messages[id]) for p, seq, id in entries]
                continue
            scanned.append(queue)
            for heap in heaps.values():
                for _, seq, id in heap:
                    m = self._messages.get(id)
                    if m is not None and m.state is State.QUEUED and m.seq == seq:
                        level = aged(m.priority, now - m.ready_at, period)
                        ranked.append((rank, level, seq, m))
        best = heapq.nsmallest(limit, ranked, key=lambda entry: entry[:3])
        taken = {entry[3].id for entry in best}
        for entry in popped:
            if entry[2] not in taken:
                message = self._messages[entry[2]]
                heapq.heappush(self._ready[message.queue][message.priority], entry)
        for queue in set(scanned) & {entry[3].queue for entry in best}:
            for heap in self._ready[queue].values():
                heap[:] = [entry for entry in heap if entry[2] not in taken]
                heapq.heapify(heap)
        return [self._lease(entry[3], now) for entry in best]

    def _lease(self, message: _Message, now: float) -> Delivery:
        message.state = State.STARTED
        message.token = secrets.token_hex(8)
        message.deliveries += 1
        message.lease_until = now + self.lease_seconds
        heapq.heappush(self._leases, (message.lease_until, message.id))
        if message.key_until_start:
            self._release_key(message)
            message.key = None
        return message.delivery()

    def _wake_parked(self, key: str, count: int) -> None:
        """Make up to ``count`` messages parked for ``key`` ready in their old place in
        line; entries of messages that left their parking meanwhile are dropped."""
        parked = self._parked.get(key, [])
        woken = 0
        while parked and woken < count:
            _, seq, until, id = heapq.heappop(parked)
            message = self._messages.get(id)
            if message is not None and message.state is State.SCHEDULED and message.eta == until:
                self._push_ready(message, seq)
                woken += 1
        if woken:
            self._changed.notify_all()

    def _has_ready(self, heap: _Heap) -> bool:
        """Drop stale entries off the top of ``heap``; True if a ready message remains."""
        while heap:
            _, seq, id = heap[0]
            message = self._messages.get(id)
            if message is not None and message.state is State.QUEUED and message.seq == seq:
                return True
            heapq.heappop(heap)
        return False

    def _tidy(self, now: float) -> int:
        """Make due and expired messages ready, drop old dead letters; returns how many moved."""
        moved = 0
        while self._scheduled and self._scheduled[0][0] <= now:
            eta, _, id = heapq.heappop(self._scheduled)
            message = self._messages.get(id)
            if message is not None and message.state is State.SCHEDULED and message.eta == eta:
                self._push_ready(message, message.seq if message.deferred else next(self._seq))
                message.deferred = False
                moved += 1
        while self._leases and self._leases[0][0] <= now:
            until, id = heapq.heappop(self._leases)
            message = self._messages.get(id)
            if (
                message is not None
                and message.state is State.STARTED
                and message.lease_until == until
            ):
                self._push_ready(message, message.seq)
                moved += 1
        expiry = self._finished_expiry
        while expiry and expiry[0][0] <= now:
            until, queue, key = heapq.heappop(expiry)
            if self._finished.get((queue, key), ("", 0.0))[1] == until:
                del self._finished[queue, key]
        cutoff = now - self.dead_letter_ttl
        for letters in self._dead.values():
            while letters and (oldest := next(iter(letters.values()))).died <= cutoff:
                self._forget(oldest)
        if moved:
            self._changed.notify_all()
        return moved

    def _next_due(self, now: float) -> float:
        """Seconds until the next eta or lease expiry; infinity if there is none."""
        times = [heap[0][0] for heap in (self._scheduled, self._leases) if heap]
        return max(min(times) - now, 0.0) if times else math.inf

    def _held(self, delivery: Delivery) -> _Message | None:
        """The message ``delivery`` still holds by its token, or None."""
        message = self._messages.get(delivery.id)
        if message is None or message.state is not State.STARTED:
            return None
        return message if message.token == delivery.token else None

    def _dead_of(self, queue: str | None) -> list[_Message]:
        if queue is not None:
            return list(self._dead.get(queue, {}).values())
        return [m for letters in self._dead.values() for m in letters.values()]

    def _forget(self, message: _Message) -> None:
        del self._messages[message.id]
        self._release_key(message)
        if message.state is State.DEAD:
            del self._dead[message.queue][message.id]

    def _release_key(self, message: _Message) -> None:
        """Free the message's idempotency key if it holds it."""
        if message.key is not None and self._keys.get((message.queue, message.key)) == message.id:
            del self._keys[message.queue, message.key]

    def _key_holder(self, queue: str, key: str, now: float) -> str | None:
        """The id of the live message holding ``key`` in ``queue``, else of the finished
        one whose key is held until after ``now``; None if neither."""
        held = self._keys.get((queue, key))
        if held is None and (finished := self._finished.get((queue, key))) is not None:
            held = finished[0] if finished[1] > now else None
        return held

    def _keep_finished_key(self, message: _Message, until: float) -> None:
        """Hold the key of ``message`` (being acked) until ``until``, if it holds it."""
        if message.key is not None and self._keys.get((message.queue, message.key)) == message.id:
            self._finished[message.queue, message.key] = (message.id, until)
            heapq.heappush(self._finished_expiry, (until, message.queue, message.key))

    def _take_key(self, message: _Message) -> bool:
        """Make the message hold its idempotency key again; False if another holds it."""
        if message.key is None:
            return True
        holder = self._keys.setdefault((message.queue, message.key), message.id)
        return holder == message.id
