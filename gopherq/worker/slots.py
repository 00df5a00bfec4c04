"""Shared memory between the supervisor and its children: what each child holds.

Each child owns one slot in an anonymous shared ``mmap`` that the supervisor
maps before forking. The child writes its state there on every change (plain
memory writes, no system call); the supervisor reads it to enforce hard time
limits and, when the child dies, to give back at once what it held instead of
waiting for leases to expire. The other way, the supervisor writes the ids of
the child's tasks that were cancelled, which the child reads before and while
running each task.

A slot is two boxes, the child's state and the supervisor's notices, and a
start mark. Layout of one box::

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

The start mark (a u64 after the boxes: the low 32 bits of the state's ``seq``
and a cursor) moves the cursor past the next delivery before the child does
anything with it (decoding its body, writing its running entry), at the cost
of one 8-byte store. A child that dies on a delivery before its running entry
was written thus still has it counted as started (``read(final=True)``), so a
message that kills its worker process ends with ``max_deliveries``.

Whatever the caller passes, what goes into a slot is bounded: in a batch too
large to record (huge ids or tokens), the entries too large are placeholders
and the tail that does not fit is left out, falling back on their leases; a
running entry is cut to fit (the task name shortened, or only what a hard time
limit needs); and a write never leaves its half. Reading never raises: a
state that does not decode reads as holding nothing (the leases bring it back).
"""

from __future__ import annotations

import logging
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from gopherq.brokers.base import Delivery

logger = logging.getLogger("gopherq.worker")

_SEQ = struct.Struct("=Q")
_LEN = struct.Struct("=I")
_MARK = struct.Struct("=Q")
_LOW32 = 0xFFFFFFFF
_ENTRY_BUDGET = 256  # bytes of msgpack per prefetched delivery; ids are ~36 bytes
_ENTRY_ROOM = 384  # largest batch entry recorded; a larger one is a placeholder
_TASK_ROOM = 64  # characters of a task name kept when a running entry must be cut
_RUNNING_ROOM = 768  # largest running entry (a recordable delivery fits with a cut name)
_STATE_ROOM = 1024  # a half's room besides the batch: the running entry and the counters


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
    recorded: bool = True
    """False when the delivery was too large to record: ``delivery`` then has only
    the start of its id (for logs) and no token; only its lease brings it back."""


@dataclass(frozen=True, slots=True)
class Holding:
    """Everything a child holds under lease. Deliveries come back without bodies."""

    running: Running | None = None
    finished: tuple[Delivery, ...] = ()
    """Started (ran, or began before the child died), but not yet settled in the broker."""
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
    def room(self) -> int:
        """The largest value a write takes."""
        return self._half - _LEN.size

    @property
    def seq(self) -> int:
        """How many writes completed: unchanged means the value did not change."""
        seq: int = _SEQ.unpack_from(self._memory, self._offset)[0]
        return seq

    def write(self, value: bytes) -> int:
        """Publish ``value``, returning its ``seq``; ValueError, writing nothing, if it
        exceeds ``room``."""
        if len(value) > self.room:
            raise ValueError(f"{len(value)} bytes do not fit a slot's {self.room}")
        seq = self.seq + 1
        half = self._offset + _SEQ.size + (seq & 1) * self._half
        self._memory[half + _LEN.size : half + _LEN.size + len(value)] = value
        _LEN.pack_into(self._memory, half, len(value))
        _SEQ.pack_into(self._memory, self._offset, seq)
        return seq

    def read(self) -> tuple[int, bytes] | None:
        """``(seq, value)`` as of the last complete write; None if the writer kept
        overwriting what was being read."""
        for _ in range(1000):
            seq = self.seq
            half = self._offset + _SEQ.size + (seq & 1) * self._half
            (length,) = _LEN.unpack_from(self._memory, half)
            length = min(length, self.room)
            raw = self._memory[half + _LEN.size : half + _LEN.size + length]
            if self.seq == seq:
                return seq, raw
        return None


