"""Input limits: oversized, non-JSON and too deeply nested bodies, path tricks."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from gopherq import GopherQ
from gopherq.web import create_app
from gopherq.web.inputs import MAX_BODY, MAX_DEPTH, InputLimits, json_depth


class Body(BaseModel):
    value: object = None


@pytest.fixture
def echo(app: GopherQ) -> TestClient:
    """The API with one extra route that takes a JSON body, as the resource routes do."""
    api: FastAPI = create_app(app, auth=False)

    @api.post("/api/v1/echo")
    def echo(body: Body) -> Body:
        return body

    return TestClient(api)


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:gopherq:problem:{slug}"
    return body


def test_body_within_the_limits_reaches_the_route(echo: TestClient) -> None:
    assert echo.post("/api/v1/echo", json={"value": [1, {"a": "b"}]}).json() == {
        "value": [1, {"a": "b"}]
    }


def test_body_over_1_mib_is_413(echo: TestClient) -> None:
    big = b'{"value": "' + b"x" * MAX_BODY + b'"}'
    body = problem(
        echo.post("/api/v1/echo", content=big, headers={"content-type": "application/json"}),
        413,
        "payload-too-large",
    )
    assert body["errors"] == [{"field": "body", "detail": f"at most {MAX_BODY} bytes"}]


def test_streamed_body_without_length_is_counted(echo: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"value": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = echo.post(
        "/api/v1/echo", content=chunks(), headers={"content-type": "application/json"}
    )
    problem(response, 413, "payload-too-large")


def test_nesting_past_64_levels_is_422_naming_the_body(echo: TestClient) -> None:
    deep = '{"value": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"
    response = echo.post("/api/v1/echo", content=deep, headers={"content-type": "application/json"})
    problem(response, 422, "invalid-request")
    body = problem(
        echo.post(
            "/api/v1/echo",
            content="[" * 100_000,
            headers={"content-type": "application/json"},
        ),
        422,
        "invalid-request",
    )
    assert body["errors"] == [{"field": "body", "detail": "JSON nested deeper than 64 levels"}]
    within = '{"value": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    ok = echo.post("/api/v1/echo", content=within, headers={"content-type": "application/json"})
    assert ok.status_code == 200


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth(b'["' + b"[" * 200 + b'"]') == 1
    assert json_depth(b'["\\"' + b"[" * 200 + b'"]') == 1
    assert json_depth(b"[[[]]]") == 0  # few brackets: not scanned
    assert json_depth(b"[" * 70 + b"]" * 70) == 70


def test_invalid_json_is_422_naming_the_body(echo: TestClient) -> None:
    response = echo.post(
        "/api/v1/echo", content="{nope", headers={"content-type": "application/json"}
    )
    body = problem(response, 422, "invalid-request")
    assert any(e["field"].startswith("body") for e in body["errors"])


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_a_body_that_is_not_json_is_415(echo: TestClient, kind: str) -> None:
    response = echo.post("/api/v1/echo", content='{"value": 1}', headers={"content-type": kind})
    problem(response, 415, "unsupported-media-type")


def test_json_with_charset_or_suffix_is_json(echo: TestClient) -> None:
    for kind in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = echo.post("/api/v1/echo", content='{"value": 1}', headers={"content-type": kind})
        assert response.status_code == 200, kind


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs/%00",
        "/api/v1/queues/%2F..%2F..%2Fetc",
        "/api/v1/queues/..%2f",
        "/api/v1/schedules/a%0Ab",
        "/api/v1/%00",
        "/api/v1/jobs/" + "x" * 5000,
        "/api/v1/events/%FF%FE",
        "/%2e%2e/%2e%2e/etc/passwd",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_path_tricks_never_reach_a_5xx(api: TestClient, path: str, method: str) -> None:
    response = api.request(method, path)
    assert response.status_code < 500, response.text


def test_content_length_that_is_not_a_number_is_400(echo: TestClient) -> None:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/echo",
        "headers": [(b"content-length", b"12x")],
    }
    anyio.run(InputLimits(echo.app), scope, receive, send)
    assert sent[0]["status"] == 400
