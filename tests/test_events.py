"""Events in-process on memory://: what is emitted, subscribing, callbacks, switching off."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from gopherq import ConfigurationError, GopherQ, current_task
from gopherq.events import Event, EventBackend
from gopherq.events.memory import MemoryEventBackend
from gopherq.worker import Consumer, Exit

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app() -> GopherQ:
    return GopherQ("t", broker="memory://")


def drain(app: GopherQ) -> None:
    """Run a burst consumer in this thread until the queue is empty."""
    assert Consumer(app, ["default"], burst=True, reserve_timeout=0.2).run() is Exit.DRAINED


def history(app: GopherQ, id: str | None = None) -> list[tuple[str, int | None]]:
    """Every retained event (of task ``id``) as (type, attempt)."""
    events = app.events.subscribe(since="0", timeout=0)
    return [(e.type, e.attempt) for e in events if id is None or e.id == id]


def test_a_task_that_retries_twice_then_succeeds(app: GopherQ) -> None:
    @app.task(retries=2, retry_delay=0.01, jitter=False)
    def twice() -> int:
        if current_task().attempt < 2:
            raise ValueError("not yet")
        return 7

    result = twice.delay()
    drain(app)
    assert result.get(timeout=1) == 7
    assert history(app, result.id) == [
        ("task-enqueued", 0),
        ("task-started", 0),
        ("task-retried", 0),
        ("task-started", 1),
        ("task-retried", 1),
        ("task-started", 2),
        ("task-succeeded", 2),
    ]
    succeeded = app.events.last(1, "task-succeeded")[0]
    assert succeeded.extra["runtime"] >= 0
    assert succeeded.worker and succeeded.queue == "default"


def test_eager_mode_emits_too() -> None:
    app = GopherQ("t", eager=True)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(1, 2)
    assert history(app, result.id) == [
        ("task-enqueued", 0),
        ("task-started", 0),
        ("task-succeeded", 0),
    ]


def test_each_way_to_end(app: GopherQ) -> None:
    @app.task
    def fails() -> None:
        raise RuntimeError("no")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    failed = fails.delay()
    expired = add.apply_async((1, 2), expires=0.001)
    later = add.apply_async((1, 2), countdown=60)
    unknown = app.send_task("nowhere")
    time.sleep(0.01)
    drain(app)
    last = {e.id: e for e in app.events.subscribe(since="0", timeout=0)}
    assert last[failed.id].type == "task-failed"
    assert last[failed.id].extra["reason"] == "MAX_RETRIES"
    assert last[failed.id].extra["error_type"] == "RuntimeError"
    assert last[failed.id].extra["error"] == "no"
    assert last[expired.id].type == "task-expired"
    assert last[unknown.id].type == "task-dead"
    assert last[unknown.id].extra["reason"] == "UNKNOWN_TASK"
    assert last[later.id].type == "task-scheduled"
    assert last[later.id].extra["eta"] > time.time() + 50


def test_a_duplicate_idempotency_key_sends_no_event(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    first = add.apply_async((1, 2), key="k")
    again = add.apply_async((1, 2), key="k")
    assert again.id == first.id
    assert history(app) == [("task-enqueued", 0)]


def test_subscribers_and_cursors(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(0, 0)
    fresh = app.events.subscribe(since="now", timeout=0.5)
    everything = app.events.subscribe(since="0", timeout=0.5)
    ids = [add.delay(i, i).id for i in range(1, 4)]
    assert [e.id for e in fresh] == ids
    seen = [next(everything) for _ in range(2)]
    resumed = app.events.subscribe(since=seen[-1].cursor, timeout=0)
    assert [e.id for e in resumed] == ids[1:]
    assert fresh.cursor == resumed.cursor  # both read up to the newest event


def test_a_subscriber_blocks_until_an_event_comes(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    subscription = app.events.subscribe("task-enqueued", timeout=5)
    timer = threading.Timer(0.2, lambda: add.delay(1, 1))
    began = time.monotonic()
    timer.start()
    event = next(subscription)
    assert event.type == "task-enqueued"
    assert 0.15 < time.monotonic() - began < 3.0  # on the send, well before the timeout
    closer = threading.Timer(0.1, subscription.close)
    closer.start()
    assert list(subscription) == []  # close() ends it well before the timeout
    assert time.monotonic() - began < 2.0


def test_unknown_event_types_are_refused(app: GopherQ) -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'task-failed'"):
        app.events.subscribe("task-fialed")
    with pytest.raises(ConfigurationError, match="unknown event type"):
        app.on("nothing")


def test_callbacks_run_in_a_listener_thread(app: GopherQ, caplog: Any) -> None:
    @app.task
    def fails() -> None:
        raise ValueError("x")

    got: list[str] = []

    @app.on("task-failed", "task-dead")
    def broken(event: Event) -> None:
        raise RuntimeError("callback bug")

    @app.on("task-failed")
    def failed(event: Event) -> None:
        got.append(event.id or "")

    listener = app.events.listen()
    result = fails.delay()
    drain(app)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    listener.stop(5)
    assert not listener.is_alive()
    assert got == [result.id]
    assert "callback bug" in caplog.text


def test_events_off() -> None:
    app = GopherQ("t", broker="memory://", events=None, tracing=False)
    assert not app.events.enabled
    assert not app.middleware  # nothing on the hot path (tracing off too)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(1, 2)
    drain(app)
    with pytest.raises(ConfigurationError, match="events are off"):
        app.events.subscribe()
    assert not GopherQ("t", broker="memory://", events="off").events.enabled
    assert GopherQ("t", broker="redis://localhost").events.enabled
    with pytest.raises(ConfigurationError, match="unsupported event backend"):
        GopherQ("t", broker="memory://", events="kafka://x")


def test_an_event_backend_instance(app: GopherQ) -> None:
    backend = MemoryEventBackend()
    other = GopherQ("t", broker="memory://", events=backend)
    assert other.events.backend is backend
    assert other.settings.events == "memory://"


class FailingBackend(MemoryEventBackend):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def publish(self, events: Sequence[Event]) -> None:
        if self.down:
            raise OSError("down")
        super().publish(events)


def test_a_failed_publish_keeps_the_events_for_later(caplog: Any) -> None:
    backend = FailingBackend()
    app = GopherQ("t", broker="memory://", events=backend)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(1, 1)  # sending works while the event backend fails
    assert "could not publish 1 events" in caplog.text
    backend.down = False
    result = add.delay(2, 2)
    assert [e.id for e in backend.read("0")[0]][-1] == result.id
    assert len(backend.read("0")[0]) == 2


def test_worker_events_come_from_the_supervisor_hooks(app: GopherQ) -> None:
    from gopherq.worker.presence import Presence
    from gopherq.worker.slots import Holding

    presence = Presence(app, "host:1", 2, ["default"])
    presence.start()
    presence.exited(Holding(processed=3))
    presence.beat([("host:2", Holding(processed=4)), ("host:3", Holding())])
    presence.stop()
    kinds = [(e.type, e.worker) for e in app.events.subscribe(since="0", timeout=0)]
    assert kinds == [
        ("worker-online", "host:1"),
        ("worker-heartbeat", "host:1"),
        ("worker-offline", "host:1"),
    ]
    beat = app.events.last(1, "worker-heartbeat")[0]
    assert beat.extra["processed"] == 7
    assert beat.extra["processes"] == ["host:2", "host:3"]
    assert beat.extra["active"] == 0
    assert len(beat.extra["load"]) == 3
    assert beat.extra["running"] == []


def test_flush_waits_for_more_unless_due(app: GopherQ) -> None:
    backend: EventBackend = app.events.backend
    app.events.emit(Event("task-started", time.time(), id="a"))
    app.events.flush(only_due=True)
    assert backend.last(5) == []  # young: it waits for more
    time.sleep(0.06)
    app.events.flush(only_due=True)
    assert [e.id for e in backend.last(5)] == ["a"]


class FlakyReads(MemoryEventBackend):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def read(self, cursor: str, **options: Any) -> tuple[list[Event], str]:
        if self.failures:
            self.failures -= 1
            raise OSError("disk hiccup")
        return super().read(cursor, **options)


def test_a_listener_outlives_a_failed_read(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    from gopherq.events import hub

    monkeypatch.setattr(hub, "RETRY_AFTER", 0.01)
    app = GopherQ("t", broker="memory://", events=FlakyReads())
    got: list[str] = []
    app.on("task-enqueued")(lambda event: got.append(event.id or ""))
    listener = app.events.listen()

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    sent = add.delay(1, 1).id
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    listener.stop(5)
    assert got == [sent]
    assert "disk hiccup" in caplog.text


def test_a_worker_does_not_spin_while_events_cannot_be_published(caplog: Any) -> None:
    backend = FailingBackend()
    app = GopherQ("t", broker="memory://", events=backend)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    reserve = app.broker.reserve
    calls: list[float] = []

    def counting(queues: Sequence[str], limit: int, timeout: float) -> Any:
        calls.append(timeout)
        return reserve(queues, limit, timeout)

    app.broker.reserve = counting  # type: ignore[method-assign]
    consumer = Consumer(app, ["default"], reserve_timeout=0.1)
    thread = threading.Thread(target=consumer.run)
    thread.start()
    result = add.delay(1, 2)
    assert result.get(timeout=5) == 3  # the work goes on
    time.sleep(0.5)
    consumer.stop()
    thread.join(5)
    assert calls.count(0.0) <= 3  # a failed publish is retried after a pause, not at once
    assert "could not publish" in caplog.text
