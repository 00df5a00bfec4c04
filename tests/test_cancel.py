"""Cancelling in-process: ``app.cancel`` on the memory broker, the runner's checks,
a consumer told through its slot, and the slot's notices. Real workers and real
brokers: tests/e2e/test_cancel_e2e.py; the broker side: the broker contract."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest

from gopherq import GopherQ, Middleware, State, TaskFailed, current_task
from gopherq.brokers import Delivery
from gopherq.message import Message
from gopherq.runner import Runner
from gopherq.worker import Consumer
from gopherq.worker.slots import Slot

pytestmark = pytest.mark.timeout(30)


class Cancels(Middleware):
    def __init__(self) -> None:
        self.seen: list[tuple[str, State, int]] = []

    def on_cancel(self, app: GopherQ, message: Message, was: State, attempt: int) -> None:
        self.seen.append((message.id, was, attempt))


@pytest.fixture
def app() -> GopherQ:
    app = GopherQ("t", broker="memory://", events="memory://")

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


def test_queued_and_scheduled_tasks_are_removed_with_a_record_and_an_event(app: GopherQ) -> None:
    hooks = Cancels()
    app.add_middleware(hooks)
    subscription = app.events.subscribe("task-cancelled", since="0", timeout=0)
    queued = app.send_task("add", [1, 2])
    scheduled = app.send_task("add", [3, 4], countdown=60)
    found = app.cancel([queued.id, scheduled.id, "unknown"])
    assert {(c.id, c.was) for c in found} == {
        (queued.id, State.QUEUED),
        (scheduled.id, State.SCHEDULED),
    }
    assert app.broker.reserve(["default"], 10, 0) == []
    for result in (queued, scheduled):
        assert result.state is State.CANCELLED
        with pytest.raises(TaskFailed, match="TaskCancelled: cancelled before it started"):
            result.get(timeout=1)
        record = result.record()
        assert record is not None and record.task == "add" and record.queue == "default"
    assert hooks.seen == [(queued.id, State.QUEUED, 0), (scheduled.id, State.SCHEDULED, 0)]
    events = list(subscription)
    assert [(e.id, e.task, e.extra["was"]) for e in events] == [
        (queued.id, "add", "QUEUED"),
        (scheduled.id, "add", "SCHEDULED"),
    ]
    assert not queued.cancel()  # finished now: nothing to cancel


def test_a_leased_task_is_only_marked(app: GopherQ) -> None:
    result = app.send_task("add", [1, 2])
    (delivery,) = app.broker.reserve(["default"], 1, 0)
    assert result.cancel()
    assert result.state is State.STARTED  # its worker settles it
    assert app.broker.cancel_requested([delivery]) == {delivery.id}


def runner_for(app: GopherQ, cancelled: set[str]) -> Runner:
    return Runner(app, worker="w", cancelled=cancelled.__contains__)


def delivery_of(app: GopherQ, **options: Any) -> Delivery:
    app.send_task("add", [1, 2], **options)
    (delivery,) = app.broker.reserve(["default"], 1, 0)
    return delivery


def test_the_runner_skips_a_task_cancelled_before_it_starts(app: GopherQ) -> None:
    ran: list[int] = []

    @app.task(name="work")
    def work() -> None:
        ran.append(1)

    app.send_task("work")
    (delivery,) = app.broker.reserve(["default"], 1, 0)
    outcome = runner_for(app, {delivery.id}).run(delivery)
    assert outcome.action == "cancel" and not ran
    assert outcome.record is not None and outcome.record.state is State.CANCELLED
    assert outcome.error == "TaskCancelled: cancelled before it started"
    # A delivery the broker hands out marked is skipped the same way.
    marked = dataclasses.replace(delivery, cancelled=True)
    assert runner_for(app, set()).run(marked).action == "cancel" and not ran


def test_a_running_task_sees_cancelled_and_ends_cancelled_however_it_returns(
    app: GopherQ,
) -> None:
    cancelled: set[str] = set()
    seen: list[bool] = []

    @app.task(name="loop", retries=3)
    def loop() -> str:
        seen.append(current_task().cancelled)
        cancelled.add(current_task().id)
        seen.append(current_task().cancelled)
        raise ValueError("stopping")  # an error after a cancel is not retried

    app.send_task("loop")
    (delivery,) = app.broker.reserve(["default"], 1, 0)
    outcome = runner_for(app, cancelled).run(delivery)
    assert seen == [False, True]
    assert outcome.action == "cancel"
    assert outcome.record is not None and outcome.record.state is State.CANCELLED
    assert outcome.error == "TaskCancelled: cancelled while running"


def test_events_of_a_cancelled_run(app: GopherQ) -> None:
    subscription = app.events.subscribe("task-cancelled", since="0", timeout=0)
    delivery = delivery_of(app)
    runner_for(app, {delivery.id}).run(delivery)
    app.events.flush()
    (event,) = list(subscription)
    assert event.worker == "w" and event.extra["was"] == "STARTED"
    assert event.extra["error_type"] == "TaskCancelled"


def test_a_consumer_told_through_its_slot_stops_the_task(app: GopherQ) -> None:
    started = threading.Event()

    @app.task(name="patient")
    def patient() -> str:
        started.set()
        while not current_task().cancelled:
            time.sleep(0.005)
        return "stopped"

    result = app.send_task("patient")
    slot = Slot.allocate(1, 4)[0]
    consumer = Consumer(app, ["default"], slot=slot, reserve_timeout=0.05)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        assert started.wait(5)
        slot.notify(frozenset({result.id}))  # what the supervisor does
        with pytest.raises(TaskFailed, match="cancelled while running"):
            result.get(timeout=5)
    finally:
        consumer.stop()
        thread.join(5)
    assert app.broker.stats()["default"].running == 0  # settled like an ack
    assert app.broker.dead_letters() == []


def test_slot_notices_reach_the_child_side() -> None:
    first, second = Slot.allocate(2, 4)
    assert not first.cancelled("a")
    first.notify(frozenset({"a", "b"}))
    assert first.cancelled("a") and first.cancelled("b") and not second.cancelled("a")
    first.notify(frozenset({"b"}))
    assert not first.cancelled("a") and first.cancelled("b")
    first.clear()
    assert not first.cancelled("b")
