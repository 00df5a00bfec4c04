"""The broker contract: every broker passes this suite unchanged.

Tests go through the public ``Broker`` methods only. Lease expiry is tested with
short leases (``make_broker(lease_seconds=...)``); waits are bounded loosely so
that the suite passes on a loaded machine and on brokers that poll.

Two parts: the hot path (``Broker``'s abstract methods), which every broker passes,
the minimal one of tests/minimal_broker.py too; and the tests marked ``admin``
(``BrokerAdmin``: cancel, stats, pause, purge, dead letters, delete, locate), which
the built-in brokers pass. A hot-path test checks what ``locate`` or ``stats`` see
only on brokers that implement them (``admin_view``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any
from unittest.mock import ANY

import pytest
from conftest import BROKER_KINDS, MINIMAL

from gopherq.brokers import Broker, Cancellation, Delivery, Envelope
from gopherq.brokers.memory import MemoryBroker
from gopherq.brokers.redis import RedisBroker
from gopherq.brokers.sqlite import SQLiteBroker
from gopherq.errors import NotSupported
from gopherq.states import State

MakeBroker = Callable[..., Broker]
SHORT_LEASE = 0.2
admin = pytest.mark.admin


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test on every kind of broker, the hot-path tests on the minimal one too."""
    if "broker_kind" in metafunc.fixturenames:
        admin_test = metafunc.definition.get_closest_marker("admin") is not None
        kinds = BROKER_KINDS if admin_test else [*BROKER_KINDS, MINIMAL]
        metafunc.parametrize("broker_kind", kinds, indirect=True)


@pytest.fixture
def broker_kind(request: pytest.FixtureRequest) -> str:
    """The kind under test (parametrized by ``pytest_generate_tests``)."""
    return str(request.param)


def admin_view(read: Callable[[], Any]) -> Any:
    """What ``read`` (an admin operation) returns, or ``ANY`` (equal to everything)
    from a broker that does not implement it: compare with ``==``."""
    try:
        return read()
    except NotSupported:
        return ANY


def envelope(
    queue: str = "default",
    priority: int = 2,
    *,
    body: bytes | None = None,
    eta: float | None = None,
    key: str | None = None,
    key_ttl: float | None = None,
    key_until_start: bool = False,
    fair_key: str | None = None,
) -> Envelope:
    """A message with a fresh id; its body names the id unless given."""
    id = uuid.uuid4().hex
    body = body if body is not None else id.encode()
    return Envelope(id, queue, priority, body, eta, key, key_ttl, key_until_start, fair_key)


def enqueue(broker: Broker, *envelopes: Envelope) -> list[str]:
    ids = broker.enqueue(envelopes)
    assert ids == [e.id for e in envelopes]
    return ids


def ids_of(deliveries: list[Delivery]) -> list[str]:
    return [d.id for d in deliveries]


def reserve_in_thread(
    broker: Broker, queues: list[str], timeout: float
) -> Callable[[], tuple[list[Delivery], float]]:
    """Start ``reserve`` in a thread; the function returned joins it and returns
    what it reserved and how many seconds that took."""
    out: list[tuple[list[Delivery], float]] = []

    def run() -> None:
        start = time.monotonic()
        got = broker.reserve(queues, 10, timeout)
        out.append((got, time.monotonic() - start))

    thread = threading.Thread(target=run)
    thread.start()

    def join() -> tuple[list[Delivery], float]:
        thread.join(timeout + 5)
        assert out, "reserve did not return"
        return out[0]

    return join


# Enqueue and reserve.


def test_round_trip_keeps_body_bytes_and_routing(broker: Broker) -> None:
    body = bytes(range(256)) + b"\x00end"
    message = envelope("emails", 1, body=body)
    enqueue(broker, message)
    [got] = broker.reserve(["emails"], 10, 0)
    assert (got.id, got.queue, got.priority, got.body) == (message.id, "emails", 1, body)
    assert (got.attempt, got.deliveries, got.cancelled) == (0, 1, False)
    assert got.token


def test_batch_enqueue_returns_ids_in_order(broker: Broker) -> None:
    batch = [envelope() for _ in range(20)]
    assert broker.enqueue(batch) == [e.id for e in batch]
    assert ids_of(broker.reserve(["default"], 100, 0)) == [e.id for e in batch]


def test_empty_batch(broker: Broker) -> None:
    assert broker.enqueue([]) == []


def test_reserve_honours_limit(broker: Broker) -> None:
    ids = enqueue(broker, *(envelope() for _ in range(5)))
    assert ids_of(broker.reserve(["default"], 2, 0)) == ids[:2]
    assert ids_of(broker.reserve(["default"], 10, 0)) == ids[2:]
    assert broker.reserve(["default"], 10, 0) == []


def test_priority_order_across_a_batch(broker: Broker) -> None:
    batch = [envelope(priority=p) for p in (4, 2, 0, 3, 1)]
    enqueue(broker, *batch)
    got = broker.reserve(["default"], 10, 0)
    assert [d.priority for d in got] == [0, 1, 2, 3, 4]


def test_priority_is_strict_one_at_a_time(broker: Broker) -> None:
    low = envelope(priority=3)
    enqueue(broker, low)
    high = envelope(priority=0)
    enqueue(broker, high)
    assert ids_of(broker.reserve(["default"], 1, 0)) == [high.id]
    assert ids_of(broker.reserve(["default"], 1, 0)) == [low.id]


def test_fifo_within_a_priority(broker: Broker) -> None:
    first = enqueue(broker, *(envelope() for _ in range(3)))
    second = enqueue(broker, *(envelope() for _ in range(3)))
    got = [d.id for _ in range(6) for d in broker.reserve(["default"], 1, 0)]
    assert got == first + second


def test_reserve_only_from_the_given_queues(broker: Broker) -> None:
    a, b = envelope("a", 2), envelope("b", 0)
    enqueue(broker, a, b)
    assert ids_of(broker.reserve(["a"], 10, 0)) == [a.id]
    assert broker.reserve(["a"], 10, 0) == []
    assert broker.reserve(["c"], 10, 0) == []
    assert ids_of(broker.reserve(["a", "b"], 10, 0)) == [b.id]


def test_priority_across_queues(broker: Broker) -> None:
    a, b, c = envelope("a", 2), envelope("b", 1), envelope("c", 0)
    enqueue(broker, a, b, c)
    assert ids_of(broker.reserve(["a", "b", "c"], 10, 0)) == [c.id, b.id, a.id]


# Delayed messages and blocking.


def test_eta_in_the_future_is_not_runnable_early(broker: Broker) -> None:
    eta = time.time() + 0.5
    message = envelope(eta=eta)
    enqueue(broker, message)
    assert broker.reserve(["default"], 10, 0) == []
    assert admin_view(lambda: broker.locate(message.id)) == State.SCHEDULED
    assert ids_of(broker.reserve(["default"], 10, 5)) == [message.id]
    assert eta - 0.01 <= time.time() < eta + 2  # not early; late only under heavy load


