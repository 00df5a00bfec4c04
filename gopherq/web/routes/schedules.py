"""Schedules: the beat's periodic entries.

Entries declared in code or in the ``beat_schedule`` setting can be paused and
resumed here, not changed or removed (409). Dynamic entries (``POST
/schedules``, ``gopherq schedules add``) live in the broker's schedule store;
running beats pick changes up within a second. Reading takes the viewer role,
changing the admin role.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from gopherq import admin
from gopherq.access.roles import Role
from gopherq.app import GopherQ
from gopherq.errors import ConfigurationError
from gopherq.schedules import CatchUp, ScheduleInfo
from gopherq.web.auth import require
from gopherq.web.names import ScheduleName, check_name
from gopherq.web.problems import Problem, invalid, not_found, problem_response
from gopherq.web.responses import model_response
from gopherq.web.routing import api_router
from gopherq.web.state import AppDep

router = api_router(tags=["schedules"])

Interval = StrictInt | str
"""Seconds, or text such as ``30s``, ``5m``, ``1h30m``, ``1d``."""
PriorityValue = StrictInt | str
"""A priority name (``high``) or number, 0 (critical) to 4 (bulk)."""

DECLARED = problem_response("The entry is declared in code or settings")


class Schedule(BaseModel):
    """One periodic entry, with its state."""

    name: str
    task: str
    schedule: str = Field(description="In words: 'every 30s', 'cron */5 * * * *'.")
    cron: str | None
    every: int | None = Field(description="Seconds between ticks.")
    tz: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None = Field(description="Null: the task's own.")
    priority: int | None = Field(description="Null: the task's own.")
    catch_up: CatchUp
    source: Literal["code", "settings", "dynamic"]
    paused: bool
    last_run: int | None = Field(description="Unix seconds of the last tick sent.")
    next_run: int | None = Field(description="Unix seconds of the next tick; null while paused.")
    created: float | None = Field(description="When a dynamic entry was added.")

    @classmethod
    def of(cls, info: ScheduleInfo) -> Schedule:
        entry = info.entry
        return cls(
            name=entry.name,
            task=entry.task,
            schedule=entry.when,
            cron=entry.cron,
            every=entry.every,
            tz=entry.tz,
            args=list(entry.args),
            kwargs=dict(entry.kwargs),
            queue=entry.queue,
            priority=entry.priority,
            catch_up=entry.catch_up,
            source=info.source,
            paused=info.paused,
            last_run=info.last_tick,
            next_run=info.next_tick,
            created=entry.created,
        )


class ScheduleList(BaseModel):
    """Every periodic entry, by name."""

    items: list[Schedule]


class ScheduleSpec(BaseModel):
    """A dynamic entry: its task, and exactly one of ``cron`` and ``every``."""

    model_config = ConfigDict(extra="forbid")

    task: str
    cron: str | None = Field(
        default=None,
        description="5 fields (minute hour day month weekday), or 6 with seconds first.",
    )
    every: Interval | None = None
    tz: str = Field(default="UTC", description="IANA time zone of the cron expression.")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = None
    priority: PriorityValue | None = None
    catch_up: CatchUp = "latest"
    paused: bool = Field(default=False, description="Add it paused.")


class ScheduleCreate(ScheduleSpec):
    """A new dynamic entry and its name."""

    name: str


class ScheduleChanges(BaseModel):
    """Options of a dynamic entry to change; those left out stay. Giving ``cron``
    drops ``every`` and the other way round."""

    model_config = ConfigDict(extra="forbid")

    task: str | None = None
    cron: str | None = None
    every: Interval | None = None
    tz: str | None = None
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    queue: str | None = Field(default=None, description="Null: the task's own.")
    priority: PriorityValue | None = Field(default=None, description="Null: the task's own.")
    catch_up: CatchUp | None = None


_FIELD_WORDS = (
    ("cron", "cron"),
    ("interval", "every"),
    ("every", "every"),
    ("time zone", "tz"),
    ("priority", "priority"),
    ("catch_up", "catch_up"),
    ("argument", "args"),
    ("kwargs", "kwargs"),
    ("queue", "queue"),
    ("task", "task"),
)
"""Words of an entry's error message, and the field the message is then about."""


def _bad_entry(exc: ConfigurationError) -> Problem:
    """422 for options that make no entry, naming the field the message is about."""
    text = str(exc)
    about = text.partition(": ")[2] or text
    field = next((f for word, f in _FIELD_WORDS if word in about), None)
    return invalid(f"body.{field}" if field else "body", about)


def _check_spec(app: GopherQ, values: dict[str, Any]) -> None:
    """422 for a bad task or queue name, an unknown task, or cron and every both or
    neither given."""
    task = values.get("task")
    if task is not None:
        check_name("task", task, "body.task")
        if task not in app.tasks:
            close = admin.similar_tasks(app, task)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise invalid("body.task", f"no task {task!r} is registered{hint}")
    if values.get("queue") is not None:
        check_name("queue", values["queue"], "body.queue")
    if values.get("cron") is not None and values.get("every") is not None:
        raise invalid("body.cron", "give cron or every, not both")


def _declared(name: str, source: str) -> Problem:
    return Problem(
        409,
        "schedule-declared",
        "Declared schedule",
        f"entry {name!r} is declared in {source}: change or remove it there (it can be "
        "paused and resumed here)",
    )


