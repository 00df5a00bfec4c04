"""The broker contract's rate limits (``rate_admit``, ``rate_keep``, ``defer``,
``rate_release``, the table of run-time limits): every built-in broker passes this
suite unchanged (the Redis Cluster too, through tests/test_redis_cluster.py).

Waits are compared loosely: the broker's clock moves between two calls.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable

import pytest
from test_broker_contract import envelope, ids_of

from gopherq.brokers import Broker, Delivery
from gopherq.limits import RateSetting
from gopherq.states import State

MakeBroker = Callable[..., Broker]
SLACK = 0.5
"""Seconds the broker's clock may move between two calls of a test (a busy machine)."""


def reserved(broker: Broker, count: int, queue: str = "default") -> list[Delivery]:
    """Enqueue ``count`` messages to ``queue`` and reserve them all."""
    envelopes = [envelope(queue) for _ in range(count)]
    broker.enqueue(envelopes)
    got = broker.reserve([queue], count, 0)
    assert ids_of(got) == [e.id for e in envelopes]
    return got


def bucket() -> str:
    return f"tasks.send-{uuid.uuid4().hex[:8]}"


def test_slots_are_one_interval_apart_in_order(broker: Broker) -> None:
    waits = broker.rate_admit(bucket(), 1.0, 1, reserved(broker, 4))
    assert waits[0] == 0.0
    assert 1.0 - SLACK < waits[1] <= 1.0
    assert [round(b - a, 3) for a, b in itertools.pairwise(waits[1:])] == [1.0, 1.0]


def test_burst_runs_at_once_then_waits(broker: Broker) -> None:
    waits = broker.rate_admit(bucket(), 1.0, 3, reserved(broker, 4))
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 1.0 - SLACK < waits[3] <= 1.0


def test_buckets_are_apart_and_shared_by_brokers(make_broker: MakeBroker) -> None:
    first, second = make_broker(), make_broker()
    key, other = bucket(), bucket()
    deliveries = reserved(first, 3)
    assert first.rate_admit(key, 10.0, 1, deliveries[:1]) == [0.0]
    assert first.rate_admit(other, 10.0, 1, deliveries[1:2]) == [0.0]
    [wait] = second.rate_admit(key, 10.0, 1, deliveries[2:])
    assert 10.0 - SLACK < wait <= 10.0


def test_a_message_waiting_for_its_slot_does_not_pay_again(broker: Broker) -> None:
    key = bucket()
    first, waiting, later = reserved(broker, 3)
    assert broker.rate_admit(key, 1.0, 1, [first]) == [0.0]
    [wait] = broker.rate_admit(key, 1.0, 1, [waiting])
    [again] = broker.rate_admit(key, 1.0, 1, [waiting])  # early: the same slot
    assert wait - SLACK < again <= wait
    [third] = broker.rate_admit(key, 1.0, 1, [later])  # the next slot, not one more
    assert 2.0 - SLACK < third <= 2.0
    time.sleep(wait)
    assert broker.rate_admit(key, 1.0, 1, [waiting]) == [0.0]
    [fourth] = broker.rate_admit(key, 1.0, 1, [waiting])  # taken: a new claim
    assert fourth > 2.0 - SLACK  # after the third's slot: a new claim


def test_a_slot_kept_for_a_message_another_bucket_holds(broker: Broker) -> None:
    # Two buckets of one task: this one admits ``held`` at once, the other makes it
    # wait. It keeps this one's slot: back, it pays no second one.
    key = bucket()
    held, later = reserved(broker, 2)
    assert broker.rate_admit(key, 1.0, 1, [held]) == [0.0]
    assert broker.rate_keep(key, [held]) == 1
    assert broker.rate_keep(key, [held]) == 0  # kept already
    [wait] = broker.rate_admit(key, 1.0, 1, [later])  # the next slot: held's is taken
    assert 1.0 - SLACK < wait <= 1.0
    assert broker.rate_admit(key, 1.0, 1, [held]) == [0.0]  # back: its kept slot
    [again] = broker.rate_admit(key, 1.0, 1, [held])  # taken: a new claim
    assert 2.0 - SLACK < again <= 2.0


def test_a_slot_that_came_due_is_kept_too(broker: Broker) -> None:
    key = bucket()
    first, waiting = reserved(broker, 2)
    [_, wait] = broker.rate_admit(key, 0.2, 1, [first, waiting])
    time.sleep(wait)
    assert broker.rate_admit(key, 0.2, 1, [waiting]) == [0.0]  # due: taken back
    assert broker.rate_keep(key, [waiting]) == 1  # the other bucket makes it wait
    assert broker.rate_admit(key, 0.2, 1, [waiting]) == [0.0]  # still its own


def test_defer_schedules_without_counting(broker: Broker) -> None:
    [got] = reserved(broker, 1)
    assert broker.defer([got], [0.3]) == 1
    assert broker.locate(got.id) is State.SCHEDULED
    assert broker.reserve(["default"], 1, 0) == []
    [again] = broker.reserve(["default"], 1, 5)
    assert (again.id, again.attempt, again.deliveries) == (got.id, 0, 1)
    assert broker.defer([got], [0.0]) == 0  # stale token