class Slot:
    """One child's slot. The child writes with ``hold``/``start``/``skip``/``begin``/``end``/
    ``settle``/``release`` and reads ``cancelled``; the supervisor reads with ``read``
    and writes with ``notify``. No method raises, whatever it is given or finds."""

    def __init__(self, memory: mmap.mmap, offset: int, half: int) -> None:
        self._state = _Box(memory, offset, half)
        self._notices = _Box(memory, offset + _Box.size(half), half)
        self._memory = memory
        self._mark = offset + 2 * _Box.size(half)
        self._half = half
        # Writer state (the child's copy; the supervisor's copy is unused).
        self._settled = self._cursor = self._end = 0
        self._marked = False  # the cursor is past a delivery not yet begun
        self._skipped = 0  # started deliveries not run (parked), since the last settle
        self._seq = 0  # of this writer's last state write
        self._processed = 0
        self._running: list[Any] | None = None
        # One packer for the slot's life: ``msgpack.packb`` makes one per call, a
        # third of the cost of a write. (It runs no Python code, so it is never
        # re-entered mid-pack.)
        self._pack = msgpack.Packer().pack
        self._batch = self._pack([])
        self._cache: tuple[int, Holding] = (-1, Holding())
        self._cancelled: tuple[int, frozenset[str]] = (0, frozenset())

    @staticmethod
    def size(half: int) -> int:
        """Bytes a slot with boxes of halves of ``half`` bytes takes (a multiple of 8)."""
        return 2 * _Box.size(half) + _MARK.size

    @classmethod
    def allocate(cls, count: int, prefetch: int) -> list[Slot]:
        """``count`` slots in one shared mapping, sized for batches of ``prefetch``."""
        half = _STATE_ROOM + max(prefetch, 1) * _ENTRY_BUDGET
        size = cls.size(half)
        memory = mmap.mmap(-1, size * count)  # anonymous and MAP_SHARED: survives fork
        return [cls(memory, i * size, half) for i in range(count)]

    # The child's side.

    def hold(self, batch: Sequence[Delivery]) -> None:
        """A new batch was reserved: all of it is unstarted."""
        room = self._state.room - _STATE_ROOM
        packed = _pack_batch(self._pack, batch, room)
        self._batch = packed
        self._settled = self._cursor = 0
        self._marked = False
        self._skipped = 0
        self._end = len(batch)
        self._running = None
        self._write()

    def start(self) -> None:
        """The next delivery of the batch is about to start: from now on a child that
        dies counts it as started, even before ``begin`` records it (one 8-byte store)."""
        self._cursor += 1
        self._marked = True
        mark = (self._seq & _LOW32) << 32 | (self._cursor & _LOW32)
        _MARK.pack_into(self._memory, self._mark, mark)

    def begin(
        self, delivery: Delivery, task: str, retries: int | None, timeout: float | None, now: float
    ) -> None:
        """The delivery ``start`` marked (else the next one of the batch) starts running
        (``now`` from ``time.monotonic()``)."""
        if not self._marked:
            self._cursor += 1  # past the recorded entries if the batch was trimmed: fine
        self._marked = False
        deadline = None if timeout is None else now + timeout
        self._running = [*_entry(delivery), task, retries, timeout, deadline]
        self._write()  # cuts the entry if it does not fit

    def end(self) -> None:
        """The running delivery finished; its outcome awaits settling."""
        deadline = self._running[-1] if self._running else None
        self._running = None
        if deadline is not None:  # else no hurry: a dead child's running and finished
            self._write()  # deliveries are both requeued as started; the next write tells

    def settle(self) -> None:
        """Every finished delivery was settled in the broker (not one ``start`` marked
        and not yet begun)."""
        settled = self._cursor - 1 if self._marked else self._cursor
        self._processed += settled - self._settled - self._skipped
        self._settled = settled
        self._skipped = 0
        self._running = None
        self._write()

    def skip(self) -> None:
        """The delivery ``start`` marked went to the broker without running (a
        concurrency limit parked it): the next ``settle`` does not count it processed."""
        self._marked = False
        self._skipped += 1

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
                try:
                    ids = frozenset(msgpack.unpackb(raw) if raw else ())
                except Exception:  # not what the supervisor writes: no notice
                    ids = frozenset()
                self._cancelled = (seq, ids)
        return id in self._cancelled[1]

    def _write(self) -> None:
        try:
            packed = self._pack(
                [
                    self._settled,
                    self._cursor,
                    self._end,
                    self._running,
                    self._batch,
                    self._processed,
                ]
            )
        except Exception:  # a number msgpack cannot take, in a running entry
            packed = b""
        if not packed or len(packed) > self._state.room:
            self._running = _bounded(self._pack, self._running)  # the batch is bounded
            counts = [self._settled, self._cursor, self._end]
            packed = self._pack([*counts, self._running, self._batch, self._processed])
        self._seq = self._state.write(packed)

    # The supervisor's side.

    def read(self, *, final: bool = False) -> Holding:
        """What the child holds, as of its last complete write. ``final``: the child is
        dead, so a delivery it marked with ``start`` counts as started too."""
        seq = self._state.seq
        if seq == self._cache[0] and not final:
            return self._cache[1]
        read = self._state.read()
        if read is None:
            return self._cache[1]  # the child writes nonstop: keep the last good reading
        seq, raw = read
        started = 0
        if final:
            (mark,) = _MARK.unpack_from(self._memory, self._mark)
            if mark >> 32 == seq & _LOW32:
                started = mark & _LOW32
        try:
            holding = _decode(raw, started)
        except Exception as exc:  # the supervisor must survive whatever the memory holds
            logger.error("a worker process's slot does not decode (its leases will): %r", exc)
            holding = Holding()
        if not final:
            self._cache = (seq, holding)
        return holding

    def notify(self, cancelled: frozenset[str]) -> None:
        """Tell the child which of its tasks were cancelled (ids beyond the box's room,
        hundreds of them, wait for the next call; one too long to record is never sent)."""
        ids = sorted(id for id in cancelled if len(id) <= _ENTRY_ROOM)
        packed = self._pack(ids)
        while len(packed) > self._notices.room and ids:
            ids.pop()
            packed = self._pack(ids)
        self._notices.write(packed)


