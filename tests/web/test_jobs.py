"""The jobs resource, in-process on the memory broker: every route, every 4xx."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gopherq import GopherQ, State
from gopherq.access.roles import Role
from gopherq.errors import BrokerUnavailable
from gopherq.web import create_app
from gopherq.web.auth import Caller
from gopherq.web.routes.jobs import INLINE_CHECKS
from gopherq.web.routes.jobs_models import MAX_BATCH
from gopherq.web.state import ServerState
from gopherq.worker.consumer import Consumer, Exit

pytestmark = pytest.mark.timeout(60)

JOBS = "/api/v1/jobs"


@pytest.fixture
def app(app: GopherQ) -> GopherQ:
    """The web fixture's app, with tasks of known names: one that fails, one that waits."""

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.fail", retries=0)
    def fail() -> None:
        raise ValueError("broken")

    @app.task(name="t.odd")
    def odd() -> Any:
        return {"nan": float("nan"), "bytes": b"\x00\x01"}

    return app


def drain(app: GopherQ) -> None:
    """Run a burst consumer in this thread until the queues are empty."""
    assert Consumer(app, ["default"], burst=True, reserve_timeout=0.2).run() is Exit.DRAINED


def send(api: TestClient, **body: Any) -> dict[str, Any]:
    response = api.post(JOBS, json={"task": "t.add", "args": [1, 2], **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    data: dict[str, Any] = response.json()
    return data


def fields(response: Any) -> list[str]:
    return [e["field"] for e in problem(response, 422)["errors"]]


# POST /jobs


def test_create_answers_201_with_a_location(app: GopherQ, api: TestClient) -> None:
    response = api.post(JOBS, json={"task": "t.add", "args": [2, 3], "priority": "high"})
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"], "task": "t.add", "queue": "default", "new": True}
    assert response.headers["location"] == f"{JOBS}/{body['id']}"
    assert app.broker.locate(body["id"]) is State.QUEUED
    drain(app)
    assert app.result(body["id"]).get(timeout=1) == 5


def test_the_location_keeps_the_mount_prefix(app: GopherQ) -> None:
    from fastapi import FastAPI

    outer = FastAPI()
    outer.mount("/queue", create_app(app, auth=False))
    with TestClient(outer) as client:
        response = client.post(f"/queue{JOBS}", json={"task": "t.add", "args": [2, 3]})
        assert response.status_code == 201, response.text
        location = response.headers["location"]
        assert location == f"/queue{JOBS}/{response.json()['id']}"
        assert client.get(location).json()["state"] == "QUEUED"


def test_create_with_every_option(app: GopherQ, api: TestClient) -> None:
    body = send(
        api,
        queue="default",
        priority=0,
        eta=dt.datetime.fromtimestamp(time.time() + 86400, dt.UTC).isoformat(),
        expires=3600,
        retries=2,
        key="k",
        headers={"trace": "x"},
    )
    assert body["new"]
    assert app.broker.locate(body["id"]) is State.SCHEDULED
    assert send(api, countdown=60)["new"]
    assert send(api, eta=time.time() + 60, expires="2099-01-01T00:00:00Z")["new"]


def test_a_held_idempotency_key_answers_200_with_the_first_job(
    app: GopherQ, api: TestClient
) -> None:
    first = send(api, key="once")
    again = api.post(JOBS, json={"task": "t.add", "args": [1, 2], "key": "once"})
    assert again.status_code == 200
    assert again.json()["id"] == first["id"] and again.json()["new"] is False
    assert again.headers["location"] == f"{JOBS}/{first['id']}"
    assert app.broker.stats()["default"].ready == 1


def test_a_finished_job_answers_for_its_key_within_its_key_ttl(
    app: GopherQ, api: TestClient
) -> None:
    first = send(api, key="done", key_ttl=3600)
    drain(app)
    again = api.post(JOBS, json={"task": "t.add", "args": [5, 5], "key": "done"})
    assert again.status_code == 200
    assert again.json()["id"] == first["id"] and again.json()["new"] is False
    assert api.get(f"{JOBS}/{first['id']}/result").json()["result"] == 3
    assert send(api, key="gone", key_ttl=0)["new"]
    drain(app)
    assert send(api, key="gone")["new"]  # held for no time: sent anew


def test_a_fair_key_travels_with_the_job(app: GopherQ, api: TestClient) -> None:
    body = send(api, fair_key="tenant-42")
    peeked = app.broker.peek(body["id"])
    assert peeked is not None and app.codec.decode(peeked.body).fair_key == "tenant-42"


def test_unknown_task_is_422_with_close_names_and_nothing_sent(
    app: GopherQ, api: TestClient
) -> None:
    response = api.post(JOBS, json={"task": "add"})
    body = problem(response, 422)
    assert body["errors"][0]["field"] == "body.task"
    assert "'t.add'" in body["errors"][0]["detail"]
    assert app.broker.stats() == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"args": [1]}, "body.args"),
        ({"args": [1, 2, 3]}, "body.args"),
        ({"kwargs": {"z": 1}}, "body.kwargs"),
        ({"args": [2**70, 1]}, "body.args"),
        ({"eta": 10**10}, "body.eta"),
        ({"countdown": 10**9}, "body.countdown"),
        ({"headers": {str(i): i for i in range(100)}}, "body.headers"),
    ],
)
def test_arguments_and_options_the_send_refuses_are_422(
    app: GopherQ, api: TestClient, body: dict[str, Any], field: str
) -> None:
    response = api.post(JOBS, json={"task": "t.add", "args": [1, 2], **body})
    assert fields(response) == [field]
    assert app.broker.stats() == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": ""}, "body.task"),
        ({"task": "a/b"}, "body.task"),
        ({"task": "a..b"}, "body.task"),
        ({"task": "a\x01"}, "body.task"),
        ({"task": "x" * 300}, "body.task"),
        ({"queue": "../etc"}, "body.queue"),
        ({"queue": "q\n"}, "body.queue"),
        ({"priority": 9}, "body.priority"),
        ({"priority": "urgent"}, "body.priority"),
        ({"retries": -1}, "body.retries"),
        ({"countdown": -1}, "body.countdown"),
        ({"countdown": True}, "body.countdown"),
        ({"eta": "tomorrow"}, "body.eta"),
        ({"eta": "2030-01-01T00:00:00"}, "body.eta"),
        ({"key": ""}, "body.key"),
        ({"key": "k", "key_ttl": -1}, "body.key_ttl"),
        ({"key": "k", "key_ttl": "1h"}, "body.key_ttl"),
        ({"fair_key": ""}, "body.fair_key"),
        ({"fair_key": 42}, "body.fair_key"),
        ({"args": {"x": 1}}, "body.args"),
        ({"kwargs": [1]}, "body.kwargs"),
        ({"surprise": 1}, "body.surprise"),
    ],
)
def test_malformed_bodies_are_422_naming_the_field(
    app: GopherQ, api: TestClient, body: dict[str, Any], field: str
) -> None:
    response = api.post(JOBS, json={"task": "t.add", "args": [1, 2], **body})
    assert any(f == field or f.startswith(field + ".") for f in fields(response)), response.text
    assert app.broker.stats() == {}


