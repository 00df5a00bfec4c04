"""What every dashboard request reaches: the ``Dashboard`` of the server, who is
looking (``viewer``), form checks, and the error pages."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qsl

import jinja2
from fastapi import Depends
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from gopherq.access.audit import AuditEntry
from gopherq.access.roles import Role
from gopherq.web.auth import ANONYMOUS, Caller
from gopherq.web.blocking import run_blocking
from gopherq.web.problems import Problem
from gopherq.web.state import ServerState
from gopherq.web.ui.render import Viewer, environment, render, url
from gopherq.web.ui.security import same_origin
from gopherq.web.ui.session import ANONYMOUS_KEY, COOKIE, Sessions

FORM_LIMIT = 16 * 1024
"""Bytes of a form body read at most."""


class PageError(Exception):
    """Raise in a page to answer with the error page: ``status`` and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoginRequired(Exception):
    """Raised for a page seen without a valid session: answered by the login page."""


@dataclass(slots=True)
class Dashboard:
    """One server's dashboard: its sessions and templates (``app.state.dashboard``)."""

    state: ServerState
    api_prefix: str
    sessions: Sessions = field(default_factory=Sessions)
    templates: jinja2.Environment = field(default_factory=environment)

    def page(
        self,
        request: Request,
        template: str,
        viewer: Viewer | None,
        *,
        status: int = 200,
        **context: object,
    ) -> Response:
        """``template`` rendered for ``viewer``."""
        return render(
            self.templates, self.sessions, request, template, viewer, status=status, **context
        )

    def viewer_of(self, request: Request) -> Viewer | None:
        """Who is looking: the session's key if still valid, or the anonymous admin of a
        ``--no-auth`` server (with a fresh session on the first visit); None otherwise."""
        session = self.sessions.decode(request.cookies.get(COOKIE))
        if not self.state.auth:
            if session is not None and session.key_id == ANONYMOUS_KEY:
                return Viewer(ANONYMOUS, session)
            return Viewer(ANONYMOUS, self.sessions.new(ANONYMOUS_KEY), fresh=True)
        if session is None or session.key_id == ANONYMOUS_KEY:
            return None
        key = self.state.app.access.store.key(session.key_id)
        if key is None or not key.active(self.state.app.access.clock()):
            return None
        return Viewer(Caller(key.name, key.role), session)

    async def on_page_error(self, request: Request, exc: Exception) -> Response:
        """The error page of a ``PageError``."""
        assert isinstance(exc, PageError)
        viewer = getattr(request.state, "viewer", None)
        return self.page(
            request,
            "error.html",
            viewer,
            status=exc.status,
            code=exc.status,
            message=exc.message,
            page="error",
        )

    async def on_login_required(self, request: Request, exc: Exception) -> Response:
        """To the login page; 401 for the live-update data and feed, which a script
        reads."""
        path = request.url.path
        if path.endswith(".json") or path.startswith(url(request, "/live/")):
            return JSONResponse({"detail": "log in again"}, 401)
        return RedirectResponse(url(request, "/login"), 303)

    async def on_not_found(self, request: Request, exc: Exception) -> Response:
        """The 404 page for a browser outside the API; a problem document otherwise."""
        path = request.url.path
        if path.startswith(
            url(request, self.api_prefix + "/")
        ) or "text/html" not in request.headers.get("accept", ""):
            detail = getattr(exc, "detail", None)
            detail = detail if isinstance(detail, str) else "Not Found"
            headers = getattr(exc, "headers", None)
            return Problem(404, "not-found", "Not found", detail, headers=headers).response(path)
        request.state.viewer = await run_blocking(self.viewer_of, request)
        return await self.on_page_error(request, PageError(404, "There is no such page."))


def dashboard(request: Request) -> Dashboard:
    """The ``Dashboard`` of the server that received ``request``."""
    found: Dashboard = request.app.state.dashboard
    return found


async def _dashboard_dependency(request: Request) -> Dashboard:
    return dashboard(request)  # a coroutine: FastAPI runs a plain function in a thread


async def viewer(request: Request) -> Viewer:
    """A page dependency: who is looking; the login page when nobody valid is."""
    found = await run_blocking(dashboard(request).viewer_of, request)
    if found is None:
        raise LoginRequired
    request.state.viewer = found
    request.state.caller = found.caller
    return found


DashboardDep = Annotated[Dashboard, Depends(_dashboard_dependency)]
ViewerDep = Annotated[Viewer, Depends(viewer)]


class Form(dict[str, str]):
    """The fields of a form (the last value of a repeated one); ``all`` gives every
    value of a repeated field (checkboxes)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs

    def all(self, name: str) -> list[str]:
        """Every value of field ``name``, in form order."""
        return [value for key, value in self.pairs if key == name]


async def read_form(request: Request) -> Form:
    """The fields of an urlencoded form body."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise PageError(413, "The form is too large.")
    return Form(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def action_form(request: Request, who: Viewer, role: Role) -> Form:
    """The fields of an action's form, after its checks: same origin, the session's
    CSRF token, and a role of at least ``role``. 403 otherwise, before anything changes."""
    if not same_origin(request):
        raise PageError(403, "This form was sent from another site.")
    fields = await read_form(request)
    if not dashboard(request).sessions.csrf_valid(who.session, fields.get("csrf")):
        raise PageError(
            403,
            "This form has expired or was not sent from the dashboard: reload the page.",
        )
    if not who.may(role):
        raise PageError(
            403, f"This needs the {role.label} role; your key is {who.caller.role.label}."
        )
    return fields


def record(request: Request, who: Viewer, action: str, target: str, status: int) -> None:
    """Add a dashboard action to the audit log, as the API's calls are."""
    client = request.client
    dashboard(request).state.audit.submit(
        AuditEntry(
            time=time.time(),
            key=who.caller.name,
            role=who.caller.role.label,
            action=action,
            target=target[:200],
            client=client.host if client else "-",
            status=status,
            method=request.method,
            path=request.url.path[:200],
        )
    )


async def audited_form(request: Request, who: Viewer, role: Role, action: str, target: str) -> Form:
    """``action_form``, with a refused attempt written to the audit log as ``action``
    on ``target`` (a done one is recorded by the caller, with its status)."""
    try:
        return await action_form(request, who, role)
    except PageError as exc:
        record(request, who, action, target, exc.status)
        raise


def json_field(fields: Form, name: str, kind: type) -> Any:
    """Field ``name`` of a form as JSON of type ``kind`` (a list or a dict); None when
    left blank. ``ValueError`` saying what is wrong otherwise."""
    text = fields.get(name, "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be a JSON {'array' if kind is list else 'object'}.")
    return value
