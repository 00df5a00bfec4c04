"""The app ``bench_api.py`` serves, and a minimal ASGI app of the benchmark's own.

``app`` is the gopherq app ``gopherq serve -A _api_app`` loads: its broker URL comes
from the environment (``GQBENCH_API_BROKER``), events on the broker's own store.

``floor`` is not gopherq's HTTP API: a FastAPI app with a probe and three ways of
answering a minimal ``POST /jobs`` (one ``send`` per request, no auth, no audit),
to measure what uvicorn, FastAPI and one enqueue per request reach on this machine:

``/live``      a ``def`` route answering a constant (``/live-async``: ``async def``)
``/sync``      a ``def`` route (FastAPI's thread pool), ``app.send`` in it
``/inline``    an ``async def`` route calling the blocking ``app.send`` on the loop
``/batched``   an ``async def`` route awaiting ``Sender.send``: a thread that sends
               whatever is pending in one ``send_many`` (one round trip per batch)
``/batched-deps``        the same with gopherq's ``StateDep`` and ``require(role)``
                         dependencies as they are (a plain function dependency
                         runs in FastAPI's thread pool)
``/batched-async-deps``  the same with ``async def`` equivalents of them (run on
                         the loop)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, Field

from gopherq import GopherQ
from gopherq.access.roles import Role
from gopherq.task import Signature
from gopherq.web.auth import Caller, authenticate, require
from gopherq.web.state import ServerState, StateDep

BROKER_VARIABLE = "GQBENCH_API_BROKER"

app = GopherQ("gqbench-api", broker=os.environ.get(BROKER_VARIABLE, "memory://"))


@app.task(name="bench.noop", ignore_result=True)
def noop(*args: Any, **kwargs: Any) -> None:
    """Does nothing: the jobs the benchmark sends are never run."""


class NewJob(BaseModel):
    task: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = None


class Created(BaseModel):
    id: str


def _signature(job: NewJob) -> Signature[Any]:
    options = {"queue": job.queue} if job.queue else {}
    return Signature(app.get_task(job.task), tuple(job.args), job.kwargs, options)


async def state_on_loop(request: Request) -> ServerState:
    """``StateDep``'s function as a coroutine: FastAPI runs it on the loop."""
    found: ServerState = request.app.state.gopherq
    return found


async def submitter_on_loop(request: Request) -> Caller:
    """``require(Role.SUBMITTER)``'s check as a coroutine."""
    caller = authenticate(request)
    assert caller.role >= Role.SUBMITTER
    return caller


def make_floor() -> FastAPI:
    """The floor app: see the module docstring."""
    state = ServerState(app, auth=False)
    sender = state.sender

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sender.start()
        yield
        sender.close()

    api = FastAPI(lifespan=lifespan)
    api.state.gopherq = state

    @api.get("/live")
    def live() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/live-async")
    async def live_async() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/sync", status_code=201)
    def sync(job: NewJob) -> Created:
        return Created(id=app.send(_signature(job)).id)

    @api.post("/inline", status_code=201)
    async def inline(job: NewJob) -> Created:
        return Created(id=app.send(_signature(job)).id)

    @api.post("/batched", status_code=201)
    async def batched(job: NewJob) -> Created:
        [result] = await sender.send([_signature(job)])
        return Created(id=result.id)

    @api.post("/batched-deps", status_code=201, dependencies=[require(Role.SUBMITTER)])
    async def batched_deps(job: NewJob, state: StateDep) -> Created:
        [result] = await state.sender.send([_signature(job)])
        return Created(id=result.id)

    @api.post("/batched-async-deps", status_code=201, dependencies=[Depends(submitter_on_loop)])
    async def batched_async_deps(
        job: NewJob, state: Annotated[ServerState, Depends(state_on_loop)]
    ) -> Created:
        [result] = await state.sender.send([_signature(job)])
        return Created(id=result.id)

    return api
