"""What the jobs pages show: a filtered page of the job history and one job, read
through ``gopherq.admin`` (the functions the API's jobs routes call)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gopherq import admin, admin_dead
from gopherq.display import to_json
from gopherq.results.base import JobCursor, JobRecord
from gopherq.states import State
from gopherq.web.names import name_problem
from gopherq.web.ui.context import PageError

if TYPE_CHECKING:
    from gopherq.app import GopherQ

PAGE_SIZE = 50
"""Jobs per page of the list."""

WINDOWS = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400}
"""The "sent within" choices of the filter, in seconds."""

STATES = tuple(state.value for state in State if state is not State.PENDING)


@dataclass(frozen=True, slots=True)
class JobFilter:
    """The jobs list's filter, as the query string gives it ('' for any)."""

    state: str = ""
    task: str = ""
    queue: str = ""
    within: str = ""
    cursor: str = ""

    @classmethod
    def of(cls, query: dict[str, str]) -> JobFilter:
        """The filter of a query string; the 422 page for a value no job can match."""
        found = cls(**{k: query.get(k, "").strip() for k in cls.__slots__})
        if found.state and found.state not in STATES:
            raise PageError(422, "There is no such state.")
        if found.within and found.within not in WINDOWS:
            raise PageError(422, "Choose a time window from the list.")
        for kind, value in (("task", found.task), ("queue", found.queue)):
            problem = value and name_problem(kind, value)  # type: ignore[arg-type]
            if problem:
                raise PageError(422, f"The {kind} name {problem}.")
        return found

    def query(self, **changes: str) -> dict[str, str]:
        """The non-empty fields, with ``changes``, for a link's query string."""
        fields = {k: getattr(self, k) for k in self.__slots__} | changes
        return {k: v for k, v in fields.items() if v}


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job of the list."""

    id: str
    task: str
    queue: str
    state: str
    attempts: int
    created: float | None
    finished: float | None
    error: str


@dataclass(frozen=True, slots=True)
class JobList:
    """A page of the list, and the cursor of the next one (None: the last page)."""

    rows: tuple[JobRow, ...]
    next: str | None


def job_list(app: GopherQ, wanted: JobFilter, now: float | None = None) -> JobList:
    """One page of jobs, newest sent first (``admin.job_page``)."""
    after = None
    if wanted.cursor:
        try:
            after = JobCursor.from_text(wanted.cursor)
        except ValueError:
            raise PageError(
                422, "That page link is not valid: start from the first page."
            ) from None
    since = (now or time.time()) - WINDOWS[wanted.within] if wanted.within else None
    page = admin.job_page(
        app,
        state=wanted.state or None,
        task=wanted.task or None,
        queue=wanted.queue or None,
        since=since,
        after=after,
        limit=PAGE_SIZE,
    )
    rows = tuple(row(record) for record in page.records)
    return JobList(rows, None if page.next is None else page.next.to_text())


def row(record: JobRecord) -> JobRow:
    """A job record as a row of the list."""
    return JobRow(
        id=record.id,
        task=record.task,
        queue=record.queue,
        state=record.state.value,
        attempts=record.attempts,
        created=record.created,
        finished=record.finished,
        error=admin.first_line(record.error.message) if record.error else "",
    )


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One event of a job's timeline."""

    type: str
    time: float
    worker: str | None
    attempt: int | None
    detail: str


@dataclass(frozen=True, slots=True)
class JobView:
    """One job as its page shows it; JSON values already as indented text."""

    id: str
    state: str
    task: str | None
    queue: str | None
    attempts: int | None
    worker: str | None
    created: float | None
    started: float | None
    finished: float | None
    args: str | None
    kwargs: str | None
    result: str | None
    error: dict[str, Any] | None
    progress: dict[str, Any] | None
    percent: int | None
    """The progress bar's fill, 0 to 100 (None: no total given)."""
    checkpoint: str | None
    timeline: tuple[TimelineEntry, ...] | None
    """None when events are off or cannot be read."""
    dead: bool
    """Whether the job is in the dead letters (so a retry can run it again)."""

    @property
    def changing(self) -> bool:
        """Whether the job has not finished, so its page follows it live."""
        return not State(self.state).finished

    @property
    def cancellable(self) -> bool:
        """Whether a cancel can still stop it."""
        return self.state in ("QUEUED", "SCHEDULED", "STARTED", "RETRYING")


def job(app: GopherQ, id: str) -> JobView:
    """Job ``id`` (``admin.find_job`` with its arguments, ``admin.job_events``); the
    404 page for a job nothing knows of."""
    if name_problem("id", id):
        raise PageError(404, "There is no such job.")
    info = admin.find_job(app, id, arguments=True)
    if info is None:
        raise PageError(404, "There is no such job.")
    events = admin.job_events(app, id, info.get("created"))
    args = None if info.get("args") is None else to_json(info["args"], indent=2)
    kwargs = None if info.get("kwargs") is None else to_json(info["kwargs"], indent=2)
    dead = info["state"] == State.DEAD.value or app.broker.locate(id) is State.DEAD
    if dead and args is None:  # a broker that cannot peek: its dead letter's arguments
        try:
            letter = admin_dead.detail(app, id)
        except admin_dead.NotDead:
            dead = False
        else:
            args = None if letter.args is None else to_json(letter.args, indent=2)
            kwargs = None if letter.kwargs is None else to_json(letter.kwargs, indent=2)
    progress = info.get("progress")
    return JobView(
        id=id,
        state=info["state"],
        task=info.get("task"),
        queue=info.get("queue"),
        attempts=info.get("attempts"),
        worker=info.get("worker"),
        created=info.get("created"),
        started=info.get("started"),
        finished=info.get("finished"),
        args=args,
        kwargs=kwargs,
        result=to_json(info["result"], indent=2) if "result" in info else None,
        error=info.get("error"),
        progress=progress,
        percent=_percent(progress),
        checkpoint=to_json(info["checkpoint"], indent=2) if "checkpoint" in info else None,
        timeline=None if events is None else tuple(_entry(e) for e in events),
        dead=dead,
    )


def _percent(progress: dict[str, Any] | None) -> int | None:
    if not progress or not progress.get("total"):
        return None
    fraction = float(progress["done"]) / float(progress["total"])
    return max(0, min(100, round(100 * fraction)))


def _entry(event: Any) -> TimelineEntry:
    extra = dict(event.extra)
    detail = ", ".join(f"{k}={to_json(v)}" for k, v in sorted(extra.items()))
    return TimelineEntry(event.type, event.time, event.worker, event.attempt, detail[:500])
