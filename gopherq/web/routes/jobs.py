"""Jobs: submit, list, read, wait for, cancel, retry and delete tasks.

Every route is a face of ``gopherq.admin`` (``prepare`` and ``submitted``,
``job_page``, ``find_job``, ``retry_job``, ``delete_job``) or of the app
(``cancel``), the operations ``gopherq submit``, ``jobs``, ``status`` and
``cancel`` run. The sending routes are coroutines: they check the jobs on the
event loop (a big batch in the thread pool) and send through
``ServerState.sender``, which puts concurrent requests' jobs in one broker call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote

import anyio
from fastapi import Query, Request, Response
from fastapi.responses import JSONResponse

from gopherq import admin
from gopherq.access.roles import Role
from gopherq.app import GopherQ
from gopherq.events import Event
from gopherq.results.base import JobCursor, JobRecord
from gopherq.states import State
from gopherq.web.auth import Caller, check_role, require
from gopherq.web.blocking import run_blocking
from gopherq.web.inputs import body_schema, json_body
from gopherq.web.limits import enforce_send_rate
from gopherq.web.names import IdPath, QueueField, TaskField
from gopherq.web.problems import Problem, invalid, not_found
from gopherq.web.responses import json_response, model_response
from gopherq.web.routes.jobs_models import (
    MAX_BATCH,
    CreatedBatch,
    JobBatch,
    JobCancelled,
    JobCreated,
    JobDeleted,
    JobDetail,
    JobList,
    JobResult,
    JobRetried,
    JobSubmit,
    json_value,
)
from gopherq.web.routing import api_router
from gopherq.web.state import AppDep, server_state

router = api_router(tags=["jobs"])

MAX_WAIT = 60.0
"""Longest long poll of ``GET /jobs/{id}/result``, in seconds."""
MAX_WAITERS = 200
"""Long polls that may wait at once per server; past that, a poll answers at once."""
MAX_LIST = 1000
"""Most jobs one page lists."""

# Sending.

INLINE_CHECKS = 20
"""Jobs of a request checked on the event loop at most; a bigger batch is checked in
the thread pool (building and encoding a job's message takes tens of microseconds)."""


def _prepare(
    app: GopherQ, caller: Caller, items: Sequence[JobSubmit], prefix: str
) -> list[admin.Prepared]:
    """Check every item (fields named ``{prefix}field``): 403 for one the key may not
    send, 422 for one a send would refuse."""
    prepared = []
    for number, item in enumerate(items):
        field = prefix.format(number)
        submission = admin.Submission(item.task, item.args, item.kwargs, item.options())
        job = admin.prepare(app, submission)
        if not caller.may_send(item.task, job.queue):
            raise Problem(
                403,
                "forbidden",
                "Forbidden",
                f"{field}task: the key {caller.name!r} may not send {item.task!r} to "
                f"queue {job.queue!r}",
            )
        if job.problems:
            raise Problem(
                422,
                "invalid-job",
                "Invalid job",
                "; ".join(f"{field}{name}: {detail}" for name, detail in job.problems),
                errors=[(field + name, detail) for name, detail in job.problems],
            )
        prepared.append(job)
    return prepared


async def _send(
    request: Request,
    caller: Caller,
    items: Sequence[JobSubmit],
    prefix: str,
) -> list[admin.Submitted]:
    """Check every item, charge them to the key's send rate, then send them all in one
    broker call (``ServerState.sender``, with other requests' jobs); nothing is sent
    when one is refused."""
    state = server_state(request)  # not a dependency: each costs a few percent of a send
    if len(items) > INLINE_CHECKS:
        prepared = await run_blocking(_prepare, state.app, caller, items, prefix)
    else:
        prepared = _prepare(state.app, caller, items, prefix)
    enforce_send_rate(request, caller, len(prepared))
    results = await state.sender.send([job.signature for job in prepared])
    return admin.submitted(prepared, results)


def _created(sent: admin.Submitted) -> JobCreated:
    return JobCreated(id=sent.id, task=sent.task, queue=sent.queue, new=sent.new)


@router.post(
    "/jobs",
    name="jobs.create",
    summary="Send a job",
    status_code=201,
    response_model=JobCreated,
    responses={
        200: {"model": JobCreated, "description": "Its idempotency key was held: that job"},
        201: {"description": "Sent", "headers": {"Location": {"schema": {"type": "string"}}}},
    },
    openapi_extra=body_schema(JobSubmit),
)
async def create_job(request: Request) -> JSONResponse:
    """Send one job: 201 with its id and a ``Location``; 200 with the earlier job's id
    when a job of the queue holds the idempotency key, live or finished within its
    ``key_ttl`` (nothing is sent)."""
    # The hottest route: the role check and the body are read here rather than as
    # parameters, which FastAPI would resolve for each request at several times the cost.
    caller = await check_role(request, Role.SUBMITTER)
    body = await json_body(request, JobSubmit)
    [sent] = await _send(request, caller, [body], "body.")
    # The job's URL is this one's and its id (jobs.get): url_for would search every
    # route of the app for each job sent.
    location = f"{request.scope['path'].rstrip('/')}/{quote(sent.id, safe='')}"
    return JSONResponse(
        _created(sent).model_dump(), 201 if sent.new else 200, headers={"Location": location}
    )


@router.post(
    "/jobs:batch",
    name="jobs.create_many",
    summary=f"Send up to {MAX_BATCH} jobs in one broker call",
    status_code=201,
    response_model=CreatedBatch,
)
async def create_jobs(
    request: Request,
    body: JobBatch,
    caller: Annotated[Caller, require(Role.SUBMITTER)],
) -> CreatedBatch:
    """Check every job, then send them all in one broker call (201); when one is
    refused (422 naming ``body.jobs.N.field``, or 403), none is sent. Each answer says
    whether its job is new or the holder of its idempotency key."""
    sent = await _send(request, caller, body.jobs, "body.jobs.{}.")
    return CreatedBatch(jobs=[_created(s) for s in sent])


# Reading.


@router.get(
    "/jobs",
    name="jobs.list",
    summary="List jobs, newest first",
    response_model=JobList,
    dependencies=[require(Role.VIEWER)],
)
def list_jobs(
    *,
    app: AppDep,
    state: Annotated[State | None, Query(description="Only jobs in this state.")] = None,
    task: Annotated[TaskField | None, Query(description="Only this task.")] = None,
    queue: Annotated[QueueField | None, Query(description="Only this queue.")] = None,
    since: Annotated[
        float | None,
        Query(ge=0, allow_inf_nan=False, description="Sent at this Unix time or later."),
    ] = None,
    until: Annotated[
        float | None, Query(ge=0, allow_inf_nan=False, description="Sent before this Unix time.")
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            max_length=512,
            pattern="^[A-Za-z0-9_-]+$",
            description="The next of the previous page (opaque).",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
) -> Response:
    """A page of the job history (kept as long as results), newest sent first; pass
    ``next`` as ``cursor`` for the following page. A page may hold fewer jobs than
    ``limit`` and still have a ``next`` (on Redis, filters search a bounded window
    per page)."""
    after = None
    if cursor is not None:
        try:
            after = JobCursor.from_text(cursor)
        except ValueError as exc:
            raise invalid("query.cursor", str(exc)) from None
    page = admin.job_page(
        app, state=state, task=task, queue=queue, since=since, until=until, after=after, limit=limit
    )
    jobs = [_summary(r) for r in page.records]
    return json_response({"jobs": jobs, "next": None if page.next is None else page.next.to_text()})


def _summary(record: JobRecord) -> dict[str, Any]:
    """A record as listings show it (a ``JobSummary``'s JSON object, built without the
    model: a page holds up to 1,000): its result and checkpoint are not decoded."""
    error, progress = record.error, record.progress
    return {
        "id": record.id,
        "state": record.state.value,
        "task": record.task,
        "queue": record.queue,
        "attempts": record.attempts,
        "created": record.created,
        "started": record.started,
        "finished": record.finished,
        "worker": record.worker,
        "error": None
        if error is None
        else {"type": error.type, "message": error.message, "traceback": ""},
        "progress": None if progress is None else progress._asdict(),
    }


def _detail(info: dict[str, Any], events: list[Event] | None) -> JobDetail:
    for name in ("args", "kwargs", "result", "checkpoint"):
        if name in info:
            info[name] = json_value(info[name])
    if events is not None:
        sent = next((e for e in events if e.task is not None), None)
        if sent is not None and "task" not in info:  # no record yet: what it was sent as
            info.update(task=sent.task, queue=sent.queue)
        info["events"] = [
            {**e.to_map(), "extra": json_value(dict(e.extra)), "cursor": e.cursor} for e in events
        ]
    return JobDetail.model_validate(info)


@router.get(
    "/jobs/{id}",
    name="jobs.get",
    summary="A job: state, result or error, progress, events",
    response_model=JobDetail,
    dependencies=[require(Role.VIEWER)],
)
def get_job(id: IdPath, app: AppDep) -> Response:
    """Everything known of job ``id``: its record (result or error with traceback,
    attempts, progress, checkpoint, times, worker) and its retained events. 404 when
    neither the result store nor the broker knows it. Its ``args`` and ``kwargs``
    while the broker holds its message (not once it succeeded)."""
    info = admin.find_job(app, id, arguments=True)
    if info is None:
        raise not_found("job", id)
    events = admin.job_events(app, id, info.get("created"), info.get("finished"))
    return model_response(_detail(info, events))


@router.get(
    "/jobs/{id}/result",
    name="jobs.result",
    summary="Wait for a job's result",
    response_model=JobResult,
    responses={202: {"model": JobResult, "description": "Not finished within the wait"}},
    dependencies=[require(Role.VIEWER)],
)
async def job_result(
    id: IdPath,
    request: Request,
    app: AppDep,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT, allow_inf_nan=False, description="Seconds to wait for the end."),
    ] = 0.0,
) -> Any:
    """200 once the job finished: its value when it SUCCEEDED, else its error (FAILED,
    DEAD, CANCELLED, EXPIRED). 202 with its state while it is not finished after
    ``wait`` seconds (a long poll that ends as soon as the job does). 404 for an id
    nobody knows."""
    limiter = _waiters(request)
    seconds = wait if limiter.available_tokens >= 1 else 0.0
    result = await anyio.to_thread.run_sync(_outcome, app, id, seconds, limiter=limiter)
    if result is None:
        raise not_found("job", id)
    body = result.model_dump(mode="json")
    return JSONResponse(body, 200 if result.finished else 202)


