"""The broker contract of concurrency limits: ``admit``, ``release_admitted``,
``renew_admitted`` (see ``BrokerAdmin.admit`` and docs/flow-control.md).

Runs on every built-in broker (memory, SQLite, Redis here; the Redis Cluster in
test_redis_cluster.py). Lease expiry uses short leases; waits poll for a condition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from test_broker_contract import enqueue, envelope, ids_of

from gopherq.brokers import Broker, Delivery
from gopherq.brokers.redis import RedisBroker
from gopherq.states import State

MakeBroker = Callable[..., Broker]
SHORT_LEASE = 0.5
TASK = "tasks.limited"


def reserve_all(broker: Broker, count: int, queue: str = "default") -> list[Delivery]:
    """Reserve ``count`` messages of ``queue``, in line order."""
    taken = broker.reserve([queue], count, 0.5)
    assert len(taken) == count
    return taken


def holder_and_parked(
    broker: Broker, queues: tuple[str, str] = ("default", "default")
) -> tuple[Delivery, Delivery]:
    """Two messages, of ``queues``: the first admitted under ``TASK`` with limit 1, the
    second parked."""
    enqueue(broker, *(envelope(queue) for queue in queues))
    (da,) = reserve_all(broker, 1, queues[0])
    (db,) = reserve_all(broker, 1, queues[1])
    assert broker.admit(da, TASK, 1)
    assert not broker.admit(db, TASK, 1)
    return da, db


def wait_for(condition: Callable[[], object], seconds: float = 10.0) -> object:
    """Poll ``condition`` until it is truthy; its value."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)
    return value


def test_admits_up_to_the_limit_then_parks(broker: Broker) -> None:
    c = enqueue(broker, envelope(), envelope(), envelope())[2]
    da, db, dc = reserve_all(broker, 3)
    assert broker.admit(da, TASK, 2)
    assert broker.admit(db, TASK, 2)
    assert not broker.admit(dc, TASK, 2)
    assert broker.locate(c) is State.SCHEDULED
    assert broker.reserve(["default"], 10, 0) == []  # parked: not runnable


def test_admitting_again_with_the_same_delivery_keeps_one_slot(broker: Broker) -> None:
    enqueue(broker, envelope(), envelope())
    da, db = reserve_all(broker, 2)
    assert broker.admit(da, TASK, 1)
    assert broker.admit(da, TASK, 1)
    assert not broker.admit(db, TASK, 1)


def test_release_wakes_the_first_parked_in_its_old_place(broker: Broker) -> None:
    _, b, c, _ = enqueue(broker, envelope(), envelope(), envelope(), envelope())
    da, db, dc, _ = reserve_all(broker, 4)
    assert broker.admit(da, TASK, 1)
    assert not broker.admit(db, TASK, 1)
    assert not broker.admit(dc, TASK, 1)
    e = enqueue(broker, envelope())[0]
    broker.ack([da])
    assert broker.release_admitted([(TASK, da)]) == 1
    # b went back before the later e, uncounted; c stays parked until another release.
    taken = broker.reserve(["default"], 10, 0.5)
    assert ids_of(taken) == [b, e]
    woken = taken[0]
    assert (woken.attempt, woken.deliveries) == (0, 1)
    assert broker.locate(c) is State.SCHEDULED
    assert broker.admit(woken, TASK, 1)


def test_parked_keeps_its_priority(broker: Broker) -> None:
    low, high = enqueue(broker, envelope(priority=3), envelope(priority=1))
    dh, dl = reserve_all(broker, 2)
    assert dh.id == high
    assert broker.admit(dh, TASK, 1)
    assert not broker.admit(dl, TASK, 1)
    later = enqueue(broker, envelope(priority=4))[0]
    broker.ack([dh])
    broker.release_admitted([(TASK, dh)])
    assert ids_of(broker.reserve(["default"], 10, 0.5)) == [low, later]


def test_release_of_a_non_holder_frees_nothing(broker: Broker) -> None:
    enqueue(broker, envelope(), envelope(), envelope())
    da, db, dc = reserve_all(broker, 3)
    assert broker.admit(da, TASK, 1)
    assert not broker.admit(db, TASK, 1)
    assert broker.release_admitted([(TASK, dc), ("tasks.other", da)]) == 0
    # The slot is still taken: a message woken all the same (Redis may) parks again.
    for woken in broker.reserve(["default"], 10, 0):
        assert not broker.admit(woken, TASK, 1)


def test_keys_are_counted_apart(broker: Broker) -> None:
    enqueue(broker, envelope(), envelope())
    da, db = reserve_all(broker, 2)
    assert broker.admit(da, TASK, 1)
    assert broker.admit(db, "tasks.other", 1)


def test_limit_is_shared_across_queues(broker: Broker) -> None:
    holder_and_parked(broker, ("a", "b"))  # b's message is refused while a's holds


def test_release_wakes_a_message_parked_in_another_queue(broker: Broker) -> None:
    # One task sent to queues a and b: a release from a wakes b's parked message at
    # once, not at the end of its parking (a lease, far beyond the wait here).
    da, db = holder_and_parked(broker, ("a", "b"))
    broker.ack([da])
    assert broker.release_admitted([(TASK, da)]) == 1
    assert ids_of(broker.reserve(["b"], 1, 0.5)) == [db.id]