def test_countdown_and_eta_together_are_422(api: TestClient) -> None:
    response = api.post(JOBS, json={"task": "t.add", "args": [1, 2], "countdown": 1, "eta": 5})
    assert "not both" in problem(response, 422)["detail"]


def test_not_json_is_422(api: TestClient) -> None:
    response = api.post(JOBS, content=b"{", headers={"content-type": "application/json"})
    problem(response, 422)


def client_with(app: GopherQ, caller: Caller) -> TestClient:
    class Keyed(ServerState):
        __slots__ = ()

        def authenticate(self, token: str) -> Caller | None:
            return caller if token == "key" else None

    api = create_app(app)
    api.state.gopherq = Keyed(app)
    return TestClient(api, headers={"Authorization": "Bearer key"})


def test_roles_and_per_key_limits(app: GopherQ) -> None:
    viewer = client_with(app, Caller("v", Role.VIEWER))
    assert viewer.post(JOBS, json={"task": "t.add", "args": [1, 2]}).status_code == 403
    assert viewer.get(JOBS).status_code == 200
    limited = client_with(app, Caller("s", Role.SUBMITTER, tasks=frozenset({"t.add"})))
    assert limited.post(JOBS, json={"task": "t.add", "args": [1, 2]}).status_code == 201
    refused = limited.post(JOBS, json={"task": "t.fail"})
    assert "may not send 't.fail'" in problem(refused, 403)["detail"]
    batch = {"jobs": [{"task": "t.add", "args": [1, 2]}, {"task": "t.fail"}]}
    problem(limited.post(f"{JOBS}:batch", json=batch), 403)
    queued = client_with(app, Caller("q", Role.SUBMITTER, queues=frozenset({"default"})))
    problem(queued.post(JOBS, json={"task": "t.add", "args": [1, 2], "queue": "other"}), 403)
    assert app.broker.stats()["default"].ready == 1
    id = limited.post(JOBS, json={"task": "t.add", "args": [1, 2]}).json()["id"]
    for method, path in (("post", "cancel"), ("post", "retry")):
        problem(getattr(limited, method)(f"{JOBS}/{id}/{path}"), 403)
    problem(limited.delete(f"{JOBS}/{id}"), 403)
    assert TestClient(create_app(app)).get(f"{JOBS}/{id}").status_code == 401


