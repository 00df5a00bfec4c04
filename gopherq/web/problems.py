"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API answers has a stable ``type`` (``urn:gopherq:problem:<slug>``),
a ``title`` per type, a ``detail`` for this occurrence and, for bad input, an
``errors`` list naming each field that was wrong (``field`` as a dotted path
such as ``body.args`` or ``query.limit``, and ``detail``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from gopherq.errors import BrokerUnavailable, NotSupported

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:gopherq:problem:"


class FieldError(BaseModel):
    """One field that was wrong."""

    field: str
    detail: str


class ProblemDetails(BaseModel):
    """The body of every error response (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None


class Problem(Exception):
    """Raise in a route to answer with a problem document.

    ``slug`` names the type (``not-found``, ``invalid-request``, ...): clients
    match on the type, never on the text.
    """

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        errors: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = list(errors)
        self.headers = dict(headers or {})

    def response(self, instance: str | None = None) -> JSONResponse:
        """The problem document as a response."""
        body: dict[str, Any] = {
            "type": TYPE_PREFIX + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = [{"field": f, "detail": d} for f, d in self.errors]
        return JSONResponse(body, self.status, headers=self.headers, media_type=MEDIA_TYPE)


def not_found(what: str, name: str) -> Problem:
    """404 for an unknown ``what`` (``job``, ``queue``, ``schedule``...) named ``name``."""
    return Problem(404, "not-found", "Not found", f"no {what} {name!r}")


def invalid(field: str, detail: str, status: int = 422) -> Problem:
    """422 (or ``status``) for one bad field."""
    return Problem(
        status, "invalid-request", "Invalid request", f"{field}: {detail}", errors=[(field, detail)]
    )


_STATUS_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
}


def _field(loc: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in loc)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return exc.response(request.url.path)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [(_field(e.get("loc", ())), str(e.get("msg", "invalid"))) for e in exc.errors()]
    detail = "; ".join(f"{f}: {d}" for f, d in errors[:5]) or "the request is not valid"
    problem = Problem(422, "invalid-request", "Invalid request", detail, errors=errors)
    return problem.response(request.url.path)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _STATUS_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    return Problem(exc.status_code, slug, title, detail, headers=exc.headers).response(
        request.url.path
    )


async def _on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    problem = Problem(
        503, "broker-unavailable", "Broker unavailable", str(exc), headers={"Retry-After": "5"}
    )
    return problem.response(request.url.path)


async def _on_not_supported(request: Request, exc: Exception) -> JSONResponse:
    return Problem(501, "not-supported", "Not supported", str(exc)).response(request.url.path)


async def _on_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    problem = Problem(500, "internal-error", "Internal error", "the server failed; see its log")
    return problem.response(request.url.path)


def install(api: FastAPI) -> None:
    """Answer every error of ``api`` with a problem document, and document them so."""
    api.add_exception_handler(Problem, _on_problem)
    api.add_exception_handler(RequestValidationError, _on_validation)
    api.add_exception_handler(StarletteHTTPException, _on_http)
    api.add_exception_handler(BrokerUnavailable, _on_unavailable)
    api.add_exception_handler(NotSupported, _on_not_supported)
    api.add_exception_handler(Exception, _on_error)
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = problem_media_type(generate())
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def problem_media_type(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the problem schema of each error response under
    ``application/problem+json``, where the answers are; FastAPI files a response
    model under ``application/json``. Changed in place; returned."""
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if MEDIA_TYPE in content and "application/json" in content:
                    content[MEDIA_TYPE] = content.pop("application/json")
    return document


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemDetails, "content": {MEDIA_TYPE: {}}, "description": title}
    for status, (_, title) in {
        **_STATUS_SLUGS,
        422: ("invalid-request", "Invalid request"),
        501: ("not-supported", "Not supported"),
        503: ("broker-unavailable", "Broker unavailable"),
    }.items()
}
"""The error responses every route documents in the OpenAPI document."""


def problem_response(description: str) -> dict[str, Any]:
    """An OpenAPI response entry for one more error status of a route:
    ``responses={409: problem_response("...")}``."""
    return {"model": ProblemDetails, "content": {MEDIA_TYPE: {}}, "description": description}
