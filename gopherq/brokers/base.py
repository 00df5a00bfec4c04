"""The broker contract: what every broker does, and the records it hands back.

Batch-first and at-least-once. Every method is safe to call from many threads,
processes and machines at once, and every state change is atomic in the broker.
The broker sees message bodies as opaque bytes: only the routing fields of
``Envelope`` cross the seam.

``Broker``'s abstract methods are the hot path, all a new broker must implement;
``BrokerAdmin`` (which ``Broker`` extends) holds the optional rest, with defaults:
cancel, counts, pause, purge, dead letters, lookup (``locate``, ``peek``),
concurrency limits (``admit``).

A message is in one of four places::

    scheduled --(eta reached)--> ready --(reserve)--> leased --(ack)--> gone
        ^                          ^                    |
        |                          +-----(requeue)------+
        +----------------(retry: attempt + 1)-----------+
                                                        +--(dead)--> dead letters

A lease carries a per-delivery token; ``ack``, ``retry``, ``dead`` and
``extend`` ignore a delivery whose token no longer matches (its lease expired
and the message went to another worker).

``cancel`` removes a ready or scheduled message outright. A leased one stays
where it is, marked: its worker learns of the mark through ``cancel_requested``
and stops the task, and should the message come back to ready anyway (its
worker died, or gave it back), the mark travels with it and the next reserve
hands it out with ``cancelled=True``, not to be run.

Idempotency keys are per queue: a key names one live message within its queue
(ready, scheduled or leased), and the same key in another queue is another
message. While a message holds its key, an enqueue with that key to that queue
stores nothing and returns the holder's id. The key is free again once the
message is acked, cancelled, deleted or purged, and also once it is
dead-lettered, so that a keyed job that died can be sent again. ``requeue_dead``
takes the key back; a dead letter whose key another live message holds
meanwhile stays a dead letter (that message stands for the job).

How long a key is held beyond that, the envelope says (``Envelope.key_ttl``,
``Envelope.key_until_start``):

- ``key_ttl`` seconds (a finished key): an ack keeps the key held for that long
  after it, by the broker's clock, and an enqueue with the key meanwhile stores
  nothing and returns the finished message's id, as a live holder's. Only an ack
  of a message that holds its key and was not cancelled keeps it; a live holder
  comes first (a dead letter requeued meanwhile); nothing frees a finished key
  before its time but the time.
- ``key_until_start``: the key is freed as soon as the message is reserved (it
  does not take it back if it goes back to ready).
- neither (the default): freed at the ack, as above.

Fair keys (optional; a broker may ignore them, the built-in ones honour them):
within one queue and priority, ready messages of different fair keys take turns,
so that one key's burst does not hold back another key's messages. A broker
places a keyed message, as enqueue makes it ready, at ``max(next[key], head)``
in line, where ``head`` is the place of the first ready message of that queue
and priority (now when there is none) and ``next[key]`` one step behind the
key's last message; a burst of one key spreads one step apart from the head on,
and a key that sends later lands at the head, between them. The counters are
kept in the broker, changed in enqueue's atomic step, and dropped once the head
passes them (all of a queue and priority when its line is empty), so they stay
as few as the keys with ready messages. Messages without a key keep their place
by send time; requeue and lease expiry keep a message's place; a keyed message
with an eta in the future, a retry and a requeued dead letter line up as one
without a key.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gopherq.errors import NotSupported
from gopherq.limits import RateSetting, claim
from gopherq.redaction import UrlRepr
from gopherq.redaction import redact_url as redact_url  # noqa: PLC0414  # its former home
from gopherq.states import State

_PURGE_PAGE = 500
"""Dead letters listed per step of the default ``purge_dead``."""
_DEAD_SCAN_PAGE = 500
"""Dead letters listed per step of the default ``dead_letters_for``."""
DEAD_SCAN_LIMIT = 10_000
"""Newest dead letters the default ``dead_letters_for`` looks through at most."""
RATE_SLOT_KEPT = 3600.0
"""Seconds past its time that ``rate_admit`` remembers a slot claimed for a message."""


def rate_slot(
    remembered: float | None, tat: float, now: float, interval: float, burst: int
) -> tuple[float, float]:
    """A message's slot in a rate bucket whose theoretical arrival time is ``tat``, and
    the bucket's TAT after it: the slot remembered for the message when there is one
    not older than ``RATE_SLOT_KEPT``, else a new claim (``gopherq.limits.claim``)."""
    if remembered is not None and remembered >= now - RATE_SLOT_KEPT:
        return remembered, tat
    wait, tat = claim(tat, now, interval, burst)
    return now + wait, tat


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message as the broker stores it: routing fields plus the encoded body."""

    id: str
    queue: str
    priority: int
    body: bytes
    eta: float | None = None
    """Unix seconds before which the message is not runnable."""
    key: str | None = None
    """Idempotency key: while a live message of this queue holds it, enqueue returns
    that message's id (see the module docstring)."""
    key_ttl: float | None = None
    """Seconds the key stays held after the message is acked, answering with its id;
    None or 0: freed at the ack. Only with ``key``."""
    key_until_start: bool = False
    """Free the key when the message is reserved, not when it is settled. Only with
    ``key``."""
    fair_key: str | None = None
    """Fair-sharing key: within a queue and priority, the keys take turns (see the
    module docstring)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A reserved message under lease."""

    id: str
    queue: str
    priority: int
    body: bytes
    attempt: int
    """Executions before this one that ended in a retry (0 on the first run)."""
    deliveries: int
    """Times this attempt has been delivered, this one included."""
    token: str
    """Proves the lease; settling with a stale token does nothing."""
    cancelled: bool = False
    """A cancel was requested while the message was leased: settle it, do not run it."""