def _waiters(request: Request) -> anyio.CapacityLimiter:
    """The threads long polls of this server wait in (``MAX_WAITERS``)."""
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, "job_waiters", None)
    if limiter is None:
        limiter = request.app.state.job_waiters = anyio.CapacityLimiter(MAX_WAITERS)
    return limiter


def _outcome(app: GopherQ, id: str, wait: float) -> JobResult | None:
    """The result of job ``id`` once finished or after ``wait`` seconds; None if unknown."""
    info = admin.find_job(app, id)
    if info is None:
        return None
    if wait > 0 and not State(info["state"]).finished:
        record = app.backend.wait(id, wait)
        if record is not None:
            info = admin.record_info(app, admin.current(app, record))
    state = State(info["state"])
    return JobResult(
        id=id,
        state=state,
        finished=state.finished,
        result=json_value(info.get("result")) if state is State.SUCCEEDED else None,
        error=info.get("error") if state.finished else None,
    )


# Changing.


@router.post(
    "/jobs/{id}/cancel",
    name="jobs.cancel",
    summary="Cancel a job",
    response_model=JobCancelled,
    responses={409: {"description": "Already finished"}},
)
def cancel_job(
    id: IdPath, app: AppDep, caller: Annotated[Caller, require(Role.OPERATOR)]
) -> JobCancelled:
    """A queued or scheduled job never runs (``cancelled``); a running one is stopped by
    its worker (``stopping``). 409 for a job already finished or dead-lettered."""
    found = {c.id: c.was for c in app.cancel([id])}
    outcome = admin.cancel_outcome(found.get(id))
    if outcome == "not-found":
        info = admin.find_job(app, id)
        if info is None:
            raise not_found("job", id)
        raise _conflict(
            id, info["state"], "only a queued, scheduled or running job can be cancelled"
        )
    return JobCancelled(id=id, outcome="stopping" if outcome == "stopping" else "cancelled")


