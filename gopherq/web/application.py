"""``create_app``: the ASGI application for one gopherq app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI

from gopherq.app import GopherQ
from gopherq.version import __version__
from gopherq.web import docs, problems
from gopherq.web.auditing import AuditMiddleware
from gopherq.web.blocking import run_blocking
from gopherq.web.inputs import InputLimits
from gopherq.web.routes import ROUTERS, health
from gopherq.web.routing import API_PREFIX, add_routes
from gopherq.web.state import ServerState
from gopherq.web.ui import install as install_dashboard

OPENAPI_URL = f"{API_PREFIX}/openapi.json"


def create_app(app: GopherQ, *, auth: bool = True, threads: int | None = None) -> FastAPI:
    """The HTTP API of ``app``, to run under any ASGI server or mount in another app.

    ``auth=False`` lets every request in as an admin: only for a server bound to
    loopback (``gopherq serve --no-auth`` checks that). ``threads`` bounds the thread
    pool of the event loop the app starts on (``gopherq serve --threads``); None
    leaves it as it is, as a mounted app must: the pool is the host app's.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be 1 or more, not {threads}")
    state = ServerState(app, auth=auth, threads=threads)
    api = FastAPI(
        title=f"gopherq: {app.name}",
        version=__version__,
        openapi_url=OPENAPI_URL,
        docs_url=None,  # served by gopherq.web.docs, without a CDN
        redoc_url=None,
        lifespan=_closing(state),
    )
    api.state.gopherq = state
    # Added before any other middleware, so that those (the audit log's) wrap it and
    # see the calls it refuses.
    api.add_middleware(InputLimits, json_under=API_PREFIX + "/")
    api.add_middleware(AuditMiddleware, state=state, prefix=API_PREFIX)
    problems.install(api)
    docs.install(api, OPENAPI_URL)
    for router in (health.probes, *ROUTERS):  # each carries its prefix (see routing)
        add_routes(api, router)
    install_dashboard(api, state, API_PREFIX)
    return api


def _closing(state: ServerState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The server's lifespan: the sender runs while it serves; at shutdown, the sends and
    audit entries still queued are written."""

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        if state.threads is not None:
            to_thread.current_default_thread_limiter().total_tokens = state.threads
            pool = ThreadPoolExecutor(state.threads, thread_name_prefix="gopherq-web")
            asyncio.get_running_loop().set_default_executor(pool)  # run_blocking's
        state.sender.start()
        try:
            yield
        finally:
            await run_blocking(state.sender.close)
            await run_blocking(state.audit.close)

    return lifespan