def test_eta_in_the_past_is_ready_at_once(broker: Broker) -> None:
    message = envelope(eta=time.time() - 10)
    enqueue(broker, message)
    assert admin_view(lambda: broker.locate(message.id)) == State.QUEUED
    assert ids_of(broker.reserve(["default"], 10, 0)) == [message.id]


def test_due_messages_run_in_eta_order(broker: Broker) -> None:
    # An eta already past when the broker takes the message is ready at once, in line
    # in enqueue order: the etas must still be ahead once the enqueue returns. A
    # machine too slow for that gets a new queue with more room.
    for margin in (0.1, 0.5, 2.0):
        queue, now = f"eta-order-{margin}", time.time()
        later, sooner = envelope(queue, eta=now + 2 * margin), envelope(queue, eta=now + margin)
        enqueue(broker, later, sooner)
        if time.time() < now + margin:
            break
    else:
        pytest.fail("every enqueue returned after its messages' etas")
    time.sleep(max(now + 2 * margin + 0.3 - time.time(), 0))  # both due, with room
    assert ids_of(broker.reserve([queue], 10, 0)) == [sooner.id, later.id]


def test_reserve_blocks_up_to_timeout(broker: Broker) -> None:
    start = time.monotonic()
    assert broker.reserve(["default"], 10, 0.2) == []
    assert 0.15 <= time.monotonic() - start < 2


def test_reserve_wakes_when_another_thread_enqueues(make_broker: MakeBroker) -> None:
    consumer, producer = make_broker(), make_broker()
    join = reserve_in_thread(consumer, ["default"], 10)
    time.sleep(0.1)
    message = envelope()
    enqueue(producer, message)
    got, took = join()
    assert ids_of(got) == [message.id]
    assert took < 1.5


def test_recover_makes_due_messages_ready(broker: Broker) -> None:
    later = envelope(eta=time.time() + 3600)
    enqueue(broker, later)
    assert broker.recover() == 0
    due = time.time() + 0.2  # enqueued after the first recover, however slow it was
    soon = envelope(eta=due)
    enqueue(broker, soon)
    time.sleep(max(due - time.time(), 0) + 0.2)
    assert recover_within(broker, 5.0) == 1
    assert admin_view(lambda: [broker.locate(m.id) for m in (soon, later)]) == [
        State.QUEUED,
        State.SCHEDULED,
    ]


def recover_within(broker: Broker, seconds: float) -> int:
    """``broker.recover()`` until it moves something or ``seconds`` pass: a due time
    is read from the clock, which a virtual machine's time sync may set back."""
    deadline = time.monotonic() + seconds
    moved = broker.recover()
    while not moved and time.monotonic() < deadline:
        time.sleep(0.05)
        moved = broker.recover()
    return moved


# Settling: ack, retry, dead, extend.


def test_ack_forgets_the_message(broker: Broker) -> None:
    enqueue(broker, envelope(), envelope())
    got = broker.reserve(["default"], 10, 0)
    assert broker.ack(got) == 2
    assert admin_view(lambda: [broker.locate(d.id) for d in got]) == [None, None]
    assert broker.ack(got) == 0
    assert broker.reserve(["default"], 10, 0) == []


def test_stale_token_settles_nothing(make_broker: MakeBroker) -> None:
    first, second = make_broker(lease_seconds=SHORT_LEASE), make_broker(lease_seconds=SHORT_LEASE)
    message = envelope()
    enqueue(first, message)
    [stale] = first.reserve(["default"], 1, 0)
    [fresh] = second.reserve(["default"], 1, 5)  # after the first lease expires
    assert fresh.id == stale.id
    assert fresh.token != stale.token
    assert fresh.deliveries == 2

    assert first.ack([stale]) == 0
    assert first.retry(stale, 0, "late") is False
    assert first.dead(stale, "REJECTED", "late") is False
    assert first.extend([stale]) == 0
    assert first.held([stale, fresh]) == {fresh.id}
    assert first.requeue([stale]) == 0
    assert admin_view(lambda: first.locate(message.id)) == State.STARTED
    assert admin_view(first.dead_letters) == []
    assert second.ack([fresh]) == 1


def test_retry_counts_an_attempt_and_waits_for_eta(broker: Broker) -> None:
    message = envelope()
    enqueue(broker, message)
    [got] = broker.reserve(["default"], 1, 0)
    assert broker.retry(got, 0.3, "ValueError: boom") is True
    assert admin_view(lambda: broker.locate(message.id)) == State.SCHEDULED
    assert broker.reserve(["default"], 10, 0) == []
    [again] = broker.reserve(["default"], 10, 5)
    assert (again.id, again.attempt, again.deliveries) == (message.id, 1, 1)
    assert again.token != got.token
    assert broker.retry(got, 0, "stale") is False


def test_retry_now_is_ready_at_once(broker: Broker) -> None:
    enqueue(broker, envelope())
    [got] = broker.reserve(["default"], 1, 0)
    assert broker.retry(got, -1, "again")
    [again] = broker.reserve(["default"], 1, 0)
    assert again.attempt == 1


def test_retry_wakes_a_blocked_reserve_at_its_eta(make_broker: MakeBroker) -> None:
    broker = make_broker()
    enqueue(broker, envelope())
    [got] = broker.reserve(["default"], 1, 0)
    join = reserve_in_thread(broker, ["default"], 10)
    time.sleep(0.1)
    broker.retry(got, 0.1, "again")
    again, took = join()
    assert ids_of(again) == [got.id]
    assert took < 1.5


def test_dead_takes_the_message_out_of_line(broker: Broker) -> None:
    enqueue(broker, envelope())
    [got] = broker.reserve(["default"], 1, 0)
    assert broker.dead(got, "REJECTED", "ValueError: boom") is True
    assert broker.reserve(["default"], 10, 0) == []
    assert broker.recover() == 0
    assert (broker.ack([got]), broker.dead(got, "REJECTED", "again")) == (0, False)


@admin
def test_dead_keeps_reason_error_and_attempt(broker: Broker) -> None:
    message = envelope("mail", 1, body=b"\x01\x02")
    enqueue(broker, message)
    [got] = broker.reserve(["mail"], 1, 0)
    broker.retry(got, -1, "first failure")
    [got] = broker.reserve(["mail"], 1, 0)
    before = time.time()
    assert broker.dead(got, "MAX_RETRIES", "ValueError: boom") is True
    assert broker.locate(message.id) is State.DEAD
    assert broker.reserve(["mail"], 10, 0) == []
    [letter] = broker.dead_letters("mail")
    assert (letter.id, letter.queue, letter.priority, letter.body) == (
        message.id,
        "mail",
        1,
        b"\x01\x02",
    )
    assert (letter.attempt, letter.reason, letter.error) == (1, "MAX_RETRIES", "ValueError: boom")
    assert before - 1 <= letter.died <= time.time() + 1
    assert broker.ack([got]) == 0


def kill(broker: Broker, queue: str, count: int) -> list[str]:
    """Enqueue ``count`` messages to ``queue`` and dead-letter them one by one."""
    ids = enqueue(broker, *(envelope(queue) for _ in range(count)))
    for _ in ids:
        [got] = broker.reserve([queue], 1, 0)
        assert broker.dead(got, "REJECTED", f"error of {got.id}")
    return ids


