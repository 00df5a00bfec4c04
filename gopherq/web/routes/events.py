"""Events: the lifecycle log as server-sent events, or as one JSON page.

``GET /api/v1/events`` tails the durable event store (``app.events``) as
``text/event-stream`` for a client that asks for it (``Accept:
text/event-stream``, as ``EventSource`` and SSE libraries send, or
``follow=true``); any other request gets one page of events as JSON, so that
generic clients and tools never hang on a stream they did not ask for.

Each event goes out as one SSE message whose ``id`` is the event's cursor and
whose ``data`` is the event as JSON (its ``type`` among the fields; no SSE
``event:`` name, so ``EventSource.onmessage`` sees every event). A client that
reconnects with ``Last-Event-ID`` (as ``EventSource`` does by itself) or
``?since=CURSOR`` resumes right after that event: nothing lost while it is
retained, nothing repeated.

Reads never block a thread for long: each is a non-blocking read of the store
in the thread pool, and the stream sleeps on the event loop between them
(``POLL`` seconds while idle). So a stream notices a client that left, or the
server stopping (``ServerState.stopping``), within a poll. Every ``KEEPALIVE``
seconds an idle stream sends a comment; when filters skipped events since the
last message, that comment carries an ``id`` too (a message with no data,
which ``EventSource`` takes as the new ``Last-Event-ID`` without dispatching
an event), so that a resumed stream does not read the skipped events again.

The stream is a plain Starlette ``StreamingResponse``: FastAPI's own SSE support
(``EventSourceResponse``) exists only in releases newer than the ``web`` extra's
floor, and its generator model leaves no place for the disconnect and shutdown
checks between reads, nor for keep-alives that carry an ``id``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from gopherq.access.roles import Role
from gopherq.app import GopherQ
from gopherq.display import jsonable
from gopherq.errors import ConfigurationError
from gopherq.events import Event, EventBackend
from gopherq.events.base import START, check_types
from gopherq.web.auth import require
from gopherq.web.blocking import run_blocking
from gopherq.web.problems import Problem, invalid
from gopherq.web.responses import json_response
from gopherq.web.routing import api_router
from gopherq.web.state import AppDep, StateDep

log = logging.getLogger(__name__)

router = api_router(tags=["events"])

STREAM_MEDIA_TYPE = "text/event-stream"
KEEPALIVE = 15.0
"""Seconds between keep-alive comments on an idle stream."""
POLL = 0.25
"""Seconds an idle stream waits between reads of the store."""
RETRY_AFTER = 1.0
"""Seconds a stream waits after a failed read before reading again."""
BATCH = 200
"""Most events one read of the store returns."""
PAGE_READS = 20
"""Most store reads one JSON page makes while filters skip events."""
MAX_CURSOR = 2**63 - 1
NAME_MAX = 200


class EventOut(BaseModel):
    """One lifecycle event (see docs/events.md for each type's ``extra``)."""

    cursor: str = Field(description="Position in the event log: resume after it with `since`.")
    type: str
    time: float = Field(description="Unix seconds.")
    id: str | None = Field(None, description="The job's id (task events).")
    task: str | None = None
    queue: str | None = None
    worker: str | None = None
    attempt: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class EventPage(BaseModel):
    """Events oldest first, and the cursor to read on from."""

    events: list[EventOut]
    cursor: str = Field(description="Pass as `since` to get what follows this page.")


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a reader wants: ``types`` in the store's read, the rest here."""

    types: frozenset[str] | None = None
    task: str | None = None
    queue: str | None = None
    job: str | None = None

    def matches(self, event: Event) -> bool:
        """Whether ``event`` passes the task, queue and job filters."""
        return (
            (self.task is None or event.task == self.task)
            and (self.queue is None or event.queue == self.queue)
            and (self.job is None or event.id == self.job)
        )


def event_map(event: Event) -> dict[str, Any]:
    """``event`` as the JSON object the API sends, cursor included (bytes and other
    values JSON lacks in ``extra`` as ``gopherq.display.jsonable`` writes them)."""
    out: dict[str, Any] = {"cursor": event.cursor, **event.to_map()}
    if "extra" in out:
        out["extra"] = jsonable(out["extra"])
    return out


def sse_message(event: Event) -> bytes:
    """``event`` as one SSE message, its cursor as the ``id``."""
    data = json.dumps(event_map(event), separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.cursor}\ndata: {data}\n\n".encode()


def keepalive(cursor: str | None) -> bytes:
    """A keep-alive comment; with ``cursor``, also moves the client's ``Last-Event-ID``."""
    return b": keep-alive\n\n" if cursor is None else f": keep-alive\nid: {cursor}\n\n".encode()


def check_cursor(value: str, field: str) -> str:
    """``value`` if it is an event cursor (a number), or ``now``; 422 naming ``field``."""
    value = value.strip()
    if value == "now":
        return value
    if not value.isascii() or not value.isdigit() or int(value) > MAX_CURSOR:
        raise invalid(field, "expected an event cursor (a number, 0 for every event) or 'now'")
    return value


def wants_stream(accept: str) -> bool:
    """Whether an ``Accept`` header asks for ``text/event-stream`` (not only ``*/*``)."""
    return any(
        part.partition(";")[0].strip().lower() == STREAM_MEDIA_TYPE for part in accept.split(",")
    )


def event_types(values: list[str] | None) -> frozenset[str] | None:
    """The ``types`` query values (repeated or comma-separated); 422 on an unknown one."""
    names = [n.strip() for value in values or () for n in value.split(",") if n.strip()]
    if not names:
        return None
    try:
        return check_types(names)
    except ConfigurationError as exc:
        raise invalid("query.types", str(exc)) from None


def event_backend(app: GopherQ) -> EventBackend:
    """The app's event store; 501 when the app's events are off."""
    if not app.events.enabled:
        raise Problem(501, "events-off", "Events are off", "this app does not record events")
    backend: EventBackend = app.events.backend
    return backend


def start_cursor(backend: EventBackend, since: str) -> str:
    """``since``, with ``now`` as the newest event's cursor."""
    if since != "now":
        return since
    newest = backend.last(1)
    return newest[0].cursor if newest else START


def read_page(
    backend: EventBackend, cursor: str, wanted: EventFilter, limit: int
) -> tuple[list[Event], str]:
    """Up to ``limit`` events after ``cursor`` passing ``wanted``, and the cursor after them."""
    found: list[Event] = []
    for _ in range(PAGE_READS):
        events, after = backend.read(cursor, types=wanted.types, limit=BATCH, timeout=0)
        for event in events:
            if wanted.matches(event):
                found.append(event)
                if len(found) == limit:
                    return found, event.cursor
        cursor = after
        if not events:
            break
    return found, cursor


def newest_page(backend: EventBackend, wanted: EventFilter, limit: int) -> dict[str, Any]:
    """The newest ``limit`` events (those of them passing ``wanted``), oldest first, as
    an ``EventPage``'s JSON object."""
    events = backend.last(limit, types=wanted.types)
    shown = [event_map(e) for e in events if wanted.matches(e)]
    cursor = events[-1].cursor if events else start_cursor(backend, "now")
    return {"events": shown, "cursor": cursor}


async def tail(
    request: Request,
    *,
    stopping: Callable[[], bool],
    backend: EventBackend,
    wanted: EventFilter,
    told: str,
    first: tuple[list[Event], str],
) -> AsyncIterator[bytes]:
    """The SSE stream: after ``told`` (the position the client knows), ``first`` (the
    events the first read found, and the cursor after them), then what follows."""
    pending, cursor = first
    yield b"retry: 2000\n\n"
    next_ping = time.monotonic() + KEEPALIVE
    while True:
        for event in pending:
            if wanted.matches(event):
                yield sse_message(event)
                told = event.cursor
        if stopping() or await request.is_disconnected():
            return
        if time.monotonic() >= next_ping:
            yield keepalive(None if cursor == told else cursor)
            told = cursor
            next_ping = time.monotonic() + KEEPALIVE
        try:
            pending, cursor = await run_blocking(
                backend.read, cursor, types=wanted.types, limit=BATCH, timeout=0
            )
        except Exception as exc:  # the store is down: keep the cursor, try again
            log.warning("reading events failed, retrying in %ss: %s", RETRY_AFTER, exc)
            pending = []
            await anyio.sleep(RETRY_AFTER)
            continue
        if not pending:
            await anyio.sleep(POLL)


@router.get(
    "/events",
    name="events.stream",
    summary="Tail the event log (server-sent events), or read one page of it",
    response_model=EventPage,
    responses={
        200: {
            "description": "A `text/event-stream` when asked for (`Accept: text/event-stream`, "
            "or `follow=true`), else one page of events as JSON",
            "content": {STREAM_MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
    },
    dependencies=[require(Role.VIEWER)],
)
async def events(
    request: Request,
    app: AppDep,
    state: StateDep,
    *,
    types: Annotated[
        list[str] | None,
        Query(description="Event types, repeated or comma-separated (default: every type)."),
    ] = None,
    task: Annotated[str | None, Query(max_length=NAME_MAX, description="Task name.")] = None,
    queue: Annotated[str | None, Query(max_length=NAME_MAX, description="Queue name.")] = None,
    job: Annotated[str | None, Query(max_length=NAME_MAX, description="A job's id.")] = None,
    since: Annotated[
        str | None,
        Query(
            max_length=32,
            description="Start after this event cursor (`0`: every retained event; `now`, "
            "the default for a stream: only new events). `Last-Event-ID` wins over it.",
        ),
    ] = None,
    follow: Annotated[
        bool | None,
        Query(
            description="Stream (true) or answer one JSON page (false); by default, a stream "
            "when `Accept` asks for `text/event-stream` (as `EventSource` does)."
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most events in a page.")] = 100,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=32, description="Resume after it.")
    ] = None,
) -> Any:
    wanted = EventFilter(event_types(types), task, queue, job)
    backend = event_backend(app)
    if last_event_id is not None and last_event_id.strip():
        resume: str | None = check_cursor(last_event_id, "header.last-event-id")
    elif since is not None:
        resume = check_cursor(since, "query.since")
    else:
        resume = None
    if follow is None:
        follow = wants_stream(request.headers.get("accept", ""))
    if not follow:
        if resume is None:
            page = await run_blocking(newest_page, backend, wanted, limit)
        else:
            start = await run_blocking(start_cursor, backend, resume)
            found, cursor = await run_blocking(read_page, backend, start, wanted, limit)
            page = {"events": [event_map(e) for e in found], "cursor": cursor}
        return json_response(page)
    cursor = await run_blocking(start_cursor, backend, resume or "now")
    # The first read happens here, so that a failure is an error response, not a broken stream.
    first = await run_blocking(backend.read, cursor, types=wanted.types, limit=BATCH, timeout=0)
    stream = tail(
        request,
        stopping=state.stopping.is_set,
        backend=backend,
        wanted=wanted,
        told=cursor,
        first=first,
    )
    return StreamingResponse(
        stream,
        media_type=STREAM_MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
