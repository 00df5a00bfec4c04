"""Rate-limit admission: which reserved deliveries run now, and which wait in the broker.

The consumer hands each reserved batch to ``RateAdmission.admit`` before it runs
anything. A delivery whose task has no rate limit (the commonest case) costs
nothing: while no task of the app has one, declared or set at run time, ``admit``
is not even called. For a limited task, one ``Broker.rate_admit`` per bucket in
the batch claims a slot for each of its deliveries; those whose slot is later go
back to the broker at once, scheduled for their slot (``Broker.defer``, one call
for the batch: no attempt or delivery counted), so that no process waits for a
slot and other tasks and queues run meanwhile.

Buckets: ``rate_limit`` (or the rate set at run time, which wins) is one bucket
per task; ``rate_limit_per_key`` one per task and fair key, asked first. A message
pays each of its buckets one slot: one that the task's bucket makes wait keeps the
slot its key's bucket gave it (``Broker.rate_keep``). A task
held after repeated ``RateLimited`` raises waits, without a claim, until the hold
ends. The table of run-time limits and holds (``Broker.rate_limits``) is read at
most once every ``REFRESH_EVERY`` seconds, so workers honour a change within it.

A broker that fails an admission call: the deliveries in question go back to the
broker as they came (uncounted), to be reserved again after the consumer's back-off.
A broker without rate limits (``NotSupported``): limits are not enforced, said once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gopherq.brokers.base import Broker, Delivery
from gopherq.errors import ConfigurationError, NotSupported
from gopherq.limits import REFRESH_EVERY, Rate, RateSetting, limit_key, parse_rate
from gopherq.message import Message
from gopherq.runner import Outcome

if TYPE_CHECKING:
    from gopherq.app import GopherQ

logger = logging.getLogger("gopherq.worker")

RATE_LIMITED_IN_A_ROW = 3
"""``RateLimited`` raises in a row, in one process, that hold the whole task type."""

Bucket = tuple[str, Rate]
"""A limit key and its rate."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Limits:
    """What applies to one task: its buckets' rates, and a hold."""

    rate: Rate | None = None
    per_key: Rate | None = None
    hold_until: float | None = None


