"""The broker contract of ``reserve_ordered``: strict queue order and priority aging.

Run on every broker kind as tests/test_broker_contract.py is (and on the Redis
Cluster by tests/test_redis_cluster.py). Strict order runs on the minimal broker
too (``Broker``'s default, built on ``reserve``); aging, which that default does not
offer, on the built-in brokers (marked ``admin``).
"""

from __future__ import annotations

import time

import pytest
from minimal_broker import DictBroker
from test_broker_contract import (
    MakeBroker,
    admin,
    broker_kind,
    enqueue,
    envelope,
    ids_of,
    pytest_generate_tests,
)

from gopherq.brokers import Broker, Delivery, ReserveOrder
from gopherq.errors import NotSupported

__all__ = ["broker_kind", "pytest_generate_tests"]  # each test on every kind, as there

STRICT = ReserveOrder(strict=True)
PERIOD = 0.2
"""The aging period of the flood test: seconds per level."""


def take_all(
    broker: Broker, queues: list[str], order: ReserveOrder, one_at_a_time: bool
) -> list[str]:
    """The ids ``reserve_ordered`` hands out until none is left, one per call or all in one."""
    taken: list[Delivery] = []
    while batch := broker.reserve_ordered(queues, 1 if one_at_a_time else 100, 0, order):
        taken += batch
    return ids_of(taken)


@pytest.mark.parametrize("one_at_a_time", [True, False])
def test_strict_takes_the_queues_in_listed_order(broker: Broker, one_at_a_time: bool) -> None:
    a = enqueue(broker, envelope("a", 4), envelope("a", 3))
    b = enqueue(broker, envelope("b", 0), envelope("b", 2), envelope("b", 1))
    c = enqueue(broker, envelope("c", 0))
    taken = take_all(broker, ["a", "b", "c"], STRICT, one_at_a_time)
    # Every message of a queue before any of the next; priority order within each.
    assert taken == [a[1], a[0], b[0], b[2], b[1], c[0]]


def test_strict_passes_over_an_empty_queue(broker: Broker) -> None:
    (late,) = enqueue(broker, envelope("c", 4))
    assert ids_of(broker.reserve_ordered(["a", "b", "c"], 5, 0, STRICT)) == [late]


def test_strict_blocks_on_every_queue(make_broker: MakeBroker) -> None:
    broker = make_broker()
    start = time.monotonic()
    assert broker.reserve_ordered(["a", "b"], 5, 0.2, STRICT) == []
    assert time.monotonic() - start >= 0.15
    (id,) = enqueue(broker, envelope("b"))
    assert ids_of(broker.reserve_ordered(["a", "b"], 5, 5, STRICT)) == [id]


def test_an_order_without_strict_or_aging_is_priority_across_queues(broker: Broker) -> None:
    a = enqueue(broker, envelope("a", 3), envelope("a", 1))
    b = enqueue(broker, envelope("b", 2), envelope("b", 0))
    taken = take_all(broker, ["a", "b"], ReserveOrder(), one_at_a_time=True)
    assert taken == [b[1], a[1], b[0], a[0]]


@admin
def test_strict_passes_over_a_paused_queue(broker: Broker) -> None:
    enqueue(broker, envelope("a", 0))
    (b,) = enqueue(broker, envelope("b", 4))
    broker.pause("a")
    assert ids_of(broker.reserve_ordered(["a", "b"], 5, 0, STRICT)) == [b]


@admin
def test_aging_a_bulk_message_goes_before_the_critical_ones_after_four_periods(
    broker: Broker,
) -> None:
    """A constant flood of priority 0 (two enqueued for each one taken: a growing
    backlog); the priority-4 message, enqueued first, waits 4 periods, then goes
    before all of them. Asserted on the times each call started and ended, so the
    verdict does not depend on how fast this machine runs the loop."""
    order = ReserveOrder(aging={"bulk": PERIOD})
    sent = time.time()
    (bulk,) = enqueue(broker, envelope("bulk", 4))
    after = time.time()
    calls: list[tuple[float, list[str], float]] = []  # start, ids taken, end
    while not any(bulk in ids for _, ids, _ in calls):
        assert time.time() < sent + 20 * PERIOD, "the bulk message never went"
        enqueue(broker, envelope("bulk", 0), envelope("bulk", 0))
        start = time.time()
        ids = ids_of(broker.reserve_ordered(["bulk"], 1, 0, order))
        calls.append((start, ids, time.time()))
        time.sleep(PERIOD / 20)
    *before, (_, _, end) = calls
    assert end >= sent + 4 * PERIOD - 0.001  # not before it waited 4 periods
    # ... and as soon as it had (it is older than every critical one): while critical
    # ones went, it had waited less.
    assert all(start < after + 4 * PERIOD + 0.001 for start, _, _ in before)
    assert len(before) >= 10  # the flood did go on meanwhile


