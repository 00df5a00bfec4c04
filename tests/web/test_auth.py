"""Keys, roles, the audit log and send rates over HTTP (auth on)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from conftest import broker_url
from fastapi import Body, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from gopherq import GopherQ
from gopherq.access.roles import Role
from gopherq.web import create_app
from gopherq.web.auth import Caller, require
from gopherq.web.limits import enforce_send_rate
from gopherq.web.state import ServerState

Headers = dict[str, str]
KeyMaker = Callable[..., Headers]


def sending_app(app: GopherQ) -> Any:
    """``app``'s API with auth on, and a test route that sends (rate-limited)."""
    api = create_app(app)

    def send(
        request: Request,
        caller: Annotated[Caller, require(Role.SUBMITTER)],
        count: int = 1,
        body: Annotated[Any, Body()] = None,
    ) -> dict[str, int]:
        enforce_send_rate(request, caller, count)
        return {"sent": count}

    api.add_api_route("/api/v1/test-send", send, methods=["POST"], name="test.send")
    return api


@pytest.fixture
def server(app: GopherQ) -> Iterator[TestClient]:
    with TestClient(sending_app(app)) as client:
        yield client


@pytest.fixture
def key(app: GopherQ) -> KeyMaker:
    """``key(role, **options)``: a new key's Authorization header."""
    count = 0

    def make(role: str, **options: Any) -> Headers:
        nonlocal count
        count += 1
        _, secret = app.access.create(f"{role}-{count}", role, **options)
        return {"Authorization": f"Bearer {secret}"}

    return make


def state_of(client: TestClient) -> ServerState:
    state: ServerState = client.app.state.gopherq  # type: ignore[attr-defined]
    return state


def audit(client: TestClient, app: GopherQ) -> list[dict[str, Any]]:
    assert state_of(client).audit.flush(5.0)
    return [e.to_map() for e in app.access.audit()]


# 401: one answer, whatever was wrong.


def test_missing_malformed_unknown_expired_and_revoked_keys_get_the_same_401(
    server: TestClient, app: GopherQ, key: KeyMaker
) -> None:
    clock = app.access.clock
    expired = key("admin", expires="1h")
    revoked = key("admin")
    app.access.revoke("admin-2")
    state_of(server).key_cache = 0.0
    app.access.clock = lambda: clock() + 7200
    bad: list[Headers] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer gq_0123456789ab_" + "a" * 43},
        {"Authorization": revoked["Authorization"][:-2] + "xx"},
        {"Authorization": revoked["Authorization"].replace("Bearer ", "Token ")},
        expired,
        revoked,
    ]
    answers = [server.get("/api/v1/keys", headers=h) for h in bad]
    assert {a.status_code for a in answers} == {401}
    assert len({a.text for a in answers}) == 1
    assert all(a.headers["www-authenticate"] == "Bearer" for a in answers)
    assert answers[0].json()["detail"] == "a valid API key is required"


def test_a_key_revoked_through_the_api_is_refused_at_once(
    server: TestClient, key: KeyMaker
) -> None:
    admin = key("admin")
    viewer = key("viewer")
    assert server.get("/api/v1/health", headers=viewer).status_code == 200
    answer = server.post("/api/v1/keys/viewer-2/revoke", headers=admin)
    assert answer.status_code == 200 and answer.json()["revoked"] is not None
    assert not answer.json()["active"]
    assert server.get("/api/v1/health", headers=viewer).status_code == 401


def test_a_key_revoked_elsewhere_is_refused_once_the_cache_lapses(
    server: TestClient, app: GopherQ, key: KeyMaker
) -> None:
    viewer = key("viewer")
    assert server.get("/api/v1/health", headers=viewer).status_code == 200
    app.access.revoke("viewer-1")  # as `gopherq keys revoke` does, in another process
    state_of(server).key_cache = 0.0
    assert server.get("/api/v1/health", headers=viewer).status_code == 401


# 403: a key below the route's role.


def test_wrong_role_is_403_naming_the_role(server: TestClient, key: KeyMaker) -> None:
    answer = server.get("/api/v1/keys", headers=key("operator"))
    assert answer.status_code == 403
    assert answer.json()["type"] == "urn:gopherq:problem:forbidden"
    assert "admin role" in answer.json()["detail"]


# Keys over HTTP.


