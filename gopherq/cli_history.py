"""``gopherq jobs`` and ``gopherq events``: what ran, and what is happening.

Both only parse and print: the records come from ``app.jobs()``, the events
from ``app.events`` (see docs/events.md).
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

import click

from gopherq import admin
from gopherq.app import GopherQ
from gopherq.cli_support import (
    cell,
    duration,
    json_option,
    print_json,
    progress_text,
    shorten,
    table,
    when,
    with_app,
)
from gopherq.display import to_json
from gopherq.events import EVENT_TYPES, Event
from gopherq.redaction import printable
from gopherq.results.base import JobRecord
from gopherq.states import State

_STATES = [s.value for s in State if s is not State.PENDING]


@click.command()
@click.option("--state", type=click.Choice(_STATES, case_sensitive=False), help="Only this state.")
@click.option("--task", default=None, help="Only this task name.")
@click.option("--queue", default=None, help="Only this queue.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@with_app
def jobs(
    app: GopherQ,
    state: str | None,
    task: str | None,
    queue: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List job records, newest first: what ran, when, where, how it ended."""
    records = admin.job_records(app, state=state, task=task, queue=queue, limit=limit)
    if as_json:
        print_json([admin.record_info(app, record) for record in records])
        return
    rows = [
        (
            r.id,
            r.task,
            r.state.value,
            r.queue,
            r.attempts,
            when(r.created),
            _runtime(r),
            r.worker,
            _detail(r),
        )
        for r in records
    ]
    headers = ("id", "task", "state", "queue", "attempts", "sent", "runtime", "worker", "detail")
    table(headers, rows, "no jobs")


def _runtime(record: JobRecord) -> str | None:
    if record.started is None or record.finished is None:
        return None
    return duration(record.finished - record.started)


def _detail(record: JobRecord) -> str:
    """The error of a failed run, else the last progress."""
    if record.error is not None:
        return shorten(f"{record.error.type}: {record.error.message}", 50)
    if record.progress is not None:
        return shorten(progress_text(*record.progress), 50)
    return ""


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until interrupted.")
@click.option(
    "-t",
    "--type",
    "types",
    multiple=True,
    type=click.Choice(sorted(EVENT_TYPES)),
    help="Only events of this type (repeatable).",
)
@click.option(
    "--since",
    default=None,
    help="Print the events after this cursor ('0': all retained) instead of the newest.",
)
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help="How many events to print: the newest N (default 20), or with --since the first"
    " N after the cursor (default all).",
)
@click.option("--listen", is_flag=True, help="Run the app's @app.on callbacks; print nothing.")
@json_option
@with_app
def events(
    app: GopherQ,
    follow: bool,
    types: tuple[str, ...],
    since: str | None,
    limit: int | None,
    listen: bool,
    as_json: bool,
) -> None:
    """Print task and worker events: the newest, or those after --since; --follow tails.

    With --json, one JSON object a line (NDJSON), each with its cursor. With
    --since and -n, the first N events after the cursor, and on stderr the cursor
    to pass for the next page.
    """
    selected = types or None
    if listen:
        _listen(app, since or "now")
        return
    if since is not None and limit is not None:
        if follow:
            raise click.UsageError(
                "-n with --since pages through events: it does not combine with --follow"
            )
        _page(app, selected, since, limit, as_json)
        return
    try:
        if since is None:
            newest = app.events.last(20 if limit is None else limit, selected)
            for event in newest:
                _print_event(event, as_json)
            if not follow:
                return
            since = newest[-1].cursor if newest else "now"
        for event in app.events.subscribe(selected, since=since, timeout=None if follow else 0):
            _print_event(event, as_json)
            if follow:
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass


def _page(
    app: GopherQ, types: tuple[str, ...] | None, since: str, limit: int, as_json: bool
) -> None:
    """The first ``limit`` events after ``since``; if more follow, say where they start."""
    subscription = app.events.subscribe(types, since=since, timeout=0)
    try:
        found = list(itertools.islice(subscription, limit + 1))
    finally:
        subscription.close()
    for event in found[:limit]:
        _print_event(event, as_json)
    if len(found) > limit:
        after = found[limit - 1].cursor if limit else since
        click.echo(f"more events: --since {after}", err=True)


def _listen(app: GopherQ, since: str) -> None:
    listener = app.events.listen(since=since)
    click.echo(f"listening for events with {len(app.events.handlers)} callbacks", err=True)
    try:
        while listener.is_alive():
            listener.join(0.5)
    except KeyboardInterrupt:
        listener.stop(5)
    click.echo(f"stopped; resume with --since {listener.cursor}", err=True)


def _print_event(event: Event, as_json: bool) -> None:
    if as_json:
        line = {**event.to_map(), "cursor": event.cursor}
        click.echo(to_json(line))
        return
    fields = {"queue": event.queue, "worker": event.worker, "attempt": event.attempt}
    fields.update(event.extra)
    pairs = " ".join(f"{k}={_value(k, v)}" for k, v in fields.items() if v is not None)
    head = f"{event.id}  {event.task}  " if event.id is not None else ""
    click.echo(printable(f"{when(event.time, ms=True)}  {event.type:<16}  {head}{pairs}"))


def _value(key: str, value: Any) -> str:
    if key == "eta" and isinstance(value, float):
        return when(value)
    if key == "runtime" and isinstance(value, float):
        return duration(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(_value("", item) for item in value)
    return cell(value)
