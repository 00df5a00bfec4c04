"""Reading the Redis broker's dead letters (``Broker.dead_letters`` and the rest).

A queue's dead letters are its zset ``P:{q}:dead`` (id, scored by the time of
death) and each letter's hash ``P:{q}:m:<id>`` (layout in ``scripts/lib.lua``).
A page is read in two passes, whatever the queues:

1. the newest ids and scores of each queue, in one pipeline: a plain
   ``ZREVRANGEBYSCORE`` per queue, of ``P:{q}:dead`` or, by reason, of the queue's
   index of that reason ``P:{q}:dead:r:<reason>``. The index is complete when the
   queue keeps as many reasons (``P:{q}:dead:reasons``) as it has letters; where
   it is not (letters a foreign writer planted, or dead before the index was kept),
   ``dead_letters.lua`` looks through the queue's newest letters instead, a
   second round trip;
2. merged by score and cut in Python, then only the letters of the page read:
   per queue a ``ZMSCORE`` (still dead?) and a ``HMGET`` per letter, all in one
   pipeline. A letter requeued between the passes is left out.

Plain commands rather than a script: a script that returns a letter's fields
spends several times the Redis CPU of the ``HMGET`` it makes. Reads write
nothing: a letter past the retention (``dead_letter_ttl``, by this machine's
clock) is passed over here and deleted by the scripts that write (``tidy`` and
``dead``, by Redis's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from gopherq.brokers.base import DeadLetter
from gopherq.errors import BrokerError
from gopherq.message import DEFAULT_PRIORITY
from gopherq.stores.redis import Call, Connection, scored, script

UNITS = 100_000
"""Time units per second in the scripts (``UNITS`` in lib.lua)."""
EPOCH = 1_704_067_200
"""Unix time of unit 0 in the scripts (``EPOCH`` in lib.lua)."""
FIELDS = ("p", "b", "a", "r", "e", "x")
"""A letter's hash fields read: priority, body, attempt, reason, error, time of death."""
NO_BODY = b"broker entry has no body"
_WHOLE = 2**53

Letter = tuple[str, bytes]
"""A dead letter's queue and id."""


