"""Probes, health, metrics and the offline docs page."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gopherq import GopherQ
from gopherq.web import create_app
from gopherq.web.docs import ASSETS_URL


def fail(*args: object, **kwargs: object) -> None:
    raise ConnectionError("down")


def test_ready_needs_the_broker(
    app: GopherQ, api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.broker, "ping", fail)
    response = api.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failing": ["broker"]}
    assert api.get("/live").status_code == 200


def test_ready_needs_the_result_store(
    app: GopherQ, api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.backend, "get", fail)
    assert api.get("/ready").json() == {"status": "unavailable", "failing": ["results"]}
    health = api.get("/api/v1/health").json()
    assert health["ok"] is False and health["results"]["ok"] is False
    assert health["results"]["error"] == "down" and health["broker"]["ok"] is True


def test_metrics_are_the_exporters(app: GopherQ, api: TestClient) -> None:
    app.send_task("add", (1, 2))
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["gopherq_broker_up"].samples[0].value == 1
    ready = [s for s in families["gopherq_queue_ready"].samples if s.labels["queue"] == "default"]
    assert sum(s.value for s in ready) == 1


def test_probes_are_open_metrics_and_health_need_a_key(app: GopherQ) -> None:
    with TestClient(create_app(app)) as client:
        assert client.get("/live").status_code == 200
        assert client.get("/ready").status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/api/v1/health").status_code == 401


def test_docs_page_loads_nothing_from_another_host(api: TestClient) -> None:
    page = api.get("/api/docs")
    assert page.status_code == 200
    references = re.findall(r"""(?:src|href|url)\s*[:=]\s*["']([^"']+)["']""", page.text)
    assert references, page.text
    assert not [r for r in references if re.match(r"(?i)(https?:)?//", r)], references
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        assert f"{ASSETS_URL}/{asset}" in page.text
        assert api.get(f"{ASSETS_URL}/{asset}").status_code == 200
    assert '"validatorUrl": null' in page.text


def test_docs_page_under_a_mount_uses_the_root_path(app: GopherQ) -> None:
    from fastapi import FastAPI

    outer = FastAPI()
    outer.mount("/queue", create_app(app, auth=False))
    with TestClient(outer) as client:
        page = client.get("/queue/api/docs").text
        assert "'/queue/api/v1/openapi.json'" in page
        assert f"/queue{ASSETS_URL}/swagger-ui-bundle.js" in page
        assert client.get(f"/queue{ASSETS_URL}/swagger-ui.css").status_code == 200
        assert client.get("/queue/api/v1/openapi.json").status_code == 200


def test_every_route_is_matched_as_the_apps_own(app: GopherQ) -> None:
    """The API's and the dashboard's routes sit in the app's own route list, each
    matched by its path, not router by router (``gopherq.web.routing``)."""
    from starlette.routing import Mount, Route

    api = create_app(app, auth=False)
    assert all(isinstance(route, Route | Mount) for route in api.routes)
    paths = {route.path for route in api.routes if isinstance(route, Route)}
    assert {"/live", "/api/v1/jobs", "/api/v1/events", "/api/v1/health", "/", "/jobs"} <= paths


def test_error_responses_are_documented_as_problem_documents(api: TestClient) -> None:
    document = api.get("/api/v1/openapi.json").json()
    responses = document["paths"]["/api/v1/events"]["get"]["responses"]
    for status in ("401", "404", "413", "415", "422", "501", "503"):
        content = responses[status]["content"]
        assert list(content) == ["application/problem+json"], status
        assert content["application/problem+json"]["schema"] == {
            "$ref": "#/components/schemas/ProblemDetails"
        }
    assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}