def _entry(d: Delivery) -> list[Any]:
    return [d.id, d.queue, d.priority, d.attempt, d.deliveries, d.token]


def _pack_batch(pack: Any, batch: Sequence[Delivery], room: int) -> bytes:
    """The batch's entries packed in at most ``room`` bytes. When they do not fit, an
    entry too large to record (or not packable) is a placeholder (``nil``) and the
    tail that still does not fit is left out; either falls back on its lease."""
    try:
        packed: bytes = pack([_entry(d) for d in batch])
        if len(packed) <= room:
            return packed  # the common case: one pack
    except Exception:
        pass
    entries: list[bytes] = []
    for delivery in batch:
        try:
            entry: bytes = pack(_entry(delivery))
        except Exception:
            entry = b""
        entries.append(entry if 0 < len(entry) <= _ENTRY_ROOM else pack(None))
    while entries and sum(map(len, entries)) > room - 5:  # 5: the longest array header
        entries.pop()
    return _array_header(len(entries)) + b"".join(entries)


def _array_header(count: int) -> bytes:
    """The msgpack header of an array of ``count`` items."""
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _bounded(pack: Any, running: list[Any] | None) -> list[Any] | None:
    """A running entry cut to ``_RUNNING_ROOM`` bytes packed: the task name shortened
    and odd numbers dropped, or without the delivery when that alone is too large to
    record. The deadline stays last."""
    if running is None:
        return None
    entry, task = running[:6], running[6]
    retries, timeout, deadline = running[7:10]
    numbers = [
        retries if type(retries) is int and 0 <= retries < 1 << 32 else None,
        _float_or_none(timeout),
        _float_or_none(deadline),
    ]
    try:
        cut = [*entry, _cut(task), *numbers]
        if len(pack(cut)) <= _RUNNING_ROOM:
            return cut
    except Exception:
        pass
    return [_cut(entry[0]), None, 0, 0, 0, None, _cut(task), *numbers]  # not recorded


def _cut(text: Any) -> str:
    if not isinstance(text, str):
        return "?"
    return text if len(text) <= _TASK_ROOM else text[:_TASK_ROOM] + "..."


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _delivery(entry: Any) -> Delivery:
    id, queue, priority, attempt, deliveries, token = entry[:6]
    if not (isinstance(id, str) and isinstance(queue, str) and isinstance(token, str)):
        raise ValueError(f"not a delivery: {entry!r:.100}")
    if not all(type(n) is int for n in (priority, attempt, deliveries)):
        raise ValueError(f"not a delivery: {entry!r:.100}")
    return Delivery(id, queue, priority, b"", attempt, deliveries, token)


def _running(entry: Any) -> Running:
    task, retries, timeout, deadline = entry[6:10]
    if not isinstance(task, str) or not (retries is None or type(retries) is int):
        raise ValueError(f"not a running entry: {entry!r:.100}")
    timeout, deadline = _number(timeout), _number(deadline)
    if entry[5] is None:  # too large to record: only what a time limit needs
        delivery = Delivery(str(entry[0]), "", 0, b"", 0, 0, "")
        return Running(delivery, task, retries, timeout, deadline, recorded=False)
    return Running(_delivery(entry), task, retries, timeout, deadline)


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    raise ValueError(f"not a number: {value!r:.100}")


def _decode(raw: bytes, started: int = 0) -> Holding:
    """The holding a state encodes; ``started``: a cursor from a start mark, counted
    as started when ahead of the state's. Raises on anything not written by a slot."""
    if not raw:
        return Holding()
    settled, cursor, end, running, batch, processed = msgpack.unpackb(raw)
    if not all(type(n) is int and n >= 0 for n in (settled, cursor, end, processed)):
        raise ValueError("slot counters are not counts")
    entries = msgpack.unpackb(batch) if batch else []
    if not isinstance(entries, list):
        raise ValueError("slot batch is not a list")
    done = cursor - 1 if running is not None else cursor
    started = max(started, cursor)

    def deliveries(begin: int, stop: int) -> tuple[Delivery, ...]:
        return tuple(_delivery(e) for e in entries[begin:stop] if e is not None)

    return Holding(
        running=None if running is None else _running(running),
        finished=deliveries(settled, done) + deliveries(cursor, started),
        unstarted=deliveries(started, end),
        processed=processed,
    )