class DeadLetterReader:
    """Reads the dead letters of the queues whose key bases ``base`` gives, on ``conn``;
    ``ttl`` is the retention in seconds."""

    def __init__(self, conn: Connection, base: Callable[[str], str], ttl: float) -> None:
        self._conn = conn
        self._base = base
        self._ttl = min(ttl, 1e12)  # as the scripts bound it: no score beyond

    def page(
        self, queues: Sequence[str], offset: int, limit: int, reason: tuple[str, int] | None
    ) -> list[DeadLetter]:
        """The dead letters of ``queues``, newest first, merged by time of death, from
        ``offset``, at most ``limit``; with ``reason`` (the reason, how many of each
        queue's newest to look through) only those with it."""
        oldest, wanted = self._oldest_score(), offset + limit
        if reason is None:
            span = _newest(oldest, wanted)
            calls: list[Call] = [
                ("ZREVRANGEBYSCORE", [self._base(queue) + ":dead"], span) for queue in queues
            ]
            results = self._conn.call(lambda c: self._conn.run_many(c, calls))
        else:
            results = self._by_reason(queues, reason, oldest, wanted)
        newest = [
            (score, queue, id)
            for queue, raw in zip(queues, results, strict=True)
            for id, score in scored(raw)
        ]
        newest.sort(key=itemgetter(0), reverse=True)
        return self.read([(queue, id) for _, queue, id in newest[offset:wanted]])

    def _by_reason(
        self, queues: Sequence[str], reason: tuple[str, int], oldest: int, wanted: int
    ) -> list[Any]:
        """Each queue's ``wanted`` newest ids and scores with ``reason``: from the queue's
        index of that reason where it is complete (as many reasons kept as letters),
        else by ``dead_letters.lua`` among the newest ``reason[1]``. One round trip, two
        when some queue's index is not complete."""
        calls: list[Call] = []
        span = _newest(oldest, wanted)
        for queue in queues:
            base = self._base(queue)
            calls.append(("HLEN", [base + ":dead:reasons"], ()))
            calls.append(("ZCARD", [base + ":dead"], ()))
            calls.append(("ZREVRANGEBYSCORE", [f"{base}:dead:r:{reason[0]}"], span))
        found = self._conn.call(lambda c: self._conn.run_many(c, calls))
        results = found[2::3]
        scans = [i for i in range(len(queues)) if found[3 * i] != found[3 * i + 1]]
        if scans:
            scan = script("dead_letters")
            args = (oldest, wanted, *reason)
            again: list[Call] = [(scan, [self._base(queues[i])], args) for i in scans]
            scanned = self._conn.call(lambda c: self._conn.run_many(c, again))
            for i, raw in zip(scans, scanned, strict=True):
                results[i] = raw
        return results

    def read(self, letters: Sequence[Letter]) -> list[DeadLetter]:
        """The dead letters ``(queue, id)`` that still are, in that order, in one round
        trip."""
        by_queue: dict[str, list[bytes]] = {}
        for queue, id in letters:
            by_queue.setdefault(queue, []).append(id)
        if not by_queue:
            return []
        commands: list[tuple[Any, ...]] = []
        for queue, ids in by_queue.items():
            base = self._base(queue)
            commands.append(("ZMSCORE", base + ":dead", *ids))
            message = (base + ":m:").encode()
            commands.extend(("HMGET", message + id, *FIELDS) for id in ids)
        replies = self._conn.call(lambda c: self._conn.send(c, commands))
        oldest = self._oldest_score()
        found: dict[Letter, DeadLetter] = {}
        at = 0
        for queue, ids in by_queue.items():
            scores = replies[at]
            if isinstance(scores, Exception):  # a key that is no zset: a foreign writer's
                raise BrokerError(f"dead letters of queue {queue!r}: {scores}")
            fields = replies[at + 1 : at + 1 + len(ids)]
            for id, score, values in zip(ids, scores, fields, strict=True):
                if score is not None and float(score) > oldest:
                    found[queue, id] = _letter(queue, id, float(score), values)
            at += 1 + len(ids)
        return [found[letter] for letter in letters if letter in found]

    def _oldest_score(self) -> int:
        """The score of a letter that died ``ttl`` ago: older ones are past retention."""
        return int((time.time() - EPOCH - self._ttl) * UNITS)


def _newest(oldest: int, count: int) -> tuple[Any, ...]:
    """The arguments of a ``ZREVRANGEBYSCORE``: the newest ``count`` that died after
    ``oldest``, with their scores."""
    return ("+inf", f"({oldest}", "WITHSCORES", "LIMIT", 0, count)


def _letter(queue: str, id: bytes, score: float, values: Any) -> DeadLetter:
    """A dead letter from its score and the values of ``FIELDS``, with what can be read
    of one a foreign writer left incomplete (or of a key that is no hash: an error)."""
    if isinstance(values, Exception):
        values = (None,) * len(FIELDS)
    priority, body, attempt, reason, error, died = values
    return DeadLetter(
        id.decode(errors="replace"),  # a foreign writer's id may be any bytes
        queue,
        _whole(priority, DEFAULT_PRIORITY),
        body or b"",
        _whole(attempt, 0),
        (reason or b"DECODE_ERROR").decode(errors="replace"),
        (error or (b"" if body else NO_BODY)).decode(errors="replace"),
        EPOCH + _whole(died, _whole(score, 0)) / UNITS,
    )


def _whole(value: bytes | float | None, default: int) -> int:
    """``value`` (a reply) as a whole number, else ``default``."""
    try:
        return int(value)  # type: ignore[arg-type]  # the scripts write whole numbers
    except (TypeError, ValueError):
        pass
    try:
        number = float(value)  # type: ignore[arg-type]  # None raises TypeError
    except (TypeError, ValueError):
        return default
    return int(number) if number.is_integer() and -_WHOLE < number < _WHOLE else default
