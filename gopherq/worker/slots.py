"""Shared memory between the supervisor and its children: what each child holds.

Each child owns one slot in an anonymous shared ``mmap`` that the supervisor
maps before forking. The child writes its state there on every change (plain
memory writes, no system call); the supervisor reads it to enforce hard time
limits and, when the child dies, to give back at once what it held instead of
waiting for leases to expire. The other way, the supervisor writes the ids of
the child's tasks that were cancelled, which the child reads before and while
running each task.

A slot is two boxes, the child's state and the supervisor's notices. Layout
of one box::

    offset 0       u64   seq: number of completed writes
    offset 8       half 0: u32 length + msgpack value
    offset 8+H     half 1: u32 length + msgpack value

The value of write ``seq`` lives in half ``seq % 2``. A writer fills the other
half, then bumps ``seq``; so the current half is always complete, even when the
writer is killed in the middle of a write. A reader copies the current half and
checks that ``seq`` did not move meanwhile (a seqlock: if it moved, the writer
may be overwriting what was read, so read again). Each box has one writer at a
time: the state box its child (or the supervisor once that child is dead), the
notices box the supervisor.

The state is ``[settled, cursor, end, running, batch, processed]``: ``batch`` is the
msgpack list of the reserved deliveries (packed once per reserve); entries
``[0, settled)`` are settled, ``[settled, cursor)`` started (the last one maybe
still running), ``[cursor, end)`` not started yet. ``running`` repeats the
running delivery with its task name, retries override, hard timeout and
``time.monotonic()`` deadline (the clock is system-wide on Linux). A task
without a deadline that just finished may still show as ``running`` until the
next write: for a supervisor both mean "started, not settled", and sparing that
write keeps the cost to about one write per task. ``processed`` counts the
deliveries the child has settled, for the worker's heartbeats.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from gopherq.brokers.base import Delivery

_SEQ = struct.Struct("=Q")
_LEN = struct.Struct("=I")
_ENTRY_BUDGET = 256  # bytes of msgpack per prefetched delivery; ids are ~36 bytes


@dataclass(frozen=True, slots=True)
class Running:
    """The delivery a child is running, with what a hard time limit needs."""

    delivery: Delivery
    task: str
    retries: int | None
    """The message's max retries override."""
    timeout: float | None
    """The hard time limit in seconds, if any."""
    deadline: float | None
    """``time.monotonic()`` past which the child is killed."""


@dataclass(frozen=True, slots=True)
class Holding:
    """Everything a child holds under lease. Deliveries come back without bodies."""

    running: Running | None = None
    finished: tuple[Delivery, ...] = ()
    """Ran, but their outcome is not yet stored and settled in the broker."""
    unstarted: tuple[Delivery, ...] = ()
    """Prefetched, never started."""
    processed: int = field(default=0, compare=False)
    """Deliveries the child has settled since it started (a count, not a holding)."""

    def __bool__(self) -> bool:
        return bool(self.running or self.finished or self.unstarted)


class _Box:
    """One seqlocked, double-buffered value in shared memory (see the module docstring)."""

    __slots__ = ("_half", "_memory", "_offset")

    def __init__(self, memory: mmap.mmap, offset: int, half: int) -> None:
        self._memory = memory
        self._offset = offset
        self._half = half

    @staticmethod
    def size(half: int) -> int:
        """Bytes a box with halves of ``half`` bytes takes."""
        return _SEQ.size + 2 * half

    @property
    def seq(self) -> int:
        """How many writes completed: unchanged means the value did not change."""
        seq: int = _SEQ.unpack_from(self._memory, self._offset)[0]
        return seq

    def write(self, value: bytes) -> None:
        """Publish ``value`` (at most a half minus its length word)."""
        seq = self.seq + 1
        half = self._offset + _SEQ.size + (seq & 1) * self._half
        self._memory[half + _LEN.size : half + _LEN.size + len(value)] = value
        _LEN.pack_into(self._memory, half, len(value))
        _SEQ.pack_into(self._memory, self._offset, seq)

    def read(self) -> tuple[int, bytes] | None:
        """``(seq, value)`` as of the last complete write; None if the writer kept
        overwriting what was being read."""
        for _ in range(1000):
            seq = self.seq
            half = self._offset + _SEQ.size + (seq & 1) * self._half
            (length,) = _LEN.unpack_from(self._memory, half)
            length = min(length, self._half - _LEN.size)
            raw = self._memory[half + _LEN.size : half + _LEN.size + length]
            if self.seq == seq:
                return seq, raw
        return None