@admin
def test_dead_letters_newest_first_with_offset_and_limit(broker: Broker) -> None:
    ids = kill(broker, "a", 5)
    newest_first = ids[::-1]
    assert [d.id for d in broker.dead_letters("a")] == newest_first
    assert [d.id for d in broker.dead_letters("a", offset=1, limit=2)] == newest_first[1:3]
    assert [d.id for d in broker.dead_letters("a", offset=4)] == newest_first[4:]
    assert broker.dead_letters("a", offset=5) == []


@admin
def test_dead_letters_by_reason(broker: Broker) -> None:
    queues = ("a", "a", "b", "a", "a")
    ids = enqueue(broker, *(envelope(q) for q in queues))
    reasons = ("REJECTED", "MAX_RETRIES", "REJECTED", "REJECTED", "MAX_RETRIES")
    for queue, reason in zip(queues, reasons, strict=True):
        [got] = broker.reserve([queue], 1, 0)
        assert broker.dead(got, reason, "error")
    rejected = [ids[3], ids[2], ids[0]]  # newest first
    assert [d.id for d in broker.dead_letters_for("REJECTED")] == rejected
    assert [d.id for d in broker.dead_letters_for("REJECTED", "a")] == [ids[3], ids[0]]
    assert [d.id for d in broker.dead_letters_for("REJECTED", offset=1, limit=1)] == [ids[2]]
    assert [d.id for d in broker.dead_letters_for("MAX_RETRIES")] == [ids[4], ids[1]]
    assert broker.dead_letters_for("EXPIRED") == []
    assert broker.dead_letters_for("REJECTED", "c") == []


@admin
def test_dead_letters_per_queue_and_all(broker: Broker) -> None:
    a = kill(broker, "a", 2)
    b = kill(broker, "b", 2)
    assert [d.id for d in broker.dead_letters("b")] == b[::-1]
    assert [d.id for d in broker.dead_letters("a")] == a[::-1]
    assert [d.id for d in broker.dead_letters()] == (a + b)[::-1]
    assert broker.dead_letters("c") == []


@admin
def test_dead_letters_of_every_queue_are_one_page_by_time_of_death(broker: Broker) -> None:
    died = [*kill(broker, "a", 2), *kill(broker, "b", 3), *kill(broker, "a", 1)]
    newest_first = died[::-1]
    every = broker.dead_letters()
    assert [d.id for d in every] == newest_first
    assert [d.id for d in broker.dead_letters(offset=2, limit=3)] == newest_first[2:5]
    assert [d.id for d in broker.dead_letters(offset=5, limit=3)] == newest_first[5:]
    assert broker.dead_letters(offset=6) == []
    by_queue = {d.id: d for queue in ("a", "b") for d in broker.dead_letters(queue)}
    assert every == [by_queue[id] for id in newest_first]  # whole, as their queue lists them
    assert [d.id for d in broker.dead_letters_for("REJECTED", offset=1, limit=4)] == (
        newest_first[1:5]
    )


@admin
def test_dead_letter_by_id(broker: Broker) -> None:
    a = kill(broker, "a", 2)
    [b] = kill(broker, "b", 1)
    assert broker.dead_letter(a[0]) == broker.dead_letters("a")[1]
    letter = broker.dead_letter(b)
    assert letter is not None and (letter.id, letter.queue, letter.reason) == (b, "b", "REJECTED")
    [live] = enqueue(broker, envelope("a"))
    assert broker.dead_letter(live) is None
    assert broker.dead_letter("unknown") is None
    broker.requeue_dead([b])
    assert broker.dead_letter(b) is None


@admin
def test_requeue_dead_by_ids(broker: Broker) -> None:
    ids = kill(broker, "a", 3)
    assert broker.requeue_dead([ids[1], "unknown"]) == 1
    assert broker.locate(ids[1]) is State.QUEUED
    [got] = broker.reserve(["a"], 10, 0)
    assert (got.id, got.attempt, got.deliveries) == (ids[1], 0, 1)
    assert {d.id for d in broker.dead_letters("a")} == {ids[0], ids[2]}


@admin
def test_requeue_dead_all_and_of_a_queue(broker: Broker) -> None:
    a = kill(broker, "a", 2)
    b = kill(broker, "b", 3)
    assert broker.requeue_dead(queue="b") == 3
    assert sorted(ids_of(broker.reserve(["b"], 10, 0))) == sorted(b)
    assert broker.requeue_dead() == 2
    assert sorted(ids_of(broker.reserve(["a"], 10, 0))) == sorted(a)
    assert broker.dead_letters() == []
    assert broker.requeue_dead() == 0


@admin
def test_purge_dead(broker: Broker) -> None:
    a = kill(broker, "a", 2)
    kill(broker, "b", 1)
    assert broker.purge_dead("b") == 1
    assert [d.id for d in broker.dead_letters()] == a[::-1]
    assert broker.purge_dead() == 2
    assert broker.dead_letters() == []
    assert broker.locate(a[0]) is None


@admin
def test_old_dead_letters_are_dropped(make_broker: MakeBroker) -> None:
    broker = make_broker(dead_letter_ttl=0.2)
    [id] = kill(broker, "a", 1)
    assert broker.stats()["a"].dead == 1
    time.sleep(0.3)
    assert broker.dead_letters() == []
    assert broker.stats()["a"].dead == 0
    assert broker.locate(id) is None


def test_extend_keeps_the_lease(make_broker: MakeBroker) -> None:
    broker = make_broker(lease_seconds=0.4)
    enqueue(broker, envelope())
    [got] = broker.reserve(["default"], 1, 0)
    time.sleep(0.25)
    assert broker.extend([got]) == 1
    time.sleep(0.25)  # past the first lease, within the renewed one
    assert broker.reserve(["default"], 1, 0) == []
    assert admin_view(lambda: broker.locate(got.id)) == State.STARTED
    assert broker.ack([got]) == 1


def test_held_tells_which_leases_are_held_and_renews_them(make_broker: MakeBroker) -> None:
    broker = make_broker(lease_seconds=0.4)
    enqueue(broker, envelope(), envelope())
    first, second = broker.reserve(["default"], 2, 0)
    forged = Delivery(first.id, first.queue, first.priority, b"", 0, 1, "forged")
    assert broker.held([]) == set()
    assert broker.held([first, forged, second]) == {first.id, second.id}
    time.sleep(0.25)
    assert broker.held([first]) == {first.id}  # and renewed, as extend does
    [again] = broker.reserve(["default"], 1, 5)  # once a lease runs out
    [lost] = [d for d in (first, second) if d.id == again.id]
    assert broker.held([lost]) == set()
    assert broker.held([again]) == {again.id}


def test_expired_lease_is_redelivered(make_broker: MakeBroker) -> None:
    broker = make_broker(lease_seconds=SHORT_LEASE)
    enqueue(broker, envelope())
    [got] = broker.reserve(["default"], 1, 0)
    start = time.monotonic()
    [again] = broker.reserve(["default"], 1, 5)
    assert time.monotonic() - start < 2
    assert (again.id, again.attempt, again.deliveries) == (got.id, 0, 2)


