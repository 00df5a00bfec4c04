"""Dead letters: list, read, retry, purge, edit and replay.

Bulk retry and purge are ``POST /dead:retry`` and ``POST /dead:purge`` with a
selection body: ``ids``, or a filter (``queue``, ``reason``), or ``all``. A
replay sends the dead letter's task again as a new job (new id) with new
arguments; the dead letter is deleted once the new job is enqueued.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from gopherq import admin_dead
from gopherq.access.roles import Role
from gopherq.errors import PayloadTooLarge
from gopherq.states import DeadReason
from gopherq.web.auth import require
from gopherq.web.names import IdPath, check_name
from gopherq.web.problems import Problem, invalid, not_found, problem_response
from gopherq.web.responses import json_response
from gopherq.web.routing import api_router
from gopherq.web.state import AppDep

router = api_router(tags=["dead letters"])

MAX_IDS = 1000
"""Most ids one bulk call takes."""


class DeadLetter(BaseModel):
    """A dead letter."""

    id: str
    queue: str
    task: str | None = Field(description="The task name; null when the body does not decode.")
    reason: DeadReason | str
    error: str
    attempts: int = Field(description="Executions so far.")
    died: float = Field(description="Unix seconds when it was dead-lettered.")


def dead_letter_map(info: admin_dead.DeadLetterInfo) -> dict[str, Any]:
    """A ``DeadLetter``'s JSON object (built without the model: a page holds up to 1,000)."""
    return {
        "id": info.id,
        "queue": info.queue,
        "task": info.task,
        "reason": info.reason,
        "error": info.error,
        "attempts": info.attempts,
        "died": info.died,
    }


class DeadLetterPage(BaseModel):
    """A page of dead letters, newest first."""

    items: list[DeadLetter]
    offset: int
    limit: int
    next_offset: int | None = Field(description="The offset of the next page; null at the end.")


class DeadLetterDetail(DeadLetter):
    """A dead letter with what its body holds (null where it does not decode)."""

    priority: int
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    headers: dict[str, Any] | None


