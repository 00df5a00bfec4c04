"""``GET /api/v1/events``: the event log as server-sent events, and as JSON pages."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gopherq import GopherQ
from gopherq.events import Event
from gopherq.web import create_app
from gopherq.web.routes import events as events_route

from .sse import Message, messages


def publish(app: GopherQ, count: int, *, start: int = 0, **fields: str) -> None:
    now = time.time()
    app.events.publish(
        [
            Event(
                "task-enqueued",
                now,
                fields.get("id", f"job{i}"),
                fields.get("task", "add"),
                fields.get("queue", "default"),
            )
            for i in range(start, start + count)
        ]
    )


@pytest.fixture
def server(app: GopherQ) -> Iterator[tuple[FastAPI, TestClient]]:
    api = create_app(app, auth=False)
    with TestClient(api) as client:
        yield api, client


def read_stream(
    api: FastAPI, client: TestClient, url: str, *, seconds: float = 0.6, **headers: str
) -> list[Message]:
    """Every message the stream sends until the server starts stopping, ``seconds`` from now."""
    stopping = api.state.gopherq.stopping
    stopping.clear()
    timer = threading.Timer(seconds, stopping.set)
    timer.start()
    try:
        accept = {"Accept": "text/event-stream"}
        with client.stream("GET", url, headers={**accept, **headers}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            return list(messages(response.iter_lines()))
    finally:
        timer.cancel()


def sent(stream: list[Message]) -> list[Message]:
    return [m for m in stream if m.data is not None]


def test_stream_from_the_start_sends_each_event_with_its_cursor(
    app: GopherQ, server: tuple[FastAPI, TestClient]
) -> None:
    publish(app, 3)
    stream = sent(read_stream(*server, "/api/v1/events?since=0"))
    assert [m.event["id"] for m in stream] == ["job0", "job1", "job2"]
    assert all(m.id == m.event["cursor"] for m in stream)
    assert stream[0].event["type"] == "task-enqueued"


def test_last_event_id_resumes_right_after_it(
    app: GopherQ, server: tuple[FastAPI, TestClient]
) -> None:
    publish(app, 5)
    first = sent(read_stream(*server, "/api/v1/events?since=0"))
    resumed = sent(read_stream(*server, "/api/v1/events?since=0", **{"Last-Event-ID": first[1].id}))
    assert [m.event["id"] for m in resumed] == ["job2", "job3", "job4"]


def test_default_is_only_new_events(app: GopherQ, server: tuple[FastAPI, TestClient]) -> None:
    api, client = server
    publish(app, 2)
    stopping = api.state.gopherq.stopping
    timer = threading.Timer(10.0, stopping.set)  # ends the stream if nothing comes
    timer.start()
    try:
        with client.stream("GET", "/api/v1/events?follow=true") as response:
            lines = response.iter_lines()
            assert next(lines) == "retry: 2000"  # the stream started: "now" is set
            publish(app, 1, start=7)
            first = next((m for m in messages(lines) if m.data is not None), None)
            stopping.set()
    finally:
        timer.cancel()
    assert first is not None
    assert first.event["id"] == "job7"


def test_filters(app: GopherQ, server: tuple[FastAPI, TestClient]) -> None:
    publish(app, 2, task="a")
    publish(app, 2, start=2, task="b", queue="slow")
    app.events.publish([Event("worker-online", time.time(), worker="w1")])
    url = "/api/v1/events?since=0"
    assert [m.event["id"] for m in sent(read_stream(*server, url + "&task=b"))] == ["job2", "job3"]
    assert len(sent(read_stream(*server, url + "&queue=slow"))) == 2
    assert [m.event["id"] for m in sent(read_stream(*server, url + "&job=job1"))] == ["job1"]
    online = sent(read_stream(*server, url + "&types=worker-online,task-dead"))
    assert [m.event["worker"] for m in online] == ["w1"]


def test_keepalive_moves_the_cursor_past_skipped_events(
    app: GopherQ, server: tuple[FastAPI, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_route, "KEEPALIVE", 0.1)
    publish(app, 3)
    stream = read_stream(*server, "/api/v1/events?since=0&task=other", seconds=1.5)
    assert not sent(stream)
    pings = [m for m in stream if "keep-alive" in m.comments]
    assert pings and pings[0].id == "3"  # past the three skipped events


def test_json_page(app: GopherQ, api: TestClient) -> None:
    publish(app, 5)
    page = api.get("/api/v1/events", params={"follow": "false", "since": "0", "limit": 2}).json()
    assert [e["id"] for e in page["events"]] == ["job0", "job1"]
    rest = api.get("/api/v1/events", params={"follow": "false", "since": page["cursor"]}).json()
    assert [e["id"] for e in rest["events"]] == ["job2", "job3", "job4"]
    newest = api.get("/api/v1/events", params={"limit": 2}).json()  # no Accept: a page
    assert [e["id"] for e in newest["events"]] == ["job3", "job4"]
    assert newest["cursor"] == rest["cursor"]


@pytest.mark.parametrize(
    ("accept", "streams"),
    [
        ("text/event-stream", True),
        ("text/html, text/event-stream;q=0.9", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_a_stream_only_when_asked_for(
    server: tuple[FastAPI, TestClient], accept: str, streams: bool
) -> None:
    api, client = server
    api.state.gopherq.stopping.set()  # a stream ends after its first read
    response = client.get("/api/v1/events", headers={"Accept": accept})
    assert response.status_code == 200
    kind = response.headers["content-type"]
    assert kind.startswith("text/event-stream" if streams else "application/json"), kind


@pytest.mark.parametrize(
    ("params", "headers", "field"),
    [
        ({"since": "abc"}, {}, "query.since"),
        ({"since": "-1"}, {}, "query.since"),
        ({"since": "9" * 30}, {}, "query.since"),
        ({}, {"Last-Event-ID": "x1"}, "header.last-event-id"),
        ({"types": "task-sucess"}, {}, "query.types"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    api: TestClient, params: dict[str, str], headers: dict[str, str], field: str
) -> None:
    response = api.get("/api/v1/events", params={"follow": "false", **params}, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]


def test_events_off_is_501() -> None:
    app = GopherQ("quiet", broker="memory://", events=None)
    with TestClient(create_app(app, auth=False)) as client:
        response = client.get("/api/v1/events", params={"follow": "false"})
        assert response.status_code == 501
        assert response.json()["type"] == "urn:gopherq:problem:events-off"
    app.close()


def test_needs_a_key(app: GopherQ) -> None:
    with TestClient(create_app(app)) as client:
        assert client.get("/api/v1/events").status_code == 401


@pytest.mark.parametrize("spec_version", ["2.4", "2.0"])
def test_stream_ends_when_the_client_disconnects(app: GopherQ, spec_version: str) -> None:
    """Without the server stopping: the stream notices the client left, and returns."""
    import anyio

    api = create_app(app, auth=False)
    sent: list[dict[str, object]] = []
    calls = 0
    leaves = time.monotonic() + 0.3

    async def receive() -> dict[str, object]:
        """As a server's: the body, then waits until the client leaves; once it left,
        the disconnect at once."""
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        if time.monotonic() < leaves:
            await anyio.sleep(leaves - time.monotonic())
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/events",
        "raw_path": b"/api/v1/events",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"accept", b"text/event-stream")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }

    async def call() -> None:
        with anyio.fail_after(5):
            await api(scope, receive, send)

    anyio.run(call)
    assert sent[0]["status"] == 200
    assert not api.state.gopherq.stopping.is_set()


def test_extra_values_json_lacks_are_written_as_the_cli_writes_them(
    app: GopherQ, server: tuple[FastAPI, TestClient]
) -> None:
    extra = {"blob": b"\xff\x00", "n": 1}
    app.events.publish([Event("task-progress", time.time(), "j", "add", "default", extra=extra)])
    api, client = server
    page = client.get("/api/v1/events", params={"since": "0"}).json()
    assert page["events"][0]["extra"] == {"blob": {"$bytes": "/wA="}, "n": 1}
    (message,) = sent(read_stream(api, client, "/api/v1/events?since=0"))
    assert message.event["extra"] == {"blob": {"$bytes": "/wA="}, "n": 1}