def test_recover_returns_expired_leases(make_broker: MakeBroker) -> None:
    broker = make_broker(lease_seconds=SHORT_LEASE)
    enqueue(broker, envelope())
    [got] = broker.reserve(["default"], 1, 0)
    assert broker.recover() == 0
    time.sleep(SHORT_LEASE + 0.05)
    assert broker.recover() == 1
    assert admin_view(lambda: broker.locate(got.id)) == State.QUEUED


# Requeue.


def test_requeue_unstarted_does_not_count_the_delivery(broker: Broker) -> None:
    enqueue(broker, envelope())
    got = broker.reserve(["default"], 1, 0)
    assert broker.requeue(got) == 1
    assert admin_view(lambda: broker.locate(got[0].id)) == State.QUEUED
    [again] = broker.reserve(["default"], 1, 0)
    assert (again.id, again.deliveries) == (got[0].id, 1)
    assert broker.requeue(got) == 0


def test_requeue_started_counts_the_delivery(broker: Broker) -> None:
    enqueue(broker, envelope())
    got = broker.reserve(["default"], 1, 0)
    assert broker.requeue(got, started=True) == 1
    [again] = broker.reserve(["default"], 1, 0)
    assert (again.id, again.deliveries) == (got[0].id, 2)


def test_requeue_keeps_the_place_in_line(broker: Broker) -> None:
    urgent, first, second = envelope(priority=0), envelope(), envelope()
    enqueue(broker, urgent, first, second)
    got = broker.reserve(["default"], 2, 0)
    assert ids_of(got) == [urgent.id, first.id]
    later = envelope()
    enqueue(broker, later)
    assert broker.requeue(got) == 2
    assert ids_of(broker.reserve(["default"], 10, 0)) == [
        urgent.id,
        first.id,
        second.id,
        later.id,
    ]


def test_requeue_wakes_a_blocked_reserve(make_broker: MakeBroker) -> None:
    broker = make_broker()
    enqueue(broker, envelope())
    got = broker.reserve(["default"], 1, 0)
    join = reserve_in_thread(broker, ["default"], 10)
    time.sleep(0.1)
    broker.requeue(got)
    again, took = join()
    assert ids_of(again) == ids_of(got)
    assert took < 1.5


# Administration.


@admin
def test_pause_skips_a_queue_and_resume_restores_it(broker: Broker) -> None:
    a, b = envelope("a", 0), envelope("b", 2)
    enqueue(broker, a, b)
    broker.pause("a")
    assert broker.stats()["a"].paused is True
    assert ids_of(broker.reserve(["a", "b"], 10, 0)) == [b.id]
    late = envelope("a")
    enqueue(broker, late)  # enqueue still works while paused
    assert broker.reserve(["a"], 10, 0) == []
    broker.resume("a")
    assert broker.stats()["a"].paused is False
    assert ids_of(broker.reserve(["a"], 10, 0)) == [a.id, late.id]


@admin
def test_resume_wakes_a_blocked_reserve(make_broker: MakeBroker) -> None:
    broker = make_broker()
    broker.pause("a")
    message = envelope("a")
    enqueue(broker, message)
    join = reserve_in_thread(broker, ["a"], 10)
    time.sleep(0.1)
    broker.resume("a")
    got, took = join()
    assert ids_of(got) == [message.id]
    assert took < 1.5


@admin
def test_purge_deletes_ready_and_scheduled_only(broker: Broker) -> None:
    enqueue(broker, envelope("a"), envelope("a"))
    [leased] = broker.reserve(["a"], 1, 0)
    enqueue(broker, envelope("a"), envelope("a", eta=time.time() + 60), envelope("b"))
    assert broker.purge("a") == 3
    assert broker.reserve(["a"], 10, 0) == []
    assert broker.stats()["a"].running == 1
    assert broker.stats()["b"].ready == 1
    assert broker.ack([leased]) == 1
    assert broker.purge("a") == 0


@admin
def test_stats_counts_every_place(broker: Broker) -> None:
    assert broker.stats() == {}
    kill(broker, "a", 1)
    enqueue(broker, envelope("a"), envelope("a"), envelope("a"))
    broker.reserve(["a"], 1, 0)
    enqueue(broker, envelope("a", eta=time.time() + 60), envelope("b"))
    broker.pause("c")
    stats = broker.stats()
    assert set(stats) == {"a", "b", "c"}
    a = stats["a"]
    assert (a.name, a.ready, a.scheduled, a.running, a.dead, a.paused) == (
        "a",
        2,
        1,
        1,
        1,
        False,
    )
    assert (stats["b"].ready, stats["b"].running) == (1, 0)
    assert stats["c"].paused is True


def test_idempotency_key_returns_the_first_id(broker: Broker) -> None:
    first, twin = envelope(key="order-1"), envelope(key="order-1")
    assert broker.enqueue([first]) == [first.id]
    assert broker.enqueue([twin, envelope(key="order-1")]) == [first.id, first.id]
    assert admin_view(lambda: [broker.locate(twin.id)]) == [None]
    assert admin_view(lambda: broker.stats()["default"].ready) == 1
    assert ids_of(broker.reserve(["default"], 10, 0)) == [first.id]


def test_idempotency_key_within_one_batch(broker: Broker) -> None:
    first, twin, other = envelope(key="k"), envelope(key="k"), envelope(key="other")
    assert broker.enqueue([first, twin, other]) == [first.id, first.id, other.id]
    assert ids_of(broker.reserve(["default"], 10, 0)) == [first.id, other.id]


def test_idempotency_key_held_until_the_message_is_gone(broker: Broker) -> None:
    first = envelope(key="k")
    enqueue(broker, first)
    [got] = broker.reserve(["default"], 1, 0)
    assert broker.enqueue([envelope(key="k")]) == [first.id]  # leased
    assert broker.ack([got]) == 1
    fresh = envelope(key="k")
    assert broker.enqueue([fresh]) == [fresh.id]


def test_idempotency_key_names_one_message_within_its_queue(broker: Broker) -> None:
    a, b = envelope("a", key="k"), envelope("b", key="k")
    assert broker.enqueue([a, b]) == [a.id, b.id]
    assert broker.enqueue([envelope("a", key="k"), envelope("b", key="k")]) == [a.id, b.id]
    assert broker.enqueue([envelope("a", key="k")]) == [a.id]
    assert admin_view(lambda: [broker.stats()[q].ready for q in "ab"]) == [1, 1]
    # One message per queue; their order across queues is not this test's (on a
    # Redis Cluster the two queues' enqueues run on two nodes at once).
    assert sorted(ids_of(broker.reserve(["a", "b"], 10, 0))) == sorted([a.id, b.id])


def test_a_dead_letter_releases_its_idempotency_key(broker: Broker) -> None:
    first = envelope(key="k")
    enqueue(broker, first)
    [got] = broker.reserve(["default"], 1, 0)
    assert broker.dead(got, "MAX_RETRIES", "ValueError: boom")
    fresh = envelope(key="k")
    assert broker.enqueue([fresh]) == [fresh.id]  # sent again while the first is dead
    assert admin_view(lambda: broker.locate(first.id)) == State.DEAD
    assert broker.enqueue([envelope(key="k")]) == [fresh.id]
    assert ids_of(broker.reserve(["default"], 10, 0)) == [fresh.id]


