"""Settling finished deliveries: their job records, their events, the broker.

One place for it, used by the consumer's flush (a batch of outcomes) and by the
supervisor (the task of a child it killed)::

    store the records of the deliveries still held    (only when there are records)
    publish the buffered events
    ack / retry / defer / dead-letter the held ones   (token-checked by the broker)

Where the result store is the broker's own (the SQLite broker's file, the Redis
broker's server but not a cluster), the first step is one atomic step with the
broker that also acks the successes (``ResultBackend.store_held``): one round
trip for records and acks together. Elsewhere the broker is asked first which
deliveries it still holds (``Broker.held``), then their records are stored, then
they are acked: one round trip more.

Fencing: a worker whose lease ran out (its renewals stalled) may finish a task
that another worker has meanwhile run and recorded. Its outcome must not
replace that record (a RETRYING stored over SUCCEEDED would leave ``.get()``
waiting forever), so a record is stored only for a delivery the broker confirms
is still held, and the check renews the lease, so that a retry or dead letter
settled next is covered by a whole lease. The outcome of a lost delivery is
dropped, and logged once as a warning: the task may run twice (at-least-once).

A batch with no record to store (successes of ``ignore_result`` tasks, the
commonest) skips the check: the broker's token-checked ack is fence enough.

The settle may fail (an outage) and be repeated with the same deliveries and
more: what a failed attempt settled already is remembered and not settled or
reported again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from gopherq.brokers.base import Delivery
from gopherq.results.base import Settling
from gopherq.runner import Outcome

if TYPE_CHECKING:
    from gopherq.app import GopherQ

logger = logging.getLogger("gopherq.worker")

_ACKED = ("ack", "cancel")
"""Outcome actions settled with ``Broker.ack``."""


class Finished(NamedTuple):
    """A delivery that ran (or was killed), its task's name, and what to do with it."""

    delivery: Delivery
    task: str
    outcome: Outcome


class Settler:
    """Settles finished deliveries of ``app`` for the worker process ``worker``."""

    def __init__(self, app: GopherQ, worker: str) -> None:
        self.app = app
        self.worker = worker
        # Deliveries (id and token: a Redis reserve gives one token to a whole batch)
        # that a failed attempt settled, or that were reported lost already.
        self._settled: set[tuple[str, str]] = set()
        self._reported: set[tuple[str, str]] = set()

    def settle(self, finished: Sequence[Finished]) -> None:
        """Store records, publish events and settle ``finished`` in the broker, fenced
        by their leases (see the module docstring). Raises if the store or the broker
        fails; calling again with the same deliveries then finishes the work."""
        todo = [f for f in finished if _key(f.delivery) not in self._settled]
        acked = False
        if any(f.outcome.record is not None for f in todo):
            todo, acked = self._store(todo)
        # Events of a retry or dead letter go before the settle, so that a task's
        # next attempt never shows first; those of successes may wait for more.
        self.app.events.flush(only_due=all(f.outcome.action == "ack" for f in todo))
        if not acked:
            self._ack(todo)
        for f in todo:
            outcome = f.outcome
            if outcome.action == "retry" and not outcome.counts_attempt:  # RateLimited
                done = self.app.broker.defer([f.delivery], [outcome.countdown]) == 1
            elif outcome.action == "retry":
                done = self.app.broker.retry(f.delivery, outcome.countdown, outcome.error)
            elif outcome.action == "dead":
                reason = outcome.reason.value if outcome.reason else "UNKNOWN"
                done = self.app.broker.dead(f.delivery, reason, outcome.error)
            else:
                continue
            self._settled.add(_key(f.delivery))
            if not done:
                self._lost([f])
        self._settled.clear()
        self._reported.clear()

    def _store(self, todo: list[Finished]) -> tuple[list[Finished], bool]:
        """Store the records of the deliveries still held; those deliveries, and whether
        their acks are done too (in the same step, where the store is the broker's)."""
        items = [Settling(f.delivery, f.outcome.record, f.outcome.action in _ACKED) for f in todo]
        held, acked = self.app.backend.store_fenced(self.app.broker, items)
        self._lost(f for f in todo if f.delivery.id not in held)
        if acked:
            self._settled.update(_key(i.delivery) for i in items if i.ack)
        return [f for f in todo if f.delivery.id in held], acked

    def _ack(self, todo: list[Finished]) -> None:
        acks = [f for f in todo if f.outcome.action in _ACKED]
        if not acks:
            return
        kept = self.app.broker.ack([f.delivery for f in acks])
        self._settled.update(_key(f.delivery) for f in acks)
        if kept < len(acks):  # unchecked (no records): which ones is unknown
            logger.warning(
                "worker %s: %d of %d finished tasks (%s) had lost their lease; "
                "outcome discarded, may run twice",
                self.worker,
                len(acks) - kept,
                len(acks),
                ", ".join(sorted({f.task for f in acks})),
            )

    def _lost(self, lost: Iterable[Finished]) -> None:
        """Warn, once per delivery, that its lease was lost and its outcome dropped."""
        for f in lost:
            if _key(f.delivery) in self._reported:
                continue
            self._reported.add(_key(f.delivery))
            logger.warning(
                "task %s[%s]: worker %s lost its lease before settling it (%s); "
                "outcome discarded, may run twice",
                f.task,
                f.delivery.id,
                self.worker,
                f.outcome.action,
            )


def _key(delivery: Delivery) -> tuple[str, str]:
    """One delivery of one message: its token alone may be shared by a batch."""
    return delivery.id, delivery.token
