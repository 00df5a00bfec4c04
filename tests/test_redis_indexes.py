"""The Redis backends' indexes: the job history's by state, task and queue, and each
job's list of event entry ids. On fakeredis (which runs the Lua scripts) and on the
shared test Redis; the Redis Cluster runs the contract suites (test_redis_cluster.py).

Filtered pages are checked against the unfiltered history filtered here: the pages
the history gave before the indexes existed, when the filters searched it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import services

from gopherq.events import Event
from gopherq.events.redis import RedisEventBackend
from gopherq.results import JobRecord
from gopherq.results.base import JobCursor
from gopherq.results.redis import RedisResultBackend
from gopherq.states import State
from gopherq.stores.redis import Connection

STATES = (State.STARTED, State.SUCCEEDED, State.FAILED, State.QUEUED)
FILTERS: list[dict[str, Any]] = [
    {"state": State.FAILED},
    {"task": "t1"},
    {"queue": "q2"},
    {"state": State.SUCCEEDED, "task": "t0"},
    {"task": "t2", "queue": "q0"},
    {"state": State.STARTED, "task": "t3", "queue": "q1"},
    {"state": State.DEAD},
]


@pytest.fixture(params=["fakeredis", "redis"])
def url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "fakeredis":
        services.use_fakeredis(monkeypatch)
        yield services.FAKE_URL
        return
    url = services.redis_test_url()
    yield url
    services.delete_keys(url)


@pytest.fixture
def backend(url: str) -> Iterator[RedisResultBackend]:
    store = RedisResultBackend(url)
    yield store
    store.close()


@pytest.fixture
def client(url: str) -> Any:
    return Connection(url).client


def history(n: int = 240) -> list[JobRecord]:
    """Records of every state, task and queue, sent in threes at one instant (ties),
    a few without a send time."""
    now = time.time()
    return [
        JobRecord(
            f"j{i:04}",
            f"t{i % 4}",
            STATES[i % len(STATES)],
            queue=f"q{i % 3}",
            created=None if i % 50 == 7 else now - 100 + i // 3,
        )
        for i in range(n)
    ]


def pages(backend: RedisResultBackend, limit: int, **filters: Any) -> list[list[str]]:
    """The ids of every page of a listing, following the cursors."""
    out: list[list[str]] = []
    after: JobCursor | None = None
    while True:
        page = backend.job_page(after=after, limit=limit, **filters)
        out.append([r.id for r in page.records])
        if page.next is None:
            return out
        after = page.next


def expected(backend: RedisResultBackend, limit: int, **filters: Any) -> list[list[str]]:
    """The pages of the unfiltered history, filtered here, cut in pages of ``limit``."""
    everything = backend.jobs(limit=100_000)
    since, until = filters.pop("since", None), filters.pop("until", None)
    kept = [
        r.id
        for r in everything
        if all(getattr(r, name) == value for name, value in filters.items())
        and (since is None or (r.created is not None and r.created >= since))
        and (until is None or (r.created is not None and r.created < until))
    ]
    cut = [kept[i : i + limit] for i in range(0, len(kept), limit)]
    return cut or [[]]


def index_keys(backend: RedisResultBackend, client: Any) -> list[str]:
    """Every index of the job history (without the marker)."""
    base = f"{backend.prefix}:{{jobs}}"
    keys = [k.decode() for k in client.scan_iter(match=base + ":*", count=1000)]
    return [k for k in keys if not k.endswith(":indexed")]


def placed(backend: RedisResultBackend, client: Any, id: str) -> set[str]:
    """The indexes of the job history that hold ``id`` (suffixes after ``P:{jobs}:``)."""
    base = f"{backend.prefix}:{{jobs}}:"
    found = {
        key.removeprefix(base)
        for key in index_keys(backend, client)
        if client.type(key) == b"zset" and client.zscore(key, id) is not None
    }
    if client.hexists(base + "where", id):
        found.add("where")
    return found


@pytest.mark.parametrize("limit", [1, 7, 100])
def test_filtered_pages_are_the_history_filtered(backend: RedisResultBackend, limit: int) -> None:
    backend.store(history())
    for filters in FILTERS:
        assert pages(backend, limit, **filters) == expected(backend, limit, **filters), filters


def test_filtered_pages_within_times(backend: RedisResultBackend) -> None:
    records = history()
    backend.store(records)
    middle = sorted(r.created for r in records if r.created is not None)[120]
    for filters in FILTERS[:4]:
        for bounds in (
            {"since": middle},
            {"until": middle},
            {"since": middle - 10, "until": middle},
        ):
            assert pages(backend, 9, **filters, **bounds) == expected(
                backend, 9, **filters, **bounds
            ), (filters, bounds)


def test_a_state_change_moves_the_id_between_indexes(
    backend: RedisResultBackend, client: Any
) -> None:
    job = JobRecord("job", "t0", State.STARTED, queue="q0", created=time.time())
    backend.store([job])
    assert placed(backend, client, "job") == {"index", "s:STARTED", "t:t0", "q:q0", "where"}
    backend.store([replace(job, state=State.FAILED, queue="q1")])
    assert placed(backend, client, "job") == {"index", "s:FAILED", "t:t0", "q:q1", "where"}
    assert backend.jobs(state=State.STARTED) == []
    assert [r.id for r in backend.jobs(state=State.FAILED, queue="q1")] == ["job"]
    assert backend.jobs(queue="q0") == []


def test_a_record_without_a_send_time_keeps_its_first_store_time(
    backend: RedisResultBackend, client: Any
) -> None:
    job = JobRecord("job", "t0", State.STARTED)
    backend.store([job])
    first = client.zscore(f"{backend.prefix}:{{jobs}}:index", "job")
    time.sleep(0.01)
    backend.store([replace(job, state=State.SUCCEEDED)])
    for key in ("index", "s:SUCCEEDED", "t:t0", "q:default"):
        assert client.zscore(f"{backend.prefix}:{{jobs}}:{key}", "job") == first, key


def test_deletes_and_expiry_leave_no_ids_behind(url: str, client: Any) -> None:
    backend = RedisResultBackend(url, expires=0.3)
    records = history(60)
    backend.store(records)
    doomed = [r for r in records if r.state is State.FAILED][:5]
    for record in doomed:
        assert backend.delete(record.id)
    finished = {r.id for r in records if r.state.finished} - {r.id for r in doomed}
    time.sleep(0.4)
    assert backend.cleanup() == len(finished)
    gone = finished | {r.id for r in doomed}
    for id in gone:
        assert placed(backend, client, id) == set(), id
    kept = [r.id for r in records if r.id not in gone]
    assert sorted(r.id for r in backend.jobs(limit=1000)) == sorted(kept)
    for filters in FILTERS:
        listed = {r.id for r in backend.jobs(limit=1000, **filters)}
        assert listed <= set(kept) and pages(backend, 7, **filters) == expected(
            backend, 7, **filters
        )
    backend.close()


def test_a_page_leaves_out_and_unindexes_records_that_expired_unseen(
    backend: RedisResultBackend, client: Any
) -> None:
    """A record gone without ``cleanup`` (Redis expired it; a foreign DEL) is left out
    of the page that finds it, and out of every index."""
    records = [JobRecord(f"f{i}", "t", State.FAILED, created=time.time() + i) for i in range(5)]
    backend.store(records)
    client.delete(f"{backend.prefix}:result:{{f3}}")
    assert [r.id for r in backend.jobs(state=State.FAILED, task="t")] == ["f4", "f2", "f1", "f0"]
    assert placed(backend, client, "f3") == set()


def test_store_held_indexes_what_it_stores(url: str, client: Any) -> None:
    from test_broker_contract import envelope

    from gopherq.brokers.redis import RedisBroker
    from gopherq.results.base import Settling

    broker, backend = RedisBroker(url), RedisResultBackend(url)
    try:
        sent = [envelope(), envelope()]
        broker.enqueue(sent)
        taken = broker.reserve(["default"], 2, 0)
        items = [
            Settling(d, JobRecord(d.id, "t", State.SUCCEEDED, created=time.time()), True)
            for d in taken
        ]
        assert backend.store_held(broker, items) == {d.id for d in taken}
        assert {r.id for r in backend.jobs(state=State.SUCCEEDED, task="t")} == {
            d.id for d in taken
        }
        assert placed(backend, client, taken[0].id) == {
            "index",
            "s:SUCCEEDED",
            "t:t",
            "q:default",
            "where",
        }
    finally:
        broker.close()
        backend.close()


def test_records_stored_before_the_indexes_are_indexed_once(url: str, client: Any) -> None:
    """The layout of the version before: the history alone. The first filtered page
    indexes it, never over a place a newer write gave an id, and marks it done."""
    backend = RedisResultBackend(url)
    records = history(90)
    backend.store(records)
    for key in index_keys(backend, client):
        if not key.endswith(":index"):
            client.delete(key)
    client.delete(f"{backend.prefix}:{{jobs}}:indexed")
    newer = replace(records[0], state=State.DEAD)  # stored by this version meanwhile
    backend.store([newer])
    backend.close()
    # the old writer's record changed under the newer write's index: the newer one wins
    later = RedisResultBackend(url)
    assert [r.id for r in later.jobs(state=State.DEAD)] == [newer.id]
    assert client.exists(f"{later.prefix}:{{jobs}}:indexed")
    for filters in FILTERS:
        assert pages(later, 8, **filters) == expected(later, 8, **filters), filters
    later.close()


# A job's events.


@pytest.fixture
def events(url: str) -> Iterator[RedisEventBackend]:
    backend = RedisEventBackend(url)
    yield backend
    backend.close()


def task_event(kind: str, id: str, **fields: Any) -> Event:
    fields.setdefault("time", time.time())
    return Event(kind, id=id, task="t", queue="default", attempt=0, **fields)


def test_a_jobs_events_are_found_however_far_apart(events: RedisEventBackend) -> None:
    sent = time.time()
    events.publish([task_event("task-enqueued", "far")])
    events.publish([task_event("task-started", f"other-{i}") for i in range(6000)])
    events.publish([task_event("task-started", "far"), task_event("task-succeeded", "far")])
    found = events.job_events("far", since=sent)
    assert [e.type for e in found] == ["task-enqueued", "task-started", "task-succeeded"]
    assert events.job_events("far") == found
    assert [e.type for e in events.job_events("far", since=sent, limit=2)] == [
        "task-enqueued",
        "task-started",
    ]


def test_a_jobs_list_lives_as_long_as_its_events(url: str, client: Any) -> None:
    events = RedisEventBackend(url, max_age=600, max_count=100)
    events.publish([task_event("task-started", "job")])
    key = f"{events._job_prefix}job"
    assert 590_000 < client.pttl(key) <= 600_000
    events.publish([task_event("task-started", f"other-{i}") for i in range(300)])
    events.cleanup()  # the job's entry trimmed by count: left out, list or not
    assert events.job_events("job") == []
    events.close()


def test_events_from_before_the_lists_are_indexed_once(
    events: RedisEventBackend, client: Any
) -> None:
    """The layout of the version before: the stream alone. The first job_events puts
    the entries in the jobs' lists, without doubling those written since."""
    from gopherq.events.base import pack_event

    old = [
        task_event(kind, f"job-{n}")
        for n, kind in itertools.product(range(3), ("task-enqueued", "task-started"))
    ]
    for e in old:
        client.xadd(events.key, {"e": pack_event(e)})
    events.publish([task_event("task-succeeded", "job-1")])
    assert client.get(f"{events.key.removesuffix(':stream')}:indexed") is None
    assert [e.type for e in events.job_events("job-1")] == [
        "task-enqueued",
        "task-started",
        "task-succeeded",
    ]
    assert len(events.job_events("job-0")) == 2
    assert client.exists(f"{events.key.removesuffix(':stream')}:indexed")
    again = RedisEventBackend(events.url)
    assert [e.type for e in again.job_events("job-1")] == [
        "task-enqueued",
        "task-started",
        "task-succeeded",
    ]
    again.close()


def test_a_store_indexed_from_the_start_is_not_walked(
    backend: RedisResultBackend, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.store(history(30))

    def walk(*args: Any) -> Any:
        raise AssertionError("walked a history whose ids are all indexed")

    monkeypatch.setattr(backend, "_scan_index", walk)
    assert len(backend.jobs(state=State.FAILED)) == 7
    assert client.exists(f"{backend.prefix}:{{jobs}}:indexed")


def test_job_lists_live_as_long_as_a_full_stream_holds_events(url: str, client: Any) -> None:
    """Once the stream is trimmed by count, a job's list lives twice the stream's span
    (at least a second), not the whole age retention: as many lists as jobs in it."""
    events = RedisEventBackend(url, max_age=3600, max_count=100)
    first = time.time() - 10
    client.xadd(events.key, {"e": b""}, id=f"{int(first * 1000)}-0")  # the stream's oldest
    events.publish([task_event("task-started", f"other-{i}") for i in range(150)])
    events.publish([task_event("task-started", "job")])
    key = f"{events._job_prefix}job"
    assert 1000 <= client.pttl(key) <= 2 * (time.time() - first) * 1000 + 1000
    events.close()