@admin
def test_requeue_dead_takes_the_key_again(broker: Broker) -> None:
    first = envelope(key="k")
    enqueue(broker, first)
    [got] = broker.reserve(["default"], 1, 0)
    broker.dead(got, "REJECTED", "no")
    assert broker.requeue_dead([first.id]) == 1
    assert broker.enqueue([envelope(key="k")]) == [first.id]
    assert ids_of(broker.reserve(["default"], 10, 0)) == [first.id]


@admin
@pytest.mark.parametrize("by_id", [True, False])
def test_requeue_dead_leaves_dead_one_whose_key_is_held_again(broker: Broker, by_id: bool) -> None:
    first, plain = envelope(key="k"), envelope()
    enqueue(broker, first, plain)
    for got in broker.reserve(["default"], 2, 0):
        broker.dead(got, "REJECTED", "no")
    fresh = envelope(key="k")
    assert broker.enqueue([fresh]) == [fresh.id]
    # The live message stands for the job: requeueing the dead one would run it twice.
    assert broker.requeue_dead([first.id, plain.id] if by_id else None) == 1
    assert broker.locate(first.id) is State.DEAD
    assert [d.id for d in broker.dead_letters()] == [first.id]
    assert broker.enqueue([envelope(key="k")]) == [fresh.id]
    got = broker.reserve(["default"], 10, 0)
    assert ids_of(got) == [fresh.id, plain.id]
    assert broker.ack(got) == 2
    # Once the key is free, the dead letter can take it.
    assert broker.requeue_dead([first.id] if by_id else None) == 1
    assert broker.enqueue([envelope(key="k")]) == [first.id]


def lease(broker: Broker, message: Envelope) -> Delivery:
    """Enqueue ``message`` and reserve it."""
    enqueue(broker, message)
    [got] = broker.reserve([message.queue], 1, 0)
    assert got.id == message.id
    return got


def finish(broker: Broker, message: Envelope) -> None:
    """Enqueue ``message``, reserve it and ack it."""
    assert broker.ack([lease(broker, message)]) == 1


def is_free(broker: Broker, key: str) -> bool:
    """Whether an enqueue with ``key`` stores a message of its own (it does so if True)."""
    fresh = envelope(key=key)
    return broker.enqueue([fresh]) == [fresh.id]