def _dynamic(app: GopherQ, name: str) -> None:
    """404 unless ``name`` exists, 409 unless it is dynamic."""
    source = app.schedules.source(name)
    if source is None:
        raise not_found("schedule", name)
    if source != "dynamic":
        raise _declared(name, source)


def _one(app: GopherQ, name: str) -> Schedule:
    for info in app.schedules.list():
        if info.entry.name == name:
            return Schedule.of(info)
    raise not_found("schedule", name)


def _store(app: GopherQ, name: str, spec: ScheduleSpec, *, replace: bool) -> None:
    values = spec.model_dump(exclude={"name"})
    _check_spec(app, values)
    if values["cron"] is None and values["every"] is None:
        raise invalid("body.cron", "give cron or every")
    task = values.pop("task")
    try:
        app.schedules.add(name, task, replace=replace, **values)
    except ConfigurationError as exc:
        raise _bad_entry(exc) from None


def _location(request: Request, name: str) -> str:
    return f"{request.url.path.rsplit('/schedules', 1)[0]}/schedules/{name}"


@router.get(
    "/schedules",
    name="schedules.list",
    summary="Every periodic entry, with its last and next run",
    response_model=ScheduleList,
    dependencies=[require(Role.VIEWER)],
)
def list_schedules(app: AppDep) -> Response:
    return model_response(ScheduleList(items=[Schedule.of(info) for info in app.schedules.list()]))


@router.post(
    "/schedules",
    name="schedules.add",
    summary="Add a dynamic entry",
    status_code=201,
    response_model=Schedule,
    responses={409: problem_response("An entry of that name exists")},
    dependencies=[require(Role.ADMIN)],
)
def add(app: AppDep, body: ScheduleCreate, request: Request, response: Response) -> Schedule:
    name = check_name("schedule", body.name, "body.name")
    source = app.schedules.source(name)
    if source == "dynamic":
        raise Problem(409, "schedule-exists", "Schedule exists", f"a dynamic entry {name!r} exists")
    if source is not None:
        raise _declared(name, source)
    _store(app, name, body, replace=False)
    response.headers["Location"] = _location(request, name)
    return _one(app, name)


@router.get(
    "/schedules/{name}",
    name="schedules.get",
    summary="One periodic entry",
    response_model=Schedule,
    dependencies=[require(Role.VIEWER)],
)
def get_schedule(app: AppDep, name: ScheduleName) -> Response:
    return model_response(_one(app, name))


@router.put(
    "/schedules/{name}",
    name="schedules.replace",
    summary="Add or replace a dynamic entry",
    response_model=Schedule,
    responses={201: {"description": "Added", "model": Schedule}, 409: DECLARED},
    dependencies=[require(Role.ADMIN)],
)
def replace(
    app: AppDep, name: ScheduleName, body: ScheduleSpec, request: Request, response: Response
) -> Schedule:
    source = app.schedules.source(name)
    if source not in (None, "dynamic"):
        raise _declared(name, str(source))
    _store(app, name, body, replace=True)
    if source is None:
        response.status_code = 201
        response.headers["Location"] = _location(request, name)
    return _one(app, name)


@router.patch(
    "/schedules/{name}",
    name="schedules.update",
    summary="Change options of a dynamic entry",
    response_model=Schedule,
    responses={409: DECLARED},
    dependencies=[require(Role.ADMIN)],
)
def update(app: AppDep, name: ScheduleName, body: ScheduleChanges) -> Schedule:
    changes = body.model_dump(exclude_unset=True)
    _check_spec(app, changes)
    for required in ("task", "tz", "args", "kwargs", "catch_up"):
        if required in changes and changes[required] is None:
            raise invalid(f"body.{required}", "may not be null")
    _dynamic(app, name)
    try:
        app.schedules.update(name, **changes)
    except ConfigurationError as exc:
        raise _bad_entry(exc) from None
    return _one(app, name)


@router.delete(
    "/schedules/{name}",
    name="schedules.remove",
    summary="Remove a dynamic entry",
    status_code=204,
    responses={409: DECLARED},
    dependencies=[require(Role.ADMIN)],
)
def remove(app: AppDep, name: ScheduleName) -> Response:
    _dynamic(app, name)
    app.schedules.remove(name)
    return Response(status_code=204)


@router.post(
    "/schedules/{name}/pause",
    name="schedules.pause",
    summary="Stop sending an entry (any entry, declared or dynamic)",
    response_model=Schedule,
    dependencies=[require(Role.ADMIN)],
)
def pause(app: AppDep, name: ScheduleName) -> Schedule:
    if app.schedules.source(name) is None:
        raise not_found("schedule", name)
    app.schedules.pause(name)
    return _one(app, name)


@router.post(
    "/schedules/{name}/resume",
    name="schedules.resume",
    summary="Send an entry again from its next tick (missed ticks are skipped)",
    response_model=Schedule,
    dependencies=[require(Role.ADMIN)],
)
def resume(app: AppDep, name: ScheduleName) -> Schedule:
    if app.schedules.source(name) is None:
        raise not_found("schedule", name)
    app.schedules.resume(name)
    return _one(app, name)
