"""Redis broker: many machines share one Redis, or one Redis Cluster.

Supports the whole broker contract, every state change one Lua script:

* batch enqueue in one round trip (a whole batch per script call, in chunks of
  ``ENQUEUE_CHUNK``, every chunk in one pipeline), idempotency keys (held past the
  ack for ``key_ttl`` as a string with a time to live, or freed at reserve), delayed
  messages (``eta``) in a sorted set until due, never held by a worker;
* reserve in one script: due etas and expired leases first go back in line, then
  up to ``limit`` messages, strict priority and FIFO within a priority (across
  several queues too), each leased under a per-delivery token;
* ack, extend and requeue of whole batches in one round trip; retry, dead letters
  per queue with reason, error, attempt and time, kept by age and by count;
* cancel: a ready or scheduled message is removed, a leased one marked (a field of
  its hash, which requeue, lease expiry and retry keep and reserve reads in the
  same HMGET); ``cancel_requested`` asks one script call per queue;
* rate limits (``rate_admit``, ``defer`` and the rest, in ``rates``): a bucket per
  limit key in a hash slot of its own, one script call per claim;
* pause and resume, purge, stats, dead-letter paging, requeue and delete; one
  message read by id (``peek``: one script call when its queue is given).

Ready messages of a queue sit in one sorted set scored by priority, then by a
time-based sequence number (DESIGN.md sketched a list per priority): requeue
and lease expiry put a message back exactly in its old place in line, and
several queues merge by (priority, enqueue time). Priorities 0 to 31 order
exactly; others order as the nearest of those and keep their value.

Time is Redis ``TIME``, read inside the scripts: worker clocks never decide a
lease or an eta. A worker that dies loses its leases when they expire (they are
renewed while tasks run) and its messages go back to ready for others.

Blocking reserve without polling: a script that makes a message ready pushes a
wake token onto ``P:{q}:wake`` (a list capped at one entry), so a token is there
whenever messages are ready. A reserve BLPOPs the wake lists of its queues, for
no longer than until the next due eta or lease expiry (as its last reserve
reported), with the reserve script pipelined behind the BLPOP in the same write:
Redis runs the script the moment the BLPOP returns, so a task enqueued on an idle
system is leased without another round trip (well under a millisecond on
loopback), and a worker back from a batch finds the next one in one round trip.
A reserve that leaves messages behind pushes a token again, so several idle
workers wake in a chain, one per batch taken; one that finds nothing drops the
stale token. A BLPOP timeout fires only at the server's next ``hz`` tick (every
100 ms at the default ``hz 10``), so a reserve waiting for a due time (an eta, an
expired lease) blocks until ``HZ_SLACK`` before it and checks every
``PRECISE_POLL`` from there: a delayed task starts a few milliseconds after its
eta, and an idle worker with nothing scheduled never polls.

Redis Cluster: all keys of one queue share the hash tag ``{queue}``, so every
script touches one slot. Reserving from several queues that live in different
slots takes a round trip per queue: a first pass tidies each queue and reports
its best ready score, then the queues are taken from best first, so priority
holds across queues (as exactly as the moment between the two passes allows).
An idle worker on several cluster queues blocks on the wake list of its first
queue and checks the others every ``CLUSTER_POLL`` seconds: BLPOP cannot wait
on keys of several slots, and a shared wake key would put every queue's
enqueue on one slot. One queue (the common case) blocks with no delay.

Cross-queue state lives in a slot of its own: ``P:{_}:queues``, the set of
queue names known to ``stats``, ``recover`` and the admin calls that take no
queue (``locate``, ``delete``, ``dead_letters()``, ``peek`` without its queue).
Dead letters are read in two passes, the newest ids and then the letters of the
page (``gopherq.brokers.redis.dead``).

Idempotency keys are held per queue (a key names one message within its queue). A
queue name must not be empty or start with ``}`` (its keys would get an empty hash
tag).

Outage: producers (``enqueue`` and the settling calls) retry a failed call a few
times within about two seconds, then raise ``BrokerUnavailable`` (a repeated
enqueue is harmless: an id already stored is not stored again); ``reserve``
raises it at once (the worker logs, backs off and calls again) and is never
repeated, since a reserve whose reply was lost has leased messages that nobody
received: they come back when their lease expires. Everything Redis kept is
there when it returns; scripts are loaded again after a restart.

Redis must not evict keys: at first connect the broker logs a warning when
``maxmemory-policy`` is not ``noeviction``. Full (``maxmemory``): enqueue is refused
whole (``BrokerUnavailable``, "full (maxmemory)", not repeated), while every script
that takes, settles, gives back, dead-letters, tidies, purges, deletes or resumes
still runs (Redis 7 script flag ``allow-oom``, see lib.lua): those move or free
messages, so workers drain what is stored and memory frees. They grow memory only
by a few fields per message (lease token, deliveries) and a dead letter's error
text, kept to ``ERROR_MAX`` characters. A Redis before 7 takes no script flags:
the scripts then run without (a warning says so), refused at maxmemory as before.

Entries written by others: a foreign producer writing these keys directly may
leave an id in a sorted set with no message hash, a key that is not a hash, a hash
with no body, fields that are not whole numbers (priority, attempt, deliveries,
seq), a wrong state letter, odd scores, an id that is not UTF-8. No script fails
on them and no message is lost: tidy puts such a message in line like any other
(an id with no hash as a stub hash), and reserve repairs its hash (body ``''`` if
none; priority 2, attempt 0, deliveries 0 where unusable; an id that is not UTF-8
moves to ``bad-id-<hex of its bytes>``) and hands it out, deliveries counted. Its
worker then runs it, or dead-letters it ``DECODE_ERROR`` with the reason ("empty
body, the broker entry holds no message" when it had none), where an operator sees
it and its retention ends it. Stub rather than drop: a planted id is a message someone
meant to send, and dead letters are where the operator looks. ``stats``,
``locate``, ``cancel``, ``delete`` and ``dead_letters`` find such entries by the
sorted set that holds them when their state letter is wrong. A queue's own keys
(sorted sets, wake list, seq) of the wrong type are not repaired.

URLs (redis-py's own query options, such as ``socket_timeout``, pass through)::

    redis://[[user]:password@]host[:port][/db]
    rediss://[[user]:password@]host[:port][/db]?ssl_cert_reqs=required   (TLS)
    unix://[[user]:password@]/path/to/redis.sock?db=0
    redis+cluster://[[user]:password@]host:port    (any node; rediss+cluster:// for TLS)

Options (query string):
    prefix (str): first part of every key. Default ``gq``.
    dead_letter_max (int): most dead letters kept per queue; the oldest go first.
        Default 10,000.

Options (keywords):
    lease_seconds (float): how long ``reserve`` leases a message. Default 30.
    dead_letter_ttl (float): seconds a dead letter is kept. Default 7 days.
    dead_letter_max (int): as above; wins over the URL.

Key layout: see ``scripts/lib.lua``; for concurrency limits (``admit``) see
``concurrency.py`` and ``scripts/concurrency_*.lua``.
"""