def test_keys_create_list_revoke(server: TestClient, app: GopherQ, key: KeyMaker) -> None:
    admin = key("admin")
    created = server.post(
        "/api/v1/keys",
        headers=admin,
        json={"name": "ci", "role": "submitter", "expires": "30d", "tasks": ["add"], "rate": "5/s"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["secret"]
    assert secret.startswith("gq_") and body["key"]["name"] == "ci"
    assert body["key"]["tasks"] == ["add"] and body["key"]["rate"] == "5/s"
    listed = server.get("/api/v1/keys", headers=admin).json()
    assert [k["name"] for k in listed] == ["admin-1", "ci"]
    assert all("secret" not in k and "digest" not in k and "salt" not in k for k in listed)
    assert secret not in server.get("/api/v1/keys", headers=admin).text
    ci = {"Authorization": f"Bearer {secret}"}
    assert server.get("/api/v1/health", headers=ci).status_code == 200
    taken = server.post("/api/v1/keys", headers=admin, json={"name": "ci", "role": "viewer"})
    assert taken.status_code == 409
    assert server.post("/api/v1/keys/nobody/revoke", headers=admin).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "ci", "role": "root"}, "body.role"),
        ({"name": "bad name", "role": "viewer"}, "body.name"),
        ({"name": "ci", "role": "viewer", "expires": "soon"}, "body.expires"),
        ({"name": "ci", "role": "viewer", "rate": "5/q"}, "body.rate"),
    ],
)
def test_bad_key_bodies_name_the_field(
    server: TestClient, app: GopherQ, key: KeyMaker, body: dict[str, Any], field: str
) -> None:
    answer = server.post("/api/v1/keys", headers=key("admin"), json=body)
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == field
    assert [k.name for k in app.access.list_keys()] == ["admin-1"]


# The audit log.


def test_mutating_calls_are_audited_allowed_or_denied(
    server: TestClient, app: GopherQ, key: KeyMaker
) -> None:
    admin = key("admin")
    viewer = key("viewer")
    assert (
        server.post(
            "/api/v1/keys", headers=admin, json={"name": "ci", "role": "viewer"}
        ).status_code
        == 201
    )
    assert server.post("/api/v1/keys/ci/revoke", headers=viewer).status_code == 403
    assert server.post("/api/v1/keys/ci/revoke").status_code == 401
    assert server.post("/api/v1/keys/ci/revoke", headers=admin).status_code == 200
    assert server.post("/api/v1/keys", headers=admin, json={"name": 5}).status_code == 422
    assert server.get("/api/v1/keys", headers=admin).status_code == 200  # reads: not audited
    entries = audit(server, app)
    seen = [(e["key"], e["role"], e["action"], e["target"], e["status"]) for e in entries]
    assert seen == [
        ("admin-1", "admin", "keys.create", "/api/v1/keys", 422),
        ("admin-1", "admin", "keys.revoke", "ci", 200),
        (None, None, "keys.revoke", "ci", 401),
        ("viewer-2", "viewer", "keys.revoke", "ci", 403),
        ("admin-1", "admin", "keys.create", "ci", 201),
    ]
    assert all(e["client"] == "testclient" and e["method"] == "POST" for e in entries)
    assert entries[1]["path"] == "/api/v1/keys/ci/revoke"


def test_unknown_mutating_paths_are_audited_too(server: TestClient, app: GopherQ) -> None:
    assert server.delete("/api/v1/nothing/here").status_code in (401, 404, 405)
    assert server.post("/live").status_code == 405  # outside /api/v1: not audited
    entries = audit(server, app)
    assert [(e["action"], e["target"]) for e in entries] == [("-", "/api/v1/nothing/here")]