def test_the_send_rate_refuses_with_429_and_sends_nothing(app: GopherQ) -> None:
    _, secret = app.access.create("slow", "submitter", rate="2/s")
    with TestClient(create_app(app), headers={"Authorization": f"Bearer {secret}"}) as client:
        for _ in range(2):
            assert client.post(JOBS, json={"task": "t.add", "args": [1, 2]}).status_code == 201
        refused = client.post(JOBS, json={"task": "t.add", "args": [1, 2]})
        assert problem(refused, 429)["type"] == "urn:gopherq:problem:rate-limited"
        assert refused.headers["retry-after"] == "1"
        batch = {"jobs": [{"task": "t.add", "args": [1, 2]}] * 2}
        problem(client.post(f"{JOBS}:batch", json=batch), 429)
    assert app.broker.stats()["default"].ready == 2


def test_refused_bodies_spend_no_send_rate(app: GopherQ) -> None:
    _, secret = app.access.create("slow", "submitter", rate="1/h")
    with TestClient(create_app(app), headers={"Authorization": f"Bearer {secret}"}) as client:
        problem(client.post(JOBS, json={"task": "nope"}), 422)
        problem(client.post(JOBS, json={"task": "t.add", "args": [1]}), 422)
        assert client.post(JOBS, json={"task": "t.add", "args": [1, 2]}).status_code == 201
        problem(client.post(JOBS, json={"task": "t.add", "args": [1, 2]}), 429)
    assert app.broker.stats()["default"].ready == 1


ROUTES = [
    ("post", JOBS, Role.SUBMITTER),
    ("post", f"{JOBS}:batch", Role.SUBMITTER),
    ("get", JOBS, Role.VIEWER),
    ("get", f"{JOBS}/{{id}}", Role.VIEWER),
    ("get", f"{JOBS}/{{id}}/result", Role.VIEWER),
    ("post", f"{JOBS}/{{id}}/cancel", Role.OPERATOR),
    ("post", f"{JOBS}/{{id}}/retry", Role.OPERATOR),
    ("delete", f"{JOBS}/{{id}}", Role.OPERATOR),
]