def test_defer_now_keeps_the_place_in_line(broker: Broker) -> None:
    broker.enqueue([first := envelope(), second := envelope()])
    [got] = broker.reserve(["default"], 1, 0)
    assert got.id == first.id
    assert broker.defer([got], [0.0]) == 1
    assert ids_of(broker.reserve(["default"], 2, 0)) == [first.id, second.id]


def test_defer_of_several_queues(broker: Broker) -> None:
    deliveries = reserved(broker, 2, "a") + reserved(broker, 1, "b")
    assert broker.defer(deliveries, [0.0, 60.0, 0.0]) == 3
    assert sorted(ids_of(broker.reserve(["a", "b"], 10, 0))) == sorted(
        [deliveries[0].id, deliveries[2].id]
    )
    assert broker.locate(deliveries[1].id) is State.SCHEDULED


def test_release_makes_waiting_messages_ready_and_forgets_the_bucket(broker: Broker) -> None:
    key = bucket()
    first, waiting = reserved(broker, 2)
    waits = broker.rate_admit(key, 100.0, 1, [first, waiting])
    assert broker.defer([waiting], waits[1:]) == 1
    broker.ack([first])
    assert broker.rate_release(key) == 1
    [again] = broker.reserve(["default"], 1, 0)
    assert (again.id, again.attempt, again.deliveries) == (waiting.id, 0, 1)
    assert broker.rate_admit(key, 100.0, 1, [again]) == [0.0]  # a fresh bucket
    assert broker.rate_release(bucket()) == 0


def test_release_leaves_messages_that_no_longer_wait(broker: Broker) -> None:
    key = bucket()
    first, waiting = reserved(broker, 2)
    broker.rate_admit(key, 100.0, 1, [first, waiting])  # waiting's slot, not deferred
    assert broker.rate_release(key) == 0
    assert broker.locate(waiting.id) is State.STARTED


def test_table_of_run_time_limits(broker: Broker) -> None:
    assert broker.rate_limits() == {}
    broker.set_rate_limit("tasks.a", "50/s", 10)
    broker.set_rate_limit("tasks.b", "5/m")
    broker.set_rate_limit("tasks.b", "6/m", 2)
    assert broker.rate_limits() == {
        "tasks.a": RateSetting("50/s", 10),
        "tasks.b": RateSetting("6/m", 2),
    }
    broker.set_rate_limit("tasks.a", None)
    assert broker.rate_limits() == {"tasks.b": RateSetting("6/m", 2)}


def test_hold_keeps_the_later_end_and_survives_a_clear(broker: Broker) -> None:
    before = time.time()
    until = broker.hold_rate("tasks.a", 30.0)
    assert before + 30 - 1 < until < time.time() + 30 + 1
    assert broker.hold_rate("tasks.a", 1.0) == pytest.approx(until)
    broker.set_rate_limit("tasks.a", "1/s")
    broker.set_rate_limit("tasks.a", None)
    [(task, setting)] = broker.rate_limits().items()
    assert (task, setting.rate) == ("tasks.a", None)
    assert setting.hold_until == pytest.approx(until)


def test_a_hold_that_ended_is_dropped(broker: Broker) -> None:
    broker.set_rate_limit("tasks.limited", "5/s")
    broker.hold_rate("tasks.limited", 0.2)
    broker.hold_rate("tasks.held", 0.2)
    later = broker.hold_rate("tasks.later", 60.0)
    assert broker.rate_limits().keys() == {"tasks.limited", "tasks.held", "tasks.later"}
    time.sleep(0.3)
    expected = {"tasks.limited": RateSetting("5/s"), "tasks.later": RateSetting(None, 1, later)}
    assert broker.rate_limits() == expected  # ended: not read
    broker.recover()  # where a read does not delete them, the periodic tidy does
    assert broker.rate_limits() == expected
    broker.hold_rate("tasks.held", 30.0)  # a new hold after one ended
    assert broker.rate_limits()["tasks.held"].hold_until == pytest.approx(time.time() + 30, abs=1)


def test_a_deferred_message_comes_due_in_its_old_place(broker: Broker) -> None:
    broker.enqueue([first := envelope()])
    [got] = broker.reserve(["default"], 1, 0)
    assert broker.defer([got], [0.2]) == 1
    broker.enqueue([later := envelope()])
    time.sleep(0.3)  # its slot passes
    [again] = broker.reserve(["default"], 1, 0)  # due: ahead of the later one
    assert again.id == first.id
    assert ids_of(broker.reserve(["default"], 1, 0)) == [later.id]


def test_a_retry_still_goes_by_its_eta(broker: Broker) -> None:
    broker.enqueue([first := envelope()])
    [got] = broker.reserve(["default"], 1, 0)
    assert broker.defer([got], [0.1]) == 1
    [got] = broker.reserve(["default"], 1, 5)
    assert broker.retry(got, 0.1, "again")
    broker.enqueue([later := envelope()])
    time.sleep(0.2)  # its eta passes: in line behind the later one
    assert ids_of(broker.reserve(["default"], 2, 0)) == [later.id, first.id]