def wait_until_key_is_free(broker: Broker, key: str, queue: str = "default") -> str:
    """Enqueue with ``key`` until a message of its own is stored (a held key answers
    with its holder); returns that message's id."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fresh = envelope(queue, key=key)
        if broker.enqueue([fresh]) == [fresh.id]:
            return fresh.id
        time.sleep(0.02)
    raise AssertionError(f"key {key!r} still held after 10 s")


def test_a_finished_key_answers_within_its_ttl(broker: Broker) -> None:
    first = envelope(key="k", key_ttl=600)
    finish(broker, first)
    assert broker.enqueue([envelope(key="k")]) == [first.id]
    assert broker.enqueue([envelope(key="k", key_ttl=600)]) == [first.id]
    assert broker.reserve(["default"], 10, 0) == []  # nothing was stored
    assert admin_view(lambda: [broker.locate(first.id)]) == [None]
    # Within a batch, beside messages that stand for themselves.
    a, twin, b = envelope(), envelope(key="k"), envelope()
    assert broker.enqueue([a, twin, b]) == [a.id, first.id, b.id]
    # Per queue: the key is free in another one.
    other = envelope("other", key="k")
    assert broker.enqueue([other]) == [other.id]


def test_a_finished_key_is_freed_after_its_ttl(broker: Broker) -> None:
    first = envelope(key="k", key_ttl=0.3)
    finish(broker, first)
    assert broker.enqueue([envelope(key="k")]) == [first.id]
    fresh = wait_until_key_is_free(broker, "k")
    assert broker.enqueue([envelope(key="k")]) == [fresh]
    assert ids_of(broker.reserve(["default"], 10, 0)) == [fresh]


def test_a_key_without_ttl_is_freed_at_the_ack(broker: Broker) -> None:
    finish(broker, envelope(key="k", key_ttl=0))
    assert is_free(broker, "k")


def test_a_dead_letter_keeps_no_key_despite_its_ttl(broker: Broker) -> None:
    got = lease(broker, envelope(key="k", key_ttl=600))
    assert broker.dead(got, "MAX_RETRIES", "ValueError: boom")
    assert is_free(broker, "k")


def test_a_retried_message_holds_its_key_until_acked(broker: Broker) -> None:
    first = envelope(key="k", key_ttl=600)
    got = lease(broker, first)
    assert broker.retry(got, 0, "ValueError: boom")
    assert broker.enqueue([envelope(key="k")]) == [first.id]
    [again] = broker.reserve(["default"], 1, 0)
    assert broker.ack([again]) == 1
    assert broker.enqueue([envelope(key="k")]) == [first.id]


def test_a_stale_ack_keeps_no_key(broker: Broker) -> None:
    first = envelope(key="k", key_ttl=600)
    got = lease(broker, first)
    assert broker.requeue([got]) == 1
    assert broker.ack([got]) == 0  # its token is stale: the message stays, ready
    assert broker.enqueue([envelope(key="k")]) == [first.id]
    assert ids_of(broker.reserve(["default"], 10, 0)) == [first.id]


def test_a_key_until_start_is_freed_by_reserve(broker: Broker) -> None:
    first = envelope(key="k", key_until_start=True)
    enqueue(broker, first)
    assert broker.enqueue([envelope(key="k")]) == [first.id]  # ready: held
    [got] = broker.reserve(["default"], 1, 0)
    fresh = envelope(key="k", key_until_start=True)
    assert broker.enqueue([fresh]) == [fresh.id]  # started: free
    assert broker.requeue([got]) == 1  # back in line, it does not take it again
    assert broker.enqueue([envelope(key="k")]) == [fresh.id]
    taken = broker.reserve(["default"], 10, 0)
    assert ids_of(taken) == [first.id, fresh.id]
    assert broker.ack(taken) == 2
    assert is_free(broker, "k")  # acked: no finished key kept


@admin
def test_cancel_and_delete_keep_no_key_despite_its_ttl(broker: Broker) -> None:
    ready, leased, deleted = (envelope(key=k, key_ttl=600) for k in ("r", "l", "d"))
    enqueue(broker, leased, deleted)
    got = broker.reserve(["default"], 2, 0)
    enqueue(broker, ready)
    assert len(broker.cancel([ready.id, leased.id])) == 2
    assert broker.ack([d for d in got if d.id == leased.id]) == 1  # settled as cancelled
    assert broker.delete(deleted.id)
    fresh = [envelope(key=k) for k in ("r", "l", "d")]
    assert broker.enqueue(fresh) == [e.id for e in fresh]


@admin
def test_a_live_holder_answers_before_a_finished_key(broker: Broker) -> None:
    dead = envelope(key="k", key_ttl=600)
    broker.dead(lease(broker, dead), "REJECTED", "no")
    done = envelope(key="k", key_ttl=600)
    finish(broker, done)
    assert broker.requeue_dead([dead.id]) == 1
    assert broker.enqueue([envelope(key="k")]) == [dead.id]


def test_idempotency_key_of_a_scheduled_message(broker: Broker) -> None:
    first = envelope(key="k", eta=time.time() + 60)
    enqueue(broker, first)
    assert broker.enqueue([envelope(key="k")]) == [first.id]
    assert admin_view(lambda: broker.stats()["default"].scheduled) == 1


@admin
def test_delete_wherever_the_message_is(broker: Broker) -> None:
    ready, scheduled, leased, dead = (
        envelope(),
        envelope(eta=time.time() + 60),
        envelope(),
        envelope(),
    )
    enqueue(broker, leased, dead)
    got = broker.reserve(["default"], 2, 0)
    broker.dead(got[1], "REJECTED", "no")
    enqueue(broker, ready, scheduled)
    for message in (ready, scheduled, leased, dead):
        assert broker.delete(message.id) is True
        assert broker.locate(message.id) is None
    assert broker.delete("unknown") is False
    assert broker.ack(got[:1]) == 0
    assert broker.reserve(["default"], 10, 0) == []
    assert broker.dead_letters() == []


@admin
def test_locate_follows_the_message(broker: Broker) -> None:
    assert broker.locate("unknown") is None
    message = envelope(eta=time.time() + 1.0)  # still ahead when located, however busy
    enqueue(broker, message)
    assert broker.locate(message.id) is State.SCHEDULED
    [got] = broker.reserve(["default"], 1, 5)
    assert broker.locate(message.id) is State.STARTED
    broker.requeue([got])
    assert broker.locate(message.id) is State.QUEUED
    [got] = broker.reserve(["default"], 1, 0)
    broker.dead(got, "REJECTED", "no")
    assert broker.locate(message.id) is State.DEAD
    broker.requeue_dead([message.id])
    [got] = broker.reserve(["default"], 1, 0)
    broker.ack([got])
    assert broker.locate(message.id) is None


@admin
def test_locate_many_answers_for_each_id_in_order(broker: Broker) -> None:
    ready, leased = envelope("a"), envelope("b")
    later = envelope("b", eta=time.time() + 60)
    enqueue(broker, ready, leased, later)
    [got] = broker.reserve(["b"], 1, 0)
    assert got.id == leased.id
    ids = [leased.id, "unknown", ready.id, later.id]
    assert broker.locate_many(ids) == [State.STARTED, None, State.QUEUED, State.SCHEDULED]
    assert broker.locate_many(ids) == [broker.locate(id) for id in ids]
    assert broker.locate_many([]) == []
    # with each id's queue where known (None: not known)
    queues = ["b", "b", None, "b"]
    assert broker.locate_many(ids, queues) == [State.STARTED, None, State.QUEUED, State.SCHEDULED]
    assert broker.locate_many([ready.id, leased.id], ["a", None]) == [State.QUEUED, State.STARTED]


@admin
def test_peek_reads_a_message_by_id_wherever_it_is(broker: Broker) -> None:
    assert broker.peek("unknown") is None
    assert broker.peek("unknown", "default") is None
    body = bytes(range(256))
    message = envelope("a", 1, body=body, eta=time.time() + 1.0)  # ahead when peeked
    other = envelope("b")
    enqueue(broker, message, other)

    def seen(queue: str | None = None) -> tuple[Any, ...] | None:
        found = broker.peek(message.id, queue)
        if found is None:
            return None
        return (found.id, found.queue, found.priority, found.body, found.attempt, found.state)

    assert seen() == (message.id, "a", 1, body, 0, State.SCHEDULED)
    # The queue is a hint: a wrong or unknown one still finds the message.
    assert seen("a") == seen("b") == seen("nowhere") == seen()
    [got] = broker.reserve(["a"], 1, 5)
    assert seen("a") == (message.id, "a", 1, body, 0, State.STARTED)
    assert broker.retry(got, 0, "again")
    assert seen() == (message.id, "a", 1, body, 1, State.QUEUED)
    [got] = broker.reserve(["a"], 1, 0)
    assert broker.dead(got, "REJECTED", "no")
    assert seen() == (message.id, "a", 1, body, 1, State.DEAD)
    # Peeking takes nothing: the other message is still there to reserve.
    peeked = broker.peek(other.id)
    assert peeked is not None and peeked.state is State.QUEUED and peeked.body == other.body
    assert ids_of(broker.reserve(["b"], 10, 0)) == [other.id]
    assert broker.delete(message.id)
    assert seen() is None and seen("a") is None


def test_ping_and_close_then_use_again(broker: Broker) -> None:
    broker.ping()
    broker.close()
    message = envelope()
    enqueue(broker, message)
    assert ids_of(broker.reserve(["default"], 1, 0)) == [message.id]
    broker.close()


# Cancellation.


@admin
def test_cancel_removes_a_ready_message(broker: Broker) -> None:
    message = envelope("mail", 1, body=b"\x00body")
    enqueue(broker, message)
    assert broker.cancel([message.id]) == [
        Cancellation(message.id, "mail", State.QUEUED, b"\x00body", 0)
    ]
    assert broker.locate(message.id) is None
    assert broker.reserve(["mail"], 10, 0) == []
    assert broker.stats()["mail"].ready == 0
    assert broker.cancel([message.id]) == []  # gone: nothing left to cancel


@admin
def test_cancel_removes_a_scheduled_message(broker: Broker) -> None:
    message = envelope(eta=time.time() + 1.0)  # still ahead when cancelled, however busy
    enqueue(broker, message)
    assert broker.cancel([message.id]) == [
        Cancellation(message.id, "default", State.SCHEDULED, message.body, 0)
    ]
    assert broker.locate(message.id) is None
    assert broker.reserve(["default"], 10, 1.3) == []  # not even once its eta is past
    assert broker.stats()["default"].scheduled == 0


@admin
def test_cancel_reports_the_attempt_of_a_retried_message(broker: Broker) -> None:
    enqueue(broker, envelope())
    [got] = broker.reserve(["default"], 1, 0)
    assert broker.retry(got, 60, "ValueError: boom")
    assert broker.cancel([got.id]) == [
        Cancellation(got.id, "default", State.SCHEDULED, got.body, 1)
    ]
    assert broker.locate(got.id) is None


@admin
def test_cancel_frees_the_idempotency_key(broker: Broker) -> None:
    ready, scheduled = envelope(key="r"), envelope(key="s", eta=time.time() + 60)
    enqueue(broker, ready, scheduled)
    assert len(broker.cancel([ready.id, scheduled.id])) == 2
    fresh = [envelope(key="r"), envelope(key="s")]
    assert broker.enqueue(fresh) == [e.id for e in fresh]
    assert ids_of(broker.reserve(["default"], 10, 0)) == [e.id for e in fresh]


@admin
def test_cancel_marks_a_leased_message_and_leaves_it_leased(broker: Broker) -> None:
    message = envelope(key="k")
    enqueue(broker, message)
    [got] = broker.reserve(["default"], 1, 0)
    assert broker.cancel_requested([got]) == set()
    assert broker.cancel([message.id]) == [
        Cancellation(message.id, "default", State.STARTED, message.body, 0)
    ]
    assert broker.locate(message.id) is State.STARTED
    assert broker.stats()["default"].running == 1
    assert broker.cancel_requested([got]) == {message.id}
    assert broker.enqueue([envelope(key="k")]) == [message.id]  # it still holds its key
    assert broker.extend([got]) == 1  # the mark stays with the lease renewed
    assert broker.cancel_requested([got]) == {message.id}
    assert broker.ack([got]) == 1
    assert broker.locate(message.id) is None


@admin
def test_cancelling_a_leased_message_twice_reports_it_again(broker: Broker) -> None:
    enqueue(broker, envelope())
    [got] = broker.reserve(["default"], 1, 0)
    first = broker.cancel([got.id])
    assert [c.was for c in first] == [State.STARTED]
    assert broker.cancel([got.id, got.id]) == first  # once per message
    assert broker.locate(got.id) is State.STARTED
    assert broker.cancel_requested([got]) == {got.id}
    assert broker.ack([got]) == 1


@admin
def test_cancel_leaves_dead_letters_and_unknown_ids_alone(broker: Broker) -> None:
    [dead] = kill(broker, "a", 1)
    assert broker.cancel([dead, "unknown"]) == []
    assert broker.cancel([]) == []
    assert broker.locate(dead) is State.DEAD
    assert [d.id for d in broker.dead_letters("a")] == [dead]
    assert broker.requeue_dead([dead]) == 1
    [got] = broker.reserve(["a"], 1, 0)
    assert (got.id, got.cancelled) == (dead, False)


@admin
def test_cancel_a_batch_across_queues(broker: Broker) -> None:
    leased = envelope("a", 0)
    enqueue(broker, leased)
    broker.reserve(["a"], 1, 0)
    [dead] = kill(broker, "b", 1)
    ready, scheduled, other = envelope("a"), envelope("b", eta=time.time() + 60), envelope("b")
    enqueue(broker, ready, scheduled, other)
    done = broker.cancel([scheduled.id, "unknown", leased.id, dead, ready.id])
    assert sorted((c.id, c.queue, c.was) for c in done) == sorted(
        [
            (scheduled.id, "b", State.SCHEDULED),
            (leased.id, "a", State.STARTED),
            (ready.id, "a", State.QUEUED),
        ]
    )
    assert {c.id: c.body for c in done} == {m.id: m.body for m in (scheduled, leased, ready)}
    stats = broker.stats()
    assert (stats["a"].ready, stats["a"].running) == (0, 1)
    assert (stats["b"].ready, stats["b"].scheduled, stats["b"].dead) == (1, 0, 1)
    assert ids_of(broker.reserve(["a", "b"], 10, 0)) == [other.id]


@admin
def test_cancel_requested_names_only_the_marked_deliveries(broker: Broker) -> None:
    enqueue(broker, envelope("a"), envelope("a"), envelope("b"))
    got = broker.reserve(["a", "b"], 10, 0)
    assert len(got) == 3
    assert broker.cancel_requested(got) == set()
    assert broker.cancel_requested([]) == set()
    marked = {got[0].id, got[2].id}
    assert len(broker.cancel(list(marked))) == 2
    assert broker.cancel_requested(got) == marked
    assert broker.cancel_requested(got[1:2]) == set()
    assert broker.cancel_requested(got[2:]) == {got[2].id}
    assert not any(d.cancelled for d in got)  # deliveries handed out before keep False
    assert broker.ack(got) == 3


@admin
@pytest.mark.parametrize("started", [False, True])
def test_the_mark_survives_requeue(broker: Broker, started: bool) -> None:
    enqueue(broker, envelope())
    [got] = broker.reserve(["default"], 1, 0)
    broker.cancel([got.id])
    assert broker.requeue([got], started=started) == 1
    assert broker.locate(got.id) is State.QUEUED
    [again] = broker.reserve(["default"], 1, 0)
    assert (again.id, again.cancelled) == (got.id, True)
    assert again.deliveries == (2 if started else 1)
    assert broker.cancel_requested([again]) == {got.id}
    assert broker.ack([again]) == 1


@admin
def test_the_mark_survives_lease_expiry(make_broker: MakeBroker) -> None:
    broker = make_broker(lease_seconds=0.5)
    enqueue(broker, envelope(), envelope())
    [got, unmarked] = broker.reserve(["default"], 2, 0)
    broker.cancel([got.id])
    again = broker.reserve(["default"], 2, 5)  # once the leases expire
    assert [(d.id, d.deliveries, d.cancelled) for d in again] == [
        (got.id, 2, True),
        (unmarked.id, 2, False),
    ]
    assert broker.ack(again) == 2


@admin
def test_the_mark_survives_retry(broker: Broker) -> None:
    enqueue(broker, envelope())
    [got] = broker.reserve(["default"], 1, 0)
    broker.cancel([got.id])
    assert broker.retry(got, 0.2, "ValueError: boom")
    [again] = broker.reserve(["default"], 1, 5)
    assert (again.id, again.attempt, again.cancelled) == (got.id, 1, True)
    assert broker.retry(again, -1, "again")
    [third] = broker.reserve(["default"], 1, 0)
    assert (third.attempt, third.cancelled) == (2, True)
    assert broker.ack([third]) == 1


@admin
def test_a_marked_message_back_in_line_is_removed_by_another_cancel(broker: Broker) -> None:
    enqueue(broker, envelope(key="k"))
    [got] = broker.reserve(["default"], 1, 0)
    broker.cancel([got.id])
    broker.requeue([got])
    assert broker.cancel([got.id]) == [Cancellation(got.id, "default", State.QUEUED, got.body, 0)]
    assert broker.reserve(["default"], 10, 0) == []
    fresh = envelope(key="k")
    assert broker.enqueue([fresh]) == [fresh.id]


@admin
def test_ack_and_delete_drop_the_mark_with_the_message(broker: Broker) -> None:
    message = envelope()
    enqueue(broker, message)
    [got] = broker.reserve(["default"], 1, 0)
    broker.cancel([message.id])
    assert broker.ack([got]) == 1
    assert broker.cancel_requested([got]) == set()
    assert broker.cancel([message.id]) == []
    enqueue(broker, message)  # the same id again: a new message
    [again] = broker.reserve(["default"], 1, 0)
    assert (again.id, again.cancelled) == (message.id, False)
    broker.cancel([message.id])
    assert broker.delete(message.id) is True
    assert broker.cancel_requested([again]) == set()
    enqueue(broker, message)
    [third] = broker.reserve(["default"], 1, 0)
    assert (third.id, third.cancelled) == (message.id, False)


@admin
def test_dead_drops_the_mark(broker: Broker) -> None:
    enqueue(broker, envelope())
    [got] = broker.reserve(["default"], 1, 0)
    broker.cancel([got.id])
    assert broker.dead(got, "REJECTED", "no") is True
    assert broker.cancel([got.id]) == []  # a dead letter now: left alone
    assert broker.cancel_requested([got]) == set()
    assert broker.requeue_dead([got.id]) == 1
    [again] = broker.reserve(["default"], 1, 0)
    assert (again.id, again.cancelled) == (got.id, False)


# Fair keys: an optional feature (a broker may ignore the key), which the built-in
# brokers honour; marked admin so that the minimal broker leaves them out.


def fair_counters(broker: Broker, queue: str = "default") -> int:
    """How many fair-key counters ``broker`` keeps for ``queue``, read from its store."""
    if isinstance(broker, MemoryBroker):
        return sum(len(keys) for (q, _), keys in broker._fair.items() if q == queue)
    if isinstance(broker, SQLiteBroker):
        with broker._db.read() as conn:
            sql = "SELECT count(*) FROM fair_keys WHERE queue = ?"
            return int(conn.execute(sql, (queue,)).fetchone()[0])
    assert isinstance(broker, RedisBroker)
    key = broker._base(queue) + ":fair"
    return int(broker._conn.call(lambda client: client.zcard(key)))


def turns(order: list[Envelope], reserved: list[str]) -> dict[str | None, list[int]]:
    """Where each fair key's messages came in ``reserved`` (positions), by key."""
    key_of = {e.id: e.fair_key for e in order}
    places: dict[str | None, list[int]] = {}
    for place, id in enumerate(reserved):
        places.setdefault(key_of[id], []).append(place)
    return places


