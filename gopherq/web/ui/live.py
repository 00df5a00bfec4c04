"""The dashboard's live feed: the API's events stream (``GET /api/v1/events``) at
``/live/events``, for the cookie session instead of a Bearer key.

The route calls the API's own ``events`` function, so the stream, its resume by
``Last-Event-ID``, keep-alives and filters are the API's; only who may read it is
decided here (any logged-in viewer, as the API asks for the viewer role).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from gopherq.web.blocking import Route
from gopherq.web.routes import events as api_events
from gopherq.web.ui.context import DashboardDep, PageError, ViewerDep

router = APIRouter(route_class=Route, include_in_schema=False)


@router.get("/live/events", name="ui.live.events")
async def live_events(request: Request, ui: DashboardDep, who: ViewerDep) -> Any:
    """Server-sent events of the event store, filtered by the query's ``types``,
    ``task``, ``queue`` and ``job`` as ``/api/v1/events`` filters them."""
    query = request.query_params
    for name in ("task", "queue", "job"):
        if len(query.get(name) or "") > api_events.NAME_MAX:
            raise PageError(422, f"The {name} filter is too long.")
    return await api_events.events(
        request,
        ui.state.app,
        ui.state,
        types=query.getlist("types") or None,
        task=query.get("task") or None,
        queue=query.get("queue") or None,
        job=query.get("job") or None,
        since=query.get("since"),
        follow=True,
        limit=100,
        last_event_id=request.headers.get("last-event-id"),
    )
