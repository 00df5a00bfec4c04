"""The API's frame: probes, problem documents, deny by default, the OpenAPI document."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gopherq import GopherQ
from gopherq.web import create_app


def test_probes_and_health(api: TestClient) -> None:
    assert api.get("/live").json() == {"status": "ok"}
    assert api.get("/ready").status_code == 200
    body = api.get("/api/v1/health").json()
    assert body["ok"] is True and body["broker"]["ok"] is True


def test_unknown_route_is_a_problem_document(api: TestClient) -> None:
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:gopherq:problem:not-found"


def test_deny_by_default(app: GopherQ) -> None:
    with TestClient(create_app(app)) as client:
        response = client.get("/api/v1/health")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        bad = client.get("/api/v1/health", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        assert bad.json()["detail"] == "a valid API key is required"


def test_openapi_document_is_3_1(api: TestClient) -> None:
    document = api.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/health" in document["paths"]
