"""The Redis broker's rate limits (``BrokerAdmin.rate_admit`` and the rest).

Each bucket lives in a hash slot of its own (``P:{rate:<key>}``, layout in
``scripts/lib.lua``), so on a Redis Cluster one task's bucket is one slot and
every claim one script call. A message that must wait is then moved in its
queue's slot (``defer``): two calls. A crash between them leaves the message
leased with its slot claimed; its lease expires, it is delivered again and finds
its slot remembered, so it is neither lost nor charged twice (at-least-once).

``rate_release`` is two steps the same way: the bucket hands back the messages
that wait for its slots, then each queue makes them ready. A crash between the two
leaves them waiting for their old slots, which they then pay again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gopherq.brokers.base import RATE_SLOT_KEPT, BrokerAdmin, Delivery
from gopherq.limits import RateSetting
from gopherq.stores.redis import Call, Connection, script

_RATE, _HOLD = "rate:", "hold:"
"""Field prefixes of the run-time limits hash: a task's rate and its hold."""


class RedisRates(BrokerAdmin):
    """Rate limits for ``RedisBroker``, which provides the connection and key bases."""

    __slots__ = ()
    _conn: Connection
    prefix: str

    def _base(self, queue: str) -> str:
        raise NotImplementedError  # RedisBroker's

    @property
    def _limits_key(self) -> str:
        return f"{self.prefix}:{{_}}:rate-limits"

    def rate_admit(
        self, key: str, interval: float, burst: int, deliveries: Sequence[Delivery]
    ) -> list[float]:
        """Seconds until each delivery's slot of bucket ``key`` (0.0: now): one script call.

        Repeated after a connection failure: slots claimed by a call whose answer was
        lost are remembered, so the repeat finds them (those of now excepted: lost).
        """
        if not deliveries:
            return []
        args = [repr(interval), burst, repr(RATE_SLOT_KEPT)]
        args += (f"{d.queue}\0{d.id}" for d in deliveries)
        keys = [f"{self.prefix}:{{rate:{key}}}"]
        waits = self._conn.call(lambda c: self._conn.run(c, script("rate_admit"), keys, args))
        return [float(w) for w in waits]

    def rate_keep(self, key: str, deliveries: Sequence[Delivery]) -> int:
        """Remember a slot due now of bucket ``key`` for each delivery: one script call."""
        if not deliveries:
            return 0
        args = [repr(RATE_SLOT_KEPT), *(f"{d.queue}\0{d.id}" for d in deliveries)]
        keys = [f"{self.prefix}:{{rate:{key}}}"]
        kept = self._conn.call(lambda c: self._conn.run(c, script("rate_keep"), keys, args))
        return int(kept)

    def defer(self, deliveries: Sequence[Delivery], countdowns: Sequence[float]) -> int:
        """Put held messages back, scheduled ``countdowns`` from now: one call per queue,
        all in one round trip."""
        by_queue: dict[str, list[Any]] = {}
        for d, countdown in zip(deliveries, countdowns, strict=True):
            # Bounded as retry's countdown is: a time beyond ~30,000 years has no score.
            by_queue.setdefault(d.queue, []).extend((d.id, d.token, repr(min(countdown, 1e12))))
        calls: list[Call] = [(script("defer"), [self._base(q)], a) for q, a in by_queue.items()]
        if not calls:
            return 0
        return sum(self._conn.call(lambda c: self._conn.run_many(c, calls)))

    def rate_release(self, key: str) -> int:
        """Forget bucket ``key``, then make its waiting messages ready in their queues."""
        keys = [f"{self.prefix}:{{rate:{key}}}"]
        members = self._conn.call(lambda c: self._conn.run(c, script("rate_release"), keys, []))
        by_queue: dict[str, list[str]] = {}
        for member in members:
            queue, _, id = member.decode().partition("\0")
            by_queue.setdefault(queue, []).append(id)
        calls: list[Call] = [
            (script("defer_release"), [self._base(q)], ids[start : start + 1000])
            for q, ids in by_queue.items()
            for start in range(0, len(ids), 1000)
        ]
        if not calls:
            return 0
        return sum(self._conn.call(lambda c: self._conn.run_many(c, calls)))

    def rate_limits(self) -> dict[str, RateSetting]:
        """Run-time rate limits and holds by task (holds that ended go): one script call."""
        keys = [self._limits_key]
        flat = self._conn.call(lambda c: self._conn.run(c, script("rate_limits"), keys, []))
        rates: dict[str, tuple[str, int]] = {}
        holds: dict[str, float] = {}
        for field, value in zip(flat[::2], flat[1::2], strict=True):
            name, text = field.decode(errors="replace"), value.decode(errors="replace")
            try:
                if name.startswith(_RATE):
                    rate, _, burst = text.partition(" ")
                    rates[name.removeprefix(_RATE)] = rate, int(burst or 1)
                elif name.startswith(_HOLD):
                    holds[name.removeprefix(_HOLD)] = float(text)
            except ValueError:  # a foreign writer's: as if not there
                continue
        settings: dict[str, RateSetting] = {}
        for task in rates.keys() | holds.keys():
            rate, burst = rates.get(task, (None, 1))
            settings[task] = RateSetting(rate, burst, holds.get(task))
        return settings

    def set_rate_limit(self, task: str, rate: str | None, burst: int = 1) -> None:
        """Set or (``rate`` None) remove the run-time rate limit of ``task``: one command."""
        field = _RATE + task
        if rate is None:
            self._conn.call(lambda c: c.hdel(self._limits_key, field))
        else:
            self._conn.call(lambda c: c.hset(self._limits_key, field, f"{rate} {burst}"))

    def hold_rate(self, task: str, seconds: float) -> float:
        """Hold ``task`` until ``seconds`` from now by Redis ``TIME`` (a later hold stays)."""
        keys, args = [self._limits_key], [task, repr(float(seconds))]
        until = self._conn.call(lambda c: self._conn.run(c, script("rate_hold"), keys, args))
        return float(until)