@admin
def test_fair_keys_take_turns_within_a_queue_and_priority(broker: Broker) -> None:
    burst = [envelope(fair_key="a") for _ in range(30)]
    enqueue(broker, *burst)
    later_b = [envelope(fair_key="b") for _ in range(3)]
    enqueue(broker, *later_b)
    later_c = [envelope(fair_key="c") for _ in range(2)]
    for message in later_c:  # one at a time
        enqueue(broker, message)
    reserved = ids_of(broker.reserve(["default"], 100, 0))
    assert sorted(reserved) == sorted(e.id for e in burst + later_b + later_c)
    # Each key in its own order; its n-th message within the n-th round of turns
    # (a round's order among the keys is not the contract's).
    for messages in (burst, later_b, later_c):
        mine = [id for id in reserved if id in {e.id for e in messages}]
        assert mine == [e.id for e in messages]
    places = turns(burst + later_b + later_c, reserved)
    assert places["b"] == [p for p in places["b"] if p < 9] and len(places["b"]) == 3
    assert max(places["c"]) < 6
    assert places["a"][-1] == 34  # the rest of the burst after them


@admin
def test_a_key_that_sends_again_takes_its_turn_from_the_head(broker: Broker) -> None:
    first = [envelope(fair_key="a") for _ in range(10)]
    enqueue(broker, *first)
    lone = envelope(fair_key="b")
    enqueue(broker, lone)
    taken = broker.reserve(["default"], 5, 0)
    assert lone.id in ids_of(taken)
    broker.ack(taken)
    again = envelope(fair_key="b")  # b's counter lies behind the head by now
    enqueue(broker, again)
    assert again.id in ids_of(broker.reserve(["default"], 2, 0))


