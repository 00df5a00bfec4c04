"""``create_app``: the ASGI application for one gopherq app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gopherq.app import GopherQ
from gopherq.version import __version__
from gopherq.web import problems
from gopherq.web.routes import ROUTERS, health
from gopherq.web.state import ServerState

API_PREFIX = "/api/v1"


def create_app(app: GopherQ, *, auth: bool = True) -> FastAPI:
    """The HTTP API of ``app``, to run under any ASGI server or mount in another app.

    ``auth=False`` lets every request in as an admin: only for a server bound to
    loopback (``gopherq serve --no-auth`` checks that).
    """
    state = ServerState(app, auth=auth)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.sender.start()
        try:
            yield
        finally:
            state.sender.close()

    api = FastAPI(
        lifespan=lifespan,
        title=f"gopherq: {app.name}",
        version=__version__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        responses=problems.PROBLEM_RESPONSES,
    )
    api.state.gopherq = state
    problems.install(api)
    api.include_router(health.probes)
    for router in ROUTERS:
        api.include_router(router, prefix=API_PREFIX)
    return api