class RateAdmission:
    """Admits the reserved deliveries of ``app`` by their tasks' rate limits."""

    def __init__(self, app: GopherQ, broker: Broker, worker: str) -> None:
        self.app = app
        self.broker = broker
        self.worker = worker
        self._declared = {
            name: _Limits(task.options.rate_limit, task.options.rate_limit_per_key)
            for name, task in app.tasks.items()
            if task.options.rate_limit or task.options.rate_limit_per_key
        }
        self._limits = dict(self._declared)
        self._next_refresh = 0.0
        self._table = True  # the broker keeps a table of run-time limits
        self._enforced = True  # the broker implements rate_admit
        self._keeps = True  # ... and rate_keep
        self._streaks: dict[str, int] = {}

    @property
    def active(self) -> bool:
        """Whether a task may be limited now: ``admit`` is needed (re-reads the table of
        run-time limits when it is due)."""
        if self._table and time.monotonic() >= self._next_refresh:
            self._refresh()
        return bool(self._limits) and self._enforced

    def admit(self, batch: Sequence[Delivery]) -> tuple[list[Delivery], dict[str, Message]]:
        """The deliveries of ``batch`` that run now, in order, and the messages decoded on
        the way (by id); the others went back to the broker to wait."""
        messages: dict[str, Message] = {}
        asks: list[tuple[Delivery, list[Bucket]]] = []
        waits: dict[str, float] = {}
        now = time.time()
        for delivery in batch:
            try:
                message = self.app.codec.decode(delivery.body)
            except Exception:  # the runner dead-letters it
                continue
            messages[delivery.id] = message
            limits = self._limits.get(message.task)
            if limits is None:
                continue
            if limits.hold_until is not None and limits.hold_until > now:
                waits[delivery.id] = limits.hold_until - now
                continue
            buckets: list[Bucket] = []
            if limits.per_key is not None and message.fair_key is not None:
                buckets.append((limit_key(message.task, message.fair_key), limits.per_key))
            if limits.rate is not None:
                buckets.append((limit_key(message.task), limits.rate))
            if buckets:
                asks.append((delivery, buckets))
        try:
            self._claim(asks, waits)
            deferred = [d for d in batch if d.id in waits]
            if deferred:
                self.broker.defer(deferred, [waits[d.id] for d in deferred])
        except NotSupported as exc:
            logger.error("worker %s: rate limits are not enforced: %s", self.worker, exc)
            self._enforced = False
            return list(batch), messages
        except Exception:
            logger.exception("worker %s: rate-limit admission failed", self.worker)
            limited = {d.id for d, _ in asks} | waits.keys()
            self._give_back([d for d in batch if d.id in limited])
            return [d for d in batch if d.id not in limited], messages
        return [d for d in batch if d.id not in waits], messages

    def ran(self, task: str, outcome: Outcome) -> None:
        """Note a run's outcome: ``RATE_LIMITED_IN_A_ROW`` ``RateLimited`` raises of one
        task hold the task on every worker for the last one's ``retry_after``."""
        if outcome.action != "retry" or outcome.counts_attempt:
            if self._streaks:
                self._streaks.pop(task, None)
            return
        streak = self._streaks.get(task, 0) + 1
        if streak < RATE_LIMITED_IN_A_ROW:
            self._streaks[task] = streak
            return
        self._streaks.pop(task, None)
        try:
            until = self.broker.hold_rate(task, outcome.countdown)
        except Exception as exc:
            logger.error("worker %s: could not hold task %s: %s", self.worker, task, exc)
            return
        logger.warning(
            "task %s rate limited %d times in a row: held on every worker for %.1fs",
            task,
            streak,
            outcome.countdown,
        )
        limits = self._limits.get(task, _Limits())
        self._limits[task] = dataclasses.replace(limits, hold_until=until)

    def _claim(self, asks: list[tuple[Delivery, list[Bucket]]], waits: dict[str, float]) -> None:
        """Claim the slots of ``asks`` (the first bucket of each, then the second of those
        the first admits), one ``rate_admit`` per bucket; record the waits.

        A delivery that the first bucket admits and the second makes wait keeps its slot
        of the first (``rate_keep``, one call per bucket): it comes back to slots of both
        that it does not pay again."""
        first_keys = {delivery.id: buckets[0][0] for delivery, buckets in asks}
        kept: dict[str, list[Delivery]] = {}  # first bucket's key -> what the second holds
        for stage in range(2):
            by_bucket: dict[Bucket, list[Delivery]] = {}
            for delivery, buckets in asks:
                if len(buckets) > stage and delivery.id not in waits:
                    by_bucket.setdefault(buckets[stage], []).append(delivery)
            for (key, rate), deliveries in by_bucket.items():
                answers = self.broker.rate_admit(key, rate.interval, rate.burst, deliveries)
                for delivery, wait in zip(deliveries, answers, strict=True):
                    if wait > 0:
                        waits[delivery.id] = wait
                        if stage:
                            kept.setdefault(first_keys[delivery.id], []).append(delivery)
        for key, deliveries in kept.items():
            self._keep(key, deliveries)

    def _keep(self, key: str, deliveries: list[Delivery]) -> None:
        """``rate_keep``; on a broker without it the slots are let go (paid again)."""
        if not self._keeps:
            return
        try:
            self.broker.rate_keep(key, deliveries)
        except NotSupported as exc:
            logger.warning("worker %s: a message put back pays its key again: %s", self.worker, exc)
            self._keeps = False

    def _give_back(self, deliveries: list[Delivery]) -> None:
        try:
            self.broker.requeue(deliveries, started=False)
        except Exception as exc:  # their leases return them
            logger.error(
                "worker %s: could not give back %d tasks: %s", self.worker, len(deliveries), exc
            )

    def _refresh(self) -> None:
        """Read the table of run-time limits: a rate set there replaces the declared one;
        a hold in force holds the task."""
        self._next_refresh = time.monotonic() + REFRESH_EVERY
        try:
            table = self.broker.rate_limits()
        except NotSupported:
            self._table = False
            return
        except Exception as exc:  # keep what was read last
            logger.warning("worker %s: could not read the rate limits: %s", self.worker, exc)
            return
        now = time.time()
        limits = dict(self._declared)
        for task, setting in table.items():
            held = setting.hold_until if setting.hold_until and setting.hold_until > now else None
            rate = self._rate(task, setting)
            if rate is None and held is None:
                continue
            declared = limits.get(task, _Limits())
            limits[task] = dataclasses.replace(
                declared, rate=rate or declared.rate, hold_until=held
            )
        self._limits = limits

    def _rate(self, task: str, setting: RateSetting) -> Rate | None:
        if setting.rate is None:
            return None
        try:
            return parse_rate(setting.rate, setting.burst)
        except ConfigurationError as exc:  # written by others: as if not set
            logger.warning("worker %s: rate limit of %s ignored: %s", self.worker, task, exc)
            return None
