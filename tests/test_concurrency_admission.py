"""Concurrency limits at the worker: the task option, and consumers (threads on the
memory broker) that ask the broker for a slot before a limited task runs."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from typing import Any

import pytest
from minimal_broker import DictBroker
from test_consumer import consuming

from gopherq import GopherQ
from gopherq.brokers import Delivery
from gopherq.brokers.memory import MemoryBroker
from gopherq.errors import BrokerUnavailable, ConfigurationError
from gopherq.message import Message
from gopherq.worker.concurrency import Admission, check_support
from gopherq.worker.startup import StartupError, check_stores

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "5"])
def test_a_bad_concurrency_is_refused_at_declaration(value: Any) -> None:
    app = GopherQ("t", broker="memory://")
    with pytest.raises(ConfigurationError) as raised:
        app.task(concurrency=value)(lambda: None)
    text = str(raised.value)
    assert f"concurrency={value!r}" in text and "1 or more" in text
    assert "\n" not in text
    assert not app.tasks


def test_concurrency_is_a_task_option() -> None:
    app = GopherQ("t", broker="memory://")

    @app.task(concurrency=3)
    def limited() -> None: ...

    @app.task(concurrency=None)
    def free() -> None: ...

    assert limited.options.concurrency == 3
    assert free.options.concurrency is None


def test_no_admission_without_a_limited_task() -> None:
    app = GopherQ("t", broker="memory://")
    app.task(lambda: None)
    assert Admission.for_app(app, "w") is None


def test_a_broker_without_limits_is_refused_in_one_line() -> None:
    app = GopherQ("t", broker=DictBroker("minimal://"))
    app.task(name="tasks.limited", concurrency=2)(lambda: None)
    with pytest.raises(ConfigurationError) as raised:
        check_support(app)
    text = str(raised.value)
    assert "'tasks.limited'" in text and "concurrency=2" in text and "DictBroker" in text
    assert "\n" not in text


def test_consumers_never_run_more_than_the_limit_at_once() -> None:
    app = GopherQ("t", broker=MemoryBroker())
    lock = threading.Lock()
    running, most, done = [0], [0], []

    @app.task(concurrency=2, ignore_result=True)
    def limited(n: int) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
            done.append(n)

    @app.task(ignore_result=True)
    def free(n: int) -> None:
        done.append(-n)

    for n in range(1, 31):
        limited.delay(n)
        free.delay(n)
    with ExitStack() as stack:
        for _ in range(4):
            stack.enter_context(consuming(app))
        deadline = time.monotonic() + 30
        while len(done) < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert sorted(done) == sorted([*range(1, 31), *range(-30, 0)])
    assert most[0] == 2
    stats = app.broker.stats()["default"]
    assert (stats.ready, stats.scheduled, stats.running) == (0, 0, 0)


def test_a_parked_task_is_not_counted_as_a_delivery() -> None:
    # With max_deliveries=1 a second counted delivery would be dead-lettered WORKER_LOST.
    app = GopherQ("t", broker=MemoryBroker(), max_deliveries=1)
    attempts: list[int] = []

    @app.task(concurrency=1, bind=True)
    def limited(ctx: Any) -> None:
        attempts.append(ctx.attempt)
        time.sleep(0.05)

    results = [limited.delay() for _ in range(4)]
    with ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(consuming(app))
        for result in results:
            result.get(timeout=20)
    assert attempts == [0, 0, 0, 0]


class _FailingAdmit(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.admits = 0

    def admit(self, delivery: Delivery, key: str, limit: int) -> bool:
        self.admits += 1
        if self.admits <= 2:
            raise BrokerUnavailable("redis://x: connection refused")
        return super().admit(delivery, key, limit)


def test_a_failing_admit_gives_the_task_back_and_pauses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = GopherQ("t", broker=_FailingAdmit())

    @app.task(concurrency=1)
    def limited() -> str:
        return "ran"

    result = limited.delay()
    with consuming(app):
        assert result.get(timeout=20) == "ran"
    broker = app.broker
    assert isinstance(broker, _FailingAdmit)
    assert broker.admits == 3  # not a hot loop: a pause after each failure
    assert "could not ask for a slot of" in caplog.text
    assert app.broker.stats()["default"].scheduled == 0


def test_a_cancelled_delivery_is_settled_without_a_slot() -> None:
    broker = MemoryBroker()
    app = GopherQ("t", broker=broker)
    app.task(name="tasks.limited", concurrency=1)(lambda: None)
    admission = Admission.for_app(app, "w")
    assert admission is not None
    message = Message(id="x", task="tasks.limited")
    cancelled = Delivery("x", "default", 2, b"", 0, 1, "token", cancelled=True)
    assert admission.admit(cancelled, message)


def test_a_worker_refuses_to_start_on_a_broker_without_limits() -> None:
    app = GopherQ("t", broker=DictBroker("minimal://"), backend="memory://")
    app.task(name="tasks.limited", concurrency=2)(lambda: None)
    with pytest.raises(StartupError, match=r"'tasks.limited' declares concurrency=2"):
        check_stores(app, connect_timeout=5)
