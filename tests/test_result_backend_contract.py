"""The result backend contract: every backend passes this suite unchanged."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gopherq.brokers import Broker, Envelope
from gopherq.results import ErrorInfo, JobRecord, ResultBackend, open_backend
from gopherq.results.base import JobCursor, Progress, Settling
from gopherq.states import State

MakeBackend = Callable[..., ResultBackend]


def record(state: State = State.SUCCEEDED, **fields: Any) -> JobRecord:
    """A record with a fresh id; finished ones carry a finish time."""
    if state.finished:
        fields.setdefault("finished", time.time())
    return JobRecord(id=uuid.uuid4().hex, task="app.add", state=state, **fields)


def store_later(backend: ResultBackend, records: list[JobRecord], delay: float) -> threading.Thread:
    """Store ``records`` from another thread after ``delay`` seconds."""

    def run() -> None:
        time.sleep(delay)
        backend.store(records)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_round_trip_of_every_field(backend: ResultBackend) -> None:
    full = JobRecord(
        id="job-1",
        task="app.add",
        state=State.FAILED,
        queue="math",
        result=b"\x00\x93\x01\x02\x03\xff",
        error=ErrorInfo("ValueError", "bad input: é", 'Traceback...\n  File "x.py"\n'),
        attempts=3,
        created=1_700_000_000.25,
        started=1_700_000_001.5,
        finished=time.time(),
        worker="host-1.42",
        progress=Progress(3, 10.5, "resizing é"),
        checkpoint=b"\x81\xa4page\x03",
    )
    backend.store([full])
    assert backend.get("job-1") == full


def test_round_trip_of_a_minimal_record(backend: ResultBackend) -> None:
    minimal = JobRecord(id="job-2", task="app.add", state=State.QUEUED)
    backend.store([minimal])
    assert backend.get("job-2") == minimal


def test_get_unknown_is_none(backend: ResultBackend) -> None:
    assert backend.get("unknown") is None


def test_batch_store(backend: ResultBackend) -> None:
    records = [record(result=str(i).encode()) for i in range(10)]
    backend.store(records)
    assert [backend.get(r.id) for r in records] == records


def test_store_replaces(backend: ResultBackend) -> None:
    started = record(State.STARTED, started=1.0, worker="w1")
    backend.store([started])
    done = JobRecord(
        started.id, started.task, State.SUCCEEDED, result=b"\x03", attempts=1, finished=time.time()
    )
    backend.store([done])
    assert backend.get(started.id) == done


def test_delete(backend: ResultBackend) -> None:
    job = record()
    backend.store([job])
    assert backend.delete(job.id) is True
    assert backend.get(job.id) is None
    assert backend.delete(job.id) is False


def test_wait_returns_a_finished_record_at_once(backend: ResultBackend) -> None:
    job = record()
    backend.store([job])
    start = time.monotonic()
    assert backend.wait(job.id, 5) == job
    assert time.monotonic() - start < 2.5  # well before the timeout


def test_wait_wakes_when_another_handle_stores(make_backend: MakeBackend) -> None:
    waiter, worker = make_backend(), make_backend()
    running = record(State.STARTED)
    waiter.store([running])
    done = JobRecord(running.id, running.task, State.SUCCEEDED, finished=time.time())
    progress = JobRecord(running.id, running.task, State.STARTED, attempts=1)
    thread = store_later(worker, [progress], 0.05)
    finisher = store_later(worker, [done], 0.2)
    start = time.monotonic()
    assert waiter.wait(running.id, 10) == done
    took = time.monotonic() - start
    thread.join()
    finisher.join()
    assert 0.15 <= took < 1.5


def test_wait_for_an_id_not_yet_stored(make_backend: MakeBackend) -> None:
    waiter, worker = make_backend(), make_backend()
    done = record()
    thread = store_later(worker, [done], 0.1)
    assert waiter.wait(done.id, None) == done
    thread.join()


def test_wait_returns_the_current_record_on_timeout(backend: ResultBackend) -> None:
    running = record(State.STARTED)
    backend.store([running])
    start = time.monotonic()
    assert backend.wait(running.id, 0.2) == running
    assert 0.15 <= time.monotonic() - start < 2
    assert backend.wait("unknown", 0.05) is None


def test_finished_records_expire(make_backend: MakeBackend) -> None:
    backend = make_backend(expires=0.2)
    done, running = record(), record(State.STARTED)
    backend.store([done, running])
    assert backend.get(done.id) == done
    time.sleep(0.3)
    assert backend.get(done.id) is None
    assert backend.wait(done.id, 0) is None
    assert backend.get(running.id) == running  # unfinished records do not expire


def test_cleanup_deletes_expired_records(make_backend: MakeBackend) -> None:
    backend = make_backend(expires=0.2)
    done, failed, running = record(), record(State.FAILED), record(State.STARTED)
    backend.store([done, failed, running])
    assert backend.cleanup() == 0
    time.sleep(0.3)
    assert backend.cleanup() == 2
    assert backend.get(done.id) is None
    assert backend.get(running.id) == running
    assert backend.cleanup() == 0


def test_close_then_use_again(backend: ResultBackend) -> None:
    backend.close()
    job = record()
    backend.store([job])
    assert backend.get(job.id) == job


def test_jobs_newest_first_with_filters(backend: ResultBackend) -> None:
    now = time.time()
    records = [
        record(State.SUCCEEDED, created=now - 3, queue="a"),
        record(State.FAILED, created=now - 2, queue="a"),
        record(State.STARTED, created=now - 1, queue="b"),
        JobRecord(id=uuid.uuid4().hex, task="app.other", state=State.SUCCEEDED, created=now),
    ]
    backend.store(records)
    newest_first = [r.id for r in reversed(records)]
    assert [r.id for r in backend.jobs()] == newest_first
    assert backend.jobs(limit=2) == list(reversed(records))[:2]
    assert [r.id for r in backend.jobs(state=State.SUCCEEDED)] == [records[3].id, records[0].id]
    assert [r.id for r in backend.jobs(task="app.add", queue="a")] == [
        records[1].id,
        records[0].id,
    ]
    assert backend.jobs(state=State.FAILED, queue="b") == []


def test_jobs_leave_out_expired_records(make_backend: MakeBackend) -> None:
    backend = make_backend(expires=0.2)
    backend.store([record(created=time.time())])
    assert len(backend.jobs()) == 1
    time.sleep(0.3)
    assert backend.jobs() == []


def test_store_held_stores_and_acks_only_what_the_broker_holds(
    make_broker: Callable[..., Broker], backend: ResultBackend
) -> None:
    """In one step with the broker, or not at all (None: the caller checks first)."""
    broker = make_broker()
    broker.enqueue([Envelope(id, "default", 2, b"") for id in ("done", "again", "lost")])
    leased = {d.id: d for d in broker.reserve(["default"], 3, 0)}
    lost = dataclasses.replace(leased["lost"], token="stale")
    done, again = record(State.SUCCEEDED), record(State.RETRYING)
    stale = record(State.FAILED)
    items = [
        Settling(leased["done"], dataclasses.replace(done, id="done"), ack=True),
        Settling(leased["again"], dataclasses.replace(again, id="again"), ack=False),
        Settling(lost, dataclasses.replace(stale, id="lost"), ack=True),
    ]
    held = backend.store_held(broker, items)
    if held is None:  # not one store with the broker (memory, a cluster)
        assert backend.get("done") is None
        assert broker.stats()["default"].running == 3
        return
    assert held == {"done", "again"}
    assert backend.get("done") == dataclasses.replace(done, id="done")
    assert backend.get("again") == dataclasses.replace(again, id="again")
    assert backend.get("lost") is None
    assert broker.locate("done") is None  # acked
    assert broker.locate("again") is State.STARTED  # still leased, for its retry
    assert broker.retry(leased["again"], time.time() + 60, "later")
    assert broker.locate("lost") is State.STARTED  # left to its holder
    assert backend.wait("done", 5) == dataclasses.replace(done, id="done")
    assert [r.id for r in backend.jobs()][:2] in (["again", "done"], ["done", "again"])


def test_store_held_with_another_store_does_nothing(
    make_broker: Callable[..., Broker], tmp_path: Path
) -> None:
    broker = make_broker()
    broker.enqueue([Envelope("x", "default", 2, b"")])
    [delivery] = broker.reserve(["default"], 1, 0)
    other = open_backend(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        assert other.store_held(broker, [Settling(delivery, record(), ack=True)]) is None
    finally:
        other.close()
    assert broker.locate("x") is State.STARTED


def test_marks_are_set_seen_by_other_handles_and_expire(make_backend: MakeBackend) -> None:
    first, second = make_backend(), make_backend()
    assert not first.marked("charge:1")
    first.mark("charge:1", 60)
    assert second.marked("charge:1")
    assert not second.marked("charge:2")
    first.mark("short", 0.2)
    assert second.marked("short")
    time.sleep(0.3)
    assert not second.marked("short")
    second.mark("short", 60)  # set again after it expired
    assert first.marked("short")


def test_marks_live_apart_from_records(backend: ResultBackend) -> None:
    job = record()
    backend.store([job])
    backend.mark(job.id, 60)
    assert backend.get(job.id) == job
    assert backend.delete(job.id)
    assert backend.marked(job.id)
    assert not backend.marked("odd {key}: é\x00")
    backend.mark("odd {key}: é\x00", 60)
    assert backend.marked("odd {key}: é\x00")
    backend.cleanup()
    assert backend.marked("odd {key}: é\x00")


def test_job_pages_follow_their_cursors_through_ties(backend: ResultBackend) -> None:
    now = time.time()
    records = [record(created=now - i // 3) for i in range(10)]  # three to a second
    backend.store(records)
    expected = sorted(records, key=lambda r: (r.created, r.id), reverse=True)
    for size in (1, 2, 3, 4, 10):
        seen: list[str] = []
        after = None
        while True:
            page = backend.job_page(after=after, limit=size)
            seen += [r.id for r in page.records]
            if page.next is None:
                break
            after = JobCursor.from_text(page.next.to_text())
        assert seen == [r.id for r in expected], size
    whole = backend.job_page(limit=10)
    assert len(whole.records) == 10 and whole.next is None


def test_job_pages_since_until_and_filters(backend: ResultBackend) -> None:
    now = time.time()
    records = [
        record(State.SUCCEEDED if i % 2 else State.FAILED, created=now - i, queue=f"q{i % 3}")
        for i in range(12)
    ]
    backend.store([*records, record(created=None)])
    window = backend.jobs(since=now - 5, until=now - 1)
    assert [r.id for r in window] == [r.id for r in records[2:6]]
    failed = backend.job_page(state=State.FAILED, since=now - 8, limit=2)
    assert [r.id for r in failed.records] == [records[0].id, records[2].id]
    assert failed.next is not None
    rest = backend.jobs(state=State.FAILED, since=now - 8, after=failed.next)
    assert [r.id for r in rest] == [records[4].id, records[6].id, records[8].id]
    assert [r.id for r in backend.jobs(queue="q1", until=now - 3)] == [
        records[4].id,
        records[7].id,
        records[10].id,
    ]


def test_records_without_a_send_time_page_too(backend: ResultBackend) -> None:
    now = time.time()
    timed = [record(created=now - i) for i in range(3)]
    untimed = [record(created=None) for _ in range(3)]
    backend.store(timed)
    backend.store(untimed)
    seen: list[str] = []
    after = None
    while True:
        page = backend.job_page(after=after, limit=2)
        seen += [r.id for r in page.records]
        if page.next is None:
            break
        after = page.next
    assert sorted(seen) == sorted(r.id for r in [*timed, *untimed])
    assert len(seen) == 6
    assert backend.jobs(since=0) == backend.jobs(since=0, limit=3)
    assert {r.id for r in backend.jobs(since=0)} == {r.id for r in timed}


def test_job_cursors_read_back_or_refuse() -> None:
    for cursor in (JobCursor(1.5, "a"), JobCursor(None, "b" * 128)):
        assert JobCursor.from_text(cursor.to_text()) == cursor
    for text in ("", "!!", "AAAA", JobCursor(1.0, "").to_text(), "kgHA"):
        try:
            JobCursor.from_text(text)
        except ValueError:
            continue
        raise AssertionError(text)
