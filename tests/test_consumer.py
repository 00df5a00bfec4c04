"""The consumer in-process: a thread on the memory broker. Fast; no subprocesses."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gopherq import GopherQ, Reject, State, current_task
from gopherq import runner as runner_module
from gopherq.brokers import Delivery, Envelope
from gopherq.brokers.memory import MemoryBroker
from gopherq.errors import BrokerUnavailable, WorkerLost
from gopherq.message import Message, new_id
from gopherq.results.base import JobRecord
from gopherq.results.memory import MemoryResultBackend
from gopherq.worker import Consumer, Exit, Worker
from gopherq.worker import consumer as consumer_module
from gopherq.worker.consumer import SHORT_TASK
from gopherq.worker.slots import Holding, Slot

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app() -> GopherQ:
    return GopherQ("t", broker="memory://")


@contextmanager
def consuming(app: GopherQ, **options: Any) -> Iterator[Consumer]:
    """A consumer running in a thread until the block ends."""
    consumer = Consumer(app, ["default"], reserve_timeout=0.05, **options)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        yield consumer
    finally:
        consumer.stop()
        thread.join(10)
        assert not thread.is_alive()


@pytest.fixture
def short_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks that return at once count as short (prefetched in batches) however
    loaded the machine; only a task never seen before still counts as long."""
    monkeypatch.setattr(consumer_module, "SHORT_TASK", 1.0)


def drain(app: GopherQ, **options: Any) -> Consumer:
    """Run a burst consumer in this thread until the queue is empty."""
    consumer = Consumer(app, ["default"], burst=True, reserve_timeout=0.2, **options)
    assert consumer.run() is Exit.DRAINED
    return consumer


def dead_reasons(app: GopherQ) -> dict[str, str]:
    return {letter.id: letter.reason for letter in app.broker.dead_letters()}


