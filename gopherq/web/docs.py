"""The interactive docs at ``/api/docs``, served with no request to any other host.

FastAPI's own docs page loads Swagger UI from a CDN, which a server on a closed
network cannot reach. The assets come instead from the ``fastapi-offline``
package (MIT, in the ``web`` extra): a pinned Swagger UI 5 build, the first
major version that renders OpenAPI 3.1 documents, as plain package data with
no dependency beyond FastAPI. (``swagger-ui-bundle`` on PyPI ships Swagger UI
4, which does not render 3.1, and needs Jinja2.) Only its static files are
used, so the page itself is built here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/api/docs"
ASSETS_URL = "/api/docs/assets"

MISSING = (
    "<!doctype html><title>gopherq API docs</title>"
    "<p>The interactive docs need the <code>fastapi-offline</code> package: "
    "<code>pip install 'gopherq[web]'</code>. The OpenAPI document is at "
    '<a href="{openapi}">{openapi}</a>.</p>'
)


def assets_directory() -> Path | None:
    """Where the installed Swagger UI files are; None without ``fastapi-offline``."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    directory = Path(spec.origin).parent / "static"
    return directory if (directory / "swagger-ui-bundle.js").is_file() else None


def install(api: FastAPI, openapi_url: str) -> None:
    """Serve the docs page and its assets on ``api``."""
    directory = assets_directory()
    if directory is not None:
        api.mount(ASSETS_URL, StaticFiles(directory=directory), name="docs.assets")

    @api.get(DOCS_URL, include_in_schema=False, name="docs.page")
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        if directory is None:
            return HTMLResponse(MISSING.format(openapi=root + openapi_url))
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{api.title}: API docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            # No validator badge: it would ask validator.swagger.io about the document.
            swagger_ui_parameters={"validatorUrl": None},
        )
