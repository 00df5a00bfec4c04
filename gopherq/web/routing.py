"""How the API's and the dashboard's routers join the app.

``APIRouter.include_router`` in recent FastAPI releases (0.16x) no longer copies
the included routes into the app: it matches a request against each included
router in turn, juggling scope keys per route, and twice per request (to select,
then to handle). With the API's dozen routers, finding a route late in the list
cost 150-300 us a request, more than some whole reads. ``add_routes`` puts the
routes themselves into the app's router, where a request is matched once against
each path's pattern, as routes declared on the app itself are; so the API's
routers carry their prefix and their problem responses themselves (``api_router``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

from gopherq.web.blocking import Route
from gopherq.web.problems import PROBLEM_RESPONSES

API_PREFIX = "/api/v1"


def api_router(prefix: str = API_PREFIX, **options: Any) -> APIRouter:
    """A router of the API: its paths under ``prefix``, the problem responses of every
    route in its OpenAPI document, its plain ``def`` endpoints run with
    ``run_blocking`` (``blocking.Route``); ``options`` as ``APIRouter``'s."""
    return APIRouter(prefix=prefix, route_class=Route, responses=PROBLEM_RESPONSES, **options)


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Serve ``router``'s routes (with the paths, dependencies and tags they were
    declared with) as routes of ``app`` itself."""
    app.router.routes.extend(router.routes)
