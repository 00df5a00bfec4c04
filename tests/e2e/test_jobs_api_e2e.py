"""End to end: jobs sent over HTTP run on a real worker, and their results are waited for
over HTTP, on SQLite and Redis."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from types import ModuleType

import pytest
from harness import Run, on_each_broker, run, wait_for

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'gopherq[web]'")

from fastapi.testclient import TestClient

from gopherq.web import create_app

__all__ = ["run"]  # the fixture
pytestmark = [pytest.mark.timeout(90), on_each_broker]

JOBS = "/api/v1/jobs"


@pytest.fixture
def tasks(run: Run, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The run's app module (``tasks``), loaded here on the run's broker: the app the
    server serves, with the tasks the workers run."""
    monkeypatch.setenv("GOPHERQ_BROKER_URL", run.url)
    spec = importlib.util.spec_from_file_location("tasks", run.path / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    module.app.close()


def test_sent_over_http_run_by_a_worker_waited_for_over_http(run: Run, tasks: ModuleType) -> None:
    with TestClient(create_app(tasks.app, auth=False)) as api:
        sent = api.post(JOBS, json={"task": "tasks.add", "args": [2, 3]})
        assert sent.status_code == 201, sent.text
        id = sent.json()["id"]
        batch = api.post(
            f"{JOBS}:batch",
            json={"jobs": [{"task": "tasks.add", "args": [i, i]} for i in range(5)]},
        )
        assert batch.status_code == 201, batch.text
        assert api.get(f"{JOBS}/{id}/result").status_code == 202
        run.worker("--burst", "-c", "1")
        start = time.monotonic()
        done = api.get(f"{JOBS}/{id}/result", params={"wait": 30})
        assert done.status_code == 200, run.log()
        assert done.json()["result"] == 5 and done.json()["state"] == "SUCCEEDED"
        assert time.monotonic() - start < 30
        for job, i in zip(batch.json()["jobs"], range(5), strict=True):
            result = api.get(f"{JOBS}/{job['id']}/result", params={"wait": 30}).json()
            assert result["result"] == 2 * i, run.log()
        job = api.get(f"{JOBS}/{id}").json()
        assert job["worker"] and job["attempts"] == 1

        def timeline() -> list[str]:
            return [e["type"] for e in api.get(f"{JOBS}/{id}").json()["events"]]

        # The worker writes a run's events in batches, so the last may follow its result.
        wait_for(lambda: len(timeline()) == 3, 15, lambda: str(timeline()))
        assert timeline() == ["task-enqueued", "task-started", "task-succeeded"]
        listed = api.get(JOBS, params={"task": "tasks.add", "limit": 4}).json()
        assert len(listed["jobs"]) == 4 and listed["next"]
        rest = api.get(JOBS, params={"task": "tasks.add", "cursor": listed["next"]}).json()
        assert len(rest["jobs"]) == 2 and rest["next"] is None
        assert {j["id"] for j in listed["jobs"] + rest["jobs"]} == {
            id,
            *(j["id"] for j in batch.json()["jobs"]),
        }
