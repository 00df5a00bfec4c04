"""Queues: depths, pause, resume, purge.

A queue is known when the broker has messages of it or has it paused, or when
the app declares it; any other name is 404 (``pause?create=true`` pauses it
anyway, as ``gopherq pause --create`` does).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response
from pydantic import BaseModel, Field

from gopherq import admin_queues
from gopherq.access.roles import Role
from gopherq.errors import ConfigurationError
from gopherq.web.auth import require
from gopherq.web.names import QueueName
from gopherq.web.problems import Problem, invalid, not_found
from gopherq.web.responses import model_response
from gopherq.web.routing import api_router
from gopherq.web.state import AppDep

router = api_router(tags=["queues"])


class Queue(BaseModel):
    """One queue: its messages by place, and whether it is paused."""

    name: str
    ready: int
    ready_by_priority: dict[str, int] = Field(
        description="Ready messages by priority, 0 (critical) to 4 (bulk); the key "
        "'unknown' holds those of a broker that cannot tell priorities apart."
    )
    scheduled: int
    running: int
    dead: int
    paused: bool
    oldest_age: float | None = Field(
        description="Seconds the oldest ready message has waited; null when none is "
        "ready or the broker cannot tell."
    )
    declared: bool = Field(description="Whether the app declares it.")

    @classmethod
    def of(cls, info: admin_queues.QueueInfo) -> Queue:
        return cls(
            name=info.name,
            ready=info.ready,
            ready_by_priority={
                "unknown" if p is None else str(p): n for p, n in info.ready_by_priority.items()
            },
            scheduled=info.scheduled,
            running=info.running,
            dead=info.dead,
            paused=info.paused,
            oldest_age=info.oldest_age,
            declared=info.declared,
        )


class QueueList(BaseModel):
    """Every known queue, by name."""

    items: list[Queue]


class QueueState(BaseModel):
    """A queue after pause or resume."""

    name: str
    paused: bool


class PurgedQueue(BaseModel):
    """How many waiting messages a purge deleted."""

    name: str
    purged: int


def _known(app: AppDep, name: str) -> None:
    try:
        admin_queues.check_known(app, name)
    except admin_queues.UnknownQueue:
        raise _unknown(name) from None


def _unknown(name: str) -> Problem:
    return not_found("queue", name)


@router.get(
    "/queues",
    name="queues.list",
    summary="Every known queue with its depths",
    response_model=QueueList,
    dependencies=[require(Role.VIEWER)],
)
def list_queues(app: AppDep) -> Response:
    return model_response(QueueList(items=[Queue.of(q) for q in admin_queues.queue_infos(app)]))


@router.get(
    "/queues/{name}",
    name="queues.get",
    summary="One queue with its depths",
    response_model=Queue,
    dependencies=[require(Role.VIEWER)],
)
def get_queue(app: AppDep, name: QueueName) -> Response:
    try:
        return model_response(Queue.of(admin_queues.queue_info(app, name)))
    except admin_queues.UnknownQueue:
        raise _unknown(name) from None


@router.post(
    "/queues/{name}/pause",
    name="queues.pause",
    summary="Stop workers taking messages from a queue (sending still works)",
    response_model=QueueState,
    dependencies=[require(Role.OPERATOR)],
)
def pause(
    app: AppDep,
    name: QueueName,
    create: Annotated[bool, Query(description="Pause it even if nothing knows it yet.")] = False,
) -> QueueState:
    try:
        admin_queues.pause(app, name, create=create)
    except admin_queues.UnknownQueue:
        raise _unknown(name) from None
    except ConfigurationError as exc:  # a name this broker cannot hold (Redis: '}...')
        raise invalid("path.name", str(exc)) from None
    return QueueState(name=name, paused=True)


@router.post(
    "/queues/{name}/resume",
    name="queues.resume",
    summary="Let workers take messages from a queue again",
    response_model=QueueState,
    dependencies=[require(Role.OPERATOR)],
)
def resume(app: AppDep, name: QueueName) -> QueueState:
    _known(app, name)
    admin_queues.resume(app, name)
    return QueueState(name=name, paused=False)


@router.post(
    "/queues/{name}/purge",
    name="queues.purge",
    summary="Delete a queue's ready and scheduled messages (running ones stay)",
    response_model=PurgedQueue,
    dependencies=[require(Role.OPERATOR)],
)
def purge(app: AppDep, name: QueueName) -> PurgedQueue:
    _known(app, name)
    return PurgedQueue(name=name, purged=admin_queues.purge(app, name))
