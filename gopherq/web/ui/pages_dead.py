"""The dead letters pages: grouped by reason, filtered, bulk retry or purge of a
selection or of the filter, and edit-then-replay of one (``gopherq.admin_dead``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gopherq import admin_dead
from gopherq.access.roles import Role
from gopherq.display import to_json
from gopherq.errors import PayloadTooLarge, SerializationError
from gopherq.states import DeadReason
from gopherq.web.blocking import Route, run_blocking
from gopherq.web.names import name_problem
from gopherq.web.ui import views
from gopherq.web.ui.context import (
    DashboardDep,
    Form,
    PageError,
    ViewerDep,
    audited_form,
    json_field,
    record,
)
from gopherq.web.ui.render import url

router = APIRouter(route_class=Route, include_in_schema=False)

PAGE_SIZE = 50
"""Dead letters per page."""
REASONS = tuple(reason.value for reason in DeadReason)


def _filter(fields: dict[str, str]) -> tuple[str | None, str | None]:
    """The (queue, reason) filter of a query or form; None for any."""
    queue = fields.get("queue", "").strip() or None
    reason = fields.get("reason", "").strip() or None
    if reason is not None and reason not in REASONS:
        raise PageError(422, "There is no such reason.")
    if queue is not None and name_problem("queue", queue):
        raise PageError(422, "That is not a queue name.")
    return queue, reason


def _back(request: Request, queue: str | None, reason: str | None, done: str) -> Response:
    query = {k: v for k, v in (("queue", queue), ("reason", reason), ("done", done)) if v}
    return RedirectResponse(url(request, "/dead?" + urlencode(query)), 303)


@router.get("/dead", name="ui.dead")
def dead(request: Request, ui: DashboardDep, who: ViewerDep) -> Response:
    """Dead letters newest first, by reason and queue, with the bulk actions."""
    query = dict(request.query_params)
    queue, reason = _filter(query)
    try:
        offset = max(0, int(query.get("offset", "0")))
    except ValueError:
        raise PageError(422, "That page link is not valid.") from None
    app = ui.state.app
    letters = admin_dead.dead_letters(app, queue, reason, offset=offset, limit=PAGE_SIZE + 1)
    base = {k: v for k, v in (("queue", queue), ("reason", reason)) if v}
    following = None
    if len(letters) > PAGE_SIZE:
        following = "?" + urlencode(base | {"offset": str(offset + PAGE_SIZE)})
    return ui.page(
        request,
        "dead.html",
        who,
        page="dead",
        letters=letters[:PAGE_SIZE],
        by_reason=views.dead_by_reason(app),
        reasons=REASONS,
        queue=queue or "",
        reason=reason or "",
        following=following,
        first="?" + urlencode(base) if offset else None,
        done=_done(query.get("done", "")),
    )


def _done(text: str) -> tuple[str, int] | None:
    """What the last bulk action did, from the redirect's ``done=retry:3``."""
    action, _, count = text.partition(":")
    if action in ("retry", "purge") and count.isdigit():
        return ("Retried" if action == "retry" else "Purged", int(count))
    return None


@router.post("/dead/{action}", name="ui.dead.bulk")
async def bulk(request: Request, action: str, ui: DashboardDep, who: ViewerDep) -> Response:
    """Retry or purge the checked dead letters (``scope=selection``) or every one the
    filter matches (``scope=filter``; a purge asks for ``confirm=yes``)."""
    if action not in ("retry", "purge"):
        raise PageError(404, "There is no such action.")
    fields = await audited_form(request, who, Role.OPERATOR, f"dead.{action}", "*")
    queue, reason = _filter(fields)
    ids: list[str] | None = _selection(fields)
    if fields.get("scope") == "filter":
        if action == "purge" and fields.get("confirm") != "yes":
            raise PageError(422, "Tick the box to confirm purging every matching dead letter.")
        ids = None
    elif not ids:
        raise PageError(422, "Select dead letters first.")
    call = admin_dead.retry if action == "retry" else admin_dead.purge
    count = await run_blocking(lambda: call(ui.state.app, ids, queue=queue, reason=reason))
    target = ",".join(ids or [])[:200] or f"queue={queue or '*'} reason={reason or '*'}"
    record(request, who, f"dead.{action}", target, 303)
    return _back(request, queue, reason, f"{action}:{count}")


def _selection(fields: Form) -> list[str]:
    ids = [id for id in fields.all("id") if id]
    if any(name_problem("id", id) for id in ids):
        raise PageError(422, "A selected id is not valid.")
    return ids


@router.get("/dead/{id}", name="ui.dead.letter")
def letter(request: Request, id: str, ui: DashboardDep, who: ViewerDep) -> Response:
    """One dead letter, with its arguments and the edit-then-replay form."""
    found = _detail(ui.state.app, id)
    return ui.page(
        request,
        "dead_letter.html",
        who,
        page="dead",
        letter=found,
        args=to_json(found.args, indent=2) if found.args is not None else "",
        kwargs=to_json(found.kwargs, indent=2) if found.kwargs is not None else "",
        message="",
    )


def _detail(app: Any, id: str) -> admin_dead.DeadLetterDetail:
    if name_problem("id", id):
        raise PageError(404, "There is no such dead letter.")
    try:
        return admin_dead.detail(app, id)
    except admin_dead.NotDead:
        raise PageError(404, "There is no such dead letter.") from None


@router.post("/dead/{id}/replay", name="ui.dead.replay")
async def replay(request: Request, id: str, ui: DashboardDep, who: ViewerDep) -> Response:
    """Send the dead letter again as a new job, with the form's args and kwargs (JSON);
    to the new job's page. A bad value shows the form again with the reason."""
    fields = await audited_form(request, who, Role.OPERATOR, "dead.replay", id)
    app = ui.state.app
    problem = None
    try:
        args = json_field(fields, "args", list)
        kwargs = json_field(fields, "kwargs", dict)
        done = await run_blocking(admin_dead.replay, app, id, args, kwargs)
    except admin_dead.NotDead:
        record(request, who, "dead.replay", id, 404)
        raise PageError(404, "There is no such dead letter.") from None
    except (ValueError, admin_dead.NotReplayable, admin_dead.BadArguments) as exc:
        problem = str(exc)
    except (PayloadTooLarge, SerializationError) as exc:
        problem = f"The arguments do not fit a message: {exc}"
    if problem is not None:
        record(request, who, "dead.replay", id, 422)
        found = await run_blocking(_detail, app, id)
        return ui.page(
            request,
            "dead_letter.html",
            who,
            status=422,
            page="dead",
            letter=found,
            args=fields.get("args", ""),
            kwargs=fields.get("kwargs", ""),
            message=problem,
        )
    record(request, who, "dead.replay", id, 303)
    return RedirectResponse(url(request, f"/jobs/{quote(done.id, safe='')}"), 303)