@pytest.mark.parametrize(("method", "path", "needed"), ROUTES)
@pytest.mark.parametrize("role", list(Role))
def test_each_route_with_each_role(
    app: GopherQ, method: str, path: str, needed: Role, role: Role
) -> None:
    client = client_with(app, Caller(role.label, role))
    id = app.send_task("t.add", (1, 2)).id
    body = {"task": "t.add", "args": [1, 2]}
    kwargs: dict[str, Any] = {}
    if method == "post" and path == JOBS:
        kwargs["json"] = body
    elif path.endswith(":batch"):
        kwargs["json"] = {"jobs": [body]}
    response = getattr(client, method)(path.format(id=id), **kwargs)
    if role >= needed:  # let in (retry: 409, the job is queued)
        assert response.status_code < 300 or response.status_code == 409, response.text
    else:
        assert problem(response, 403)["type"] == "urn:gopherq:problem:forbidden"
        assert app.broker.stats()["default"].ready == 1  # nothing changed


# POST /jobs:batch


def test_batch_sends_all_in_one_broker_call(app: GopherQ, api: TestClient) -> None:
    calls = []
    enqueue = app.broker.enqueue

    def counted(envelopes: Any) -> list[str]:
        calls.append(len(envelopes))
        return enqueue(envelopes)

    app.broker.enqueue = counted  # type: ignore[method-assign]
    first = send(api, key="held")
    jobs = [{"task": "t.add", "args": [i, i]} for i in range(MAX_BATCH - 1)]
    response = api.post(
        f"{JOBS}:batch", json={"jobs": [*jobs, {"task": "t.add", "args": [0, 0], "key": "held"}]}
    )
    assert response.status_code == 201, response.text
    sent = response.json()["jobs"]
    assert len(sent) == MAX_BATCH and calls == [1, MAX_BATCH]
    assert all(s["new"] for s in sent[:-1])
    assert sent[-1] == {"id": first["id"], "task": "t.add", "queue": "default", "new": False}
    assert len({s["id"] for s in sent}) == MAX_BATCH


def test_a_bad_item_refuses_the_whole_batch(app: GopherQ, api: TestClient) -> None:
    jobs = [{"task": "t.add", "args": [1, 2]}, {"task": "t.add", "args": [1, 2]}, {"task": "nope"}]
    assert fields(api.post(f"{JOBS}:batch", json={"jobs": jobs})) == ["body.jobs.2.task"]
    jobs[2] = {"task": "t.add", "args": [1], "queue": "default"}
    assert fields(api.post(f"{JOBS}:batch", json={"jobs": jobs})) == ["body.jobs.2.args"]
    jobs[2] = {"task": "t.add", "queue": "a/b"}
    assert fields(api.post(f"{JOBS}:batch", json={"jobs": jobs}))[0].startswith("body.jobs.2.queue")
    assert app.broker.stats() == {}


def test_a_bad_item_of_a_big_batch_refuses_it_all(app: GopherQ, api: TestClient) -> None:
    jobs = [{"task": "t.add", "args": [i, i]} for i in range(INLINE_CHECKS * 2)]
    jobs[-1] = {"task": "t.add", "args": [1]}
    assert fields(api.post(f"{JOBS}:batch", json={"jobs": jobs})) == [
        f"body.jobs.{len(jobs) - 1}.args"
    ]
    assert app.broker.stats() == {}


def test_batch_bounds(api: TestClient) -> None:
    assert fields(api.post(f"{JOBS}:batch", json={"jobs": []})) == ["body.jobs"]
    too_many = {"jobs": [{"task": "t.add", "args": [1, 2]}] * (MAX_BATCH + 1)}
    assert fields(api.post(f"{JOBS}:batch", json=too_many)) == ["body.jobs"]


def test_the_batch_route_is_not_a_job_id(api: TestClient) -> None:
    assert api.get(f"{JOBS}:batch").status_code == 405
    assert api.get(f"{JOBS}/:batch").status_code == 404  # an id nobody knows


# GET /jobs


