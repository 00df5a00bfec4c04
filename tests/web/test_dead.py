"""Dead letters over HTTP: list with filters, read, retry one or many, purge, replay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import services
from conftest import broker_url
from fastapi.testclient import TestClient

from gopherq import GopherQ, State
from gopherq.access.roles import Role
from gopherq.web import create_app
from web.ops_support import add_name, kill, kill_raw, problem, role_client

DEAD = "/api/v1/dead"


# Listing.


def test_list_newest_first_with_every_field(app: GopherQ, api: TestClient) -> None:
    assert api.get(DEAD).json() == {"items": [], "offset": 0, "limit": 50, "next_offset": None}
    first = kill(app, add_name(app), 1, 2)
    second = kill(app, add_name(app), 3, 4, queue="math", reason="EXPIRED")
    items = api.get(DEAD).json()["items"]
    assert [i["id"] for i in items] == [second, first]
    assert items[1] == {
        "id": first,
        "queue": "default",
        "task": add_name(app),
        "reason": "MAX_RETRIES",
        "error": f"error of {first}",
        "attempts": 1,
        "died": items[1]["died"],
    }


def test_list_filters_by_queue_and_reason(app: GopherQ, api: TestClient) -> None:
    a = kill(app, add_name(app), 1, 2, queue="a", reason="EXPIRED")
    b = kill(app, add_name(app), 1, 2, queue="b", reason="EXPIRED")
    c = kill(app, add_name(app), 1, 2, queue="a", reason="REJECTED")

    def ids(**params: str) -> list[str]:
        return [i["id"] for i in api.get(DEAD, params=params).json()["items"]]

    assert ids(queue="a") == [c, a]
    assert ids(reason="EXPIRED") == [b, a]
    assert ids(queue="a", reason="EXPIRED") == [a]
    assert ids(queue="c") == []


def test_list_pages_with_offset_and_limit(app: GopherQ, api: TestClient) -> None:
    ids = [kill(app, add_name(app), i, i) for i in range(5)][::-1]
    page = api.get(DEAD, params={"limit": 2}).json()
    assert ([i["id"] for i in page["items"]], page["next_offset"]) == (ids[:2], 2)
    page = api.get(DEAD, params={"offset": 4, "limit": 2}).json()
    assert ([i["id"] for i in page["items"]], page["next_offset"]) == (ids[4:], None)
    page = api.get(DEAD, params={"offset": 1, "limit": 2, "reason": "MAX_RETRIES"}).json()
    assert ([i["id"] for i in page["items"]], page["next_offset"]) == (ids[1:3], 3)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"reason": "BORED"}, "query.reason"),
        ({"limit": "0"}, "query.limit"),
        ({"limit": "1001"}, "query.limit"),
        ({"offset": "-1"}, "query.offset"),
        ({"queue": "a/b"}, "query.queue"),
        ({"queue": "a\x00b"}, "query.queue"),
        ({"queue": ".."}, "query.queue"),
        ({"queue": "q" * 129}, "query.queue"),
    ],
)
def test_list_refuses_bad_filters(api: TestClient, params: dict[str, str], field: str) -> None:
    problem(api.get(DEAD, params=params), 422, field)


# One dead letter.


def test_get_one_with_its_arguments(app: GopherQ, api: TestClient) -> None:
    id = kill(app, add_name(app), 1, 2)
    body = api.get(f"{DEAD}/{id}").json()
    assert (body["id"], body["args"], body["kwargs"], body["priority"]) == (id, [1, 2], {}, 2)


def test_get_one_that_does_not_decode(app: GopherQ, api: TestClient) -> None:
    id = kill_raw(app, b"\xc1")
    body = api.get(f"{DEAD}/{id}").json()
    assert (body["task"], body["args"], body["reason"]) == (None, None, "DECODE_ERROR")


def test_get_unknown_or_bad_id(app: GopherQ, api: TestClient) -> None:
    assert problem(api.get(f"{DEAD}/nope"), 404)["detail"] == "no dead letter 'nope'"
    live = app.send_task(add_name(app), [1, 2]).id
    problem(api.get(f"{DEAD}/{live}"), 404)
    problem(api.get(f"{DEAD}/{'x' * 129}"), 422, "path.id")
    problem(api.get(f"{DEAD}/a%20"), 422, "path.id")


# Retry.


def test_retry_one(app: GopherQ, api: TestClient) -> None:
    id = kill(app, add_name(app), 1, 2)
    assert api.post(f"{DEAD}/{id}/retry").json() == {"retried": 1}
    assert app.broker.locate(id) is State.QUEUED
    problem(api.post(f"{DEAD}/{id}/retry"), 404)


def test_retry_one_whose_key_is_held_is_a_conflict(app: GopherQ, api: TestClient) -> None:
    id = kill(app, add_name(app), 1, 2, key="k")
    app.send_task(add_name(app), [3, 4], key="k")
    body = problem(api.post(f"{DEAD}/{id}/retry"), 409)
    assert body["type"] == "urn:gopherq:problem:key-held"
    assert app.broker.locate(id) is State.DEAD


def test_retry_many_by_ids(app: GopherQ, api: TestClient) -> None:
    ids = [kill(app, add_name(app), i, i) for i in range(3)]
    answer = api.post(f"{DEAD}:retry", json={"ids": [ids[0], ids[2], "unknown"]})
    assert answer.json() == {"retried": 2}
    assert [app.broker.locate(id) for id in ids] == [State.QUEUED, State.DEAD, State.QUEUED]


def test_retry_many_by_filter(app: GopherQ, api: TestClient) -> None:
    a = kill(app, add_name(app), 1, 2, queue="a", reason="EXPIRED")
    b = kill(app, add_name(app), 1, 2, queue="b", reason="EXPIRED")
    c = kill(app, add_name(app), 1, 2, queue="a", reason="REJECTED")
    d = kill(app, add_name(app), 1, 2, queue="b", reason="REJECTED")
    assert api.post(f"{DEAD}:retry", json={"queue": "a", "reason": "EXPIRED"}).json() == {
        "retried": 1
    }
    assert app.broker.locate(a) is State.QUEUED
    assert api.post(f"{DEAD}:retry", json={"reason": "EXPIRED"}).json() == {"retried": 1}
    assert app.broker.locate(b) is State.QUEUED
    assert api.post(f"{DEAD}:retry", json={"queue": "a"}).json() == {"retried": 1}
    assert app.broker.locate(c) is State.QUEUED
    assert api.post(f"{DEAD}:retry", json={"all": True}).json() == {"retried": 1}
    assert app.broker.locate(d) is State.QUEUED


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"all": False}, "body"),
        ({"ids": []}, "body.ids"),
        ({"ids": ["a"], "queue": "a"}, "body.ids"),
        ({"ids": ["a"], "all": True}, "body.ids"),
        ({"ids": ["ok", "x" * 129]}, "body.ids.1"),
        ({"ids": "abc"}, "body.ids"),
        ({"ids": ["a"] * 1001}, "body.ids"),
        ({"queue": "a/b"}, "body.queue"),
        ({"reason": "BORED"}, "body.reason"),
        ({"queues": ["a"]}, "body.queues"),
    ],
)
@pytest.mark.parametrize("action", ["retry", "purge"])
def test_bulk_refuses_bad_selections(
    app: GopherQ, api: TestClient, action: str, body: dict[str, object], field: str
) -> None:
    id = kill(app, add_name(app), 1, 2)
    problem(api.post(f"{DEAD}:{action}", json=body), 422, field)
    assert app.broker.locate(id) is State.DEAD


# Purge.


def test_purge_by_ids_leaves_live_messages_alone(app: GopherQ, api: TestClient) -> None:
    ids = [kill(app, add_name(app), i, i) for i in range(2)]
    live = app.send_task(add_name(app), [1, 2]).id
    assert api.post(f"{DEAD}:purge", json={"ids": [ids[0], live]}).json() == {"purged": 1}
    assert [app.broker.locate(id) for id in (*ids, live)] == [None, State.DEAD, State.QUEUED]


def test_purge_by_filter(app: GopherQ, api: TestClient) -> None:
    a = kill(app, add_name(app), 1, 2, queue="a", reason="EXPIRED")
    b = kill(app, add_name(app), 1, 2, queue="b", reason="EXPIRED")
    c = kill(app, add_name(app), 1, 2, queue="b", reason="REJECTED")
    assert api.post(f"{DEAD}:purge", json={"reason": "EXPIRED", "queue": "b"}).json() == {
        "purged": 1
    }
    assert app.broker.locate(b) is None
    assert api.post(f"{DEAD}:purge", json={"queue": "a"}).json() == {"purged": 1}
    assert app.broker.locate(a) is None
    assert api.post(f"{DEAD}:purge", json={"all": True}).json() == {"purged": 1}
    assert app.broker.locate(c) is None


# Replay.


def test_replay_sends_a_new_job_with_new_arguments(app: GopherQ, api: TestClient) -> None:
    id = kill(app, add_name(app), 1, 2, queue="math")
    answer = api.post(f"{DEAD}/{id}/replay", json={"args": [5, 6]})
    assert answer.status_code == 201
    new = answer.json()["id"]
    assert answer.json() == {"id": new, "replaced": id, "removed": True}
    assert answer.headers["location"] == f"/api/v1/jobs/{new}"
    assert new != id and app.broker.locate(id) is None
    [delivery] = app.broker.reserve(["math"], 1, 0)
    message = app.codec.decode(delivery.body)
    assert (message.id, message.task, message.args, message.attempt) == (
        new,
        add_name(app),
        [5, 6],
        0,
    )


def test_replay_keeps_what_is_not_given(app: GopherQ, api: TestClient) -> None:
    id = kill(app, add_name(app), 1, 2)
    new = api.post(f"{DEAD}/{id}/replay", json={"kwargs": {}}).json()["id"]
    [delivery] = app.broker.reserve(["default"], 1, 0)
    assert (delivery.id, app.codec.decode(delivery.body).args) == (new, [1, 2])


def test_replay_refusals(app: GopherQ, api: TestClient) -> None:
    problem(api.post(f"{DEAD}/nope/replay", json={}), 404)
    raw = kill_raw(app, b"\xc1")
    body = problem(api.post(f"{DEAD}/{raw}/replay", json={"args": [1]}), 409)
    assert body["type"] == "urn:gopherq:problem:not-replayable"
    assert app.broker.locate(raw) is State.DEAD
    id = kill(app, add_name(app), 1, 2)
    problem(api.post(f"{DEAD}/{id}/replay", json={"args": {"x": 1}}), 422, "body.args")
    problem(api.post(f"{DEAD}/{id}/replay", json={"kwargs": [1]}), 422, "body.kwargs")
    problem(api.post(f"{DEAD}/{id}/replay", json={"arg": [1]}), 422, "body.arg")
    problem(api.post(f"{DEAD}/{id}/replay", json={"args": [1, 2, 3]}), 422, "body.args")
    problem(api.post(f"{DEAD}/{id}/replay", json={"kwargs": {"z": 1}}), 422, "body.kwargs")
    both = {"args": [1], "kwargs": {"z": 1}}
    problem(api.post(f"{DEAD}/{id}/replay", json=both), 422, "body")
    body = problem(api.post(f"{DEAD}/{id}/replay", json={"args": ["x" * 1_100_000, 1]}), 413)
    assert body["type"] == "urn:gopherq:problem:payload-too-large"
    assert app.broker.locate(id) is State.DEAD


# Roles.


def test_viewers_read_operators_change(app: GopherQ) -> None:
    id = kill(app, add_name(app), 1, 2)
    problem(role_client(app, None).get(DEAD), 401)
    viewer = role_client(app, Role.VIEWER)
    assert viewer.get(DEAD).status_code == 200
    assert viewer.get(f"{DEAD}/{id}").status_code == 200
    for path, body in [
        (f"{DEAD}/{id}/retry", None),
        (f"{DEAD}:retry", {"ids": [id]}),
        (f"{DEAD}:purge", {"ids": [id]}),
        (f"{DEAD}/{id}/replay", {}),
    ]:
        for role in (Role.VIEWER, Role.SUBMITTER):
            problem(role_client(app, role).post(path, json=body), 403)
    assert app.broker.locate(id) is State.DEAD
    answer = role_client(app, Role.OPERATOR).post(f"{DEAD}/{id}/retry")
    assert answer.json() == {"retried": 1}


# The lookups each broker implements.


@pytest.fixture(params=["sqlite", "redis"])
def broker_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GopherQ]:
    url = broker_url(request.param, tmp_path)
    app = GopherQ("webtest", broker=url)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    app.close()
    if request.param == "redis":
        services.delete_keys(url)


def test_on_sqlite_and_redis(broker_app: GopherQ) -> None:
    app = broker_app
    api = TestClient(create_app(app, auth=False))
    a = kill(app, add_name(app), 1, 2, queue="a", reason="EXPIRED")
    b = kill(app, add_name(app), 3, 4, queue="b", reason="REJECTED")
    assert api.get(f"{DEAD}/{b}").json()["args"] == [3, 4]
    problem(api.get(f"{DEAD}/nope"), 404)
    assert [i["id"] for i in api.get(DEAD, params={"reason": "EXPIRED"}).json()["items"]] == [a]
    new = api.post(f"{DEAD}/{b}/replay", json={"args": [7, 8]}).json()["id"]
    assert (app.broker.locate(new), app.broker.locate(b)) == (State.QUEUED, None)
    assert api.post(f"{DEAD}:retry", json={"reason": "EXPIRED"}).json() == {"retried": 1}
    assert app.broker.locate(a) is State.QUEUED