def test_a_failing_audit_store_never_fails_the_request(
    server: TestClient, app: GopherQ, key: KeyMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = key("admin")

    def broken(*args: object) -> None:
        raise RuntimeError("store down")

    monkeypatch.setattr(app.access.store, "append", broken)
    answer = server.post("/api/v1/keys", headers=admin, json={"name": "ci", "role": "viewer"})
    assert answer.status_code == 201
    assert state_of(server).audit.flush(5.0)
    assert state_of(server).audit.dropped == 1


def test_read_the_audit_log(server: TestClient, app: GopherQ, key: KeyMaker) -> None:
    admin = key("admin")
    for name in ("a", "b", "c"):
        server.post("/api/v1/keys", headers=admin, json={"name": name, "role": "viewer"})
    assert state_of(server).audit.flush(5.0)
    page = server.get("/api/v1/audit", headers=admin, params={"limit": 2})
    assert page.status_code == 200
    assert [e["target"] for e in page.json()["entries"]] == ["c", "b"]
    recent = server.get("/api/v1/audit", headers=admin, params={"since": "1h"}).json()
    assert len(recent["entries"]) == 3
    future = server.get("/api/v1/audit", headers=admin, params={"since": "2999-01-01"})
    assert future.json()["entries"] == []
    bad = server.get("/api/v1/audit", headers=admin, params={"since": "whenever"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.since"
    assert server.get("/api/v1/audit", headers=key("operator")).status_code == 403


def test_audit_targets_summarise_create_bodies(
    server: TestClient, app: GopherQ, key: KeyMaker
) -> None:
    submitter = key("submitter", rate="none")
    server.post("/api/v1/test-send", headers=submitter, json={"task": "add", "args": [1, 2]})
    server.post("/api/v1/test-send", headers=submitter, json={"jobs": [{}, {}, {}]})
    server.post("/api/v1/test-send", headers=submitter, json=[{}, {}])
    server.post("/api/v1/test-send", headers=submitter, content=b"x" * 10_000)
    targets = [e["target"] for e in audit(server, app)]
    assert targets == ["/api/v1/test-send", "2 jobs", "3 jobs", "add"]


# Send rates.


def test_the_send_rate_answers_429_with_retry_after(server: TestClient, key: KeyMaker) -> None:
    slow = key("submitter", rate="2/m")
    other = key("submitter", rate="2/m")
    assert server.post("/api/v1/test-send", headers=slow).status_code == 200
    assert server.post("/api/v1/test-send", headers=slow).status_code == 200
    refused = server.post("/api/v1/test-send", headers=slow)
    assert refused.status_code == 429
    assert refused.json()["type"] == "urn:gopherq:problem:rate-limited"
    assert 25 <= int(refused.headers["retry-after"]) <= 31
    assert server.post("/api/v1/test-send", headers=other).status_code == 200  # its own bucket


def test_batches_count_every_job(server: TestClient, key: KeyMaker) -> None:
    batcher = key("submitter", rate="10/h")
    assert server.post("/api/v1/test-send", headers=batcher, params={"count": 8}).status_code == 200
    refused = server.post("/api/v1/test-send", headers=batcher, params={"count": 5})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) == 1080  # 3 jobs at 10/h
    assert server.post("/api/v1/test-send", headers=batcher, params={"count": 2}).status_code == 200


def test_the_server_default_rate_applies_to_keys_without_one(app: GopherQ, key: KeyMaker) -> None:
    app.config_from_object({"api_rate": "1/h"})
    plain = key("submitter")
    own = key("submitter", rate="none")
    with TestClient(sending_app(app)) as client:
        assert client.post("/api/v1/test-send", headers=plain).status_code == 200
        assert client.post("/api/v1/test-send", headers=plain).status_code == 429
        for _ in range(3):
            assert client.post("/api/v1/test-send", headers=own).status_code == 200


def test_a_bad_api_rate_setting_fails_at_start(app: GopherQ) -> None:
    app.config_from_object({"api_rate": "lots"})
    with pytest.raises(Exception, match="api_rate"):
        create_app(app)


# Every route, every role.

PUBLIC = None
ROUTE_ROLES: dict[tuple[str, str], Role | None] = {
    ("GET", "/live"): PUBLIC,
    ("GET", "/ready"): PUBLIC,
    ("GET", "/api/v1/health"): Role.VIEWER,
    ("GET", "/api/v1/keys"): Role.ADMIN,
    ("POST", "/api/v1/keys"): Role.ADMIN,
    ("POST", "/api/v1/keys/{name}/revoke"): Role.ADMIN,
    ("GET", "/api/v1/audit"): Role.ADMIN,
    ("GET", "/api/docs"): PUBLIC,
    ("GET", "/metrics"): Role.VIEWER,
    ("GET", "/api/v1/events"): Role.VIEWER,
    ("GET", "/api/v1/jobs"): Role.VIEWER,
    ("GET", "/api/v1/jobs/{id}"): Role.VIEWER,
    ("GET", "/api/v1/jobs/{id}/result"): Role.VIEWER,
    ("POST", "/api/v1/jobs"): Role.SUBMITTER,
    ("POST", "/api/v1/jobs:batch"): Role.SUBMITTER,
    ("POST", "/api/v1/jobs/{id}/cancel"): Role.OPERATOR,
    ("POST", "/api/v1/jobs/{id}/retry"): Role.OPERATOR,
    ("DELETE", "/api/v1/jobs/{id}"): Role.OPERATOR,
    ("GET", "/api/v1/dead"): Role.VIEWER,
    ("GET", "/api/v1/dead/{id}"): Role.VIEWER,
    ("POST", "/api/v1/dead/{id}/retry"): Role.OPERATOR,
    ("POST", "/api/v1/dead/{id}/replay"): Role.OPERATOR,
    ("POST", "/api/v1/dead:retry"): Role.OPERATOR,
    ("POST", "/api/v1/dead:purge"): Role.OPERATOR,
    ("GET", "/api/v1/queues"): Role.VIEWER,
    ("GET", "/api/v1/queues/{name}"): Role.VIEWER,
    ("POST", "/api/v1/queues/{name}/pause"): Role.OPERATOR,
    ("POST", "/api/v1/queues/{name}/resume"): Role.OPERATOR,
    ("POST", "/api/v1/queues/{name}/purge"): Role.OPERATOR,
    ("GET", "/api/v1/schedules"): Role.VIEWER,
    ("GET", "/api/v1/schedules/{name}"): Role.VIEWER,
    ("POST", "/api/v1/schedules"): Role.ADMIN,
    ("PUT", "/api/v1/schedules/{name}"): Role.ADMIN,
    ("PATCH", "/api/v1/schedules/{name}"): Role.ADMIN,
    ("DELETE", "/api/v1/schedules/{name}"): Role.ADMIN,
    ("POST", "/api/v1/schedules/{name}/pause"): Role.ADMIN,
    ("POST", "/api/v1/schedules/{name}/resume"): Role.ADMIN,
    ("GET", "/api/v1/workers"): Role.VIEWER,
    ("GET", "/api/v1/tasks"): Role.VIEWER,
    ("GET", "/api/v1/tasks/{name}"): Role.VIEWER,
}
"""Every route of the API and the least role it needs (None: no key needed). A route
missing here fails ``test_every_route_is_in_the_role_table``: add it with its role."""


def walk(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every API route, through included routers (which FastAPI may
    keep as routers of their own, each with its prefix). The dashboard's pages (``ui.*``,
    login by cookie) are tested in test_dashboard.py."""
    for route in routes:
        if isinstance(route, APIRoute) and route.name.startswith("ui."):
            continue
        if isinstance(route, APIRoute):
            yield from ((method, prefix + route.path) for method in sorted(route.methods))
        elif (inner := getattr(route, "original_router", None)) is not None:
            yield from walk(inner.routes, prefix + route.include_context.prefix)  # type: ignore[attr-defined]


def api_routes(app: GopherQ) -> list[tuple[str, str]]:
    return list(walk(create_app(app).routes))


def test_every_route_is_in_the_role_table(app: GopherQ) -> None:
    routes = api_routes(app)
    missing = sorted(set(routes) - ROUTE_ROLES.keys())
    assert not missing, f"routes without a role in ROUTE_ROLES: {missing}"
    gone = sorted(ROUTE_ROLES.keys() - set(routes))
    assert not gone, f"ROUTE_ROLES lists routes that do not exist: {gone}"


def test_every_route_with_each_role(app: GopherQ, key: KeyMaker) -> None:
    headers = {role: key(role.label, rate="none") for role in Role}
    with TestClient(create_app(app)) as client:
        for (method, path), needed in sorted(ROUTE_ROLES.items(), key=str):
            url = path.replace("{id}", "0" * 32).replace("{name}", "nothing")
            for role in Role:
                answer = client.request(method, url, headers=headers[role], json={})
                allowed = needed is None or role >= needed
                where = f"{method} {path} as {role.label}: {answer.status_code} {answer.text[:200]}"
                if allowed:
                    assert answer.status_code not in (401, 403), where
                else:
                    assert answer.status_code == 403, where
            if needed is not None:
                assert client.request(method, url, json={}).status_code == 401, path


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_keys_and_audit_on_a_real_store(kind: str, tmp_path: Path) -> None:
    app = GopherQ("webtest", broker=broker_url(kind, tmp_path))
    try:
        _, secret = app.access.create("admin", "admin")
        admin = {"Authorization": f"Bearer {secret}"}
        with TestClient(create_app(app)) as client:
            made = client.post("/api/v1/keys", headers=admin, json={"name": "ci", "role": "viewer"})
            assert made.status_code == 201
            viewer = {"Authorization": f"Bearer {made.json()['secret']}"}
            assert client.get("/api/v1/health", headers=viewer).status_code == 200
            assert client.post("/api/v1/keys/ci/revoke", headers=viewer).status_code == 403
            assert client.post("/api/v1/keys/ci/revoke", headers=admin).status_code == 200
            assert client.get("/api/v1/health", headers=viewer).status_code == 401
            assert state_of(client).audit.flush(5.0)
            page = client.get("/api/v1/audit", headers=admin).json()["entries"]
        assert [(e["key"], e["action"], e["target"], e["status"]) for e in page] == [
            ("admin", "keys.revoke", "ci", 200),
            ("ci", "keys.revoke", "ci", 403),
            ("admin", "keys.create", "ci", 201),
        ]
    finally:
        app.close()