def test_list_pages_newest_first_with_filters(app: GopherQ, api: TestClient) -> None:
    ids = [send(api, args=[i, i])["id"] for i in range(5)]
    failed = api.post(JOBS, json={"task": "t.fail"}).json()["id"]
    drain(app)
    listed = api.get(JOBS).json()
    assert [j["id"] for j in listed["jobs"]] == [failed, *reversed(ids)]
    assert listed["next"] is None
    assert "result" not in listed["jobs"][0] and listed["jobs"][0]["error"]["traceback"] == ""
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, "task": "t.add"}
        if cursor:
            params["cursor"] = cursor
        page = api.get(JOBS, params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert [j["id"] for j in api.get(JOBS, params={"state": "FAILED"}).json()["jobs"]] == [failed]
    assert api.get(JOBS, params={"queue": "other"}).json() == {"jobs": [], "next": None}
    created = app.backend.get(ids[2])
    assert created is not None and created.created is not None
    window = {"since": created.created, "until": created.created + 1e-6}
    assert [j["id"] for j in api.get(JOBS, params=window).json()["jobs"]] == [ids[2]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "query.limit"),
        ({"limit": 1001}, "query.limit"),
        ({"state": "DONE"}, "query.state"),
        ({"cursor": "garbage!"}, "query.cursor"),
        ({"cursor": "x" * 600}, "query.cursor"),
        ({"since": "yesterday"}, "query.since"),
        ({"until": -1}, "query.until"),
        ({"task": "a/b"}, "query.task"),
        ({"queue": "\x01"}, "query.queue"),
    ],
)
def test_list_refuses_bad_queries(api: TestClient, params: dict[str, Any], field: str) -> None:
    assert field in fields(api.get(JOBS, params=params))


# GET /jobs/{id}


def test_get_shows_result_events_and_timestamps(app: GopherQ, api: TestClient) -> None:
    id = send(api)["id"]
    queued = api.get(f"{JOBS}/{id}").json()
    assert queued["state"] == "QUEUED"
    assert queued["task"] == "t.add" and queued["queue"] == "default"
    assert [e["type"] for e in queued["events"]] == ["task-enqueued"]
    drain(app)
    job = api.get(f"{JOBS}/{id}").json()
    assert job["state"] == "SUCCEEDED" and job["result"] == 3 and job["attempts"] == 1
    assert job["created"] <= job["started"] <= job["finished"] and job["worker"]
    assert [e["type"] for e in job["events"]] == ["task-enqueued", "task-started", "task-succeeded"]
    assert all(e["id"] == id for e in job["events"])


def test_get_shows_the_arguments_until_the_job_succeeds(app: GopherQ, api: TestClient) -> None:
    queued = app.send_task("t.add", [1], {"y": b"\x00"}).id  # bytes: not JSON
    scheduled = send(api, countdown=600)["id"]
    job = api.get(f"{JOBS}/{queued}").json()
    assert (job["state"], job["args"], job["kwargs"]) == ("QUEUED", [1], {"y": {"$bytes": "AA=="}})
    job = api.get(f"{JOBS}/{scheduled}").json()
    assert (job["state"], job["args"], job["kwargs"]) == ("SCHEDULED", [1, 2], {})
    [running] = app.broker.reserve(["default"], 1, 0)
    job = api.get(f"{JOBS}/{running.id}").json()
    assert (job["state"], job["args"]) == ("STARTED", [1])
    app.broker.requeue([running])
    app.broker.purge("default")
    done = send(api)["id"]
    drain(app)
    job = api.get(f"{JOBS}/{done}").json()
    assert (job["state"], job["args"], job["kwargs"]) == ("SUCCEEDED", None, None)


def test_get_shows_the_error_with_its_traceback(app: GopherQ, api: TestClient) -> None:
    id = api.post(JOBS, json={"task": "t.fail"}).json()["id"]
    drain(app)
    job = api.get(f"{JOBS}/{id}").json()
    assert job["state"] == "FAILED"
    assert job["error"]["type"] == "ValueError" and job["error"]["message"] == "broken"
    assert "Traceback" in job["error"]["traceback"]