@admin
def test_aging_gains_one_level_per_period(broker: Broker) -> None:
    period = 0.5  # wide: the reserves below must come within the third period
    order = ReserveOrder(aging={"q": period})
    (old,) = enqueue(broker, envelope("q", 4))
    time.sleep(2.2 * period)  # two whole periods waited: level 2
    new = enqueue(broker, envelope("q", 1), envelope("q", 2), envelope("q", 3))
    # Level 2 ties the new priority-2 one, and goes first, having joined first.
    assert take_all(broker, ["q"], order, one_at_a_time=True) == [new[0], old, new[1], new[2]]


@admin
def test_aging_applies_only_to_the_queues_named(broker: Broker) -> None:
    order = ReserveOrder(aging={"aged": PERIOD})
    (old,) = enqueue(broker, envelope("strict", 4))
    (aged,) = enqueue(broker, envelope("aged", 4))
    time.sleep(4.5 * PERIOD)
    (new,) = enqueue(broker, envelope("strict", 0))
    taken = take_all(broker, ["strict", "aged"], order, one_at_a_time=True)
    assert taken == [aged, new, old]


@admin
def test_aging_with_strict_order(broker: Broker) -> None:
    order = ReserveOrder(strict=True, aging={"b": PERIOD})
    (b_old,) = enqueue(broker, envelope("b", 4))
    time.sleep(4.5 * PERIOD)
    a = enqueue(broker, envelope("a", 4))
    b_new = enqueue(broker, envelope("b", 0))
    taken = take_all(broker, ["a", "b"], order, one_at_a_time=False)
    assert taken == [a[0], b_old, b_new[0]]


def test_aging_on_a_broker_without_it_is_refused() -> None:
    with pytest.raises(NotSupported, match="priority aging"):
        DictBroker().reserve_ordered(["q"], 1, 0, ReserveOrder(aging={"q": 1.0}))


@admin
def test_queue_depths_after_an_ordered_reserve(broker: Broker) -> None:
    """Aging orders at reserve time and stores nothing: the depths by priority and the
    oldest age are those of what is left, as after ``reserve``."""
    (bulk,) = enqueue(broker, envelope("q", 4))
    time.sleep(4.5 * PERIOD)
    enqueue(broker, envelope("q", 0), envelope("q", 0))
    taken = broker.reserve_ordered(["q"], 1, 0, ReserveOrder(aging={"q": PERIOD}))
    assert ids_of(taken) == [bulk]
    depth = broker.queue_depths()["q"]
    assert depth.ready == {0: 2}
    assert depth.running == 1
    assert depth.oldest_age is not None and depth.oldest_age < 4 * PERIOD


def _frees_a_key_until_start(broker: Broker, order: ReserveOrder) -> None:
    first = envelope(key="k", key_until_start=True)
    enqueue(broker, first)
    assert broker.enqueue([envelope(key="k")]) == [first.id]  # ready: held
    assert ids_of(broker.reserve_ordered(["default"], 1, 0, order)) == [first.id]
    fresh = envelope(key="k", key_until_start=True)
    assert broker.enqueue([fresh]) == [fresh.id]  # started: free, as after reserve


def test_strict_order_frees_a_key_until_start(broker: Broker) -> None:
    _frees_a_key_until_start(broker, STRICT)


@admin
def test_aging_frees_a_key_until_start(broker: Broker) -> None:
    _frees_a_key_until_start(broker, ReserveOrder(aging={"default": 60.0}))