from __future__ import annotations

import functools
import math
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from gopherq.brokers.base import (
    DEAD_SCAN_LIMIT,
    Broker,
    Cancellation,
    DeadLetter,
    Delivery,
    Envelope,
    Peeked,
    QueueDepth,
    QueueStats,
    ReserveOrder,
)
from gopherq.brokers.redis.concurrency import ConcurrencyLimits
from gopherq.brokers.redis.dead import UNITS, DeadLetterReader
from gopherq.brokers.redis.rates import RedisRates
from gopherq.errors import ConfigurationError
from gopherq.states import State
from gopherq.stores.redis import (
    Call,
    Client,
    Connection,
    RedisURL,
    Script,
    script,
    unpack,
)

__all__ = ["RedisBroker"]

_T = TypeVar("_T")

ENQUEUE_CHUNK = 1000
"""Messages per enqueue script call: bounds how long one call holds Redis."""
SETTLE_CHUNK = 1000
"""Deliveries per ack, extend or requeue script call."""
ERROR_MAX = 10_000
"""Characters of a dead letter's error text kept (dead letters are stored at maxmemory)."""
ADMIN_BATCH = 1000
"""Messages one purge or requeue_dead call moves; the broker calls again until done."""
TIDY_BATCH = 1000
"""Messages of each kind one tidy step moves (``BATCH`` in lib.lua)."""
CLUSTER_POLL = 0.1
"""Seconds between checks of the other queues when blocked on several cluster queues."""
HZ_SLACK = 0.1
"""How long before a due time a blocked reserve stops trusting BLPOP's timeout,
which Redis ends only at its next hz tick (every 100 ms at the default hz 10)."""
PRECISE_POLL = 0.005
"""Seconds between reserves in the last ``HZ_SLACK`` before a due time."""
REGISTER_EVERY = 60.0
"""Seconds between re-adding a queue to the known-queue set from one process."""


class HeldRecord(NamedTuple):
    """A finished delivery for ``settle_held``, with its job record as the script takes it."""

    delivery: Delivery
    ack: bool
    key: str | None
    """The record's key; None: no record to store."""
    fields: tuple[Any, ...]
    """The record's blob, time to live in ms, inline flag, created time, state, task
    and queue (``settle_held.lua``); all '' without a record."""


_STATES = {b"r": State.QUEUED, b"s": State.SCHEDULED, b"l": State.STARTED, b"d": State.DEAD}


