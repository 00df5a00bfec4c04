"""Worker slots: bounded whatever the caller passes, never raising on what they read."""

from __future__ import annotations

import logging
import struct
import sys

import msgpack
import pytest

from gopherq.brokers import Delivery
from gopherq.message import new_id
from gopherq.worker.slots import Holding, Slot


def delivery(id: str | None = None, token: str = "tok") -> Delivery:
    return Delivery(id or new_id(), "q", 2, b"body", 0, 1, token)


def bodiless(d: Delivery) -> Delivery:
    return Delivery(d.id, d.queue, d.priority, b"", d.attempt, d.deliveries, d.token)


def scribble(slot: Slot, value: bytes) -> None:
    """Publish ``value`` as the slot's state, as a buggy or hostile writer would."""
    box = slot._state
    seq = int.from_bytes(box._memory[box._offset : box._offset + 8], sys.byteorder) + 1
    half = box._offset + 8 + (seq & 1) * box._half
    box._memory[half : half + 4] = struct.pack("=I", len(value))
    box._memory[half + 4 : half + 4 + len(value)] = value
    box._memory[box._offset : box._offset + 8] = seq.to_bytes(8, sys.byteorder)


@pytest.mark.parametrize("size", [16_000, 40_000, 1_000_000])
def test_a_huge_task_name_stays_in_its_slot(size: int) -> None:
    slot, neighbour = Slot.allocate(2, 4)
    other = [delivery()]
    neighbour.hold(other)
    batch = [delivery(), delivery()]
    slot.hold(batch)
    slot.start()
    slot.begin(batch[0], "t" * size, 2, 5.0, now=100.0)
    holding = slot.read()
    assert holding.running is not None
    assert holding.running.delivery == bodiless(batch[0])  # still settled by id
    assert holding.running.task.startswith("ttt")
    assert len(holding.running.task) < 100
    assert (holding.running.retries, holding.running.deadline) == (2, 105.0)
    assert holding.unstarted == (bodiless(batch[1]),)
    assert neighbour.read().unstarted == (bodiless(other[0]),)  # nothing overflowed


def test_a_delivery_too_large_to_record_keeps_its_deadline() -> None:
    slot = Slot.allocate(1, 4)[0]
    huge = delivery("i" * 40_000, token="k" * 40_000)
    small = delivery()
    slot.hold([huge, small])
    holding = slot.read()
    assert holding.unstarted == (bodiless(small),)  # the huge one falls back on its lease
    slot.begin(huge, "tasks.hang", None, 2.0, now=10.0)
    running = slot.read().running
    assert running is not None
    assert not running.recorded
    assert running.deadline == 12.0  # the time limit is still enforced
    assert running.delivery.token == ""
    assert len(running.delivery.id) < 100


def test_numbers_msgpack_cannot_pack_are_dropped() -> None:
    slot = Slot.allocate(1, 1)[0]
    d = delivery()
    slot.hold([d])
    slot.begin(d, "tasks.t", 10**30, 1.0, now=0.0)
    running = slot.read().running
    assert running is not None
    assert (running.retries, running.deadline) == (None, 1.0)


