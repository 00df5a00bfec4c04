"""The dashboard's pages and actions, served at ``/``."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from gopherq.access.keys import key_id_of
from gopherq.access.roles import Role
from gopherq.admin_queues import QueueInfo
from gopherq.web.blocking import Route, run_blocking
from gopherq.web.ui import charts, views
from gopherq.web.ui.context import (
    DashboardDep,
    PageError,
    ViewerDep,
    action_form,
    read_form,
    record,
)
from gopherq.web.ui.render import clear_cookie, set_cookie, url
from gopherq.web.ui.security import same_origin

if TYPE_CHECKING:
    from gopherq.app import GopherQ

router = APIRouter(route_class=Route, include_in_schema=False)

LOGIN_MESSAGES = {
    "missing": "Enter an API key.",
    "invalid": "That key is not valid: it is unknown, expired or revoked.",
    "cross-site": "The login form was sent from another site.",
}


@router.get("/login", name="ui.login")
def login_page(request: Request, ui: DashboardDep) -> Response:
    """The login form; straight to the overview on a ``--no-auth`` server."""
    if not ui.state.auth:
        return RedirectResponse(url(request, "/"), 303)
    return ui.page(request, "login.html", None, page="login", message="")


@router.post("/login", name="ui.login.submit")
async def login(request: Request, ui: DashboardDep) -> Response:
    """Check the posted key; on success a session cookie and the overview."""
    if not ui.state.auth:
        return RedirectResponse(url(request, "/"), 303)
    problem = "cross-site" if not same_origin(request) else None
    token = "" if problem else (await read_form(request)).get("key", "").strip()
    if problem is None and not token:
        problem = "missing"
    caller = None if problem else await run_blocking(ui.state.authenticate, token)
    key_id = key_id_of(token)
    if caller is None or key_id is None:
        reason = problem or "invalid"
        status = 403 if reason == "cross-site" else 401
        return ui.page(
            request, "login.html", None, status=status, page="login", message=LOGIN_MESSAGES[reason]
        )
    response = RedirectResponse(url(request, "/"), 303)
    set_cookie(response, request, ui.sessions, ui.sessions.new(key_id))
    return response


@router.post("/logout", name="ui.logout")
async def logout(request: Request, ui: DashboardDep, who: ViewerDep) -> Response:
    """End the session."""
    await action_form(request, who, Role.VIEWER)
    ui.sessions.end(who.session)
    response = RedirectResponse(url(request, "/login" if ui.state.auth else "/"), 303)
    clear_cookie(response, request)
    return response


@router.get("/", name="ui.overview")
def overview(request: Request, ui: DashboardDep, who: ViewerDep) -> Response:
    """Throughput and failure rate over the last hour, queue depths, workers online,
    dead letters by reason."""
    data = views.overview(ui.state.app)
    drawn = charts.charts(ui.state.app)
    return ui.page(request, "overview.html", who, page="overview", data=data, charts=drawn)


@router.get("/overview.json", name="ui.overview.data")
def overview_data(ui: DashboardDep, who: ViewerDep) -> Response:
    """The overview's numbers, for the page's live updates."""
    data = views.overview(ui.state.app)
    return JSONResponse(data.to_json(), headers={"Cache-Control": "no-store"})


@router.get("/queues", name="ui.queues")
def queues(request: Request, ui: DashboardDep, who: ViewerDep) -> Response:
    """Every queue: depth by priority, scheduled, running, dead, oldest age, and the
    pause, resume and purge buttons for operators."""
    rows = views.queue_rows(ui.state.app)
    return ui.page(request, "queues.html", who, page="queues", queues=rows)


@router.get("/queues/{name}/purge", name="ui.queues.purge.confirm")
def purge_confirm(request: Request, name: str, ui: DashboardDep, who: ViewerDep) -> Response:
    """The confirmation step of a purge (a page, so it works without JavaScript)."""
    if not who.may(Role.OPERATOR):
        raise PageError(
            403, f"Purging needs the operator role; your key is {who.caller.role.label}."
        )
    row = _queue(ui.state.app, name)
    return ui.page(request, "purge.html", who, page="queues", queue=row)


@router.post("/queues/{name}/{action}", name="ui.queues.action")
async def queue_action(
    request: Request, name: str, action: str, ui: DashboardDep, who: ViewerDep
) -> Response:
    """Pause, resume or purge (with ``confirm=yes``) a queue; back to the queues page.
    Refused attempts go to the audit log too."""
    if action not in ("pause", "resume", "purge"):
        raise PageError(404, "There is no such action.")
    try:
        fields = await action_form(request, who, Role.OPERATOR)
    except PageError as exc:
        record(request, who, f"queues.{action}", name, exc.status)
        raise
    app = ui.state.app
    await run_blocking(_queue, app, name)
    if action == "purge" and fields.get("confirm") != "yes":
        return RedirectResponse(url(request, f"/queues/{quote(name, safe='')}/purge"), 303)
    broker_call = {
        "pause": app.broker.pause,
        "resume": app.broker.resume,
        "purge": app.broker.purge,
    }
    await run_blocking(broker_call[action], name)
    record(request, who, f"queues.{action}", name, 303)
    return RedirectResponse(url(request, "/queues"), 303)


def _queue(app: GopherQ, name: str) -> QueueInfo:
    """The known queue ``name``; the 404 page otherwise."""
    for row in views.queue_rows(app):
        if row.name == name:
            return row
    raise PageError(404, "There is no such queue.")
