"""Queues over HTTP: depths, pause, resume, purge."""

from __future__ import annotations

import pytest
import services
from fastapi.testclient import TestClient

from gopherq import GopherQ, State
from gopherq.access.roles import Role
from web.ops_support import add_name, kill, problem, role_client

QUEUES = "/api/v1/queues"


def test_list_has_declared_queues_and_broker_ones(app: GopherQ, api: TestClient) -> None:
    empty = api.get(QUEUES).json()["items"]
    assert [q["name"] for q in empty] == ["default"]
    assert empty[0] == {
        "name": "default",
        "ready": 0,
        "ready_by_priority": {},
        "scheduled": 0,
        "running": 0,
        "dead": 0,
        "paused": False,
        "oldest_age": None,
        "declared": True,
    }
    name = add_name(app)
    kill(app, name, 1, 2, queue="math")
    app.send_task(name, [1, 2], queue="math", priority=0)
    app.send_task(name, [1, 2], queue="math")
    app.send_task(name, [1, 2], queue="math", countdown=60)
    app.broker.reserve(["math"], 1, 0)  # the priority 0 one
    items = {q["name"]: q for q in api.get(QUEUES).json()["items"]}
    math = items["math"]
    assert (math["ready"], math["ready_by_priority"]) == (1, {"2": 1})
    assert (math["scheduled"], math["running"], math["dead"]) == (1, 1, 1)
    assert math["declared"] is False and math["oldest_age"] >= 0


def test_get_one(app: GopherQ, api: TestClient) -> None:
    app.send_task(add_name(app), [1, 2])
    assert api.get(f"{QUEUES}/default").json()["ready"] == 1
    assert problem(api.get(f"{QUEUES}/nope"), 404)["detail"] == "no queue 'nope'"


def test_pause_and_resume(app: GopherQ, api: TestClient) -> None:
    assert api.post(f"{QUEUES}/default/pause").json() == {"name": "default", "paused": True}
    assert api.get(f"{QUEUES}/default").json()["paused"] is True
    app.send_task(add_name(app), [1, 2])
    assert app.broker.reserve(["default"], 1, 0) == []
    assert api.post(f"{QUEUES}/default/resume").json() == {"name": "default", "paused": False}
    assert len(app.broker.reserve(["default"], 1, 0)) == 1


def test_pause_of_an_unknown_queue_needs_create(app: GopherQ, api: TestClient) -> None:
    problem(api.post(f"{QUEUES}/later/pause"), 404)
    assert "later" not in [q["name"] for q in api.get(QUEUES).json()["items"]]
    assert api.post(f"{QUEUES}/later/pause", params={"create": "true"}).json()["paused"]
    assert api.get(f"{QUEUES}/later").json()["paused"] is True
    problem(api.post(f"{QUEUES}/later/pause", params={"create": "maybe"}), 422, "query.create")


def test_purge_counts_waiting_messages(app: GopherQ, api: TestClient) -> None:
    name = add_name(app)
    ids = [app.send_task(name, [1, 2]).id for _ in range(3)]
    scheduled = app.send_task(name, [1, 2], countdown=60).id
    [running] = app.broker.reserve(["default"], 1, 0)
    assert api.post(f"{QUEUES}/default/purge").json() == {"name": "default", "purged": 3}
    assert app.broker.locate(scheduled) is None
    assert app.broker.locate(running.id) is State.STARTED
    assert {app.broker.locate(id) for id in ids if id != running.id} == {None}


@pytest.mark.parametrize("action", ["pause", "resume", "purge"])
def test_unknown_queue_changes_nothing(api: TestClient, action: str) -> None:
    problem(api.post(f"{QUEUES}/nope/{action}"), 404)
    assert [q["name"] for q in api.get(QUEUES).json()["items"]] == ["default"]


@pytest.mark.parametrize("name", ["a%00b", "a%7Fb", "%20a", "a..b", "q" * 129, "a%E2%80%AEb"])
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("post", "/pause"), ("post", "/resume"), ("post", "/purge")],
)
def test_bad_names_are_refused(app: GopherQ, name: str, method: str, suffix: str) -> None:
    api = role_client(app, Role.ADMIN)
    app.send_task(add_name(app), [1, 2])
    response = getattr(api, method)(f"{QUEUES}/{name}{suffix}", params={"create": "true"})
    problem(response, 422, "path.name")
    assert api.get(f"{QUEUES}/default").json()["ready"] == 1
    assert [q["name"] for q in api.get(QUEUES).json()["items"]] == ["default"]


def test_a_slash_in_a_name_is_no_route(api: TestClient) -> None:
    problem(api.post(f"{QUEUES}/a%2Fb/pause"), 404)
    assert [q["name"] for q in api.get(QUEUES).json()["items"]] == ["default"]


def test_viewers_read_operators_change(app: GopherQ) -> None:
    problem(role_client(app, None).get(QUEUES), 401)
    viewer = role_client(app, Role.VIEWER)
    assert viewer.get(QUEUES).status_code == 200
    assert viewer.get(f"{QUEUES}/default").status_code == 200
    for action in ("pause", "resume", "purge"):
        for role in (Role.VIEWER, Role.SUBMITTER):
            problem(role_client(app, role).post(f"{QUEUES}/default/{action}"), 403)
    assert viewer.get(f"{QUEUES}/default").json()["paused"] is False
    operator = role_client(app, Role.OPERATOR)
    assert operator.post(f"{QUEUES}/default/pause").json()["paused"] is True
    assert operator.post(f"{QUEUES}/default/purge").json()["purged"] == 0


def test_on_redis() -> None:
    url = services.redis_test_url()
    app = GopherQ("webtest", broker=url)
    try:
        app.send_task("some.task", [1], queue="q1")
        api = role_client(app, Role.OPERATOR)
        items = {q["name"]: q for q in api.get(QUEUES).json()["items"]}
        assert items["q1"]["ready_by_priority"] == {"2": 1} and items["q1"]["declared"] is False
        assert api.post(f"{QUEUES}/q1/pause").json()["paused"] is True
        assert api.post(f"{QUEUES}/q1/purge").json()["purged"] == 1
        # Redis cannot hold a queue name starting with '}': 422, nothing paused.
        answer = api.post(f"{QUEUES}/%7Dq/pause", params={"create": "true"})
        problem(answer, 422, "path.name")
        assert "}q" not in [q["name"] for q in api.get(QUEUES).json()["items"]]
    finally:
        app.close()
        services.delete_keys(url)