class RedisBroker(RedisRates, Broker):
    """A broker on Redis or Redis Cluster. See the module docstring."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        lease_seconds: float = 30.0,
        dead_letter_ttl: float = 7 * 86400.0,
        dead_letter_max: int | None = None,
    ) -> None:
        self.url = url
        self._conn = Connection(url)
        config = self._conn.config
        self.prefix = config.prefix
        self.lease_seconds = lease_seconds
        self.dead_letter_ttl = dead_letter_ttl
        self.dead_letter_max = (
            config.dead_letter_max if dead_letter_max is None else dead_letter_max
        )
        self._ttl = repr(min(dead_letter_ttl, 1e12))
        self._lease = repr(lease_seconds)
        self._queues_key = f"{self.prefix}:{{_}}:queues"
        self._bases: dict[str, str] = {}
        self._dead = DeadLetterReader(self._conn, self._base, dead_letter_ttl)
        self._registered: dict[str, float] = {}  # queue -> when this process last added it
        self._due_at: dict[tuple[str, ...], float] = {}  # queues -> their next due (monotonic)
        self._limits = ConcurrencyLimits(self._conn, self._base, self.prefix, self._lease)

    # Producing and consuming.

    def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]:
        """Store messages in one round trip; a live idempotency key (within the queue) or
        an id already stored stores nothing."""
        if not envelopes:
            return []
        now = time.monotonic()
        enqueue = script("enqueue")
        if len(envelopes) == 1:
            env = envelopes[0]
            if not self._due_registering(env.queue, now):
                # One message to a queue registered lately (each .delay()): one script call,
                # without the grouping below (about a third of this method's time for one).
                fair = env.fair_key is not None
                keys = self._enqueue_keys(env.queue, fair)
                fields = _fair_enqueue_fields(env) if fair else _enqueue_fields(env)
                id: bytes = self._conn.call(lambda c: self._conn.run(c, enqueue, keys, fields))
                return [id.decode()]
        by_queue: dict[str, list[int]] = {}
        fair = False  # with a fair key in the batch, each message carries a sixth field
        for i, env in enumerate(envelopes):
            by_queue.setdefault(env.queue, []).append(i)
            fair = fair or env.fair_key is not None
        fields_of = _fair_enqueue_fields if fair else _enqueue_fields
        calls: list[Call] = []
        chunks: list[list[int]] = []
        for queue, indexes in by_queue.items():
            keys = self._enqueue_keys(queue, fair)
            for start in range(0, len(indexes), ENQUEUE_CHUNK):
                chunk = indexes[start : start + ENQUEUE_CHUNK]
                args: list[Any] = []
                for i in chunk:
                    args += fields_of(envelopes[i])
                calls.append((enqueue, keys, args))
                chunks.append(chunk)
        new = [q for q in by_queue if self._due_registering(q, now)]
        register: list[Call] = [("SADD", [self._queues_key], new)] if new else []
        results = self._conn.call(lambda c: self._conn.run_many(c, register + calls))
        for queue in new:
            self._registered[queue] = now
        ids = [env.id for env in envelopes]
        for chunk, result in zip(chunks, results[len(register) :], strict=True):
            if len(chunk) == 1:
                ids[chunk[0]] = result.decode()
                continue
            others = unpack(result)  # see enqueue.lua: (position, id) of the exceptions
            for j in range(0, len(others), 2):
                ids[chunk[others[j] - 1]] = others[j + 1].decode()
        return ids

    def _enqueue_keys(self, queue: str, fair: bool) -> list[str]:
        """KEYS of enqueue.lua: the queue's base, and with ``fair`` its fair-key counters."""
        base = self._base(queue)
        return [base, base + ":fair"] if fair else [base]

    def _due_registering(self, queue: str, now: float) -> bool:
        """Whether ``queue`` goes into the set of known queues with this enqueue (not
        done by this process within ``REGISTER_EVERY``)."""
        return now - self._registered.get(queue, -REGISTER_EVERY) >= REGISTER_EVERY

    def reserve(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Lease up to ``limit`` messages, blocking on the queues' wake lists until one is
        runnable or ``timeout``. Connection failures raise ``BrokerUnavailable`` at once."""
        return self._reserve(queues, limit, timeout, None)

    def reserve_ordered(
        self, queues: Sequence[str], limit: int, timeout: float, order: ReserveOrder
    ) -> list[Delivery]:
        """``reserve`` in ``order``: the same script and wait, told the order (see
        reserve.lua). On a cluster, queues in several slots are taken one after another
        as ``reserve`` does: in listed order when strict, else best (aged) head first."""
        return self._reserve(queues, limit, timeout, order)

    def _reserve(
        self, queues: Sequence[str], limit: int, timeout: float, order: ReserveOrder | None
    ) -> list[Delivery]:
        if limit <= 0:
            return []
        wanted = list(dict.fromkeys(queues))
        if not wanted:
            time.sleep(max(timeout, 0.0))
            return []
        start = time.monotonic()
        deadline = start + timeout
        # One entry per set of queues: weights list the same queues in varying order.
        key = tuple(wanted) if order is None else tuple(sorted(wanted))
        due_at = self._due_at.get(key)
        if timeout > 0 and due_at is not None and due_at > start:
            # Block first, until the due time the last reserve of these queues saw (an
            # earlier eta enqueued since pushes a wake token). A wake token is there
            # whenever messages are ready, so this returns at once when there is work,
            # and saves the round trip of a reserve that finds none when there is not.
            # (Once that time has passed, reserve at once: Redis would end even a short
            # block only at its next hz tick.)
            until_due = due_at - start
            taken, due = self._wait(
                wanted, limit, min(timeout, until_due), until_due <= timeout, order
            )
        else:
            taken, due = self._conn.call(
                lambda c: self._reserve_once(c, wanted, limit, order), retry=False
            )
        while not taken:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            taken, due = self._wait(wanted, limit, min(remaining, due), due <= remaining, order)
        self._due_at[key] = time.monotonic() + due
        return taken

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        """Forget finished messages (one round trip); returns how many were still held."""
        return self._settle(script("ack"), deliveries, ())

    def retry(self, delivery: Delivery, countdown: float, error: str) -> bool:
        """Schedule the message ``countdown`` seconds after Redis ``TIME`` with
        ``attempt + 1``; ``error`` is not kept."""
        # Bounded as the ttl is: a time beyond ~30,000 years has no integer score.
        args = (delivery.id, delivery.token, repr(min(float(countdown), 1e12)))
        return bool(self._run(script("retry"), delivery.queue, args))

    def dead(self, delivery: Delivery, reason: str, error: str) -> bool:
        """Move the message to its queue's dead letters (``error`` cut to ``ERROR_MAX``
        characters), then apply retention by age (``dead_letter_ttl``) and count
        (``dead_letter_max``)."""
        error = error[:ERROR_MAX]  # stored even at maxmemory: bounded
        args = (delivery.id, delivery.token, reason, error, self._ttl, self.dead_letter_max)
        return bool(self._run(script("dead"), delivery.queue, args))

    def extend(self, deliveries: Sequence[Delivery]) -> int:
        """Renew leases for ``lease_seconds`` from now; returns how many were still held."""
        return len(self.held(deliveries))

    def held(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The ids still leased under their token, whose leases are renewed (one round
        trip)."""
        results = self._settle_each(script("extend"), deliveries, (self._lease,))
        return {id.decode() for result in results for id in result}

    def shares_server(self, config: RedisURL) -> bool:
        """True if ``config`` names this broker's Redis server and database, and not a
        cluster: one script may then touch keys of both (see ``settle_held``)."""
        own = self._conn.config
        return not own.cluster and not config.cluster and own.client_url == config.client_url

    def settle_held(
        self,
        items: Sequence[HeldRecord],
        index_keys: tuple[str, str],
        index_args: tuple[Any, Any, Any],
    ) -> set[str]:
        """Store the job records of the deliveries still held and ack them (or renew
        their leases) in one step: ``settle_held.lua``, one call per queue and chunk,
        all in one round trip. Returns the held ids.

        The result store (``gopherq.results.redis``) passes each record as its key
        and script fields, with its indexes' keys and arguments (see the script);
        only where ``shares_server`` said yes.
        """
        settle = script("settle_held")
        calls: list[Call] = []
        for queue, chunk in _queue_chunks(items, lambda item: item.delivery.queue):
            keys = [self._base(queue), *index_keys]
            args: list[Any] = [self._lease, *index_args]
            for item in chunk:
                d = item.delivery
                args += (d.id, d.token, "1" if item.ack else "0", *item.fields)
                if item.key is not None:
                    keys.append(item.key)
            calls.append((settle, keys, args))
        if not calls:
            return set()
        results = self._conn.call(lambda c: self._conn.run_many(c, calls))
        return {id.decode() for result in results for id in unpack(result)}

    def requeue(self, deliveries: Sequence[Delivery], *, started: bool = False) -> int:
        """Give messages back to their place in line; ``started=False`` uncounts the
        delivery."""
        return self._settle(script("requeue"), deliveries, ("0" if started else "1",))

    def recover(self) -> int:
        """Make expired leases and due scheduled messages of every known queue ready."""
        queues = self._known()
        total = 0
        while queues:
            calls = self._run_each(script("reserve"), queues, (0, self._lease, "", self._ttl))
            results = [unpack(r) for r in calls]
            total += sum(int(r[0]) for r in results)
            queues = [q for q, r in zip(queues, results, strict=True) if int(r[0]) >= TIDY_BATCH]
        return total

    def cancel(self, ids: Sequence[str]) -> list[Cancellation]:
        """Remove ready and scheduled messages, mark leased ones, in every known queue: one
        script call per queue (and ``ADMIN_BATCH`` ids), all in one round trip; in the
        order of ``ids``.

        Not repeated after a connection failure: a repeated call would not report the
        messages that the lost one removed.
        """
        unique = list(dict.fromkeys(ids))
        queues = self._known() if unique else []
        cancel = script("cancel")
        calls: list[Call] = []
        owners: list[str] = []
        for start in range(0, len(unique), ADMIN_BATCH):
            chunk = unique[start : start + ADMIN_BATCH]
            for queue in queues:
                calls.append((cancel, [self._base(queue)], (self._ttl, *chunk)))
                owners.append(queue)
        if not calls:
            return []
        results = self._conn.call(lambda c: self._conn.run_many(c, calls), retry=False)
        found: dict[str, Cancellation] = {}
        for queue, result in zip(owners, results, strict=True):
            raw = unpack(result)
            for j in range(0, len(raw), 4):
                id = raw[j].decode()
                found[id] = Cancellation(id, queue, _STATES[raw[j + 1]], raw[j + 2], raw[j + 3])
        return [found[id] for id in unique if id in found]

    def cancel_requested(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The ids among ``deliveries`` whose message carries the cancel mark: one script
        call per queue (and ``SETTLE_CHUNK`` deliveries), all in one round trip."""
        requested = script("cancel_requested")
        calls: list[Call] = [
            (requested, [self._base(queue)], [d.id for d in chunk])
            for queue, chunk in _queue_chunks(deliveries, _queue_of)
        ]
        if not calls:
            return set()
        results = self._conn.call(lambda c: self._conn.run_many(c, calls))
        return {id.decode() for result in results for id in unpack(result)}

    # Concurrency limits: see concurrency.py.

    def admit(self, delivery: Delivery, key: str, limit: int) -> bool:
        """Make ``delivery`` a holder of ``key`` if fewer than ``limit`` hold it, else
        park its message (see ``BrokerAdmin.admit``): one round trip, two when parked."""
        return self._limits.admit(delivery, key, limit)

    def release_admitted(self, admitted: Sequence[tuple[str, Delivery]]) -> int:
        """Free these holders' slots, waking parked messages of their queues: one round
        trip."""
        return self._limits.release(admitted)

    def renew_admitted(self, admitted: Sequence[tuple[str, Delivery]]) -> int:
        """Renew these holders' leases for ``lease_seconds`` from now: one round trip."""
        return self._limits.renew(admitted)

    # Administration: the rest of BrokerAdmin (cancel is above).

    def stats(self) -> dict[str, QueueStats]:
        """Counts per known queue (seen by enqueue or pause); due etas and expired leases
        count as ready."""
        queues = sorted(self._known())
        results = self._run_each(script("stats"), queues, (self._ttl,))
        return {
            q: QueueStats(q, int(r[0]), int(r[1]), int(r[2]), int(r[3]), bool(r[4]))
            for q, r in zip(queues, results, strict=True)
        }

    def queue_depths(self) -> dict[str, QueueDepth]:
        """``stats`` with ready counts per priority and the oldest ready message's age:
        ``depths.lua`` once per known queue, all in one round trip (per cluster node)."""
        queues = sorted(self._known())
        results = self._run_each(script("depths"), queues, (self._ttl,))
        depths: dict[str, QueueDepth] = {}
        for q, r in zip(queues, results, strict=True):
            ready: dict[int | None, int] = {}
            for j in range(5, len(r), 2):
                ready[int(r[j])] = ready.get(int(r[j]), 0) + int(r[j + 1])
            age = None if int(r[4]) < 0 else int(r[4]) / UNITS
            depths[q] = QueueDepth(q, ready, int(r[0]), int(r[1]), int(r[2]), bool(r[3]), age)
        return depths

    def pause(self, queue: str) -> None:
        """Stop handing out messages from ``queue``."""
        paused = self._base(queue) + ":paused"
        calls: list[Call] = [("SET", [paused], [1]), ("SADD", [self._queues_key], [queue])]
        self._conn.call(lambda c: self._conn.run_many(c, calls))

    def resume(self, queue: str) -> None:
        """Hand out messages from ``queue`` again, waking blocked reserves."""
        self._run(script("resume"), queue, ())

    def purge(self, queue: str) -> int:
        """Delete ready and scheduled messages of ``queue``; leased ones stay."""
        return self._drain(script("purge"), queue, (self._ttl, ADMIN_BATCH))

    def dead_letters(
        self, queue: str | None = None, offset: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters, newest first, of one queue or all (merged by time of death)."""
        return self._dead_letters(queue, offset, limit, None)

    def dead_letters_for(
        self, reason: str, queue: str | None = None, offset: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters with ``reason``, newest first, among the newest
        ``DEAD_SCAN_LIMIT`` of each queue: selected in Redis, bodies of the others
        left there."""
        return self._dead_letters(queue, offset, limit, (reason, DEAD_SCAN_LIMIT))

    def _dead_letters(
        self, queue: str | None, offset: int, limit: int, reason: tuple[str, int] | None
    ) -> list[DeadLetter]:
        if limit <= 0:
            return []
        queues = [queue] if queue is not None else self._known()
        return self._dead.page(queues, max(offset, 0), limit, reason)

    def dead_letter(self, id: str) -> DeadLetter | None:
        """The dead letter ``id`` (in any known queue); None if it is not one."""
        key = id.encode()
        found = self._dead.read([(queue, key) for queue in self._known()])
        return found[0] if found else None

    def requeue_dead(self, ids: Sequence[str] | None = None, queue: str | None = None) -> int:
        """Make dead letters ready with attempt 0: ``ids`` (of ``queue``), else all (of it).

        One whose idempotency key another live message holds stays dead.
        """
        queues = [queue] if queue is not None else self._known()
        requeue = script("requeue_dead")
        if ids is None:
            return sum(self._requeue_all_dead(q) for q in queues)
        unique = list(dict.fromkeys(ids))
        total = 0
        for start in range(0, len(unique), ADMIN_BATCH):
            chunk = unique[start : start + ADMIN_BATCH]
            total += sum(r[0] for r in self._run_each(requeue, queues, (self._ttl, "ids", *chunk)))
        return total

    def _requeue_all_dead(self, queue: str) -> int:
        """Requeue every dead letter of ``queue``, ``ADMIN_BATCH`` per call, passing over
        those left dead (their key is held)."""
        moved = skipped = 0
        while True:
            args = (self._ttl, "all", ADMIN_BATCH, skipped)
            done, looked = (int(n) for n in self._run(script("requeue_dead"), queue, args))
            moved += done
            skipped += looked - done
            if looked < ADMIN_BATCH:
                return moved

    def purge_dead(self, queue: str | None = None) -> int:
        """Delete dead letters of ``queue`` (or all); returns how many."""
        queues = [queue] if queue is not None else self._known()
        return sum(self._drain(script("purge_dead"), q, (self._ttl, ADMIN_BATCH)) for q in queues)

    def delete(self, id: str) -> bool:
        """Remove one message wherever it is (in any known queue); its lease goes stale."""
        return any(self._run_each(script("delete"), self._known(), (self._ttl, id)))

    def locate(self, id: str) -> State | None:
        """QUEUED, SCHEDULED, STARTED or DEAD; None if gone (or in no known queue)."""
        for state in self._run_each(script("locate"), self._known(), (self._ttl, id)):
            if state:
                return _STATES[state]
        return None

    def locate_many(
        self, ids: Sequence[str], queues: Sequence[str | None] | None = None
    ) -> list[State | None]:
        """``locate`` of each id, in one pipeline: in its queue where ``queues`` names
        one (none if no message was ever sent there), else in every known queue."""
        if not ids:
            return []
        hints = queues if queues is not None else [None] * len(ids)
        # A named queue is asked as it is (one never sent to answers None), so the
        # known queues are read only for ids without one.
        known = self._known() if None in hints else []
        places = [known if q is None else [q] for q in hints]
        locate = script("locate")
        calls: list[Call] = [
            (locate, [self._base(q)], (self._ttl, id))
            for id, where in zip(ids, places, strict=True)
            for q in where
        ]
        answers = iter(self._conn.call(lambda c: self._conn.run_many(c, calls)) if calls else ())
        found: list[State | None] = []
        for where in places:
            states = [next(answers) for _ in where]
            found.append(next((_STATES[s] for s in states if s), None))
        return found

    def peek(self, id: str, queue: str | None = None) -> Peeked | None:
        """The message ``id`` and where it is; None if gone (or in no known queue).

        With ``queue``: one script call on that queue's slot, then, only if the message
        is not there, one per other known queue (as ``locate``)."""
        peek = script("peek")
        if queue is not None:
            found = self._peeked(queue, self._run(peek, queue, (self._ttl, id)), id)
            if found is not None:
                return found
        others = [q for q in self._known() if q != queue]
        for q, raw in zip(others, self._run_each(peek, others, (self._ttl, id)), strict=True):
            found = self._peeked(q, raw, id)
            if found is not None:
                return found
        return None

    @staticmethod
    def _peeked(queue: str, raw: Sequence[Any], id: str) -> Peeked | None:
        """A ``Peeked`` of the four fields peek.lua returns; None for none."""
        if not raw:
            return None
        return Peeked(id, queue, int(raw[1]), raw[2], int(raw[3]), _STATES[raw[0]])

    def ping(self) -> None:
        """Return if Redis answers; raise ``BrokerUnavailable`` otherwise."""
        self._conn.call(lambda c: c.ping(), retry=False)

    def close(self) -> None:
        """Close this process's connections; the next call reconnects."""
        self._conn.close()

    # Internals.

    def _base(self, queue: str) -> str:
        """The key base ``P:{queue}`` of ``queue``: its every key is this plus a suffix
        (layout: scripts/lib.lua), and the scripts take it as their KEYS entry."""
        base = self._bases.get(queue)
        if base is None:
            if not queue or queue.startswith("}"):
                # {} or {}...} is an empty hash tag: Redis would hash each whole key.
                raise ConfigurationError(
                    f"queue name {queue!r}: on Redis a queue name must not be empty "
                    "or start with '}'"
                )
            base = self._bases[queue] = f"{self.prefix}:{{{queue}}}"
        return base

    def _reserve_once(
        self, client: Client, queues: list[str], limit: int, order: ReserveOrder | None = None
    ) -> tuple[list[Delivery], float]:
        """One pass: the deliveries, and seconds until something may become runnable."""
        if not self._conn.cluster or len(queues) == 1:
            call = self._take(queues, limit, order)
            return self._taken(client, self._conn.run(client, *call), queues)
        # Cluster, several slots: tidy and peek at every queue, then take best first.
        reserve = script("reserve")
        token = secrets.token_hex(8)
        peek = (0, self._lease, "", self._ttl)
        calls: list[Call] = [
            (reserve, [self._base(q)], peek + _order_args([q], order)) for q in queues
        ]
        peeks = [unpack(p) for p in self._conn.run_many(client, calls)]
        due = min(_seconds(p[2]) for p in peeks)
        strict = order is not None and order.strict
        best = sorted((i if strict else float(p[1]), i) for i, p in enumerate(peeks) if p[1])
        taken: list[Delivery] = []
        for _, i in best:
            args: tuple[Any, ...] = (limit - len(taken), self._lease, f"{token}.{i}", self._ttl)
            args += _order_args([queues[i]], order)
            raw = unpack(self._conn.run(client, reserve, [self._base(queues[i])], args))
            taken += self._deliveries(client, raw, [queues[i]])
            due = min(due, _seconds(raw[2]))
            if len(taken) >= limit:
                break
        return taken, due

    def _wait(
        self,
        queues: list[str],
        limit: int,
        seconds: float,
        precise: bool,
        order: ReserveOrder | None,
    ) -> tuple[list[Delivery], float]:
        """``_wait_and_reserve`` through the connection's error handling (not repeated:
        a repeated reserve could lease messages that nobody receives). ``precise``:
        ``seconds`` runs until a due time, which must not be served late."""
        wait = functools.partial(
            self._wait_and_reserve,
            queues=queues,
            limit=limit,
            seconds=seconds,
            precise=precise,
            order=order,
        )
        result: tuple[list[Delivery], float] = self._conn.call(wait, retry=False)
        return result

    def _wait_and_reserve(
        self,
        client: Client,
        queues: list[str],
        limit: int,
        seconds: float,
        precise: bool,
        *,
        order: ReserveOrder | None,
    ) -> tuple[list[Delivery], float]:
        """Wait for a wake token of ``queues`` (at most ``seconds``), then reserve."""
        if precise:
            if seconds <= HZ_SLACK:
                return self._poll_until_due(client, queues, limit, seconds, order)
            seconds -= HZ_SLACK  # block until just before; the rest is polled
        seconds = min(seconds, self._conn.max_block)
        if self._conn.cluster and len(queues) > 1:
            # BLPOP cannot wait on several slots: wait on the first, poll the rest.
            timeout = repr(max(min(seconds, CLUSTER_POLL), 0.001))
            self._conn.run(client, "BLPOP", [self._base(queues[0]) + ":wake"], [timeout])
            return self._reserve_once(client, queues, limit, order)
        wakes = [self._base(q) + ":wake" for q in queues]
        block: Call = ("BLPOP", wakes, [repr(max(seconds, 0.001))])
        _, raw = self._conn.run_blocking(client, [block, self._take(queues, limit, order)])
        return self._taken(client, raw, queues)

    def _poll_until_due(
        self,
        client: Client,
        queues: list[str],
        limit: int,
        seconds: float,
        order: ReserveOrder | None,
    ) -> tuple[list[Delivery], float]:
        """Reserve every ``PRECISE_POLL`` for ``seconds``, until something is taken."""
        end = time.monotonic() + seconds
        while True:
            taken, due = self._reserve_once(client, queues, limit, order)
            remaining = end - time.monotonic()
            if taken or remaining <= 0:
                return taken, due
            time.sleep(max(min(PRECISE_POLL, remaining, due), 0.0))

    def _take(self, queues: list[str], limit: int, order: ReserveOrder | None) -> Call:
        """The reserve script's call taking up to ``limit`` from ``queues`` (one slot)."""
        args: tuple[Any, ...] = (limit, self._lease, secrets.token_hex(8), self._ttl)
        if order is not None:
            args += _order_args(queues, order)
        return script("reserve"), [self._base(q) for q in queues], args

    def _taken(self, client: Client, reply: Any, queues: list[str]) -> tuple[list[Delivery], float]:
        """The deliveries of a reserve script's reply, and the seconds until its ``due``."""
        raw = unpack(reply)
        return self._deliveries(client, raw, queues), _seconds(raw[2])

    def _deliveries(self, client: Client, raw: list[Any], queues: list[str]) -> list[Delivery]:
        """The deliveries in a reserve script's (unpacked) reply. An id that is not
        UTF-8 (a foreign writer's: see the module docstring) is renamed first."""
        try:
            return _deliveries(raw, queues)
        except UnicodeDecodeError:
            pass
        rename = script("rename")
        for j in range(3, len(raw), 7):
            try:
                raw[j].decode()
            except UnicodeDecodeError:
                keys = [self._base(queues[abs(raw[j + 1]) - 1])]
                args = (raw[j], raw[j + 6], "bad-id-" + raw[j].hex())
                raw[j] = self._conn.run(client, rename, keys, args)
        return [d for d in _deliveries(raw, queues) if d.id]  # '': its lease was lost

    def _settle(
        self, script_: Script, deliveries: Sequence[Delivery], head: tuple[Any, ...]
    ) -> int:
        """Run a settling script over ``deliveries``, one call per queue and chunk, all in
        one round trip; returns the sum of the counts."""
        return sum(self._settle_each(script_, deliveries, head))

    def _settle_each(
        self, script_: Script, deliveries: Sequence[Delivery], head: tuple[Any, ...]
    ) -> list[Any]:
        """Run a settling script over ``deliveries``, one call per queue and chunk, all in
        one round trip; returns each call's reply."""
        if not deliveries:
            return []
        calls: list[Call] = []
        for queue, chunk in _queue_chunks(deliveries, _queue_of):
            args: list[Any] = list(head)
            for delivery in chunk:
                args += (delivery.id, delivery.token)
            calls.append((script_, [self._base(queue)], args))
        results: list[Any] = self._conn.call(lambda c: self._conn.run_many(c, calls))
        return results

    def _run(self, script_: Script, queue: str, args: Sequence[Any]) -> Any:
        keys = [self._base(queue)]
        return self._conn.call(lambda c: self._conn.run(c, script_, keys, args))

    def _run_each(self, script_: Script, queues: Sequence[str], args: Sequence[Any]) -> list[Any]:
        """Run ``script_`` once per queue, in one pipeline."""
        calls: list[Call] = [(script_, [self._base(q)], args) for q in queues]
        return self._conn.call(lambda c: self._conn.run_many(c, calls))

    def _drain(self, script_: Script, queue: str, args: tuple[Any, ...]) -> int:
        """Call a batch script (its last argument the batch size) until it does less."""
        total = 0
        while True:
            done = int(self._run(script_, queue, args))
            total += done
            if done < args[-1]:
                return total

    def _known(self) -> list[str]:
        """Every queue seen by enqueue or pause."""
        members: Any = self._conn.call(lambda c: c.smembers(self._queues_key))
        return sorted(m.decode() for m in members)


def _enqueue_fields(env: Envelope) -> tuple[Any, ...]:
    """The five ARGV entries of one message for enqueue.lua."""
    eta = "" if env.eta is None else repr(float(env.eta))
    key = "" if env.key is None else _key_field(env, env.key)
    return (env.id, int(env.priority), eta, key, env.body)


def _key_field(env: Envelope, key: str) -> str:
    """The key argument of enqueue.lua: the key, then NUL and how long it is held (its
    kh field, lib.lua: ms past the ack, or ``s`` to free it at reserve); the key alone
    when it is held for neither (as other producers send it) and holds no NUL."""
    if env.key_until_start:
        return f"{key}\0s"
    if env.key_ttl and env.key_ttl > 0:
        return f"{key}\0{math.ceil(env.key_ttl * 1000)}"
    return f"{key}\0" if "\0" in key else key


def _fair_enqueue_fields(env: Envelope) -> tuple[Any, ...]:
    """The six ARGV entries of one message for enqueue.lua called with fair keys."""
    return (*_enqueue_fields(env), env.fair_key or "")


def _deliveries(raw: list[Any], queues: list[str]) -> list[Delivery]:
    # The queue index (1-based) is negative when the message carries the cancel mark.
    return [
        Delivery(
            raw[j].decode(),
            queues[abs(raw[j + 1]) - 1],
            raw[j + 2],
            raw[j + 3],
            raw[j + 4],
            raw[j + 5],
            raw[j + 6].decode(),
            raw[j + 1] < 0,
        )
        for j in range(3, len(raw), 7)
    ]


def _order_args(queues: Sequence[str], order: ReserveOrder | None) -> tuple[str, ...]:
    """The reserve script's arguments of ``order`` for ``queues``; none for plain order."""
    if order is None:
        return ()
    periods = (order.aging.get(q) for q in queues)
    return ("1" if order.strict else "0", *("" if p is None else repr(p) for p in periods))


def _seconds(raw: bytes) -> float:
    return float(raw) if raw else float("inf")


def _queue_chunks(
    items: Iterable[_T], queue_of: Callable[[_T], str]
) -> Iterator[tuple[str, list[_T]]]:
    """``items`` grouped by queue, in chunks of at most ``SETTLE_CHUNK``: one script
    call each."""
    by_queue: dict[str, list[_T]] = {}
    for item in items:
        by_queue.setdefault(queue_of(item), []).append(item)
    for queue, group in by_queue.items():
        for start in range(0, len(group), SETTLE_CHUNK):
            yield queue, group[start : start + SETTLE_CHUNK]


def _queue_of(delivery: Delivery) -> str:
    return delivery.queue
