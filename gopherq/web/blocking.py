"""Blocking calls (the broker's, the stores') off the event loop, in a thread pool.

FastAPI runs a plain ``def`` route in anyio's worker threads, whose hand-off (a
capacity limiter, a cancel scope, a queue with a condition variable per call)
costs about three times the CPU of ``loop.run_in_executor``: in process, a small
read cost twice as much through it. ``run_blocking`` hands a call to the event
loop's default executor instead; the routes and the dashboard make every
blocking call through it, and ``Route`` makes every ``def`` route of a router do
so (FastAPI still reads the route's own signature, for its parameters and the
OpenAPI document). ``gopherq serve --threads`` sizes that executor; an app
mounted in another runs on its host's. Long polls of a job's result wait in
anyio's threads, under a bound of their own (``routes.jobs.MAX_WAITERS``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from fastapi.routing import APIRoute

P = ParamSpec("P")
R = TypeVar("R")


async def run_blocking(call: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``call(*args, **kwargs)`` in the event loop's default executor, with this task's
    context variables (as a route's own code would see them)."""
    context = contextvars.copy_context()
    bound = functools.partial(context.run, call, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(None, bound)


def off_loop(endpoint: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """A coroutine that runs ``endpoint`` with ``run_blocking``, with its signature."""

    @functools.wraps(endpoint)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await run_blocking(endpoint, *args, **kwargs)

    return run


class Route(APIRoute):
    """A route whose endpoint, when a plain function, runs with ``run_blocking``. Pass
    as ``APIRouter(route_class=Route)``."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = off_loop(endpoint)
        super().__init__(path, endpoint, **kwargs)