def test_a_write_never_leaves_its_half() -> None:
    slot = Slot.allocate(1, 1)[0]
    with pytest.raises(ValueError, match="do not fit"):
        slot._state.write(b"x" * slot._half)
    slot.notify(frozenset({"i" * 100_000, "small"}))  # trimmed to what fits
    assert slot.cancelled("small")


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xc1\xc1\xc1",
        msgpack.packb([1, 2, 3]),
        msgpack.packb([0, 1, 1, None, b"\xc1", 0]),
        msgpack.packb([0, 1, 1, None, msgpack.packb([["id", "q", 2, 0, 1, 7]]), 0]),
        msgpack.packb([0, 1, 1, ["id", "q"], msgpack.packb([]), 0]),
        msgpack.packb([-1, "a", 1, None, msgpack.packb([]), 0]),
        msgpack.packb({"not": "a list"}),
    ],
)
def test_garbage_in_a_slot_reads_as_nothing(
    garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    slot = Slot.allocate(1, 4)[0]
    slot.hold([delivery()])
    scribble(slot, garbage)
    with caplog.at_level(logging.ERROR, "gopherq.worker"):
        assert slot.read() == Holding()
        assert slot.read(final=True) == Holding()
    assert "does not decode" in caplog.text


def test_garbage_notices_cancel_nothing() -> None:
    slot = Slot.allocate(1, 4)[0]
    box = slot._notices
    slot._state, saved = box, slot._state
    scribble(slot, msgpack.packb([["unhashable"]]))
    slot._state = saved
    assert not slot.cancelled("x")


def test_a_delivery_started_but_not_recorded_counts_once_its_child_is_dead() -> None:
    slot = Slot.allocate(1, 4)[0]
    batch = [delivery(), delivery(), delivery()]
    slot.hold(batch)
    slot.start()  # the child then died decoding it, before ``begin`` wrote anything
    assert slot.read().unstarted == tuple(map(bodiless, batch))  # alive: nothing to tell yet
    dead = slot.read(final=True)
    assert dead.finished == (bodiless(batch[0]),)  # started: given back counted
    assert dead.unstarted == tuple(map(bodiless, batch[1:]))


def test_a_start_mark_goes_stale_with_the_next_write() -> None:
    slot = Slot.allocate(1, 4)[0]
    batch = [delivery(), delivery()]
    slot.hold(batch)
    slot.start()
    slot.begin(batch[0], "tasks.a", None, None, now=0.0)
    slot.end()
    slot.settle()
    dead = slot.read(final=True)
    assert dead.finished == ()
    assert dead.unstarted == (bodiless(batch[1]),)
    assert dead.processed == 1
    slot.hold([delivery()])  # a new batch: the old mark does not apply to it
    assert slot.read(final=True).finished == ()


def test_settling_before_a_marked_delivery_begins_does_not_settle_it() -> None:
    slot = Slot.allocate(1, 4)[0]
    batch = [delivery(), delivery()]
    slot.hold(batch)
    slot.start()
    slot.begin(batch[0], "tasks.a", None, None, now=0.0)
    slot.end()
    slot.start()  # the next one is marked; a flush settles the first before it begins
    slot.settle()
    holding = slot.read(final=True)
    assert holding.finished == (bodiless(batch[1]),)
    assert holding.processed == 1
    slot.begin(batch[1], "tasks.a", None, None, now=0.0)
    slot.end()
    slot.settle()
    assert slot.read(final=True) == Holding()
    assert slot.read().processed == 2


def test_a_skipped_delivery_is_not_counted_processed() -> None:
    slot = Slot.allocate(1, 4)[0]
    batch = [delivery(), delivery(), delivery()]
    slot.hold(batch)
    slot.start()
    slot.skip()  # parked by a concurrency limit: back in the broker, not run
    slot.start()
    slot.begin(batch[1], "tasks.a", None, None, now=0.0)
    slot.end()
    slot.start()
    slot.skip()
    slot.settle()
    assert slot.read().processed == 1
    slot.hold([batch[0]])  # the first one again, woken and reserved
    slot.start()
    slot.begin(batch[0], "tasks.a", None, None, now=0.0)
    slot.end()
    slot.settle()
    assert slot.read().processed == 2


def test_a_batch_with_one_huge_entry_keeps_the_others() -> None:
    slot = Slot.allocate(1, 4)[0]
    batch = [delivery(), delivery("x" * 5_000), delivery()]
    slot.hold(batch)
    assert slot.read().unstarted == (bodiless(batch[0]), bodiless(batch[2]))
    for d in batch:
        slot.start()
        slot.begin(d, "tasks.a", None, None, now=0.0)
        slot.end()
    holding = slot.read()
    assert holding.running is not None
    assert holding.running.delivery == bodiless(batch[2])
    assert holding.finished == (bodiless(batch[0]),)
