"""The Redis broker's concurrency limits (``Broker.admit``): the calls of the
``concurrency_*.lua`` scripts, each script one atomic step on one hash slot.

Where things live (Redis Cluster: one slot per script):

* the holders of a key (the task name) in a slot of their own, ``P:{conc:<key>}``,
  since a limit holds across every queue the task is sent to;
* a parked message in its queue's slot, where it stays (scheduled, so that admin
  sees it) and the key's line of parked messages of that queue, ``P:{q}:parked:<key>``.

Hence two slots per step, one round trip each way:

* ``admit``: the message's lease renewed (is it still ours?) and the holders asked,
  in one pipeline; then, only when refused, the message parked (a second round trip);
* ``release_admitted``: the holders freed and, per queue, the first parked messages
  woken, in one pipeline for a whole batch of settled deliveries;
* ``renew_admitted``: one call per key, in one pipeline, each renewal tick.

A release waking the parked messages of its own queue only: a task limited across
several queues wakes, in each queue, those parked there by releases there; the
others come back at the end of their parking (one lease). The wake-up goes with
the release in one pipeline, so it cannot ask whether the holder was still there:
one whose holder lease had ended wakes a message that parks again. A release that finds no
one parked leaves a short credit that a message refused meanwhile (between its
refusal and its parking, in the other slot) takes to go straight back to ready.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
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
        ask: list[Call] = [
            (script("extend"), [base], (self._lease, delivery.id, delivery.token)),
            (script("concurrency_admit"), [home], (limit, self._lease, holder)),
        ]
        held, (admitted, wakes) = self._run(ask)
        then: list[Call] = []
        if not held and admitted:  # not ours any more: give the slot back at once
            then.append((script("concurrency_release"), [home], (holder,)))
        elif held and not admitted:
            args = (delivery.id, delivery.token, key, self._lease)
            then.append((script("concurrency_park"), [base], args))
        if wakes:
            then.append(self._wake(delivery.queue, key, wakes))
        if then:
            self._run(then)
        return bool(held) and bool(admitted)

    def release(self, admitted: Admitted) -> int:
        """``Broker.release_admitted``: one round trip."""
        calls: list[Call] = [
            (script("concurrency_release"), [self._home(key)], holders)
            for key, holders in _by_key(admitted)
        ]
        released = len(calls)
        wakes = Counter((d.queue, key) for key, d in admitted)
        calls += [self._wake(queue, key, count) for (queue, key), count in wakes.items()]
        if not calls:
            return 0
        return sum(int(n) for n in self._run(calls)[:released])

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

    def _wake(self, queue: str, key: str, count: int) -> Call:
        return script("concurrency_wake"), [self._base(queue)], (key, count, CREDIT_MS)

    def _run(self, calls: Sequence[Call]) -> list[Any]:
        return self._conn.call(lambda c: self._conn.run_many(c, calls))


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
