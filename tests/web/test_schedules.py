"""Schedules over HTTP: list, add, replace, update, remove, pause, resume."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gopherq import GopherQ
from gopherq.access.roles import Role
from web.ops_support import add_name, problem, role_client

SCHEDULES = "/api/v1/schedules"


@pytest.fixture
def declared(app: GopherQ) -> str:
    """An entry declared in code: ``nightly``."""
    app.add_periodic(add_name(app), name="nightly", cron="0 3 * * *", args=(1, 2))
    return "nightly"


def spec(app: GopherQ, **changes: Any) -> dict[str, Any]:
    return {"task": add_name(app), "every": "30s", "args": [1, 2], **changes}


def names(api: TestClient) -> list[str]:
    return [s["name"] for s in api.get(SCHEDULES).json()["items"]]


def test_list_shows_declared_and_dynamic_entries(
    app: GopherQ, api: TestClient, declared: str
) -> None:
    app.schedules.add("tidy", add_name(app), every=60, args=[3, 4])
    items = {s["name"]: s for s in api.get(SCHEDULES).json()["items"]}
    assert list(items) == ["nightly", "tidy"]
    nightly = items["nightly"]
    assert (nightly["source"], nightly["schedule"], nightly["cron"]) == (
        "code",
        "cron 0 3 * * *",
        "0 3 * * *",
    )
    assert (nightly["paused"], nightly["last_run"], nightly["args"]) == (False, None, [1, 2])
    assert nightly["next_run"] % 86400 == 3 * 3600
    tidy = items["tidy"]
    assert (tidy["source"], tidy["every"], tidy["schedule"]) == ("dynamic", 60, "every 1m")
    assert tidy["created"] is not None
    assert api.get(f"{SCHEDULES}/tidy").json() == tidy
    problem(api.get(f"{SCHEDULES}/nope"), 404)


def test_add(app: GopherQ, api: TestClient) -> None:
    answer = api.post(SCHEDULES, json={"name": "s1", **spec(app, queue="math", priority="high")})
    assert answer.status_code == 201
    assert answer.headers["location"] == f"{SCHEDULES}/s1"
    body = answer.json()
    assert (body["every"], body["queue"], body["priority"], body["source"]) == (
        30,
        "math",
        1,
        "dynamic",
    )
    entry = app.schedules.dynamic()[1]["s1"]
    assert (entry.task, entry.args, entry.every) == (add_name(app), (1, 2), 30)


def test_add_paused(app: GopherQ, api: TestClient) -> None:
    body = api.post(SCHEDULES, json={"name": "s1", **spec(app, paused=True)}).json()
    assert (body["paused"], body["next_run"]) == (True, None)


def test_add_refuses_a_taken_name(app: GopherQ, api: TestClient, declared: str) -> None:
    api.post(SCHEDULES, json={"name": "s1", **spec(app)})
    body = problem(api.post(SCHEDULES, json={"name": "s1", **spec(app, every=5)}), 409)
    assert body["type"] == "urn:gopherq:problem:schedule-exists"
    assert app.schedules.dynamic()[1]["s1"].every == 30
    body = problem(api.post(SCHEDULES, json={"name": declared, **spec(app)}), 409)
    assert body["type"] == "urn:gopherq:problem:schedule-declared"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "a/b"}, "body.name"),
        ({"name": "a\nb"}, "body.name"),
        ({"name": "a..b"}, "body.name"),
        ({"name": "n" * 300}, "body.name"),
        ({"name": ""}, "body.name"),
        ({"task": "no.such.task"}, "body.task"),
        ({"task": "t\x00"}, "body.task"),
        ({"queue": "q/q"}, "body.queue"),
        ({"every": None}, "body.cron"),
        ({"cron": "* * * * *"}, "body.cron"),
        ({"every": None, "cron": "bad"}, "body.cron"),
        ({"every": "soon"}, "body.every"),
        ({"every": 0}, "body.every"),
        ({"every": "99999999999999999999d"}, "body.every"),
        ({"every": 10**30}, "body.every"),
        ({"tz": "Mars/Olympus"}, "body.tz"),
        ({"priority": "urgent"}, "body.priority"),
        ({"priority": True}, "body.priority"),
        ({"every": True}, "body.every"),
        ({"catch_up": "some"}, "body.catch_up"),
        ({"args": [1, 2, 3]}, "body.args"),
        ({"kwargs": {"z": 1}}, "body.args"),
        ({"args": "12"}, "body.args"),
        ({"kwarg": {}}, "body.kwarg"),
    ],
)
def test_add_refuses_bad_entries(
    app: GopherQ, api: TestClient, changes: dict[str, Any], field: str
) -> None:
    body = {"name": "s1", **spec(app), **changes}
    errors = problem(api.post(SCHEDULES, json=body), 422)["errors"]
    # A value of neither type of a union is wrong for each: body.every.int, body.every.str.
    assert {e["field"].removesuffix(".int").removesuffix(".str") for e in errors} == {field}
    assert app.schedules.dynamic()[1] == {}


def test_add_refuses_a_body_over_the_size_limit(app: GopherQ, api: TestClient) -> None:
    body = {"name": "s1", **spec(app), "args": ["x" * 1_100_000, 2]}
    assert problem(api.post(SCHEDULES, json=body), 413)["errors"][0]["field"] == "body"
    assert app.schedules.dynamic()[1] == {}


def test_put_adds_then_replaces(app: GopherQ, api: TestClient, declared: str) -> None:
    answer = api.put(f"{SCHEDULES}/s1", json=spec(app))
    assert (answer.status_code, answer.headers["location"]) == (201, f"{SCHEDULES}/s1")
    answer = api.put(f"{SCHEDULES}/s1", json=spec(app, every=None, cron="*/5 * * * *"))
    assert answer.status_code == 200
    assert (answer.json()["cron"], answer.json()["every"]) == ("*/5 * * * *", None)
    problem(api.put(f"{SCHEDULES}/{declared}", json=spec(app)), 409)
    problem(api.put(f"{SCHEDULES}/s1", json=spec(app, every=None)), 422, "body.cron")


def test_patch_changes_what_is_given(app: GopherQ, api: TestClient) -> None:
    api.post(SCHEDULES, json={"name": "s1", **spec(app, queue="math")})
    changes = {"cron": "0 * * * *", "args": [1], "kwargs": {"y": 5}}
    body = api.patch(f"{SCHEDULES}/s1", json=changes).json()
    assert (body["cron"], body["every"], body["kwargs"], body["args"]) == (
        "0 * * * *",
        None,
        {"y": 5},
        [1],
    )
    body = api.patch(f"{SCHEDULES}/s1", json={"args": [1, 2], "kwargs": {}, "queue": None})
    assert (body.json()["args"], body.json()["queue"], body.json()["cron"]) == (
        [1, 2],
        None,
        "0 * * * *",
    )
    body = api.patch(f"{SCHEDULES}/s1", json={"every": 10}).json()
    assert (body["cron"], body["every"]) == (None, 10)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cron": "bad"}, "body.cron"),
        ({"every": 5, "cron": "* * * * *"}, "body.cron"),
        ({"task": "no.such.task"}, "body.task"),
        ({"task": None}, "body.task"),
        ({"args": None}, "body.args"),
        ({"args": [1, 2, 3]}, "body.args"),
        ({"priority": 9}, "body.priority"),
        ({"queue": "a\x00"}, "body.queue"),
        ({"paused": True}, "body.paused"),
    ],
)
def test_patch_refuses_bad_changes(
    app: GopherQ, api: TestClient, changes: dict[str, Any], field: str
) -> None:
    api.post(SCHEDULES, json={"name": "s1", **spec(app)})
    before = app.schedules.dynamic()[1]["s1"]
    problem(api.patch(f"{SCHEDULES}/s1", json=changes), 422, field)
    assert app.schedules.dynamic()[1]["s1"] == before


def test_patch_of_unknown_or_declared(app: GopherQ, api: TestClient, declared: str) -> None:
    problem(api.patch(f"{SCHEDULES}/nope", json={"every": 5}), 404)
    body = problem(api.patch(f"{SCHEDULES}/{declared}", json={"every": 5}), 409)
    assert "declared in code" in body["detail"]


def test_remove(app: GopherQ, api: TestClient, declared: str) -> None:
    api.post(SCHEDULES, json={"name": "s1", **spec(app)})
    assert api.delete(f"{SCHEDULES}/s1").status_code == 204
    assert names(api) == [declared]
    problem(api.delete(f"{SCHEDULES}/s1"), 404)
    body = problem(api.delete(f"{SCHEDULES}/{declared}"), 409)
    assert body["type"] == "urn:gopherq:problem:schedule-declared"
    assert "paused and resumed here" in body["detail"]
    assert names(api) == [declared]


def test_remove_an_entry_that_does_not_decode(app: GopherQ, api: TestClient) -> None:
    app.schedules.store.put("broken", b"\xc1")
    assert names(api) == []
    assert api.delete(f"{SCHEDULES}/broken").status_code == 204
    assert app.schedules.store.entries()[1] == {}


def test_pause_and_resume_any_entry(app: GopherQ, api: TestClient, declared: str) -> None:
    api.post(SCHEDULES, json={"name": "s1", **spec(app)})
    for name in (declared, "s1"):
        body = api.post(f"{SCHEDULES}/{name}/pause").json()
        assert (body["paused"], body["next_run"]) == (True, None)
        body = api.post(f"{SCHEDULES}/{name}/resume").json()
        assert body["paused"] is False and body["next_run"] is not None
    problem(api.post(f"{SCHEDULES}/nope/pause"), 404)
    problem(api.post(f"{SCHEDULES}/nope/resume"), 404)


@pytest.mark.parametrize("name", ["a%00b", "%20a", "a..b", "n" * 300])
def test_bad_names_in_paths(app: GopherQ, api: TestClient, name: str) -> None:
    for response in (
        api.get(f"{SCHEDULES}/{name}"),
        api.put(f"{SCHEDULES}/{name}", json=spec(app)),
        api.patch(f"{SCHEDULES}/{name}", json={"every": 5}),
        api.delete(f"{SCHEDULES}/{name}"),
        api.post(f"{SCHEDULES}/{name}/pause"),
        api.post(f"{SCHEDULES}/{name}/resume"),
    ):
        problem(response, 422, "path.name")
    assert names(api) == []


def test_viewers_read_admins_change(app: GopherQ, declared: str) -> None:
    app.schedules.add("s1", add_name(app), every=60, args=[1, 2])
    problem(role_client(app, None).get(SCHEDULES), 401)
    viewer = role_client(app, Role.VIEWER)
    assert viewer.get(SCHEDULES).status_code == 200
    assert viewer.get(f"{SCHEDULES}/s1").status_code == 200
    for role in (Role.VIEWER, Role.SUBMITTER, Role.OPERATOR):
        client = role_client(app, role)
        for response in (
            client.post(SCHEDULES, json={"name": "s2", **spec(app)}),
            client.put(f"{SCHEDULES}/s1", json=spec(app)),
            client.patch(f"{SCHEDULES}/s1", json={"every": 5}),
            client.delete(f"{SCHEDULES}/s1"),
            client.post(f"{SCHEDULES}/s1/pause"),
            client.post(f"{SCHEDULES}/s1/resume"),
        ):
            problem(response, 403)
    assert app.schedules.dynamic()[1]["s1"].every == 60
    admin = role_client(app, Role.ADMIN)
    assert admin.patch(f"{SCHEDULES}/s1", json={"every": 5}).json()["every"] == 5