@dataclass(frozen=True, slots=True)
class Cancellation:
    """What ``Broker.cancel`` did to one message."""

    id: str
    queue: str
    was: State
    """``QUEUED`` or ``SCHEDULED``: removed, it will never run. ``STARTED``: leased,
    so only marked; its worker stops it."""
    body: bytes
    attempt: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message in a dead-letter queue."""

    id: str
    queue: str
    priority: int
    body: bytes
    attempt: int
    reason: str
    error: str
    died: float
    """Unix seconds when it was dead-lettered."""


@dataclass(frozen=True, slots=True)
class Peeked:
    """A message the broker holds, read by id (``BrokerAdmin.peek``) without moving it."""

    id: str
    queue: str
    priority: int
    body: bytes
    attempt: int
    state: State
    """Where it is, as ``locate`` says: QUEUED, SCHEDULED, STARTED (leased) or DEAD."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts for one queue."""

    name: str
    ready: int = 0
    scheduled: int = 0
    running: int = 0
    dead: int = 0
    paused: bool = False


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """One queue as a monitoring scrape sees it (``Broker.queue_depths``)."""

    name: str
    ready: Mapping[int | None, int] = field(default_factory=dict)
    """Ready messages by priority (priorities with none left out). The key None holds
    those of a broker that cannot tell priorities apart."""
    scheduled: int = 0
    running: int = 0
    dead: int = 0
    paused: bool = False
    oldest_age: float | None = None
    """Seconds the oldest ready message has waited since it became runnable (enqueued,
    or its eta reached); None when none is ready or the broker cannot tell."""

    def stats(self) -> QueueStats:
        """The counts of ``Broker.stats``."""
        ready = sum(self.ready.values())
        return QueueStats(self.name, ready, self.scheduled, self.running, self.dead, self.paused)


