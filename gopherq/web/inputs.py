"""Input limits, checked before any route runs (a pure ASGI middleware), and reading
a JSON body into a model.

* A body over ``MAX_BODY`` bytes: 413. A ``Content-Length`` over it is refused
  before a byte is read; a body without one (chunked) is counted as it comes.
* A body that is not JSON (``application/json`` or ``application/*+json``): 415.
  Every route of the API takes JSON or nothing.
* JSON nested deeper than ``MAX_DEPTH``: 422 naming ``body``. Deep nesting costs
  the parser stack and the broker's encoder; no message needs it.

A body within the limits is read whole (at most ``MAX_BODY``) and handed on
unchanged; malformed JSON is left to the route's own validation (422 naming
``body``). Requests without a body cost one ``receive``.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gopherq.web.problems import Problem, invalid

MAX_BODY = 1024 * 1024
"""Most bytes in a request body."""
MAX_DEPTH = 64
"""Deepest nesting of arrays and objects in a JSON body."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

TOO_LARGE = Problem(
    413,
    "payload-too-large",
    "Payload too large",
    f"the request body is over {MAX_BODY} bytes",
    errors=[("body", f"at most {MAX_BODY} bytes")],
)
NOT_JSON = Problem(
    415,
    "unsupported-media-type",
    "Unsupported media type",
    "the request body must be JSON (Content-Type: application/json)",
    errors=[("header.content-type", "expected application/json")],
)
BAD_LENGTH = Problem(
    400,
    "bad-request",
    "Bad request",
    "Content-Length is not a number",
    errors=[("header.content-length", "not a number")],
)
TOO_DEEP = invalid("body", f"JSON nested deeper than {MAX_DEPTH} levels")


ModelT = TypeVar("ModelT", bound=BaseModel)


async def json_body(request: Request, model: type[ModelT]) -> ModelT:
    """The request's JSON body as ``model``, parsed and checked in one pass (pydantic's
    own JSON parser); ``RequestValidationError`` naming ``body...`` as FastAPI's own
    body parameters raise it. For a hot route that declares its body in
    ``openapi_extra`` (``body_schema``) instead of a parameter."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a required JSON body of ``model``, for a route
    reading it with ``json_body`` (the model must be in the document's components
    already, by another route's parameter or response)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def json_depth(body: bytes) -> int:
    """How deep arrays and objects nest in ``body`` (brackets inside strings not counted).

    Not a parser: on malformed JSON the answer is only an estimate, and the
    route's validation reports the error.
    """
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return 0  # cannot be too deep: the common case, without a scan
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    steps = (1 if b in b"[{" else -1 for b in brackets)
    return max(accumulate(steps, initial=0))


def is_json(content_type: str) -> bool:
    """Whether a ``Content-Type`` names JSON (parameters such as charset allowed)."""
    kind = content_type.partition(";")[0].strip().lower()
    top, _, sub = kind.partition("/")
    return top == "application" and (sub == "json" or sub.endswith("+json"))


class InputLimits:
    """Refuse oversized, non-JSON and too deeply nested bodies with problem documents."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY, json_under: str = "/") -> None:
        self.app = app
        self.max_body = max_body
        self.json_under = json_under
        """Bodies must be JSON only under this path (the dashboard posts HTML forms)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            if length.isdigit():
                await self._refuse(TOO_LARGE, scope, receive, send, close=True)
            else:
                await self._refuse(BAD_LENGTH, scope, receive, send, close=True)
            return
        body, more = await self._read(receive)
        if body is None:
            await self._refuse(TOO_LARGE, scope, receive, send, close=True)
            return
        if body and scope["path"].startswith(self.json_under):
            if not is_json(headers.get(b"content-type", b"").decode("latin-1")):
                await self._refuse(NOT_JSON, scope, receive, send)
                return
            if json_depth(body) > MAX_DEPTH:
                await self._refuse(TOO_DEEP, scope, receive, send)
                return
        await self.app(scope, _replay(body, more, receive), send)

    async def _read(self, receive: Receive) -> tuple[bytes | None, Message | None]:
        """The whole body (None if over the limit), and a message that came instead of
        more body (a disconnect), to hand on."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), message
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None, None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None

    @staticmethod
    async def _refuse(
        problem: Problem, scope: Scope, receive: Receive, send: Send, *, close: bool = False
    ) -> None:
        response = problem.response(scope.get("path"))
        if close:
            response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _replay(body: bytes, after: Message | None, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` as one message, then ``after`` or the real ones."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    if after is not None:
        pending.append(after)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