def test_values_json_lacks_are_written_as_text(app: GopherQ, api: TestClient) -> None:
    id = api.post(JOBS, json={"task": "t.odd"}).json()["id"]
    drain(app)
    assert api.get(f"{JOBS}/{id}").json()["result"] == {"nan": "NaN", "bytes": {"$bytes": "AAE="}}


def test_get_without_events(api: TestClient) -> None:
    app = GopherQ("quiet", broker="memory://", events="off")

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    with TestClient(create_app(app, auth=False)) as quiet:
        id = send(quiet)["id"]
        assert quiet.get(f"{JOBS}/{id}").json()["events"] is None


def test_get_when_events_cannot_be_read(
    app: GopherQ, api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    id = send(api)["id"]

    def down(*args: Any, **kwargs: Any) -> Any:
        raise BrokerUnavailable("the event store is down")

    monkeypatch.setattr(app.events.backend, "job_events", down)
    job = api.get(f"{JOBS}/{id}").json()
    assert job["state"] == "QUEUED" and job["events"] is None


@pytest.mark.parametrize("id", ["nope", "0193a4f6-3c2e-7b1a-9f0e-2d4c6b8a1e3f"])
def test_unknown_ids_are_404(api: TestClient, id: str) -> None:
    for response in (
        api.get(f"{JOBS}/{id}"),
        api.get(f"{JOBS}/{id}/result"),
        api.post(f"{JOBS}/{id}/cancel"),
        api.post(f"{JOBS}/{id}/retry"),
        api.delete(f"{JOBS}/{id}"),
    ):
        assert problem(response, 404)["type"] == "urn:gopherq:problem:not-found"


@pytest.mark.parametrize("id", ["a%01b", "x" * 129, "..", "a%7Fb"])
def test_ids_that_are_not_ids_are_422(api: TestClient, id: str) -> None:
    for response in (
        api.get(f"{JOBS}/{id}"),
        api.get(f"{JOBS}/{id}/result"),
        api.post(f"{JOBS}/{id}/cancel"),
        api.post(f"{JOBS}/{id}/retry"),
        api.delete(f"{JOBS}/{id}"),
    ):
        if response.status_code == 404:  # ".." is folded away by the client
            continue
        assert fields(response) == ["path.id"]


# GET /jobs/{id}/result


def test_result_is_202_until_finished_then_200(app: GopherQ, api: TestClient) -> None:
    id = send(api)["id"]
    waiting = api.get(f"{JOBS}/{id}/result", params={"wait": 0.2})
    assert waiting.status_code == 202
    assert waiting.json() == {
        "id": id,
        "state": "QUEUED",
        "finished": False,
        "result": None,
        "error": None,
    }
    drain(app)
    done = api.get(f"{JOBS}/{id}/result")
    assert done.status_code == 200
    assert done.json() == {
        "id": id,
        "state": "SUCCEEDED",
        "finished": True,
        "result": 3,
        "error": None,
    }


def test_result_of_a_failure_is_its_error(app: GopherQ, api: TestClient) -> None:
    id = api.post(JOBS, json={"task": "t.fail"}).json()["id"]
    drain(app)
    body = api.get(f"{JOBS}/{id}/result").json()
    assert body["state"] == "FAILED" and body["result"] is None
    assert body["error"]["type"] == "ValueError"


def test_result_long_polls_until_a_worker_finishes(app: GopherQ, api: TestClient) -> None:
    id = send(api)["id"]
    worker = threading.Timer(0.5, drain, (app,))
    worker.start()
    start = time.monotonic()
    response = api.get(f"{JOBS}/{id}/result", params={"wait": 20})
    elapsed = time.monotonic() - start
    worker.join()
    assert response.status_code == 200 and response.json()["result"] == 3
    assert 0.4 < elapsed < 10


@pytest.mark.parametrize("wait", [-1, 61, "soon"])
def test_result_wait_bounds(api: TestClient, wait: Any) -> None:
    id = send(api)["id"]
    assert fields(api.get(f"{JOBS}/{id}/result", params={"wait": wait})) == ["query.wait"]


# POST /jobs/{id}/cancel, /retry; DELETE /jobs/{id}


def test_cancel_a_queued_job(app: GopherQ, api: TestClient) -> None:
    id = send(api)["id"]
    assert api.post(f"{JOBS}/{id}/cancel").json() == {"id": id, "outcome": "cancelled"}
    assert api.get(f"{JOBS}/{id}").json()["state"] == "CANCELLED"
    again = api.post(f"{JOBS}/{id}/cancel")
    assert problem(again, 409)["type"] == "urn:gopherq:problem:job-state-conflict"


def test_cancel_a_running_job_marks_it(app: GopherQ, api: TestClient) -> None:
    id = send(api)["id"]
    [delivery] = app.broker.reserve(["default"], 1, 0)
    assert api.post(f"{JOBS}/{id}/cancel").json() == {"id": id, "outcome": "stopping"}
    assert app.broker.cancel_requested([delivery]) == {id}


def test_retry_a_dead_lettered_job(app: GopherQ, api: TestClient) -> None:
    id = api.post(JOBS, json={"task": "t.fail"}).json()["id"]
    drain(app)
    assert app.broker.locate(id) is State.DEAD
    assert api.post(f"{JOBS}/{id}/retry").json() == {"id": id, "state": "QUEUED"}
    assert app.broker.locate(id) is State.QUEUED
    assert problem(api.post(f"{JOBS}/{id}/retry"), 409)["detail"].endswith(
        "it has not finished: cancel it first, or wait"
    )


def test_retry_conflicts(app: GopherQ, api: TestClient) -> None:
    done = send(api)["id"]
    drain(app)
    assert "succeeded" in problem(api.post(f"{JOBS}/{done}/retry"), 409)["detail"]
    cancelled = send(api)["id"]
    api.post(f"{JOBS}/{cancelled}/cancel")
    assert "not kept" in problem(api.post(f"{JOBS}/{cancelled}/retry"), 409)["detail"]
    held = api.post(JOBS, json={"task": "t.fail", "key": "k"}).json()["id"]
    drain(app)
    api.post(JOBS, json={"task": "t.fail", "key": "k"})  # the key is free again: a new job
    assert "idempotency key" in problem(api.post(f"{JOBS}/{held}/retry"), 409)["detail"]


def test_delete(app: GopherQ, api: TestClient) -> None:
    done = send(api)["id"]
    drain(app)
    assert api.delete(f"{JOBS}/{done}").json() == {"id": done, "deleted": True}
    assert app.backend.get(done) is None
    problem(api.get(f"{JOBS}/{done}"), 404)
    queued = send(api)["id"]
    assert api.delete(f"{JOBS}/{queued}").status_code == 200
    assert app.broker.locate(queued) is None
    running = send(api)["id"]
    app.broker.reserve(["default"], 1, 0)
    assert "cancel it first" in problem(api.delete(f"{JOBS}/{running}"), 409)["detail"]
    assert app.broker.locate(running) is State.STARTED


def test_openapi_describes_every_jobs_route(api: TestClient) -> None:
    paths = api.get("/api/v1/openapi.json").json()["paths"]
    assert set(paths[JOBS]) == {"get", "post"}
    assert set(paths[f"{JOBS}:batch"]) == {"post"}
    assert set(paths[JOBS + "/{id}"]) == {"get", "delete"}
    for action in ("result", "cancel", "retry"):
        assert JOBS + "/{id}/" + action in paths
    create = paths[JOBS]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "JobSubmit"
    )
    assert {"200", "201", "403", "422"} <= set(create["responses"])
