"""The workers page (``admin_workers.workers``) and the schedules page: entries with
their next and last run; add, pause, resume and remove for admins."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gopherq import admin, admin_workers
from gopherq.access.roles import Role
from gopherq.errors import ConfigurationError, GopherQError
from gopherq.web.blocking import Route, run_blocking
from gopherq.web.names import name_problem
from gopherq.web.ui.context import (
    Dashboard,
    DashboardDep,
    Form,
    PageError,
    ViewerDep,
    audited_form,
    json_field,
    record,
)
from gopherq.web.ui.render import Viewer, url

router = APIRouter(route_class=Route, include_in_schema=False)

_DONE = {"added": "added", "paused": "paused", "resumed": "resumed", "removed": "removed"}
"""The ``done`` values of the schedules page's redirects, and what it then says."""


@router.get("/workers", name="ui.workers")
def workers(request: Request, ui: DashboardDep, who: ViewerDep) -> Response:
    """Each worker: host, pid, children, heartbeat age, tasks done, current tasks."""
    app = ui.state.app
    stale = request.query_params.get("stale") == "1"
    found = admin_workers.workers(app, stale=stale) if app.events.enabled else None
    return ui.page(request, "workers.html", who, page="workers", workers=found, stale=stale)


@router.get("/schedules", name="ui.schedules")
def schedules(request: Request, ui: DashboardDep, who: ViewerDep) -> Response:
    """Every periodic entry with its next and last run, and the add form for admins."""
    return _schedules(request, ui, who)


def _schedules(
    request: Request,
    ui: Dashboard,
    who: Viewer,
    *,
    status: int = 200,
    message: str = "",
    form: dict[str, str] | None = None,
) -> Response:
    app = ui.state.app
    return ui.page(
        request,
        "schedules.html",
        who,
        status=status,
        page="schedules",
        entries=app.schedules.list(),
        tasks=[t.name for t in admin.registered_tasks(app)],
        message=message,
        done=_DONE.get(request.query_params.get("done", ""), ""),
        form=form or {},
    )


@router.post("/schedules/add", name="ui.schedules.add")
async def add(request: Request, ui: DashboardDep, who: ViewerDep) -> Response:
    """Add a dynamic entry from the form; the page again with the reason if it is bad."""
    fields = await audited_form(request, who, Role.ADMIN, "schedules.add", "-")
    name = fields.get("name", "").strip()
    try:
        options = _options(fields)
        problem = name_problem("schedule", name)
        if problem:
            raise ValueError(f"The name {problem}.")
        if ui.state.app.schedules.source(name) is not None:
            raise ValueError(f"There is an entry named {name!r} already.")
        task = fields.get("task", "").strip()
        if task not in ui.state.app.tasks:
            raise ValueError(f"No task {task!r} is registered.")
        await run_blocking(lambda: ui.state.app.schedules.add(name, task, **options))
    except (ValueError, ConfigurationError) as exc:
        record(request, who, "schedules.add", name or "-", 422)
        text = str(exc).partition(": ")[2] if isinstance(exc, ConfigurationError) else str(exc)
        return _schedules(request, ui, who, status=422, message=text or str(exc), form=fields)
    record(request, who, "schedules.add", name, 303)
    return RedirectResponse(url(request, "/schedules?" + urlencode({"done": "added"})), 303)


def _options(fields: Form) -> dict[str, Any]:
    """The ``app.schedules.add`` options of the add form."""
    cron = fields.get("cron", "").strip()
    every = fields.get("every", "").strip()
    if bool(cron) == bool(every):
        raise ValueError("Give a cron expression or an interval, not both.")
    options: dict[str, Any] = {"cron": cron} if cron else {"every": _every(every)}
    for name, kind in (("args", list), ("kwargs", dict)):
        value = json_field(fields, name, kind)
        if value is not None:
            options[name] = value
    queue = fields.get("queue", "").strip()
    if queue:
        problem = name_problem("queue", queue)
        if problem:
            raise ValueError(f"The queue name {problem}.")
        options["queue"] = queue
    if fields.get("paused") == "yes":
        options["paused"] = True
    return options


def _every(text: str) -> int | str:
    return int(text) if text.isdigit() else text


@router.post("/schedules/{name}/{action}", name="ui.schedules.action")
async def action(
    request: Request, name: str, action: str, ui: DashboardDep, who: ViewerDep
) -> Response:
    """Pause, resume or remove (dynamic entries only) an entry; back to the list."""
    if action not in ("pause", "resume", "remove"):
        raise PageError(404, "There is no such action.")
    await audited_form(request, who, Role.ADMIN, f"schedules.{action}", name)
    entries = ui.state.app.schedules
    source = await run_blocking(entries.source, name)
    if source is None:
        record(request, who, f"schedules.{action}", name, 404)
        raise PageError(404, "There is no such schedule.")
    if action == "remove" and source != "dynamic":
        record(request, who, f"schedules.{action}", name, 409)
        raise PageError(409, f"This entry is declared in {source}: remove it there.")
    call = {"pause": entries.pause, "resume": entries.resume, "remove": entries.remove}
    try:
        await run_blocking(call[action], name)
    except GopherQError as exc:
        record(request, who, f"schedules.{action}", name, 409)
        raise PageError(409, str(exc)) from None
    record(request, who, f"schedules.{action}", name, 303)
    done = {"pause": "paused", "resume": "resumed", "remove": "removed"}[action]
    return RedirectResponse(url(request, "/schedules?" + urlencode({"done": done})), 303)
