"""The event backend contract: every event backend passes this suite unchanged.

Parametrized over the kinds in ``EVENT_KINDS``; a backend joins by adding its
kind there and a URL in ``conftest.broker_url``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import services
from conftest import broker_url

from gopherq.events import START, Event, EventBackend, open_event_backend

EVENT_KINDS = ["memory", "sqlite", "redis"]

MakeEvents = Callable[..., EventBackend]


@pytest.fixture(params=EVENT_KINDS)
def make_events(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeEvents]:
    """Open event backends of one kind on one store (memory: the same instance)."""
    kind = str(request.param)
    url = broker_url(kind, tmp_path)
    opened: list[EventBackend] = []

    def make(**options: Any) -> EventBackend:
        if kind == "memory" and opened:
            return opened[0]
        backend = open_event_backend(url, **options)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()
    if kind == "redis":
        services.delete_keys(url)


@pytest.fixture
def events(make_events: MakeEvents) -> EventBackend:
    return make_events()


def event(kind: str = "task-started", n: int = 0, **fields: Any) -> Event:
    fields.setdefault("time", time.time())
    return Event(kind, id=f"id-{n}", task="app.add", queue="default", attempt=0, **fields)


def ids(events: list[Event]) -> list[str | None]:
    return [e.id for e in events]


def test_round_trip_of_every_field(events: EventBackend) -> None:
    now = time.time()
    full = Event(
        "task-retried",
        now - 1.5,
        id="job-1",
        task="app.add",
        queue="math",
        worker="host:42",
        attempt=2,
        extra={"error": "bad: é", "eta": now + 9.25, "load": [0.5, 1.0], "x": {"y": None}},
    )
    bare = Event("worker-offline", now, worker="host:7")
    events.publish([full, bare])
    got, _ = events.read(START)
    assert [e._replace(cursor="") for e in got] == [full, bare]
    assert got[1].extra == {}
    assert all(e.cursor for e in got)


def test_read_in_order_from_a_cursor(events: EventBackend) -> None:
    events.publish([event(n=i) for i in range(5)])
    events.publish([event(n=i) for i in range(5, 8)])
    first, cursor = events.read(START, limit=3)
    assert ids(first) == ["id-0", "id-1", "id-2"]
    assert cursor == first[-1].cursor
    rest, end = events.read(cursor)
    assert ids(rest) == [f"id-{i}" for i in range(3, 8)]
    numbers = [int(e.cursor) for e in first + rest]
    assert numbers == sorted(set(numbers))
    assert events.read(end) == ([], end)


def test_types_are_filtered_and_skipped_ones_passed(events: EventBackend) -> None:
    events.publish([event("task-started", 0), event("task-failed", 0), event("task-started", 1)])
    failed, cursor = events.read(START, types=frozenset({"task-failed"}))
    assert [(e.type, e.id) for e in failed] == [("task-failed", "id-0")]
    assert int(cursor) > int(failed[0].cursor)  # past the task-started it examined
    events.publish([event("task-started", 2)])
    nothing, after = events.read(cursor, types=frozenset({"task-failed"}))
    assert nothing == []
    assert int(after) > int(cursor)
    events.publish([event("task-failed", 3)])
    again, _ = events.read(after, types=frozenset({"task-failed"}))
    assert ids(again) == ["id-3"]


def test_last(events: EventBackend) -> None:
    assert events.last(5) == []
    events.publish([event("task-started", i) for i in range(3)])
    events.publish([event("task-failed", 9), event("task-started", 3)])
    assert ids(events.last(2)) == ["id-9", "id-3"]
    assert ids(events.last(10, types=frozenset({"task-started"}))) == [f"id-{i}" for i in range(4)]
    assert ids(events.last(1, types=frozenset({"task-failed"}))) == ["id-9"]


def test_last_since_a_time(events: EventBackend) -> None:
    now = time.time()
    events.publish([event("worker-heartbeat", i, time=now - 600 + i) for i in range(3)])
    events.publish([event("task-started", 5, time=now - 60)])
    events.publish([event("worker-heartbeat", i, time=now - 2 + i) for i in range(3, 5)])
    events.publish([event("task-started", 6, time=now)])
    beats = frozenset({"worker-heartbeat"})
    assert ids(events.last(10, types=beats, since=now - 30)) == ["id-3", "id-4"]
    assert ids(events.last(1, types=beats, since=now - 30)) == ["id-4"]
    assert ids(events.last(10, since=now - 30)) == ["id-3", "id-4", "id-6"]
    assert ids(events.last(10, since=now - 100)) == ["id-5", "id-3", "id-4", "id-6"]
    assert events.last(10, types=frozenset({"task-failed"}), since=now - 30) == []
    assert ids(events.last(10, types=beats, since=None)) == [f"id-{i}" for i in range(5)]
    assert events.last(10, since=now + 60) == []


def test_last_since_stops_at_the_window(events: EventBackend) -> None:
    """An event older than the window (by more than the clock slack) ends the
    search: an event behind it, however new its time, is not found."""
    now = time.time()
    events.publish([event("task-started", 1, time=now)])
    events.publish([event("task-started", 2, time=now - 3600)])
    events.publish([event("task-started", 3, time=now)])
    assert ids(events.last(10, since=now - 10)) == ["id-3"]
    assert ids(events.last(10, types=frozenset({"task-failed"}), since=now - 10)) == []


def test_a_blocked_read_wakes_on_publish(make_events: MakeEvents) -> None:
    reader, writer = make_events(), make_events()
    start = reader.last(1)[0].cursor if reader.last(1) else START

    def publish_later() -> None:
        time.sleep(0.2)
        writer.publish([event(n=1)])

    thread = threading.Thread(target=publish_later)
    began = time.monotonic()
    thread.start()
    got, _ = reader.read(start, timeout=10)
    waited = time.monotonic() - began
    thread.join()
    assert ids(got) == ["id-1"]
    assert 0.15 < waited < 3.0  # woke on the publish, well before the timeout


def test_a_read_with_nothing_new_times_out(events: EventBackend) -> None:
    began = time.monotonic()
    assert events.read(START, timeout=0.2) == ([], START)
    assert 0.15 < time.monotonic() - began < 1.5


def test_readers_are_independent(make_events: MakeEvents) -> None:
    one, two = make_events(), make_events()
    one.publish([event(n=i) for i in range(4)])
    a, _ = one.read(START)
    b, _ = two.read(START)
    assert ids(a) == ids(b) == [f"id-{i}" for i in range(4)]


def test_a_large_batch(events: EventBackend) -> None:
    events.publish([event(n=i) for i in range(2500)])
    seen: list[Event] = []
    cursor = START
    while batch := events.read(cursor, limit=700)[0]:
        seen += batch
        cursor = batch[-1].cursor
    assert ids(seen) == [f"id-{i}" for i in range(2500)]


def test_retention_by_count_keeps_numbering(make_events: MakeEvents) -> None:
    events = make_events(max_count=10)
    for batch in range(6):
        events.publish([event(n=10 * batch + i) for i in range(5)])
    events.cleanup()
    kept, cursor = events.read(START)
    assert 10 <= len(kept) < 15  # the newest 10 stay (SQLite drops whole batches)
    assert ids(kept)[-10:] == [f"id-{10 * b + i}" for b in (4, 5) for i in range(5)]
    events.publish([event(n=99)])
    new, _ = events.read(cursor)
    assert ids(new) == ["id-99"]  # numbers are never reused: a saved cursor skips nothing


def test_retention_by_age(make_events: MakeEvents) -> None:
    events = make_events(max_age=60)
    old = time.time() - 120
    events.publish([event(n=i, time=old) for i in range(3)])
    events.publish([event(n=7)])
    events.cleanup()
    assert ids(events.read(START)[0]) == ["id-7"]


def test_a_bad_cursor_is_an_error(events: EventBackend) -> None:
    from gopherq.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="cursor"):
        events.read("yesterday")


def test_job_events_are_one_jobs_oldest_first(events: EventBackend) -> None:
    since = time.time()
    events.publish([event("task-enqueued", n=1), event("task-enqueued", n=2)])
    events.publish([event(n=2), event(n=1), event("worker-heartbeat", n=3)])
    events.publish([event("task-progress", n=1), event("task-succeeded", n=1)])
    events.publish([event("task-succeeded", n=2)])
    for hint in (None, since):
        mine = events.job_events("id-1", since=hint)
        assert [e.type for e in mine] == [
            "task-enqueued",
            "task-started",
            "task-progress",
            "task-succeeded",
        ]
        assert all(e.id == "id-1" and e.cursor for e in mine)
        assert len(events.job_events("id-2", since=hint)) == 3
        assert events.job_events("id-9", since=hint) == []
        assert len(events.job_events("id-1", since=hint, limit=2)) == 2
        assert events.job_events("id-1", since=hint, until=time.time()) == mine


def test_job_events_leave_with_retention(make_events: MakeEvents) -> None:
    events = make_events(max_age=60)
    old = time.time() - 120
    events.publish([event(n=1, time=old)])
    events.publish([event(n=1)])
    events.cleanup()
    assert len(events.job_events("id-1")) == 1


def test_job_events_of_a_job_finished_before_the_log(events: EventBackend) -> None:
    """A job sent and finished before every retained event has none: a search bounded
    by both times finds that at once."""
    events.publish([event("task-started", n=1)])
    old = time.time() - 3600
    assert events.job_events("id-7", since=old, until=old + 1) == []


def test_last_worker_events_among_many(make_events: MakeEvents) -> None:
    """Worker events alone are found however many other events follow them, and keep
    the cursors they have in the whole log; retention takes them with the log."""
    events = make_events(max_count=3000)
    now = time.time()
    events.publish([Event("worker-online", now - 1, worker="h:1")])
    events.publish([event("task-started", n, time=now) for n in range(2000)])
    events.publish([Event("worker-heartbeat", now, worker="h:1")])
    events.publish([event("task-succeeded", n, time=now) for n in range(500)])
    kinds = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})
    got = events.last(10, types=kinds, since=now - 30)
    assert [e.type for e in got] == ["worker-online", "worker-heartbeat"]
    whole = {e.cursor: e for e in events.read(START, limit=5000)[0]}
    assert all(whole[e.cursor] == e for e in got)
    assert [e.type for e in events.last(1, types=frozenset({"worker-heartbeat"}))] == [
        "worker-heartbeat"
    ]
    events.publish([event("task-started", n, time=now) for n in range(3000)])
    events.cleanup()
    assert events.last(10, types=kinds) == []