@dataclass(frozen=True, slots=True)
class ReserveOrder:
    """How ``Broker.reserve_ordered`` picks, beyond ``reserve``'s priority order.

    ``strict``: the queues in the order given, all ready work of one before any of the
    next (a paused or empty queue is passed over). Otherwise priority across the queues,
    as ``reserve`` does.

    ``aging``: per queue, seconds per priority level. A message of such a queue gains
    a level for each whole period it has waited in line, up to level 0:
    ``max(0, priority - floor(waited / period))``, at the time of the reserve. Messages
    rank by that level, then by when they joined the line, so that a bulk message (4)
    that waited 4 periods goes before every critical one (0) that joined after it.
    Queues not named keep their priority.
    """

    strict: bool = False
    aging: Mapping[str, float] = field(default_factory=dict)


def aged(priority: int, waited: float, period: float) -> int:
    """The level of a message of ``priority`` that has waited ``waited`` seconds in a
    queue with aging ``period`` (see ``ReserveOrder``)."""
    return max(0, priority - max(0, math.floor(waited / period)))


class BrokerAdmin(UrlRepr):
    """The optional part of the broker contract: what operators, tools and ``cancel``
    ask of a broker beyond moving messages.

    Every method has a default, so a new broker starts with ``Broker``'s hot path
    alone and adds these one by one. A default either builds the operation on the
    broker's other methods (``purge_dead``: what ``dead_letters`` lists, deleted
    through ``delete``) or, where nothing can stand in for it, raises
    ``NotSupported`` naming the broker and the operation (the CLI shows it as a
    one-line error). ``cancel_requested``'s default is "none": a broker without
    ``cancel`` marks nothing. A broker that implements ``cancel`` must implement
    ``cancel_requested`` too (checked when the class is defined), or its workers
    would never stop a cancelled task.

    The built-in brokers implement every method, each atomically.
    """

    __slots__ = ()
    url: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cancels = cls.cancel is not BrokerAdmin.cancel
        if cancels and cls.cancel_requested is BrokerAdmin.cancel_requested:
            raise TypeError(
                f"{cls.__name__} implements cancel but not cancel_requested: "
                "its workers would never see a cancel"
            )

    def not_supported(self, operation: str) -> NotSupported:
        """The error for ``operation``, which this broker does not implement."""
        return NotSupported(f"{type(self).__name__} ({redact_url(self.url)})", operation)

    # Cancelling.

    def cancel(self, ids: Sequence[str]) -> list[Cancellation]:
        """Cancel messages (see the module docstring): a ready or scheduled one is
        removed with its idempotency key, a leased one is marked.

        Returns one ``Cancellation`` per message found ready, scheduled or leased;
        dead letters and unknown ids are left alone and left out. Cancelling a
        marked message again reports it again and changes nothing.
        """
        raise self.not_supported("cancel")

    def cancel_requested(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The ids, among these leased deliveries, whose message is marked cancelled.

        Default: none, which is right for a broker that does not implement ``cancel``.
        """
        return set()

    # Rate limits (docs/flow-control.md). A worker asks only for tasks that have one.

    def rate_admit(
        self, key: str, interval: float, burst: int, deliveries: Sequence[Delivery]
    ) -> list[float]:
        """Claim a slot of the bucket ``key`` for each delivery, in order (GCRA, see
        ``gopherq.limits``): seconds until its slot, 0.0 for "run now".

        One atomic step with the broker's clock. The slot of a delivery that must
        wait is remembered (by queue and id) until it is asked for again: then it
        answers 0.0 (or the seconds still left) and claims no second slot, so a
        message put back with ``defer`` pays once. A slot remembered longer than
        ``RATE_SLOT_KEPT`` seconds is forgotten (its message was cancelled, say).
        """
        raise self.not_supported("rate_admit")

    def rate_keep(self, key: str, deliveries: Sequence[Delivery]) -> int:
        """Remember, for each delivery, the slot of bucket ``key`` that ``rate_admit`` just
        answered 0.0 ("run now"), as if it waited for it: another bucket of its task makes
        it wait. When it comes back, ``rate_admit`` answers it 0.0 again and claims no
        second slot: a message pays each of its buckets once, and keeps its place in the
        line of each. Forgotten as any remembered slot (``RATE_SLOT_KEPT`` from now).
        Returns how many were not remembered already."""
        raise self.not_supported("rate_keep")

    def defer(self, deliveries: Sequence[Delivery], countdowns: Sequence[float]) -> int:
        """Put leased messages back as scheduled ``countdowns`` seconds from now (the
        broker's clock), without counting an attempt or the delivery; 0 or less: ready
        at once, in their old place in line. Returns how many were still held.

        For a message that must wait for its rate-limit slot, or whose task raised
        ``RateLimited``: it holds no worker while it waits.
        """
        raise self.not_supported("defer")

    def rate_release(self, key: str) -> int:
        """Forget the bucket ``key`` (a fresh start for a new rate) and make the messages
        still scheduled for one of its slots ready at once, in their old place in line,
        to claim slots of the new rate. Returns how many became ready."""
        raise self.not_supported("rate_release")

    def rate_limits(self) -> dict[str, RateSetting]:
        """The table of rate limits set at run time and task holds, by task name.

        A hold that ended is not listed (a task left with no rate then is not either),
        and the broker deletes it: when read, or at its periodic tidy.
        """
        raise self.not_supported("rate_limits")

    def set_rate_limit(self, task: str, rate: str | None, burst: int = 1) -> None:
        """Set (``rate`` None: remove) the run-time rate limit of ``task``; a hold stays."""
        raise self.not_supported("set_rate_limit")

    def hold_rate(self, task: str, seconds: float) -> float:
        """Pause ``task`` until ``seconds`` from now (the broker's clock; a later hold
        already there stays); returns the unix time it holds until."""
        raise self.not_supported("hold_rate")

    # Administration.

    def stats(self) -> dict[str, QueueStats]:
        """Counts per known queue."""
        raise self.not_supported("stats")

    def queue_depths(self) -> dict[str, QueueDepth]:
        """``stats`` broken down for monitoring, for every known queue at once: ready
        counts per priority and the age of the oldest ready message.

        The scrape of ``gopherq exporter``: a broker answers it in one query, or one
        call per queue in one round trip. This default, built on ``stats``, reports
        ready under priority None and no age (and needs ``stats``).
        """
        return {
            name: QueueDepth(
                name,
                {None: stats.ready} if stats.ready else {},
                stats.scheduled,
                stats.running,
                stats.dead,
                stats.paused,
            )
            for name, stats in self.stats().items()
        }

    def pause(self, queue: str) -> None:
        """Stop handing out messages from ``queue``; enqueue still works."""
        raise self.not_supported("pause")

    def resume(self, queue: str) -> None:
        """Undo ``pause``."""
        raise self.not_supported("resume")

    def purge(self, queue: str) -> int:
        """Delete ready and scheduled messages of ``queue``; returns how many."""
        raise self.not_supported("purge")

    def dead_letters(
        self, queue: str | None = None, offset: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters, newest first, of one queue or all."""
        raise self.not_supported("dead_letters")

    def dead_letters_for(
        self, reason: str, queue: str | None = None, offset: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters with ``reason``, newest first, of one queue or all.

        Default: ``dead_letters`` a page at a time, filtered, looking through the newest
        ``DEAD_SCAN_LIMIT`` only (older ones are not matched); a broker that can select
        by reason overrides it and matches them all.
        """
        found: list[DeadLetter] = []
        for start in range(0, DEAD_SCAN_LIMIT, _DEAD_SCAN_PAGE):
            page = self.dead_letters(queue, start, _DEAD_SCAN_PAGE)
            found.extend(letter for letter in page if letter.reason == reason)
            if len(found) >= offset + limit or len(page) < _DEAD_SCAN_PAGE:
                break
        return found[offset : offset + limit]

    def dead_letter(self, id: str) -> DeadLetter | None:
        """The dead letter ``id``; None if ``id`` is not a dead letter.

        Default: ``locate``, then ``dead_letters`` of every queue a page at a time
        until it is found (so it needs both).
        """
        if self.locate(id) is not State.DEAD:
            return None
        offset = 0
        while letters := self.dead_letters(None, offset, _PURGE_PAGE):
            for letter in letters:
                if letter.id == id:
                    return letter
            offset += len(letters)
        return None

    def requeue_dead(self, ids: Sequence[str] | None = None, queue: str | None = None) -> int:
        """Make dead letters ready again with attempt 0: these ids, else all (of ``queue``).

        Each takes its idempotency key back; one whose key another live message holds
        stays a dead letter and is not counted.
        """
        raise self.not_supported("requeue_dead")

    def purge_dead(self, queue: str | None = None) -> int:
        """Delete dead letters of ``queue`` (or all); returns how many.

        Default: deletes what ``dead_letters`` lists, a page at a time, through
        ``delete`` (so it needs both). Not one atomic step: a message dead-lettered
        meanwhile may stay.
        """
        deleted = skipped = 0
        while letters := self.dead_letters(queue, skipped, _PURGE_PAGE):
            for letter in letters:
                if self.delete(letter.id):
                    deleted += 1
                else:  # gone meanwhile, or not deletable: do not list it again
                    skipped += 1
        return deleted

    def delete(self, id: str) -> bool:
        """Remove one message wherever it is; True if it existed."""
        raise self.not_supported("delete")

    def locate(self, id: str) -> State | None:
        """Where a message is: QUEUED, SCHEDULED, STARTED (leased) or DEAD; None if gone."""
        raise self.not_supported("locate")

    def locate_many(
        self, ids: Sequence[str], queues: Sequence[str | None] | None = None
    ) -> list[State | None]:
        """``locate`` of each id, in order (default: one ``locate`` each; a networked
        broker asks for all of them in one round trip).

        ``queues``, when the caller knows them (a job record names its queue), holds
        each id's queue or None (not known): a message never leaves its queue, so a
        broker that keeps messages by queue looks there only.
        """
        return [self.locate(id) for id in ids]

    def peek(self, id: str, queue: str | None = None) -> Peeked | None:
        """The message ``id`` wherever the broker holds it (ready, scheduled, leased or
        dead), with where it is (as ``locate`` says), without taking it; None if gone.

        One lookup by id, never a scan of a queue. ``queue``, when the caller knows
        it, is where to look first (a broker that keys messages by queue then reads
        one place; it still finds a message of another queue).

        Default: None, as if the broker held no message: a broker that cannot read a
        message by id still serves every page that shows one (without its arguments).
        """
        return None

    # Concurrency limits (docs/flow-control.md): a lease-backed set of holders per key.

    def admit(self, delivery: Delivery, key: str, limit: int) -> bool:
        """Let ``delivery`` run as one of at most ``limit`` holders of ``key``, or park it.

        One atomic step: holders whose lease ran out stop counting (and parked
        messages are woken for the slots they freed); then, with fewer than ``limit``
        holders left, the delivery becomes one, leased as its message is (renewed by
        ``renew_admitted``), and True is returned. Otherwise its message is parked:
        it leaves its lease with the delivery uncounted, waits as SCHEDULED (admin
        sees, cancels, deletes and purges it as such) and joins ``key``'s line,
        from which ``release_admitted`` takes it back to its old place in the ready
        line. A parked message is ready again after one lease at the latest, should
        its wake-up be lost. Returns False then, and also, changing nothing, when the
        lease of ``delivery`` was lost: either way the caller must not run it.
        """
        raise self.not_supported("concurrency limits (admit)")

    def release_admitted(self, admitted: Sequence[tuple[str, Delivery]]) -> int:
        """Free the slots these (key, delivery) pairs hold, once their run is settled;
        for each slot freed the first message parked for its key is made ready again.
        Returns how many were still holders.

        A broker may wake a parked message for a pair that held no slot any more (its
        holder lease ended): that message finds no room and is parked again."""
        raise self.not_supported("concurrency limits (release)")

    def renew_admitted(self, admitted: Sequence[tuple[str, Delivery]]) -> int:
        """Renew the holder leases of these (key, delivery) pairs, as ``extend`` renews
        message leases; returns how many were still holders."""
        raise self.not_supported("concurrency limits (renew)")

    def supports_admission(self) -> bool:
        """Whether this broker implements ``admit`` (and so concurrency limits)."""
        return type(self).admit is not BrokerAdmin.admit


class Broker(BrokerAdmin, ABC):
    """Moves messages between producers and workers. See the module docstring.

    The abstract methods are the hot path: what a worker and a producer need, and
    all a new broker must implement. The rest, inherited from ``BrokerAdmin``, have
    defaults (see docs/brokers.md, Writing a broker).
    """

    url: str

    @abstractmethod
    def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]:
        """Store messages (ready, or scheduled when ``eta`` is in the future) in one step.

        Returns the id each envelope now stands for: its own, or for an
        idempotency key already held by a live message, that message's id.
        """

    @abstractmethod
    def reserve(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Lease up to ``limit`` runnable messages, highest priority first.

        Blocks up to ``timeout`` seconds while none is runnable; returns an empty
        list on timeout. Paused queues are skipped. Due scheduled messages and
        expired leases are made ready first.
        """

    def reserve_ordered(
        self, queues: Sequence[str], limit: int, timeout: float, order: ReserveOrder
    ) -> list[Delivery]:
        """``reserve`` in ``order``: strict queue order, priority aging (``ReserveOrder``).

        Blocks as ``reserve`` does, on all the queues. A worker calls it only when its
        queues have weights, ``--strict`` or priority aging; plain ``reserve`` stays
        the hot path.

        Default, for a broker that does not override it: strict order as one ``reserve``
        per queue until ``limit`` is reached (then a blocking ``reserve`` of them all
        when none had work); aging raises ``NotSupported``.
        """
        if order.aging:
            raise self.not_supported("priority aging")
        if not order.strict:
            return self.reserve(queues, limit, timeout)
        taken: list[Delivery] = []
        for queue in queues:
            if len(taken) >= limit:
                break
            taken += self.reserve([queue], limit - len(taken), 0.0)
        return taken or self.reserve(queues, limit, timeout)

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> int:
        """Forget finished messages; returns how many were still held by their token."""

    @abstractmethod
    def retry(self, delivery: Delivery, countdown: float, error: str) -> bool:
        """Schedule the message again ``countdown`` seconds from now, with ``attempt + 1``.

        "Now" is the broker's clock (Redis ``TIME``, the SQLite host's clock), never
        the caller's: a worker whose clock is off cannot shift the backoff. A
        ``countdown`` of 0 or less makes it ready at once, at the back of the line.
        Returns False, doing nothing, if the lease was lost.
        """

    @abstractmethod
    def dead(self, delivery: Delivery, reason: str, error: str) -> bool:
        """Move the message to its queue's dead letters; False if the lease was lost."""

    @abstractmethod
    def extend(self, deliveries: Sequence[Delivery]) -> int:
        """Renew leases of running work; returns how many were still held."""

    @abstractmethod
    def held(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The ids, among ``deliveries``, still leased under their token; renews those
        leases as ``extend`` does, so the answer stays true for a lease more.

        A worker asks this before storing job records (when the result store is
        not the broker's own): an outcome whose lease was lost must not be stored
        over the record of the worker that now holds the message.
        """

    @abstractmethod
    def requeue(self, deliveries: Sequence[Delivery], *, started: bool = False) -> int:
        """Give messages back as ready at once, keeping their place in priority order.

        ``started=False`` (prefetched, never run): the delivery is not counted.
        ``started=True`` (its worker died running it): the delivery counts
        towards ``max_deliveries``.
        """

    @abstractmethod
    def recover(self) -> int:
        """Make expired leases and due scheduled messages ready; returns how many moved."""

    @abstractmethod
    def ping(self) -> None:
        """Return if the broker answers; raise ``BrokerUnavailable`` otherwise."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. The broker may be used again afterwards (reconnects)."""
