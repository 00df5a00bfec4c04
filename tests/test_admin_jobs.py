"""``admin.find_job`` with the arguments of jobs the broker still holds (read with
``Broker.peek``), on every kind of broker."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from gopherq import GopherQ, State, admin
from gopherq.brokers import Broker, Envelope
from gopherq.results.base import JobRecord

WHEN = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
def app(broker: Broker) -> Iterator[GopherQ]:
    app = GopherQ("peeking", broker, backend="memory://")
    yield app
    app.close()


def arguments(app: GopherQ, id: str) -> tuple[object, ...]:
    info = admin.find_job(app, id, arguments=True)
    assert info is not None
    return info["state"], info.get("task"), info.get("queue"), info.get("args"), info.get("kwargs")


def test_queued_scheduled_running_and_dead_jobs_show_their_arguments(app: GopherQ) -> None:
    queued = app.send_task("t.add", (1, 2), {"at": WHEN}, queue="mail").id
    scheduled = app.send_task("t.add", (3,), countdown=600).id
    assert arguments(app, queued) == ("QUEUED", "t.add", "mail", [1, 2], {"at": WHEN})
    assert arguments(app, scheduled) == ("SCHEDULED", "t.add", "default", [3], {})
    info = admin.find_job(app, queued)  # without arguments: no lookup of the message
    assert info == {"id": queued, "state": "QUEUED"}

    # Running: a worker stored its STARTED record (whose queue is where to look).
    [running] = app.broker.reserve(["mail"], 1, 0)
    app.backend.store(
        [JobRecord(running.id, "t.add", State.STARTED, "mail", attempts=1, started=time.time())]
    )
    assert arguments(app, queued) == ("STARTED", "t.add", "mail", [1, 2], {"at": WHEN})

    # Dead-lettered, then acked after a retry: the arguments go with the message.
    assert app.broker.dead(running, "MAX_RETRIES", "boom")
    assert arguments(app, queued)[3:] == ([1, 2], {"at": WHEN})
    app.broker.requeue_dead([queued])
    [again] = app.broker.reserve(["mail"], 1, 0)
    app.broker.ack([again])
    app.backend.store([JobRecord(queued, "t.add", State.SUCCEEDED, "mail", attempts=2)])
    assert arguments(app, queued) == ("SUCCEEDED", "t.add", "mail", None, None)


def test_a_body_that_does_not_decode_shows_no_arguments(app: GopherQ) -> None:
    [id] = app.broker.enqueue([Envelope("0190000-not-a-message", "odd", 2, b"\xc1")])
    assert arguments(app, id) == ("QUEUED", None, "odd", None, None)


def test_unknown_jobs_are_none(app: GopherQ) -> None:
    assert admin.find_job(app, "unknown", arguments=True) is None
    assert admin.job_status(app, "unknown") == {"id": "unknown", "state": "PENDING"}


@pytest.mark.parametrize("arguments", [False, True])
def test_a_job_that_finishes_between_the_reads_is_found(
    app: GopherQ, monkeypatch: pytest.MonkeyPatch, arguments: bool
) -> None:
    """The record is read (none yet), then a worker stores it and acks the message,
    then the broker is asked: the job is the finished one, not unknown or PENDING."""
    id = app.send_task("t.add", (1, 2)).id
    [delivery] = app.broker.reserve(["default"], 1, 0)
    read = app.backend.get

    def finishing_while_read(job: str) -> JobRecord | None:
        record = read(job)
        monkeypatch.setattr(app.backend, "get", read)
        app.backend.store([JobRecord(id, "t.add", State.SUCCEEDED, "default", attempts=1)])
        app.broker.ack([delivery])
        return record

    monkeypatch.setattr(app.backend, "get", finishing_while_read)
    info = admin.find_job(app, id, arguments=arguments)
    assert info is not None and info["state"] == "SUCCEEDED"
    monkeypatch.setattr(app.backend, "get", finishing_while_read)
    app.backend.delete(id)
    assert admin.job_status(app, id)["state"] == "SUCCEEDED"
    monkeypatch.setattr(app.backend, "get", finishing_while_read)
    app.backend.delete(id)
    assert app.result(id).state is State.SUCCEEDED
