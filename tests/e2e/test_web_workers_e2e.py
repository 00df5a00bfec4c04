"""``GET /api/v1/workers`` against real worker processes: heartbeat, children, tasks
done and the task running now, on SQLite and on Redis."""

from __future__ import annotations

from typing import Any

import pytest
from harness import Run, on_each_broker, run, stop, wait_for

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'gopherq[web]'")

from fastapi.testclient import TestClient

from gopherq.web import create_app

__all__ = ["run"]  # the fixture, imported for the tests here


@on_each_broker
def test_a_worker_shows_what_it_runs(run: Run) -> None:
    worker = run.worker("-c", "2", worker_heartbeat="0.3")
    run.wait_ready(worker)
    api = TestClient(create_app(run.producer, auth=False))
    run.send("add", 1, 2).get(timeout=10)
    napping = run.send("nap", 3, "long")

    def running() -> dict[str, Any] | None:
        # A heartbeat may still show the first task as running until its process has
        # settled it (a few milliseconds after its result is stored): wait for the nap.
        items = api.get("/api/v1/workers").json()["items"]
        busy = [w for w in items if [c["id"] for c in w["current"]] == [napping.id]]
        return busy[0] if busy else None

    wait_for(running, 10, run.log)
    found = running()
    assert found is not None
    [current] = found["current"]
    assert (current["id"], current["task"]) == (napping.id, "tasks.nap")
    assert current["process"] in found["children"] and len(found["children"]) == 2
    assert (found["pid"], found["concurrency"], found["alive"]) == (worker.pid, 2, True)
    assert found["processed"] >= 1 and found["active"] == 1 and found["age"] < 5
    napping.get(timeout=10)
    assert stop(worker) == 0, run.log()
    assert api.get("/api/v1/workers").json() == {"items": []}