def test_results_come_back(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    with consuming(app):
        assert add.delay(2, 3).get(timeout=5) == 5
        assert double.delay(21).get(timeout=5) == 42
        started = time.perf_counter()
        assert add.delay(1, 1).get(timeout=5) == 2
        assert time.perf_counter() - started < 0.5  # no batching delay on a lone task
        results = [add.delay(i, i) for i in range(50)]
        assert [r.get(timeout=5) for r in results] == [2 * i for i in range(50)]
    record = add.delay(0, 0).record()
    assert record is None  # nothing runs once stopped


def test_retries_follow_the_backoff(app: GopherQ) -> None:
    runs: list[float] = []

    @app.task(retries=3, retry_delay=0.05, backoff="exponential", jitter=False)
    def flaky() -> None:
        runs.append(time.monotonic())
        raise ValueError("boom")

    result = flaky.delay()
    drain(app)
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert len(runs) == 4
    for gap, expected in zip(gaps, [0.05, 0.1, 0.2], strict=True):
        assert expected - 0.005 <= gap < expected + 0.15
    record = result.record()
    assert record is not None
    assert record.state is State.FAILED
    assert record.attempts == 4
    assert record.error is not None
    assert record.error.type == "ValueError"
    assert "boom" in record.error.traceback
    assert dead_reasons(app) == {result.id: "MAX_RETRIES"}


def test_each_dead_letter_reason(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def fails() -> None:
        raise RuntimeError("no retries")

    @app.task(retries=5)
    def rejects() -> None:
        raise Reject("not for me")

    producer = GopherQ("producer", broker=app.broker)  # knows no tasks: sends by name only
    garbage = new_id()
    app.broker.enqueue([Envelope(garbage, "default", 2, b"\xc1 not msgpack")])
    unknown = app.send_task("nowhere.task").id
    bad_args = producer.send_task(add.name, args=[1]).id
    expired = add.apply_async((1, 2), expires=0.001).id
    failed = fails.delay().id
    rejected = rejects.delay().id
    time.sleep(0.01)
    drain(app)
    expected = {
        garbage: ("DECODE_ERROR", State.DEAD),
        unknown: ("UNKNOWN_TASK", State.DEAD),
        bad_args: ("BAD_ARGS", State.DEAD),
        expired: ("EXPIRED", State.EXPIRED),
        failed: ("MAX_RETRIES", State.FAILED),
        rejected: ("REJECTED", State.DEAD),
    }
    assert dead_reasons(app) == {id: reason for id, (reason, _) in expected.items()}
    for id, (_, state) in expected.items():
        record = app.backend.get(id)
        assert record is not None, id
        assert record.state is state, id
    record = app.backend.get(expired)
    assert record is not None and record.error is not None
    assert record.error.type == "TaskExpired"


def test_worker_lost_after_max_deliveries() -> None:
    app = GopherQ("t", broker="memory://", max_deliveries=2)

    @app.task
    def crashes() -> None:
        pass

    result = crashes.delay()
    for _ in range(2):  # two workers died running it
        app.broker.requeue(app.broker.reserve(["default"], 1, 0), started=True)
    drain(app)
    assert dead_reasons(app) == {result.id: "WORKER_LOST"}
    assert result.state is State.DEAD
    record = app.backend.get(result.id)
    assert record is not None and record.error is not None
    assert record.error.type == WorkerLost.__name__ == "WorkerLost"  # as its task-retried events


class _SkewedClock:
    """The ``time`` module as a worker whose clock is ``skew`` seconds off sees it."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def time(self) -> float:
        return time.time() + self.skew


@pytest.mark.parametrize("skew", [3600.0, -3600.0])
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_retry_is_due_by_the_brokers_clock_not_the_workers(
    kind: str, skew: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'q.db'}"
    app = GopherQ("t", broker=url)
    runs: list[float] = []

    @app.task(retries=1)
    def flaky() -> str:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise current_task().retry(countdown=0.3)
        return "done"

    result = flaky.delay()
    for module in (runner_module, consumer_module):
        monkeypatch.setattr(module, "time", _SkewedClock(skew))
    with consuming(app):
        # An hour ahead, an eta from the worker's clock would wait an hour; an hour
        # behind, it would run at once.
        assert result.get(timeout=10) == "done"
    assert runs[1] - runs[0] >= 0.3 - 0.01


def test_priority_order(app: GopherQ) -> None:
    order: list[str] = []

    @app.task
    def note(label: str) -> None:
        order.append(label)

    sent = [("bulk-1", 4), ("normal-1", 2), ("critical", 0), ("normal-2", 2), ("high", 1)]
    sent += [("low", 3), ("bulk-2", 4), ("normal-3", 2)]
    for label, priority in sent:
        note.apply_async((label,), priority=priority)
    drain(app)
    expected = [label for label, _ in sorted(sent, key=lambda item: item[1])]
    assert order == expected


def test_short_tasks_are_prefetched_and_long_ones_are_not(app: GopherQ) -> None:
    @app.task
    def quick() -> None:
        pass

    @app.task
    def slow() -> None:
        time.sleep(SHORT_TASK * 4)

    consumer = Consumer(app, ["default"])
    assert consumer._limit() == 1  # nothing known yet: assume long
    for _ in range(5):
        quick.delay()
    drain_with(consumer)
    assert consumer._limit() == app.settings.prefetch
    for _ in range(5):
        slow.delay()
    drain_with(consumer)
    assert consumer._limit() == 1


def drain_with(consumer: Consumer) -> None:
    consumer.burst, consumer.reserve_timeout = True, 0.05
    assert consumer.run() is Exit.DRAINED


@pytest.mark.usefixtures("short_tasks")
def test_a_finished_result_does_not_wait_for_a_long_task(app: GopherQ) -> None:
    release = threading.Event()

    @app.task
    def quick() -> str:
        return "quick"

    @app.task
    def blocked() -> str:
        release.wait(10)
        return "blocked"

    with consuming(app) as consumer:
        for _ in range(5):
            quick.delay().get(timeout=5)  # learn that tasks are short: batches of 16
        assert consumer._limit() > 1
        first, second = app.send_many([quick.s(), blocked.s()])
        assert first.get(timeout=2) == "quick"  # flushed before `blocked` started
        assert not second.ready()
        release.set()
        assert second.get(timeout=5) == "blocked"


@pytest.mark.usefixtures("short_tasks")
def test_graceful_stop_requeues_unstarted(app: GopherQ) -> None:
    started = threading.Event()
    release = threading.Event()

    @app.task
    def gate(n: int) -> int:
        if n == 0:
            started.set()
            release.wait(10)
        return n

    with consuming(app) as consumer:
        for n in range(1, 6):
            gate.delay(n).get(timeout=5)  # known to be short: no reason to give back
        results = app.send_many([gate.s(n) for n in range(5)])
        assert started.wait(5)
        holding = consumer.slot.read()
        assert holding.running is not None
        assert holding.running.delivery.id == results[0].id
        assert [d.id for d in holding.unstarted] == [r.id for r in results[1:]]
        consumer.stop()
        release.set()
    assert results[0].get(timeout=1) == 0
    assert app.broker.stats()["default"].ready == 4
    assert consumer.slot.read() == Holding()
    again = app.broker.reserve(["default"], 10, 0)
    assert [d.id for d in again] == [r.id for r in results[1:]]
    assert all(d.deliveries == 1 for d in again)  # the prefetch did not count


@pytest.mark.usefixtures("short_tasks")
def test_the_rest_of_a_batch_does_not_wait_behind_a_long_task(app: GopherQ) -> None:
    started = threading.Event()
    release = threading.Event()

    @app.task
    def quick() -> str:
        return "quick"

    @app.task
    def blocked() -> str:
        started.set()
        release.wait(10)
        return "blocked"

    with consuming(app) as consumer:
        for _ in range(5):
            quick.delay().get(timeout=5)
        batch = app.send_many([quick.s(), blocked.s(), quick.s(), quick.s()])
        assert started.wait(5)
        assert batch[0].get(timeout=2) == "quick"
        assert app.broker.stats()["default"].ready == 2  # free for another process
        assert consumer.slot.read().unstarted == ()
        release.set()
        assert [r.get(timeout=5) for r in batch] == ["quick", "blocked", "quick", "quick"]


def test_leases_are_renewed_while_a_task_runs() -> None:
    app = GopherQ("t", broker="memory://", lease_seconds=0.3)
    started = threading.Event()
    runs: list[int] = []

    @app.task
    def long() -> str:
        runs.append(1)
        started.set()
        time.sleep(1.0)
        return "done"

    result = long.delay()
    with consuming(app):
        assert started.wait(5)
        deadline = time.monotonic() + 0.9
        while time.monotonic() < deadline:  # three leases long
            assert app.broker.reserve(["default"], 1, 0) == []  # still leased
            time.sleep(0.02)
        assert result.get(timeout=5) == "done"
    assert runs == [1]


def test_recycles_after_max_tasks(app: GopherQ) -> None:
    @app.task
    def quick() -> None:
        pass

    for _ in range(5):
        quick.delay()
    consumer = Consumer(app, ["default"], max_tasks=3, reserve_timeout=0.05)
    assert consumer.run() is Exit.RECYCLE
    assert consumer.tasks_run == 3
    assert app.broker.stats()["default"].ready == 2


def test_recycles_above_max_memory(app: GopherQ) -> None:
    @app.task
    def quick() -> None:
        pass

    quick.delay()
    quick.delay()
    consumer = Consumer(app, ["default"], max_memory=1, reserve_timeout=0.05)
    assert consumer.run() is Exit.RECYCLE
    assert consumer.tasks_run == 1


class FlakyBroker(MemoryBroker):
    """Fails its first reserves and its first ack, like a broker that comes back."""

    def __init__(self) -> None:
        super().__init__()
        self.reserve_failures = 2
        self.ack_failures = 1

    def reserve(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        if self.reserve_failures:
            self.reserve_failures -= 1
            raise BrokerUnavailable("down")
        return super().reserve(queues, limit, timeout)

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        if self.ack_failures:
            self.ack_failures -= 1
            raise BrokerUnavailable("down")
        return super().ack(deliveries)


def test_survives_broker_errors(caplog: pytest.LogCaptureFixture) -> None:
    broker = FlakyBroker()
    app = GopherQ("t", broker=broker, backend="memory://")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(1, 2)
    with consuming(app):
        assert result.get(timeout=5) == 3
        deadline = time.monotonic() + 5
        while broker.stats()["default"].running and time.monotonic() < deadline:
            time.sleep(0.01)
    assert broker.reserve_failures == broker.ack_failures == 0
    assert broker.stats()["default"].running == 0  # acked on the second try
    assert "reserve failed" in caplog.text
    assert "could not settle" in caplog.text


class StartFailingBackend(MemoryResultBackend):
    """Fails to store STARTED records (and reads) while ``failures`` lasts, like a
    result store that is down just as tasks start."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    def store(self, records: Sequence[JobRecord]) -> None:
        if any(r.state is State.STARTED for r in records):
            self.calls += 1
            if self.calls <= self.failures:
                raise BrokerUnavailable("result store down")
        super().store(records)


def test_a_store_failing_at_task_start_does_not_stop_the_consumer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = StartFailingBackend(failures=3)
    app = GopherQ("t", broker="memory://", backend=backend)

    @app.task(timeout=30)  # a hard time limit: its start is always stored first
    def limited(x: int) -> int:
        current_task().progress(1, 2)  # best effort too, while the store fails
        return x

    results = [limited.delay(i) for i in range(8)]
    with caplog.at_level(logging.INFO, "gopherq.worker"):
        drain(app)
    assert [r.get(timeout=1) for r in results] == list(range(8))
    records = [r.record() for r in results]
    assert all(r is not None and r.attempts == 1 for r in records)  # each ran once
    assert app.broker.dead_letters() == []
    warnings = [r for r in caplog.records if "could not store" in r.message]
    assert len(warnings) == 1, caplog.text  # one per outage


def test_a_store_failing_to_read_a_previous_record_does_not_stop_the_consumer() -> None:
    app = GopherQ("t", broker="memory://")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    def down(id: str) -> None:
        raise BrokerUnavailable("result store down")

    result = add.delay(1, 2)
    app.broker.requeue(app.broker.reserve(["default"], 1, 0), started=True)  # a rerun
    app.backend.get = down  # type: ignore[method-assign]
    drain(app)
    del app.backend.get
    assert result.get(timeout=1) == 3


def test_a_runner_that_raises_gives_the_delivery_back_counted(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(1, 2)
    consumer = Consumer(app, ["default"], burst=True, reserve_timeout=0.05)
    run = consumer._runner.run
    seen: list[int] = []

    def fails_once(delivery: Delivery, *args: Any, **kwargs: Any) -> Any:
        seen.append(delivery.deliveries)
        if len(seen) == 1:
            raise RuntimeError("a bug in the runner")
        return run(delivery, *args, **kwargs)

    consumer._runner.run = fails_once  # type: ignore[method-assign]
    assert consumer.run() is Exit.DRAINED  # the consumer lived on
    assert result.get(timeout=1) == 3
    assert seen == [1, 2]  # given back counted, as if its process had died


class SettleFailingBroker(MemoryBroker):
    """Never settles: its ack always fails."""

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        raise BrokerUnavailable("down")


def test_a_stopping_consumer_backs_off_then_gives_up_settling(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(consumer_module, "SETTLE_ON_STOP", 1.0, raising=False)
    app = GopherQ("t", broker=SettleFailingBroker(), backend="memory://")
    ran = threading.Event()

    @app.task
    def quick() -> None:
        ran.set()

    quick.delay()
    consumer = Consumer(app, ["default"], reserve_timeout=0.05)
    thread = threading.Thread(target=consumer.run, daemon=True)
    with caplog.at_level(logging.INFO, "gopherq.worker"):
        thread.start()
        assert ran.wait(5)
        consumer.stop()
        thread.join(20)  # generous: the bound is about a second
        assert not thread.is_alive()
    failures = [r for r in caplog.records if "could not settle" in r.message]
    assert 1 <= len(failures) <= 20, len(failures)
    assert "ran but not settled" in caplog.text
    assert app.broker.stats()["default"].running == 1  # left to its lease


class DownBroker(MemoryBroker):
    """A broker that never answers a reserve."""

    def reserve(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        raise BrokerUnavailable("down")


@pytest.mark.parametrize("broker", [DownBroker, SettleFailingBroker])
def test_a_burst_consumer_gives_up_on_a_failing_broker(
    broker: type[MemoryBroker], caplog: pytest.LogCaptureFixture
) -> None:
    """A burst run never waits forever: after ``connect_timeout`` of failures on end
    (reserving, or settling what it ran), it returns UNAVAILABLE."""
    app = GopherQ("t", broker=broker(), backend="memory://", connect_timeout=0.5)

    @app.task
    def quick() -> None:
        pass

    quick.delay()
    consumer = Consumer(app, ["default"], burst=True, reserve_timeout=0.05)
    assert consumer.run() is Exit.UNAVAILABLE
    assert "a burst run gives up" in caplog.text


def test_slot_round_trip() -> None:
    slot, other = Slot.allocate(2, 4)
    batch = [Delivery(new_id(), "q", 2, b"body", 0, 1, f"t{i}") for i in range(4)]
    assert slot.read() == Holding()
    slot.hold(batch)
    assert slot.read().unstarted == tuple(_bodiless(d) for d in batch)
    slot.begin(batch[0], "tasks.one", 3, 2.0, now=100.0)
    holding = slot.read()
    assert holding.running is not None
    assert holding.running.delivery == _bodiless(batch[0])
    assert (holding.running.task, holding.running.retries) == ("tasks.one", 3)
    assert (holding.running.timeout, holding.running.deadline) == (2.0, 102.0)
    assert holding.unstarted == tuple(_bodiless(d) for d in batch[1:])
    slot.end()
    slot.begin(batch[1], "tasks.two", None, None, now=101.0)
    holding = slot.read()
    assert holding.finished == (_bodiless(batch[0]),)
    assert holding.running is not None
    assert holding.running.deadline is None
    slot.end()
    slot.settle()
    slot.release()
    assert slot.read() == Holding()
    assert other.read() == Holding()  # slots do not overlap


def test_slot_survives_a_writer_killed_mid_write() -> None:
    slot = Slot.allocate(1, 4)[0]
    batch = [Delivery(new_id(), "q", 2, b"", 0, 1, "tok")]
    slot.hold(batch)
    before = slot.read()
    # A write that never bumped seq (the child died in it) scribbles on the other half.
    box = slot._state
    seq = int.from_bytes(box._memory[box._offset : box._offset + 8], sys.byteorder)
    half = box._offset + 8 + ((seq + 1) & 1) * box._half
    box._memory[half : half + 64] = b"\xff" * 64
    fresh = Slot(box._memory, box._offset, box._half)
    assert fresh.read() == before


def test_slot_trims_a_batch_too_large_to_record() -> None:
    slot = Slot.allocate(1, 1)[0]
    batch = [Delivery("x" * 200, "q", 2, b"", 0, 1, "tok") for _ in range(5)]
    slot.hold(batch)
    assert 0 < len(slot.read().unstarted) < 5


def _bodiless(delivery: Delivery) -> Delivery:
    return Delivery(
        delivery.id,
        delivery.queue,
        delivery.priority,
        b"",
        delivery.attempt,
        delivery.deliveries,
        delivery.token,
    )


def test_message_decoded_once_is_passed_to_the_runner(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    message = Message(id=new_id(), task=add.name, args=[1, 2])
    app.broker.enqueue([Envelope(message.id, "default", 2, app.codec.encode(message))])
    drain(app)
    assert app.result(message.id).get(timeout=1) == 3


def test_worker_defaults_to_every_declared_queue() -> None:
    app = GopherQ("t", broker="memory://", concurrency=3)

    @app.task(queue="emails")
    def send() -> None:
        pass

    worker = Worker(app)
    assert worker.queues == ["default", "emails"]
    assert worker.concurrency == 3
    assert Worker(app, queues=["x"], concurrency=1).queues == ["x"]
    assert Worker(app, loglevel=None).run() == 2  # memory:// cannot be shared by processes


def test_refused_messages_are_one_warning_line_and_successes_debug(
    app: GopherQ, caplog: pytest.LogCaptureFixture
) -> None:
    """UNKNOWN_TASK and Reject say why in one line, with no traceback of gopherq's code;
    a success is one DEBUG line with its runtime, as Celery's INFO line reads."""

    @app.task
    def refuse() -> None:
        raise Reject("not for us")

    @app.task
    def ok() -> int:
        return 1

    unknown = app.send_task("nowhere.at_all")
    rejected = refuse.delay()
    done = ok.delay()
    with caplog.at_level(logging.DEBUG, "gopherq.worker"):
        drain(app)
    lines = {r.getMessage(): r.levelno for r in caplog.records if r.name == "gopherq.worker"}
    unknown_line = (
        f"task nowhere.at_all[{unknown.id}] dead-lettered (UNKNOWN_TASK): "
        "NotRegistered: no task named 'nowhere.at_all' is registered in t"
    )
    assert lines[unknown_line] == logging.WARNING
    rejected_line = (
        f"task {refuse.name}[{rejected.id}] dead-lettered (REJECTED): Reject: not for us"
    )
    assert lines[rejected_line] == logging.WARNING
    [success] = [m for m in lines if m.startswith(f"task {ok.name}[{done.id}] succeeded in ")]
    assert lines[success] == logging.DEBUG
    assert success.endswith("s")
    assert "Traceback" not in caplog.text