class DeadSelection(BaseModel):
    """Which dead letters: ``ids``; or every one matching ``queue`` and ``reason``;
    or, with neither, every one (``all`` must then be true)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(default=None, max_length=MAX_IDS)
    queue: str | None = None
    reason: DeadReason | None = None
    all: bool = Field(default=False, description="Confirms a selection of every dead letter.")


class Retried(BaseModel):
    """How many dead letters were made ready again."""

    retried: int


class Purged(BaseModel):
    """How many dead letters were deleted."""

    purged: int


class ReplayRequest(BaseModel):
    """New arguments for a dead letter's task; an omitted one keeps the dead letter's."""

    model_config = ConfigDict(extra="forbid")

    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None


class Replayed(BaseModel):
    """The new job a replay sent."""

    id: str = Field(description="The new job's id.")
    replaced: str = Field(description="The dead letter's id.")
    removed: bool = Field(description="False if the dead letter was gone meanwhile.")


def _selection(body: DeadSelection) -> tuple[list[str] | None, str | None, str | None]:
    """``(ids, queue, reason)`` of a checked selection; 422 naming the field otherwise."""
    if body.ids is not None:
        if body.queue is not None or body.reason is not None or body.all:
            raise invalid("body.ids", "give ids, or a filter (queue, reason), not both")
        if not body.ids:
            raise invalid("body.ids", "is empty")
        for i, id in enumerate(body.ids):
            check_name("id", id, f"body.ids.{i}")
        return body.ids, None, None
    if body.queue is not None:
        check_name("queue", body.queue, "body.queue")
    if body.queue is None and body.reason is None and not body.all:
        raise invalid("body", "give ids, a filter (queue, reason), or all: true")
    return None, body.queue, None if body.reason is None else body.reason.value


@router.get(
    "/dead",
    name="dead.list",
    summary="List dead letters, newest first",
    response_model=DeadLetterPage,
    dependencies=[require(Role.VIEWER)],
)
def list_dead(
    app: AppDep,
    queue: Annotated[str | None, Query(description="Only this queue.")] = None,
    reason: Annotated[
        DeadReason | None,
        Query(
            description="Only this reason (on brokers other than SQLite and Redis: among the "
            f"newest {admin_dead.SCAN_LIMIT})."
        ),
    ] = None,
    offset: Annotated[int, Query(ge=0, le=admin_dead.SCAN_LIMIT * 100)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    if queue is not None:
        check_name("queue", queue, "query.queue")
    reason_text = None if reason is None else reason.value
    infos = admin_dead.dead_letters(app, queue, reason_text, offset=offset, limit=limit)
    page = {
        "items": [dead_letter_map(i) for i in infos],
        "offset": offset,
        "limit": limit,
        "next_offset": offset + len(infos) if len(infos) == limit else None,
    }
    return json_response(page)


@router.post(
    "/dead:retry",
    name="dead.retry_many",
    summary="Requeue dead letters by ids or by filter",
    response_model=Retried,
    dependencies=[require(Role.OPERATOR)],
)
def retry_many(app: AppDep, body: DeadSelection) -> Retried:
    ids, queue, reason = _selection(body)
    return Retried(retried=admin_dead.retry(app, ids, queue=queue, reason=reason))


@router.post(
    "/dead:purge",
    name="dead.purge",
    summary="Delete dead letters by ids or by filter",
    response_model=Purged,
    dependencies=[require(Role.OPERATOR)],
)
def purge(app: AppDep, body: DeadSelection) -> Purged:
    ids, queue, reason = _selection(body)
    return Purged(purged=admin_dead.purge(app, ids, queue=queue, reason=reason))


@router.get(
    "/dead/{id}",
    name="dead.get",
    summary="One dead letter, with its arguments",
    response_model=DeadLetterDetail,
    dependencies=[require(Role.VIEWER)],
)
def get_dead(app: AppDep, id: IdPath) -> DeadLetterDetail:
    try:
        found = admin_dead.detail(app, id)
    except admin_dead.NotDead:
        raise not_found("dead letter", id) from None
    return DeadLetterDetail(
        **dead_letter_map(found.info),
        priority=found.priority,
        args=found.args,
        kwargs=found.kwargs,
        headers=found.headers,
    )


@router.post(
    "/dead/{id}/retry",
    name="dead.retry",
    summary="Requeue one dead letter (attempts start again from 0)",
    response_model=Retried,
    responses={409: problem_response("Its idempotency key is held by a live job")},
    dependencies=[require(Role.OPERATOR)],
)
def retry_one(app: AppDep, id: IdPath) -> Retried:
    if admin_dead.retry(app, [id]):
        return Retried(retried=1)
    if app.broker.dead_letter(id) is None:
        raise not_found("dead letter", id)
    raise Problem(
        409,
        "key-held",
        "Idempotency key held",
        f"dead letter {id!r} stays dead: a live job holds its idempotency key",
    )


@router.post(
    "/dead/{id}/replay",
    name="dead.replay",
    summary="Send a dead letter's task again as a new job, with new arguments",
    status_code=201,
    response_model=Replayed,
    responses={
        409: problem_response("The dead letter's body does not decode"),
        413: problem_response("The new arguments do not fit a message"),
    },
    dependencies=[require(Role.OPERATOR)],
)
def replay(
    app: AppDep, id: IdPath, body: ReplayRequest, request: Request, response: Response
) -> Replayed:
    try:
        done = admin_dead.replay(app, id, body.args, body.kwargs)
    except admin_dead.NotDead:
        raise not_found("dead letter", id) from None
    except admin_dead.NotReplayable as exc:
        raise Problem(409, "not-replayable", "Not replayable", str(exc)) from None
    except admin_dead.BadArguments as exc:
        field = (
            "body.args" if body.kwargs is None else "body.kwargs" if body.args is None else "body"
        )
        raise invalid(field, str(exc)) from None
    except PayloadTooLarge as exc:
        raise Problem(
            413, "payload-too-large", "Payload too large", str(exc), errors=[("body", str(exc))]
        ) from None
    # The jobs route beside this one, wherever the API is mounted.
    prefix = request.url.path.rsplit("/dead/", 1)[0]
    response.headers["Location"] = f"{prefix}/jobs/{done.id}"
    return Replayed(id=done.id, replaced=done.replaced, removed=done.removed)
