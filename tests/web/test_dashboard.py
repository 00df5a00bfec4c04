"""The dashboard in-process: login, sessions, CSRF, roles, escaping, 404 page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gopherq import GopherQ
from gopherq.web import create_app
from gopherq.web.ui.security import CONTENT_SECURITY_POLICY
from gopherq.web.ui.session import COOKIE

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def server(app: GopherQ) -> Iterator[TestClient]:
    """The dashboard with auth on, nobody logged in."""
    with TestClient(create_app(app)) as client:
        yield client


def login(client: TestClient, app: GopherQ, role: str) -> str:
    """Log ``client`` in with a new key of ``role``; the key's secret."""
    _, secret = app.access.create(f"{role}-{len(app.access.list_keys())}", role)
    response = client.post("/login", data={"key": secret}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return secret


def csrf(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


def paused(app: GopherQ, queue: str = "default") -> bool:
    stats = app.broker.stats().get(queue)
    return stats is not None and stats.paused


def send(app: GopherQ, queue: str = "default") -> None:
    add = next(task for name, task in app.tasks.items() if name.endswith("add"))
    add.apply_async((1, 2), queue=queue)


# Login and sessions.


def test_pages_need_a_login(server: TestClient) -> None:
    for path in ("/", "/queues", "/jobs", "/queues/default/purge"):
        response = server.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/login"
    assert server.get("/overview.json").status_code == 401


@pytest.mark.parametrize(
    ("key", "message"),
    [("", "Enter an API key."), ("gq_nope", "not valid"), ("gq_" + "a" * 40, "not valid")],
)
def test_a_bad_or_missing_key_shows_the_login_page(
    server: TestClient, key: str, message: str
) -> None:
    response = server.post("/login", data={"key": key}, follow_redirects=False)
    assert response.status_code == 401
    assert message in response.text
    assert 'name="key"' in response.text
    assert COOKIE not in response.headers.get("set-cookie", "")


def test_a_revoked_key_cannot_log_in_and_ends_its_sessions(
    server: TestClient, app: GopherQ
) -> None:
    secret = login(server, app, "viewer")
    assert server.get("/", follow_redirects=False).status_code == 200
    key = app.access.revoke(app.access.list_keys()[0].name)
    server.app.state.gopherq.forget_key(key.id)  # type: ignore[attr-defined]
    assert server.get("/", follow_redirects=False).headers["location"] == "/login"
    response = server.post("/login", data={"key": secret}, follow_redirects=False)
    assert response.status_code == 401


def test_the_cookie_holds_no_key_and_is_http_only_and_same_site(
    server: TestClient, app: GopherQ
) -> None:
    _, secret = app.access.create("viewer", "viewer")
    response = server.post("/login", data={"key": secret}, follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(COOKIE + "=")
    assert secret not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie
    page = server.get("/")
    assert page.status_code == 200 and "viewer · viewer" in page.text


def test_the_cookie_is_secure_over_tls(app: GopherQ) -> None:
    _, secret = app.access.create("viewer", "viewer")
    with TestClient(create_app(app), base_url="https://testserver") as client:
        response = client.post("/login", data={"key": secret}, follow_redirects=False)
    assert "Secure" in response.headers["set-cookie"]


def test_a_forged_cookie_is_refused(server: TestClient, app: GopherQ) -> None:
    login(server, app, "admin")
    value = server.cookies[COOKIE]
    body, signature = value.split(".")
    server.cookies.set(COOKIE, body + "." + signature[::-1])
    assert server.get("/", follow_redirects=False).status_code == 303


def test_logout_ends_the_session(server: TestClient, app: GopherQ) -> None:
    login(server, app, "viewer")
    value = server.cookies[COOKIE]
    token = csrf(server.get("/").text)
    response = server.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    server.cookies.set(COOKIE, value)
    assert server.get("/", follow_redirects=False).status_code == 303


def test_a_login_from_another_site_is_refused(server: TestClient, app: GopherQ) -> None:
    _, secret = app.access.create("viewer", "viewer")
    response = server.post(
        "/login", data={"key": secret}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert COOKIE not in response.headers.get("set-cookie", "")


def test_no_auth_servers_skip_the_login(api: TestClient) -> None:
    assert api.get("/login", follow_redirects=False).headers["location"] == "/"
    page = api.get("/")
    assert page.status_code == 200 and "anonymous · admin" in page.text


# Security headers, CSRF and roles.


def test_every_dashboard_response_has_the_security_headers(api: TestClient) -> None:
    for path in ("/", "/queues", "/login", "/overview.json", "/static/live.js", "/no-such-page"):
        response = api.get(path, headers={"Accept": "text/html"})
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"


def test_pages_have_no_inline_script_or_style(api: TestClient) -> None:
    send(api.app.state.gopherq.app)  # type: ignore[attr-defined]
    for path in (
        "/",
        "/queues",
        "/queues/default/purge",
        "/jobs",
        "/dead",
        "/schedules",
        "/workers",
    ):
        page = api.get(path).text
        assert "<style" not in page and " style=" not in page
        assert re.search(r"<script(?![^>]*\bsrc=)", page) is None


@pytest.mark.parametrize(
    ("fields", "headers"),
    [
        ({}, {}),
        ({"csrf": "forged"}, {}),
        ({"csrf": "<token>"}, {"Origin": "https://evil.example"}),
        ({"csrf": "<token>"}, {"Referer": "https://evil.example/page"}),
    ],
)
def test_actions_without_a_valid_csrf_token_or_from_elsewhere_are_refused(
    api: TestClient, app: GopherQ, fields: dict[str, str], headers: dict[str, str]
) -> None:
    send(app)
    token = csrf(api.get("/queues").text)
    data = {k: token if v == "<token>" else v for k, v in fields.items()}
    for action, extra in (("pause", {}), ("purge", {"confirm": "yes"})):
        response = api.post(f"/queues/default/{action}", data=data | extra, headers=headers)
        assert response.status_code == 403
    assert not paused(app)
    assert app.broker.stats()["default"].ready == 1


def test_a_token_of_another_session_is_refused(api: TestClient, app: GopherQ) -> None:
    token = csrf(api.get("/queues").text)
    with TestClient(api.app) as other:
        other.get("/")
        response = other.post("/queues/default/pause", data={"csrf": token})
    assert response.status_code == 403 and not paused(app)


def test_a_viewer_sees_no_buttons_and_a_forced_action_is_refused(
    server: TestClient, app: GopherQ
) -> None:
    send(app)
    login(server, app, "viewer")
    page = server.get("/queues").text
    assert "Pause" not in page and "Purge" not in page
    response = server.post("/queues/default/pause", data={"csrf": csrf(page)})
    assert response.status_code == 403 and "operator role" in response.text
    assert not paused(app)
    (entry,) = _audit(app, 1)
    assert (entry.action, entry.target, entry.status, entry.role) == (
        "queues.pause",
        "default",
        403,
        "viewer",
    )
    assert server.get("/queues/default/purge").status_code == 403


def test_an_operator_pauses_resumes_and_purges_after_confirming(
    server: TestClient, app: GopherQ
) -> None:
    send(app)
    login(server, app, "operator")
    page = server.get("/queues").text
    assert 'aria-label="Pause default"' in page
    token = csrf(page)
    assert server.post("/queues/default/pause", data={"csrf": token}).status_code == 200
    assert paused(app)
    assert 'aria-label="Resume default"' in server.get("/queues").text
    server.post("/queues/default/resume", data={"csrf": token})
    assert not paused(app)
    response = server.post("/queues/default/purge", data={"csrf": token}, follow_redirects=False)
    assert response.headers["location"] == "/queues/default/purge"
    assert app.broker.stats()["default"].ready == 1
    confirm = server.get("/queues/default/purge").text
    assert 'name="confirm" value="yes"' in confirm
    server.post("/queues/default/purge", data={"csrf": token, "confirm": "yes"})
    assert app.broker.stats().get("default") is None or app.broker.stats()["default"].ready == 0
    actions = [entry.action for entry in _audit(app)]
    assert {"queues.pause", "queues.resume", "queues.purge"} <= set(actions)


def _audit(app: GopherQ, count: int = 3) -> list[Any]:
    """The audit log once it holds ``count`` entries (it is written from a thread)."""
    import time

    for _ in range(100):
        entries = app.access.audit()
        if len(entries) >= count:
            return entries
        time.sleep(0.02)
    return app.access.audit()


# Escaping and the 404 page.


def test_user_controlled_names_are_escaped(api: TestClient, app: GopherQ) -> None:
    send(app, queue=XSS)
    for path in ("/", "/queues"):
        page = api.get(path).text
        assert XSS not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert api.get("/overview.json").json()["queues"][0]["name"] in (XSS, "default")


def test_unknown_pages_and_queues_get_the_404_page(api: TestClient) -> None:
    for path in ("/no-such-page", "/queues/nope/purge", "/a/b/c"):
        response = api.get(path, headers={"Accept": "text/html"})
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "There is no such" in response.text
    token = csrf(api.get("/queues").text)
    assert api.post("/queues/nope/pause", data={"csrf": token}).status_code == 404


def test_the_api_keeps_its_problem_documents(api: TestClient) -> None:
    response = api.get("/api/v1/no-such-thing", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.json()["type"].endswith("not-found")
    assert "content-security-policy" not in response.headers


def test_the_overview_numbers_are_served_as_json(api: TestClient, app: GopherQ) -> None:
    send(app)
    data = api.get("/overview.json").json()
    assert data["queues"][0]["name"] == "default" and data["queues"][0]["ready"] == 1
    assert data["workers"] == {"online": 0, "checked": True}


def test_every_page_of_the_navigation_answers(api: TestClient) -> None:
    for path in ("/", "/queues", "/jobs", "/dead", "/schedules", "/workers"):
        page = api.get(path)
        assert page.status_code == 200
        assert 'aria-current="page"' in page.text


def test_sessions_expire_and_refuse_tampering() -> None:
    from gopherq.web.ui.session import Sessions

    sessions = Sessions(lifetime=10)
    session = sessions.new("abc", now=1000.0)
    value = sessions.encode(session)
    assert sessions.decode(value, now=1005.0) == session
    assert sessions.decode(value, now=1010.0) is None
    assert Sessions().decode(value, now=1005.0) is None  # another server's secret
    for bad in ("", "x", "a.b.c", value + "x", "e30." + value.split(".")[1]):
        assert sessions.decode(bad, now=1005.0) is None
    assert sessions.csrf_valid(session, sessions.csrf_token(session))
    assert not sessions.csrf_valid(session, None)
    sessions.end(session, now=1001.0)
    assert sessions.decode(value, now=1005.0) is None


def test_forms_behind_a_tls_proxy_pass_the_origin_check(api: TestClient, app: GopherQ) -> None:
    send(app)
    token = csrf(api.get("/queues").text)
    response = api.post(
        "/queues/default/pause", data={"csrf": token}, headers={"Origin": "https://testserver"}
    )
    assert response.status_code == 200 and paused(app)


def test_the_dashboard_works_mounted_under_a_prefix(app: GopherQ) -> None:
    from fastapi import FastAPI

    outer = FastAPI()
    outer.mount("/gq", create_app(app))
    _, secret = app.access.create("ops", "operator")
    send(app)
    with TestClient(outer) as client:
        response = client.get("/gq/queues", follow_redirects=False)
        assert response.headers["location"] == "/gq/login"
        response = client.post("/gq/login", data={"key": secret}, follow_redirects=False)
        assert response.headers["location"] == "/gq/"
        assert "Path=/gq" in response.headers["set-cookie"]
        page = client.get("/gq/queues").text
        assert 'href="/gq/static/dashboard.css"' in page
        assert 'action="/gq/queues/default/pause"' in page
        assert 'href="/gq/queues"' in page and 'href="/queues"' not in page
        response = client.post(
            "/gq/queues/default/pause", data={"csrf": csrf(page)}, follow_redirects=False
        )
        assert response.headers["location"] == "/gq/queues" and paused(app)
        assert client.get("/gq/static/live.js").status_code == 200
        api = client.get("/gq/api/v1/no-such-thing")
        assert api.status_code == 404 and "content-security-policy" not in api.headers
