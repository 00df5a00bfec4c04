"""The live web dashboard: server-rendered pages at ``/`` of ``gopherq serve``.

=================  ==========================================================
module             holds
=================  ==========================================================
``session``        ``Sessions``: signed session cookies, CSRF tokens
``security``       ``SecurityHeaders`` (CSP...), ``same_origin``
``render``         the Jinja2 environment (autoescaped), ``Viewer``, cookies
``context``        ``Dashboard``, the ``viewer`` dependency, form checks
``views``          what the pages show, read through ``gopherq.admin``
``pages``          the router: login, overview, queues
``views_jobs``     the jobs list and one job; ``pages_jobs``: their routes
``pages_dead``     dead letters: by reason, bulk retry and purge, replay
``pages_ops``      workers; schedules: add, pause, resume, remove
``charts``         the overview's throughput and failure-rate charts (SVG)
``live``           the API's events stream for the cookie session (``live.js``)
``templates/``     Jinja2 templates; ``static/``: CSS and JavaScript
=================  ==========================================================

No inline script or style anywhere: the Content-Security-Policy forbids both.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from gopherq.web.routing import add_routes
from gopherq.web.state import ServerState
from gopherq.web.ui.context import Dashboard, LoginRequired, PageError
from gopherq.web.ui.render import STATIC
from gopherq.web.ui.security import SecurityHeaders

STATIC_PATH = "/static"


def install(api: FastAPI, state: ServerState, api_prefix: str) -> None:
    """Serve the dashboard from ``api`` at ``/``, beside the API under ``api_prefix``:
    pages, static files, security headers, and the 404 page for unknown paths."""
    from gopherq.web.ui import live, pages, pages_dead, pages_jobs, pages_ops

    dashboard = Dashboard(state, api_prefix.rstrip("/"))
    api.state.dashboard = dashboard
    api.add_middleware(SecurityHeaders, exclude=api_prefix)
    api.add_exception_handler(PageError, dashboard.on_page_error)
    api.add_exception_handler(LoginRequired, dashboard.on_login_required)
    api.add_exception_handler(404, dashboard.on_not_found)
    api.mount(STATIC_PATH, StaticFiles(directory=STATIC), name="ui.static")
    for module in (pages, pages_jobs, pages_dead, pages_ops, live):
        add_routes(api, module.router)


__all__ = ["Dashboard", "install"]