class Slot:
    """One child's slot. The child writes with ``hold``/``begin``/``end``/``settle``/
    ``release`` and reads ``cancelled``; the supervisor reads with ``read`` and
    writes with ``notify``."""

    def __init__(self, memory: mmap.mmap, offset: int, half: int) -> None:
        self._state = _Box(memory, offset, half)
        self._notices = _Box(memory, offset + _Box.size(half), half)
        self._half = half
        self._notice_room = half - _LEN.size
        # Writer state (the child's copy; the supervisor's copy is unused).
        self._settled = self._cursor = self._end = 0
        self._processed = 0
        self._running: list[Any] | None = None
        # One packer for the slot's life: ``msgpack.packb`` makes one per call, a
        # third of the cost of a write. (It runs no Python code, so it is never
        # re-entered mid-pack.)
        self._pack = msgpack.Packer().pack
        self._batch = self._pack([])
        self._cache: tuple[int, Holding] = (-1, Holding())
        self._cancelled: tuple[int, frozenset[str]] = (0, frozenset())

    @classmethod
    def allocate(cls, count: int, prefetch: int) -> list[Slot]:
        """``count`` slots in one shared mapping, sized for batches of ``prefetch``."""
        half = 1024 + max(prefetch, 1) * _ENTRY_BUDGET
        size = 2 * _Box.size(half)
        memory = mmap.mmap(-1, size * count)  # anonymous and MAP_SHARED: survives fork
        return [cls(memory, i * size, half) for i in range(count)]

    # The child's side.

    def hold(self, batch: Sequence[Delivery]) -> None:
        """A new batch was reserved: all of it is unstarted."""
        entries = [_entry(d) for d in batch]
        packed = self._pack(entries)
        while len(packed) > self._half - 512 and entries:
            entries.pop()  # too large to record (huge ids): those fall back on their lease
            packed = self._pack(entries)
        self._batch = packed
        self._settled = self._cursor = 0
        self._end = len(entries)
        self._running = None
        self._write()

    def begin(
        self, delivery: Delivery, task: str, retries: int | None, timeout: float | None, now: float
    ) -> None:
        """The next delivery of the batch starts running (``now`` from ``time.monotonic()``)."""
        self._cursor += 1  # past the recorded entries if the batch was trimmed: fine
        deadline = None if timeout is None else now + timeout
        self._running = [*_entry(delivery), task, retries, timeout, deadline]
        self._write()

    def end(self) -> None:
        """The running delivery finished; its outcome awaits settling."""
        deadline = self._running[-1] if self._running else None
        self._running = None
        if deadline is not None:  # else no hurry: a dead child's running and finished
            self._write()  # deliveries are both requeued as started; the next write tells

    def settle(self) -> None:
        """Every finished delivery was settled in the broker."""
        self._processed += self._cursor - self._settled
        self._settled = self._cursor
        self._running = None
        self._write()

    def release(self) -> None:
        """The unstarted deliveries were given back to the broker."""
        self._end = self._cursor
        self._write()

    def clear(self) -> None:
        """Forget everything (the supervisor, once the slot's child is dead)."""
        self.hold([])
        self.notify(frozenset())

    def cancelled(self, id: str) -> bool:
        """Whether the supervisor said that the task ``id`` was cancelled (cheap: one
        shared-memory read while nothing changed)."""
        seq = self._notices.seq
        if seq != self._cancelled[0]:
            read = self._notices.read()
            if read is not None:
                seq, raw = read
                self._cancelled = (seq, frozenset(msgpack.unpackb(raw) if raw else ()))
        return id in self._cancelled[1]

    def _write(self) -> None:
        state = [self._settled, self._cursor, self._end, self._running, self._batch]
        self._state.write(self._pack([*state, self._processed]))

    # The supervisor's side.

    def read(self) -> Holding:
        """What the child holds, as of its last complete write."""
        if self._state.seq == self._cache[0]:
            return self._cache[1]
        read = self._state.read()
        if read is None:
            return self._cache[1]  # the child writes nonstop: keep the last good reading
        seq, raw = read
        holding = _decode(raw)
        self._cache = (seq, holding)
        return holding

    def notify(self, cancelled: frozenset[str]) -> None:
        """Tell the child which of its tasks were cancelled (ids beyond the box's room,
        hundreds of them, wait for the next call)."""
        ids = sorted(cancelled)
        packed = self._pack(ids)
        while len(packed) > self._notice_room and ids:
            ids.pop()
            packed = self._pack(ids)
        self._notices.write(packed)


def _entry(d: Delivery) -> list[Any]:
    return [d.id, d.queue, d.priority, d.attempt, d.deliveries, d.token]


def _delivery(entry: Sequence[Any]) -> Delivery:
    id, queue, priority, attempt, deliveries, token = entry[:6]
    return Delivery(id, queue, priority, b"", attempt, deliveries, token)


def _decode(raw: bytes) -> Holding:
    if not raw:
        return Holding()
    settled, cursor, end, running, batch, processed = msgpack.unpackb(raw)
    entries = msgpack.unpackb(batch)
    done = cursor - 1 if running is not None else cursor
    return Holding(
        running=None
        if running is None
        else Running(_delivery(running), running[6], running[7], running[8], running[9]),
        finished=tuple(_delivery(e) for e in entries[settled:done]),
        unstarted=tuple(_delivery(e) for e in entries[cursor:end]),
        processed=processed,
    )