def test_release_wakes_the_parked_messages_of_every_queue_in_turn(broker: Broker) -> None:
    enqueue(broker, envelope("a"), envelope("a"), envelope("b"), envelope("c"))
    holder, parked_a = reserve_all(broker, 2, "a")
    (parked_b,) = reserve_all(broker, 1, "b")
    (parked_c,) = reserve_all(broker, 1, "c")
    assert broker.admit(holder, TASK, 1)
    for parked in (parked_a, parked_b, parked_c):
        assert not broker.admit(parked, TASK, 1)
    woken = []
    for _ in range(3):
        broker.ack([holder])
        assert broker.release_admitted([(TASK, holder)]) == 1
        [holder] = broker.reserve(["a", "b", "c"], 10, 0.5)
        assert broker.admit(holder, TASK, 1)
        woken.append(holder.id)
    assert woken == [parked_a.id, parked_b.id, parked_c.id]  # in line order


def test_a_lost_lease_is_not_admitted(make_broker: MakeBroker) -> None:
    broker = make_broker(lease_seconds=SHORT_LEASE)
    id = enqueue(broker, envelope())[0]
    (stale,) = reserve_all(broker, 1)
    current = wait_for(lambda: broker.reserve(["default"], 1, 0.2))
    assert isinstance(current, list)
    assert not broker.admit(stale, TASK, 1)
    assert broker.locate(id) is State.STARTED  # not parked: another worker holds it
    assert broker.admit(current[0], TASK, 1)


def test_an_expired_holder_frees_its_slot(make_broker: MakeBroker) -> None:
    broker = make_broker(lease_seconds=SHORT_LEASE)
    holder_and_parked(broker)
    # The holder's worker died: nothing renews or releases. Both messages come back
    # (a by its lease, b by its parking's end) and one of them gets the slot.
    back = wait_for(lambda: broker.reserve(["default"], 10, 0.2))
    assert isinstance(back, list)
    assert broker.admit(back[0], TASK, 1)


def test_renewal_keeps_the_slot(make_broker: MakeBroker) -> None:
    broker = make_broker(lease_seconds=SHORT_LEASE)
    enqueue(broker, envelope())
    (da,) = reserve_all(broker, 1)
    assert broker.admit(da, TASK, 1)
    end = time.monotonic() + 3 * SHORT_LEASE
    while time.monotonic() < end:
        assert broker.renew_admitted([(TASK, da)]) == 1
        assert broker.extend([da]) == 1
        time.sleep(SHORT_LEASE / 5)
    enqueue(broker, envelope())
    (db,) = reserve_all(broker, 1)
    assert not broker.admit(db, TASK, 1)
    assert broker.renew_admitted([(TASK, db)]) == 0


def test_parked_is_ready_after_a_lease_without_release(make_broker: MakeBroker) -> None:
    broker = make_broker(lease_seconds=SHORT_LEASE)
    da, db = holder_and_parked(broker)
    broker.extend([da])
    back = wait_for(lambda: broker.reserve(["default"], 10, 0.2))
    assert isinstance(back, list)
    assert db.id in ids_of(back)


@pytest.mark.parametrize("action", ["cancel", "delete", "purge"])
def test_admin_sees_and_removes_a_parked_message(broker: Broker, action: str) -> None:
    da, db = holder_and_parked(broker)
    assert broker.locate(db.id) is State.SCHEDULED
    peeked = broker.peek(db.id, "default")
    assert peeked is not None and peeked.state is State.SCHEDULED
    assert broker.stats()["default"].scheduled == 1
    if action == "cancel":
        assert [c.was for c in broker.cancel([db.id])] == [State.SCHEDULED]
    elif action == "delete":
        assert broker.delete(db.id)
    else:
        assert broker.purge("default") == 1
    assert broker.locate(db.id) is None
    broker.ack([da])
    assert broker.release_admitted([(TASK, da)]) == 1
    assert broker.reserve(["default"], 10, 0) == []
    assert broker.stats()["default"].scheduled == 0


def test_redis_a_refusal_racing_a_release_is_not_stranded(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On Redis the refusal (holders' slot) and the parking (queue's slot) are two
    # steps: a release between them finds no one parked and leaves a credit, which
    # the parking takes to put the message back in line at once.
    if not isinstance(broker, RedisBroker):
        pytest.skip("the other brokers refuse and park in one step")
    enqueue(broker, envelope(), envelope())
    da, db = reserve_all(broker, 2)
    assert broker.admit(da, TASK, 1)
    limits = broker._limits
    run = limits._run

    def release_before_parking(calls: Any) -> Any:
        if any(getattr(script, "name", "") == "concurrency_park" for script, _, _ in calls):
            monkeypatch.setattr(limits, "_run", run)
            broker.ack([da])
            assert broker.release_admitted([(TASK, da)]) == 1
        return run(calls)

    monkeypatch.setattr(limits, "_run", release_before_parking)
    assert not broker.admit(db, TASK, 1)
    assert broker.locate(db.id) is State.QUEUED
    assert ids_of(broker.reserve(["default"], 1, 0.5)) == [db.id]
