"""Workers and tasks over HTTP: workers from their heartbeats, the task registry."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from gopherq import GopherQ
from gopherq.access.roles import Role
from gopherq.brokers.base import Delivery
from gopherq.events import Event
from gopherq.web import create_app
from gopherq.worker.presence import Presence
from gopherq.worker.slots import Holding, Running
from web.ops_support import add_name, problem, role_client

WORKERS = "/api/v1/workers"
TASKS = "/api/v1/tasks"


def running(id: str, task: str) -> Running:
    return Running(Delivery(id, "default", 2, b"", 0, 1, "token"), task, None, None, None)


def test_a_worker_with_its_heartbeat_children_and_current_tasks(
    app: GopherQ, api: TestClient
) -> None:
    assert api.get(WORKERS).json() == {"items": []}
    presence = Presence(app, "host:1", 2, ["default", "math"])
    presence.start()
    presence.exited(Holding(processed=3))
    presence.beat(
        [
            ("host:2", Holding(running=running("job-1", add_name(app)), processed=4)),
            ("host:3", Holding()),
        ]
    )
    app.events.flush()
    [worker] = api.get(WORKERS).json()["items"]
    assert worker["age"] < 5 and worker["started"] <= worker["heartbeat"]
    assert {k: v for k, v in worker.items() if k not in ("age", "heartbeat", "started")} == {
        "name": "host:1",
        "hostname": presence.info.hostname,
        "pid": presence.info.pid,
        "alive": True,
        "concurrency": 2,
        "queues": ["default", "math"],
        "children": ["host:2", "host:3"],
        "active": 1,
        "processed": 7,
        "load": worker["load"],
        "current": [{"id": "job-1", "task": add_name(app), "process": "host:2"}],
    }
    assert len(worker["load"]) == 3
    presence.stop()
    app.events.flush()
    assert api.get(WORKERS).json() == {"items": []}


def test_stale_workers_only_when_asked(app: GopherQ, api: TestClient) -> None:
    old = time.time() - 3600
    extra = {"processes": ["h:2"], "active": 0, "processed": 1, "load": [0.0, 0.0, 0.0]}
    app.events.publish([Event("worker-heartbeat", old, worker="h:9", extra=extra)])
    assert api.get(WORKERS).json() == {"items": []}
    [worker] = api.get(WORKERS, params={"stale": "true"}).json()["items"]
    assert (worker["name"], worker["hostname"], worker["pid"]) == ("h:9", "h", 9)
    assert (worker["alive"], worker["heartbeat"], worker["current"]) == (False, old, [])
    assert worker["age"] >= 3599 and worker["concurrency"] is None
    problem(api.get(WORKERS, params={"stale": "perhaps"}), 422, "query.stale")


def test_a_worker_online_before_the_window_read(app: GopherQ, api: TestClient) -> None:
    """Only the last heartbeat intervals of the log are read: a worker's heartbeats
    say what its ``worker-online``, older than that, said."""
    presence = Presence(app, "host:1", 2, ["default", "math"])
    presence.start()
    app.events.flush()
    [online] = app.events.last(1, "worker-online")
    log = app.events.backend._log  # type: ignore[attr-defined]  # the memory backend's
    log[:] = [e._replace(time=e.time - 3600) for e in log]  # sent an hour ago
    presence.beat([("host:2", Holding())])
    app.events.flush()
    [worker] = api.get(WORKERS).json()["items"]
    assert (worker["concurrency"], worker["queues"]) == (2, ["default", "math"])
    assert worker["hostname"] == presence.info.hostname and worker["pid"] == presence.info.pid
    assert worker["started"] == online.time and worker["alive"] is True


def test_workers_need_events() -> None:
    app = GopherQ("noevents", broker="memory://", events=None)
    try:
        body = problem(TestClient(create_app(app, auth=False)).get(WORKERS), 501)
        assert body["type"] == "urn:gopherq:problem:events-off"
    finally:
        app.close()


def test_task_registry(app: GopherQ, api: TestClient) -> None:
    @app.task(queue="math", priority="high", retries=3, timeout=30.0)
    def mul(x: int, y: int) -> int:
        """Multiply two numbers.

        Both must be integers.
        """
        return x * y

    items = api.get(TASKS).json()["items"]
    assert [t["name"] for t in items] == sorted([add_name(app), mul.name])
    got = api.get(f"{TASKS}/{mul.name}").json()
    assert {k: got[k] for k in ("name", "queue", "priority", "retries", "description")} == {
        "name": mul.name,
        "queue": "math",
        "priority": "high",
        "retries": 3,
        "description": "Multiply two numbers.",
    }
    assert got["doc"] == "Multiply two numbers.\n\nBoth must be integers."
    assert got["options"]["timeout"] == 30.0
    assert got["options"]["autoretry_for"] == ["builtins.Exception"]
    assert got in items


@pytest.mark.parametrize(("name", "status"), [("nope", 404), ("a%00b", 422), ("t" * 257, 422)])
def test_unknown_or_bad_task_names(api: TestClient, name: str, status: int) -> None:
    problem(api.get(f"{TASKS}/{name}"), status, None if status == 404 else "path.name")


def test_viewers_read(app: GopherQ) -> None:
    for path in (WORKERS, TASKS, f"{TASKS}/{add_name(app)}"):
        problem(role_client(app, None).get(path), 401)
        assert role_client(app, Role.VIEWER).get(path).status_code == 200
