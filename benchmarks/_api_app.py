"""The app ``bench_api.py`` serves, and a minimal ASGI app of the benchmark's own.

``app`` is the gopherq app ``gopherq serve -A _api_app`` loads: its broker URL comes
from the environment (``GQBENCH_API_BROKER``), events on the broker's own store.

``floor`` is not gopherq's HTTP API: a FastAPI app with a probe and three ways of
answering a minimal ``POST /jobs`` (one ``send`` per request, no auth, no audit),
to measure what uvicorn, FastAPI and one enqueue per request reach on this machine:

``/sync``      a ``def`` route (FastAPI's thread pool), ``app.send`` in it
``/inline``    an ``async def`` route calling the blocking ``app.send`` on the loop
``/batched``   an ``async def`` route awaiting ``Sender.send``: a thread that sends
               whatever is pending in one ``send_many`` (one round trip per batch)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from gopherq import GopherQ
from gopherq.task import Signature

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


def make_floor() -> FastAPI:
    """The floor app: see the module docstring."""
    from gopherq.web.sender import Sender

    sender = Sender(app)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sender.start()
        yield
        sender.close()

    api = FastAPI(lifespan=lifespan)

    @api.get("/live")
    def live() -> dict[str, str]:
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

    return api