_RETRY_CONFLICTS = {
    "not-finished": "it has not finished: cancel it first, or wait",
    "succeeded": "it succeeded",
    "key-held": "a live job holds its idempotency key",
    "no-body": "its message is not kept (only a dead letter keeps the arguments of a job)",
}


@router.post(
    "/jobs/{id}/retry",
    name="jobs.retry",
    summary="Run a dead-lettered job again",
    response_model=JobRetried,
    responses={409: {"description": "Not a job that can run again"}},
)
def retry_job(
    id: IdPath, app: AppDep, caller: Annotated[Caller, require(Role.OPERATOR)]
) -> JobRetried:
    """A job in the dead letters (it failed with no retries left, was rejected or
    expired) is made ready again under the same id, its attempts from 0. 409 for
    any other job: one not finished, one that succeeded, one whose idempotency key a
    live job holds, and one whose message is not kept (a cancelled job, or one whose
    dead letter was purged)."""
    outcome = admin.retry_job(app, id)
    if outcome == "requeued":
        return JobRetried(id=id, state=State.QUEUED)
    if outcome == "not-found":
        raise not_found("job", id)
    state = (admin.find_job(app, id) or {}).get("state", "")
    raise _conflict(id, state, _RETRY_CONFLICTS[outcome])


@router.delete(
    "/jobs/{id}",
    name="jobs.delete",
    summary="Forget a job",
    response_model=JobDeleted,
    responses={409: {"description": "Running"}},
)
def delete_job(
    id: IdPath, app: AppDep, caller: Annotated[Caller, require(Role.OPERATOR)]
) -> JobDeleted:
    """Delete the job's record, and its message where it still waits (queued,
    scheduled or dead-lettered: it will not run). 409 for a running job (cancel it
    first)."""
    outcome = admin.delete_job(app, id)
    if outcome == "not-found":
        raise not_found("job", id)
    if outcome == "running":
        raise _conflict(id, State.STARTED.value, "it is running: cancel it first")
    return JobDeleted(id=id)


def _conflict(id: str, state: str, why: str) -> Problem:
    return Problem(409, "job-state-conflict", "Conflict", f"job {id!r} ({state}): {why}")
