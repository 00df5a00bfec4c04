"""Who is calling: ``Authorization: Bearer KEY`` to a ``Caller``, and role checks.

Deny by default: a route without ``require`` is not reachable by anyone but an
anonymous admin of a ``--no-auth`` server, and a request without a valid key
gets 401 with nothing more said. A key whose role is below the route's gets 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from gopherq.access.rate import Rate
from gopherq.access.roles import Role
from gopherq.web.blocking import run_blocking
from gopherq.web.problems import Problem
from gopherq.web.state import server_state


@dataclass(frozen=True, slots=True)
class Caller:
    """The key a request came with (or the anonymous admin of a ``--no-auth`` server)."""

    name: str
    role: Role
    tasks: frozenset[str] | None = None
    """The only task names this key may send; None: any."""
    queues: frozenset[str] | None = None
    """The only queues this key may send to; None: any."""
    rate: Rate | None = None
    """How fast this key may send jobs (its own rate, else the server's); None: no
    limit. See ``gopherq.web.limits.enforce_send_rate``."""

    def may_send(self, task: str, queue: str) -> bool:
        """Whether this key may send ``task`` to ``queue``."""
        return (
            self.role >= Role.SUBMITTER
            and (self.tasks is None or task in self.tasks)
            and (self.queues is None or queue in self.queues)
        )


ANONYMOUS = Caller("anonymous", Role.ADMIN)
"""Every caller of a ``--no-auth`` server."""

UNAUTHORIZED = Problem(
    401,
    "unauthorized",
    "Unauthorized",
    "a valid API key is required",
    headers={"WWW-Authenticate": "Bearer"},
)


def bearer_token(request: Request) -> str | None:
    """The key of an ``Authorization: Bearer KEY`` header; None without one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(request: Request) -> Caller:
    """The caller of ``request``; 401 without a valid key. The caller is kept as
    ``request.state.caller`` for the audit log."""
    state = server_state(request)
    if not state.auth:
        caller: Caller | None = ANONYMOUS
    else:
        token = bearer_token(request)
        caller = None if token is None else state.authenticate(token)
    if caller is None:
        raise UNAUTHORIZED
    request.state.caller = caller
    return caller


def require(role: Role) -> Any:
    """A route dependency: the ``Caller``, or 401/403 unless its role is at least ``role``.

    Use as ``caller: Annotated[Caller, require(Role.OPERATOR)]`` or in
    ``dependencies=[...]``. A coroutine: a key whose record is cached is checked on
    the event loop (an HMAC); one that must be read from the store is read in the
    thread pool.
    """

    async def check(request: Request) -> Caller:
        return await check_role(request, role)

    dependency: Callable[[Request], Awaitable[Caller]] = check
    return Depends(dependency)


async def check_role(request: Request, role: Role) -> Caller:
    """``require``'s check, for a route that calls it itself: the ``Caller``, or 401/403."""
    state = server_state(request)
    token = bearer_token(request) if state.auth else None
    if token is not None and state.reads_store(token):
        caller = await run_blocking(authenticate, request)
    else:
        caller = authenticate(request)
    if caller.role < role:
        raise Problem(
            403,
            "forbidden",
            "Forbidden",
            f"this needs the {role.label} role; the key {caller.name!r} is {caller.role.label}",
        )
    return caller
