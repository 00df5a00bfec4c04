"""Workers and the task registry.

Workers are read from their events (``worker-online``, ``worker-heartbeat``,
``worker-offline``): with the app's events off they cannot be listed (501).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Response
from pydantic import BaseModel, Field

from gopherq import admin, admin_workers
from gopherq.access.roles import Role
from gopherq.web.auth import require
from gopherq.web.names import TaskName
from gopherq.web.problems import Problem, not_found, problem_response
from gopherq.web.responses import model_response
from gopherq.web.routing import api_router
from gopherq.web.state import AppDep

router = api_router(tags=["workers"])


class CurrentTask(BaseModel):
    """A task a worker is running."""

    id: str
    task: str
    process: str = Field(description="The child process running it.")


class Worker(BaseModel):
    """One worker (supervisor), as its newest events show it."""

    name: str = Field(description="hostname:pid of the supervisor.")
    hostname: str
    pid: int | None
    heartbeat: float = Field(description="Unix seconds of its newest heartbeat (or start).")
    age: float = Field(description="Seconds since then.")
    alive: bool = Field(description="Whether it beat within 3 heartbeat intervals.")
    started: float | None
    concurrency: int | None
    queues: list[str]
    children: list[str] = Field(description="Its processes' names.")
    active: int = Field(description="Tasks running at the last heartbeat.")
    processed: int = Field(description="Tasks done since it started.")
    load: list[float]
    current: list[CurrentTask] = Field(description="Tasks running at the last heartbeat.")


class WorkerList(BaseModel):
    """The workers that sent a heartbeat lately."""

    items: list[Worker]


class Task(BaseModel):
    """A registered task and its options."""

    name: str
    queue: str
    priority: str
    retries: int
    description: str = Field(description="The first line of its docstring.")
    doc: str = Field(description="Its whole docstring.")
    options: dict[str, Any]


class TaskList(BaseModel):
    """The app's registered tasks, by name."""

    items: list[Task]


@router.get(
    "/workers",
    name="workers.list",
    summary="Workers with their heartbeat, children, tasks done and current tasks",
    response_model=WorkerList,
    responses={501: problem_response("The app's events are off")},
    dependencies=[require(Role.VIEWER)],
)
def list_workers(
    app: AppDep,
    stale: Annotated[
        bool, Query(description="Also those whose heartbeats stopped (not gone offline).")
    ] = False,
) -> Response:
    if not app.events.enabled:
        raise Problem(
            501, "events-off", "Events are off", "workers are known from events: turn events on"
        )
    views = admin_workers.workers(app, stale=stale)
    workers = WorkerList(
        items=[
            Worker(
                name=v.name,
                hostname=v.hostname,
                pid=v.pid,
                heartbeat=v.heartbeat,
                age=v.age,
                alive=v.alive,
                started=v.started,
                concurrency=v.concurrency,
                queues=list(v.queues),
                children=list(v.children),
                active=v.active,
                processed=v.processed,
                load=list(v.load),
                current=[CurrentTask(id=c.id, task=c.task, process=c.process) for c in v.current],
            )
            for v in views
        ]
    )
    return model_response(workers)


def _task(info: admin.TaskInfo) -> Task:
    return Task(
        name=info.name,
        queue=info.queue,
        priority=info.priority,
        retries=info.retries,
        description=info.description,
        doc=info.doc,
        options=info.options,
    )


@router.get(
    "/tasks",
    name="tasks.list",
    summary="The task registry with options and docstrings",
    response_model=TaskList,
    tags=["tasks"],
    dependencies=[require(Role.VIEWER)],
)
async def list_tasks(app: AppDep) -> Response:  # the registry is in memory: no thread hop
    return model_response(TaskList(items=[_task(info) for info in admin.registered_tasks(app)]))


@router.get(
    "/tasks/{name}",
    name="tasks.get",
    summary="One registered task",
    response_model=Task,
    tags=["tasks"],
    dependencies=[require(Role.VIEWER)],
)
async def get_task(app: AppDep, name: TaskName) -> Response:
    for info in admin.registered_tasks(app):
        if info.name == name:
            return model_response(_task(info))
    raise not_found("task", name)