@admin
def test_priority_dominates_fair_keys(broker: Broker) -> None:
    bulk = [envelope(priority=4, fair_key="a") for _ in range(5)]
    normal = [envelope(fair_key="a") for _ in range(5)]
    enqueue(broker, *bulk, *normal)
    urgent = envelope(priority=0, fair_key="b")
    enqueue(broker, urgent)
    reserved = ids_of(broker.reserve(["default"], 20, 0))
    assert reserved == [urgent.id] + [e.id for e in normal] + [e.id for e in bulk]


@admin
def test_messages_without_a_fair_key_keep_their_order(broker: Broker) -> None:
    plain = [envelope() for _ in range(6)]
    keyed = [envelope(fair_key=k) for k in "abab"]
    enqueue(broker, plain[0], keyed[0], plain[1], keyed[1])
    enqueue(broker, plain[2], plain[3], keyed[2])
    enqueue(broker, plain[4], keyed[3], plain[5])
    reserved = ids_of(broker.reserve(["default"], 20, 0))
    assert sorted(reserved) == sorted(e.id for e in plain + keyed)
    assert [id for id in reserved if id in {e.id for e in plain}] == [e.id for e in plain]


@admin
def test_requeue_keeps_a_fair_place(broker: Broker) -> None:
    enqueue(broker, *(envelope(fair_key="a") for _ in range(10)))
    lone = envelope(fair_key="b")
    enqueue(broker, lone)
    first = broker.reserve(["default"], 3, 0)
    assert lone.id in ids_of(first)
    assert broker.requeue(first) == 3
    assert ids_of(broker.reserve(["default"], 3, 0)) == ids_of(first)


@admin
def test_a_fair_key_in_the_future_waits_for_its_eta(broker: Broker) -> None:
    later = envelope(fair_key="a", eta=time.time() + 60)
    now = envelope(fair_key="a")
    enqueue(broker, later, now)
    assert ids_of(broker.reserve(["default"], 10, 0)) == [now.id]


@admin
def test_an_idempotency_key_held_stores_no_fair_turn(broker: Broker) -> None:
    first = envelope(key="k", fair_key="a")
    enqueue(broker, first)
    assert broker.enqueue([envelope(key="k", fair_key="a")]) == [first.id]
    assert ids_of(broker.reserve(["default"], 10, 0)) == [first.id]


@admin
def test_fair_counters_stay_few(broker: Broker) -> None:
    for round_ in range(3):  # many keys come and go
        enqueue(broker, *(envelope(fair_key=f"tenant-{round_}-{n}") for n in range(200)))
        while got := broker.reserve(["default"], 100, 0):
            broker.ack(got)
    enqueue(broker, envelope(fair_key="last"))  # the line was empty: the others go
    assert fair_counters(broker) == 1
    # Under a lasting backlog, the counters the head passed go as keyed messages come
    # (the memory broker sweeps those of a line once they are 64).
    enqueue(broker, *(envelope(fair_key="a") for _ in range(400)))
    for n in range(300):
        enqueue(broker, envelope(fair_key=f"k{n}"))
        assert broker.ack(broker.reserve(["default"], 2, 0)) == 2
    assert fair_counters(broker) <= 64
    assert fair_counters(broker, "other") == 0


# Concurrency.


@pytest.mark.timeout(30)
def test_concurrent_consumers_get_each_message_exactly_once(make_broker: MakeBroker) -> None:
    producer = make_broker()
    ids: list[str] = []
    for _ in range(5):
        ids += enqueue(producer, *(envelope() for _ in range(100)))
    seen: list[str] = []
    acked: list[int] = []
    lock = threading.Lock()

    def consume(broker: Broker) -> None:
        while got := broker.reserve(["default"], 7, 0.2):
            count = broker.ack(got)
            with lock:
                seen.extend(ids_of(got))
                acked.append(count)

    threads = [threading.Thread(target=consume, args=(make_broker(),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    duplicates = [id for id, count in Counter(seen).items() if count > 1]
    assert duplicates == []
    assert sorted(seen) == sorted(ids)
    assert sum(acked) == len(ids)
    assert admin_view(lambda: producer.stats()["default"].ready) == 0
