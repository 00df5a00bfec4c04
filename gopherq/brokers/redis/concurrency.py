"""The Redis broker's concurrency limits (``Broker.admit``): the calls of the
``concurrency_*.lua`` scripts, each script one atomic step on one hash slot.

Where things live (Redis Cluster: one slot per script):

* the holders of a key (the task name) in a slot of their own, ``P:{conc:<key>}``,
  since a limit holds across every queue the task is sent to, and beside them the
  queues where messages of the key may be parked (noted by each refusal);
* a parked message in its queue's slot, where it stays (scheduled, so that admin
  sees it) and the key's line of parked messages of that queue, ``P:{q}:parked:<key>``.

Hence two slots per step, one round trip each way:

* ``admit``: the message's lease renewed (is it still ours?) and the holders asked
  (a refusal notes the queue), in one pipeline; then, only when refused, the message
  parked (a second round trip);
* ``release_admitted``: the holders freed, in one pipeline for a whole batch of
  settled deliveries, answering the queues noted for their keys; then the first
  parked messages woken in the best of those queues, whatever queue the released
  deliveries came from (a second round trip, one pipeline for every key);
* ``renew_admitted``: one call per key, in one pipeline, each renewal tick.

A wake-up that finds fewer parked messages than it asked for in a queue (they were
woken at the end of their parking, cancelled, or not parked yet) leaves a short
credit there that a message refused meanwhile (between its refusal, in the
holders' slot, and its parking) takes to go straight back to ready; the queue is
then dropped from the noted ones and the rest asked of the next queue, one more
round trip each. Noted queues go two leases after the last refusal: by then every
parking has ended on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gopherq.brokers.base import Delivery
from gopherq.stores.redis import Call, Connection, script

CREDIT_MS = 1000
"""Milliseconds a wake-up that found no parked message waits for one on its way."""
CHUNK = 1000
"""Holders per release or renew script call."""

Admitted = Sequence[tuple[str, Delivery]]


class ConcurrencyLimits:
    """Concurrency limits on the Redis connection ``conn`` (see the module docstring).

    ``base`` gives a queue's key base, ``prefix`` starts every key, ``lease`` is the
    lease length in seconds as the scripts take it.
    """

    def __init__(
        self, conn: Connection, base: Callable[[str], str], prefix: str, lease: str
    ) -> None:
        self._conn = conn
        self._base = base
        self._prefix = prefix
        self._lease = lease

    def admit(self, delivery: Delivery, key: str, limit: int) -> bool:
        """``Broker.admit``: one round trip when admitted, two when parked."""
        base, home, holder = self._base(delivery.queue), self._home(key), _holder(delivery)
        asked = (limit, self._lease, holder, delivery.queue, delivery.priority)
        ask: list[Call] = [
            (script("extend"), [base], (self._lease, delivery.id, delivery.token)),
            (script("concurrency_admit"), [home], asked),
        ]
        held, (admitted, wakes, *queues) = self._run(ask)
        then: list[Call] = []
        if not held and admitted:  # not ours any more: give the slot back at once
            then.append((script("concurrency_release"), [home], (holder,)))
        elif held and not admitted:
            args = (delivery.id, delivery.token, key, self._lease)
            then.append((script("concurrency_park"), [base], args))
        self._wake([_Wake(key, int(wakes), _pairs(queues))], then)
        return bool(held) and bool(admitted)

    def release(self, admitted: Admitted) -> int:
        """``Broker.release_admitted``: one round trip, and one more to wake the messages
        parked under the keys (two or more when the first queue has fewer than asked)."""
        chunks = _by_key(admitted)
        calls: list[Call] = [
            (script("concurrency_release"), [self._home(key)], holders) for key, holders in chunks
        ]
        if not calls:
            return 0
        wakes: dict[str, _Wake] = {}
        released = 0
        for (key, _), (count, *queues) in zip(chunks, self._run(calls), strict=True):
            if count := int(count):
                wakes.setdefault(key, _Wake(key, 0, _pairs(queues))).count += count
                released += count
        self._wake(list(wakes.values()))
        return released

    def renew(self, admitted: Admitted) -> int:
        """``Broker.renew_admitted``: one round trip."""
        calls: list[Call] = [
            (script("concurrency_renew"), [self._home(key)], (self._lease, *holders))
            for key, holders in _by_key(admitted)
        ]
        return sum(int(n) for n in self._run(calls)) if calls else 0

    def _home(self, key: str) -> str:
        """The key base of the holders of ``key``, in a slot of its own."""
        return f"{self._prefix}:{{conc:{key}}}"

    def _wake(self, wakes: list[_Wake], calls: Sequence[Call] = ()) -> None:
        """Wake the parked messages of ``wakes`` queue by queue, best queue first, one
        round trip per step (with ``calls`` in the first): a queue that had fewer than
        asked is forgotten and the rest asked of the next one."""
        calls = list(calls)
        while wakes := [w for w in wakes if w.count > 0 and w.queues]:
            asked = [(w, *w.queues.pop(0)) for w in wakes]
            for wake, queue, _ in asked:
                args = (wake.key, wake.count, CREDIT_MS)
                calls.append((script("concurrency_wake"), [self._base(queue)], args))
            woken = self._run(calls)[-len(asked) :]
            calls = []
            for (wake, queue, place), count in zip(asked, woken, strict=True):
                wake.count -= int(count)
                if wake.count > 0:
                    forget = (queue, place)
                    calls.append((script("concurrency_forget"), [self._home(wake.key)], forget))
        if calls:
            self._run(calls)

    def _run(self, calls: Sequence[Call]) -> list[Any]:
        return self._conn.call(lambda c: self._conn.run_many(c, calls))


@dataclass(slots=True)
class _Wake:
    """Parked messages of ``key`` to wake: ``count`` more, in ``queues`` (name and
    place, as the holders' script listed them) from the first on."""

    key: str
    count: int
    queues: list[tuple[str, str]]


def _pairs(flat: Sequence[bytes]) -> list[tuple[str, str]]:
    """A script's flat ``queue, score, ...`` as (queue, score) pairs."""
    return [(flat[j].decode(), flat[j + 1].decode()) for j in range(0, len(flat) - 1, 2)]


def _holder(delivery: Delivery) -> str:
    """A holder's member in the holders zset: a token is hex, so the first ':' ends it."""
    return f"{delivery.token}:{delivery.id}"


def _by_key(admitted: Admitted) -> list[tuple[str, list[str]]]:
    """The holders of ``admitted`` by key, in chunks of at most ``CHUNK``."""
    grouped: dict[str, list[str]] = {}
    for key, delivery in admitted:
        grouped.setdefault(key, []).append(_holder(delivery))
    return [
        (key, holders[start : start + CHUNK])
        for key, holders in grouped.items()
        for start in range(0, len(holders), CHUNK)
    ]
