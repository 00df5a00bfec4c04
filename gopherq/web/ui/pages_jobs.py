"""The jobs pages: the filtered, paginated list, one job, cancel and retry."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gopherq import admin
from gopherq.access.roles import Role
from gopherq.web.blocking import Route, run_blocking
from gopherq.web.ui import views_jobs
from gopherq.web.ui.context import DashboardDep, PageError, ViewerDep, audited_form, record
from gopherq.web.ui.render import url

router = APIRouter(route_class=Route, include_in_schema=False)

RETRY_REFUSED = {
    "not-found": "There is no such job.",
    "not-finished": "The job has not finished: cancel it first, or wait.",
    "succeeded": "The job succeeded: there is nothing to retry.",
    "key-held": "A live job holds its idempotency key.",
    "no-body": "Its message is not kept (only a dead letter keeps a job's arguments).",
}


@router.get("/jobs", name="ui.jobs")
def jobs(request: Request, ui: DashboardDep, who: ViewerDep) -> Response:
    """The job history, newest first, filtered by state, task, queue and time; an id
    typed in the search box opens that job."""
    query = dict(request.query_params)
    id = query.get("id", "").strip()
    if id:
        return RedirectResponse(url(request, f"/jobs/{quote(id, safe='')}"), 303)
    wanted = views_jobs.JobFilter.of(query)
    found = views_jobs.job_list(ui.state.app, wanted)
    following = None
    if found.next:
        following = "?" + urlencode(wanted.query(cursor=found.next))
    return ui.page(
        request,
        "jobs.html",
        who,
        page="jobs",
        jobs=found.rows,
        wanted=wanted,
        states=views_jobs.STATES,
        windows=views_jobs.WINDOWS,
        following=following,
        first="?" + urlencode(wanted.query(cursor="")) if wanted.cursor else None,
    )


@router.get("/jobs/{id}", name="ui.job")
def job(request: Request, id: str, ui: DashboardDep, who: ViewerDep) -> Response:
    """One job: arguments where kept, result or error, progress, checkpoint, its events,
    and the cancel and retry buttons for operators."""
    view = views_jobs.job(ui.state.app, id)
    message = {
        "cancelled": "Cancelled.",
        "stopping": "Its worker is stopping it.",
        "requeued": "Queued again.",
    }.get(request.query_params.get("done", ""))
    return ui.page(request, "job.html", who, page="jobs", job=view, message=message)


@router.post("/jobs/{id}/cancel", name="ui.job.cancel")
async def cancel(request: Request, id: str, ui: DashboardDep, who: ViewerDep) -> Response:
    """Cancel the job (as ``POST /api/v1/jobs/{id}/cancel``); back to its page."""
    await audited_form(request, who, Role.OPERATOR, "jobs.cancel", id)
    app = ui.state.app
    found = await run_blocking(lambda: {c.id: c.was for c in app.cancel([id])})
    outcome = admin.cancel_outcome(found.get(id))
    if outcome == "not-found":
        known = await run_blocking(admin.find_job, app, id)
        status = 404 if known is None else 409
        record(request, who, "jobs.cancel", id, status)
        raise PageError(
            status,
            "There is no such job." if known is None else "The job has finished already.",
        )
    record(request, who, "jobs.cancel", id, 303)
    return RedirectResponse(url(request, f"/jobs/{quote(id, safe='')}?done={outcome}"), 303)


@router.post("/jobs/{id}/retry", name="ui.job.retry")
async def retry(request: Request, id: str, ui: DashboardDep, who: ViewerDep) -> Response:
    """Run a dead-lettered job again (as ``POST /api/v1/jobs/{id}/retry``)."""
    await audited_form(request, who, Role.OPERATOR, "jobs.retry", id)
    outcome = await run_blocking(admin.retry_job, ui.state.app, id)
    if outcome != "requeued":
        status = 404 if outcome == "not-found" else 409
        record(request, who, "jobs.retry", id, status)
        raise PageError(status, RETRY_REFUSED[outcome])
    record(request, who, "jobs.retry", id, 303)
    return RedirectResponse(url(request, f"/jobs/{quote(id, safe='')}?done=requeued"), 303)
