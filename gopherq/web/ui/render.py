"""Rendering pages: the Jinja2 environment (autoescaped) and the session cookie."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gopherq.access.roles import Role
from gopherq.version import __version__
from gopherq.web.auth import Caller
from gopherq.web.ui.session import COOKIE, Session, Sessions

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

NAVIGATION = (
    ("overview", "/", "Overview"),
    ("queues", "/queues", "Queues"),
    ("jobs", "/jobs", "Jobs"),
    ("dead", "/dead", "Dead letters"),
    ("schedules", "/schedules", "Schedules"),
    ("workers", "/workers", "Workers"),
)
"""The base layout's navigation: (page id, path, label)."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking at a page, and through which session."""

    caller: Caller
    session: Session
    fresh: bool = False
    """True when the session was made for this request (its cookie is set with it)."""

    def may(self, role: Role) -> bool:
        """Whether the viewer's role is at least ``role`` (which buttons exist)."""
        return self.caller.role >= role


def environment() -> jinja2.Environment:
    """The templates, with autoescape on for every one of them."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["age"] = age
    env.filters["when"] = when
    env.globals.update(navigation=NAVIGATION, version=__version__, Role=Role)
    return env


def age(seconds: float | None) -> str:
    """``seconds`` as a short duration (``42s``, ``3m``, ``5h``, ``2d``); '-' for None."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def when(timestamp: float) -> str:
    """A Unix time in UTC, to the second."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(
    env: jinja2.Environment,
    sessions: Sessions,
    request: Request,
    template: str,
    viewer: Viewer | None,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """``template`` as a page; sets the session cookie of a fresh session."""
    html = env.get_template(template).render(
        root=root_of(request),
        viewer=viewer,
        csrf=sessions.csrf_token(viewer.session) if viewer else "",
        **context,
    )
    response = HTMLResponse(html, status, headers={"Cache-Control": "no-store"})
    if viewer is not None and viewer.fresh:
        set_cookie(response, request, sessions, viewer.session)
    return response


def root_of(request: Request) -> str:
    """The path the dashboard is mounted at: '' at the root of a server, else a prefix
    such as ``/gopherq`` (``app.asgi()`` mounted in another ASGI app)."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def url(request: Request, path: str) -> str:
    """``path`` of the dashboard as the browser addresses it."""
    return root_of(request) + path


def set_cookie(response: Response, request: Request, sessions: Sessions, session: Session) -> None:
    """Keep ``session`` in the browser: HttpOnly, SameSite=Strict, Secure over TLS."""
    response.set_cookie(
        COOKIE,
        sessions.encode(session),
        max_age=int(sessions.lifetime),
        path=root_of(request) or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request) -> None:
    """End the browser's session cookie."""
    response.delete_cookie(
        COOKIE,
        path=root_of(request) or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
