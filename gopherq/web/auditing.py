"""The audit log's recorder: an entry for every mutating call under ``/api/v1``.

An ASGI middleware, so that denied (401, 403), invalid and failed calls are
recorded as well as those that succeed: the action is the route's name
(``jobs.create``), the target its ``id`` or ``name`` path parameter or, for a
create call, the ``task`` or ``name`` of a small JSON body, and the outcome the
status answered. Reads (GET, HEAD) pass straight through. Entries go to the
store from a thread of their own (``AuditWriter``): recording never delays or
fails a request. The client address is the peer of the connection: proxy
headers are not trusted.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gopherq.access.audit import AuditEntry
from gopherq.web.state import ServerState

logger = logging.getLogger("gopherq.access")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODY_PEEK = 4096
"""A body longer than this is not read for a target: the path stands for it."""
TARGET_LENGTH = 200


class AuditMiddleware:
    """Records every mutating call under ``prefix``; see the module docstring."""

    def __init__(self, app: ASGIApp, state: ServerState, prefix: str) -> None:
        self.app = app
        self.state = state
        self.prefix = prefix.rstrip("/") + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        if not path.startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        status = 500
        body = bytearray()

        async def peek() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) <= BODY_PEEK:
                body.extend(message.get("body", b""))
            return message

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, peek, answer)
        finally:
            try:
                self.state.audit.submit(_entry(scope, path, status, bytes(body)))
            except Exception:
                logger.exception("audit entry not recorded: %s %s", scope["method"], path)


def _route_path(scope: Scope) -> str:
    """The path inside the app (without the mount point when mounted in another app)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _entry(scope: Scope, path: str, status: int, body: bytes) -> AuditEntry:
    caller = scope.get("state", {}).get("caller")
    route = scope.get("route")
    params: dict[str, Any] = scope.get("path_params") or {}
    target = params.get("id") or params.get("name")
    if target is None:
        target = _summary(body) if len(body) <= BODY_PEEK else None
    client = scope.get("client")
    return AuditEntry(
        time=time.time(),
        key=None if caller is None else caller.name,
        role=None if caller is None else caller.role.label,
        action=getattr(route, "name", None) or "-",
        target=str(target or path)[:TARGET_LENGTH],
        client=str(client[0]) if client else "-",
        status=status,
        method=scope["method"],
        path=path[:TARGET_LENGTH],
    )


def _summary(body: bytes) -> str | None:
    """What a create call's JSON body names: its ``task`` or ``name``, or how many jobs."""
    if not body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict):
        for field in ("task", "name"):
            if isinstance(data.get(field), str):
                return str(data[field])
        data = data.get("jobs")
    if isinstance(data, list):
        return f"{len(data)} jobs"
    return None
