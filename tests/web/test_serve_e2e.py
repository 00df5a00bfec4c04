"""``gopherq serve`` as operators run it: a real server process beside a real worker
process, on SQLite and on Redis, spoken to over HTTP by clients that do not import
gopherq."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import pytest
import services

from .sse import Message, messages

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HERE = Path(__file__).parent
TASKS = '''
from gopherq import GopherQ

app = GopherQ("served")


@app.task
def add(x: int, y: int) -> int:
    """Add two numbers."""
    return x + y
'''
TASK_EVENTS = "task-enqueued,task-started,task-succeeded"


def wait_for(condition: Callable[[], object], timeout: float, why: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s\n{why()}")
        time.sleep(0.05)


class Deployment:
    """A directory with the app module, a broker, and the processes started on it."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url
        (path / "tasks.py").write_text(TASKS)
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def environ(self, **extra: str) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
        environ["GOPHERQ_BROKER_URL"] = self.url
        environ.update(extra)
        return environ

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """``python -m gopherq ARGS`` in the directory, its output in ``NAME.log``."""
        log = (self.path / f"{name}.log").open("wb")
        self._logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "gopherq", *args],
            cwd=self.path,
            env=self.environ(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.path / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def serve(self, *args: str, auth: bool = False) -> str:
        """Start ``gopherq serve --port 0 ARGS`` (with ``--no-auth`` unless ``auth``); its
        base URL, once it answers."""
        no_auth = () if auth else ("--no-auth",)
        process = self.start("serve", "serve", "-A", "tasks", "--port", "0", *no_auth, *args)
        found: list[str] = []

        def announced() -> bool:
            assert process.poll() is None, self.log("serve")
            for line in self.log("serve").splitlines():
                if line.startswith("serving http://"):
                    found.append(line.split()[1])
                    return True
            return False

        wait_for(announced, 20, lambda: self.log("serve"))
        return found[0]

    def worker(self) -> subprocess.Popen[bytes]:
        """Start a worker; return once it is ready."""
        process = self.start(
            "worker", "worker", "-A", "tasks", "-c", "1", GOPHERQ_WORKER_HEARTBEAT="0.5"
        )
        wait_for(lambda: " ready: " in self.log("worker"), 20, lambda: self.log("worker"))
        return process

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m gopherq ARGS`` in the directory, to its end; its output."""
        return subprocess.run(
            [sys.executable, "-m", "gopherq", *args],
            cwd=self.path,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def key(self, name: str, role: str) -> str:
        """A new API key's secret, from ``gopherq keys create NAME --role ROLE``."""
        completed = self.run("keys", "create", name, "--role", role, "-A", "tasks")
        assert completed.returncode == 0, completed.stderr
        return completed.stdout.strip()

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in self._logs:
            log.close()


@pytest.fixture(params=["sqlite", "redis"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    """A deployment on SQLite (a file of its own) or on the suite's Redis (a key prefix
    of its own, deleted afterwards)."""
    if request.param == "redis":
        url = services.redis_test_url()
    else:
        url = f"sqlite:///{tmp_path / 'gopherq.db'}"
    handle = Deployment(tmp_path, url)
    try:
        yield handle
    finally:
        handle.close()
        if request.param == "redis":
            services.delete_keys(url)


def submit(base: str, task: str, *args: Any, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Submit over HTTP from a process that does not import gopherq (with ``keys``: the
    submitting key, then the reading one); its answer."""
    completed = subprocess.run(
        [sys.executable, "-I", str(HERE / "http_client.py"), base, task, json.dumps(args), *keys],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    answer: dict[str, Any] = json.loads(completed.stdout)
    return answer


def test_submit_over_http_and_read_the_result(deployment: Deployment) -> None:
    base = deployment.serve()
    deployment.worker()
    answer = submit(base, "tasks.add", 2, 3)
    assert answer["state"] == "SUCCEEDED" and answer["result"] == 5


def test_submit_and_read_with_keys(deployment: Deployment) -> None:
    submitter = deployment.key("ci", "submitter")
    viewer = deployment.key("dashboard", "viewer")
    base = deployment.serve(auth=True)
    deployment.worker()
    answer = submit(base, "tasks.add", 2, 3, keys=(submitter, viewer))
    assert answer["state"] == "SUCCEEDED" and answer["result"] == 5
    job = {"task": "tasks.add", "args": [1, 1]}
    with httpx.Client(base_url=base, timeout=10) as client:
        anonymous = client.post("/api/v1/jobs", json=job)
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.headers["www-authenticate"] == "Bearer"
        reader = client.post(
            "/api/v1/jobs", json=job, headers={"Authorization": f"Bearer {viewer}"}
        )
        assert reader.status_code == 403, reader.text
        assert reader.json()["type"] == "urn:gopherq:problem:forbidden"
        listed = client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {viewer}"})
        assert [j["id"] for j in listed.json()["jobs"]] == [answer["id"]]  # nothing more sent


def test_probes_health_metrics_and_docs(deployment: Deployment) -> None:
    base = deployment.serve()
    deployment.worker()
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/live").json() == {"status": "ok"}
        assert client.get("/ready").json() == {"status": "ok", "failing": []}

        def worker_seen() -> bool:
            health = client.get("/api/v1/health").json()
            return health["ok"] and bool(health["workers"]["recent"])

        wait_for(worker_seen, 20, lambda: client.get("/api/v1/health").text)
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "gopherq_broker_up 1.0" in metrics.text
        assert "/api/docs/assets/swagger-ui-bundle.js" in client.get("/api/docs").text
        assert client.get("/api/docs/assets/swagger-ui-bundle.js").status_code == 200
        assert client.get("/api/v1/openapi.json").json()["openapi"].startswith("3.1")


class Stream:
    """An SSE connection read message by message (the messages that carry data)."""

    def __init__(self, client: httpx.Client, url: str, **headers: str) -> None:
        headers = {"Accept": "text/event-stream", **headers}
        self._context = client.stream("GET", url, headers=headers)
        self.response = self._context.__enter__()
        assert self.response.status_code == 200, self.response.read()
        self._messages = messages(self.response.iter_lines())

    def take(self, count: int) -> list[Message]:
        taken: list[Message] = []
        while len(taken) < count:
            message = next(self._messages)
            if message.data is not None:
                taken.append(message)
        return taken

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def run_tasks(base: str, deployment: Deployment, count: int, start: int) -> list[str]:
    """Send ``count`` tasks from a producer in this process and wait for them; their ids."""
    from gopherq import GopherQ

    producer = GopherQ("producer", broker=deployment.url)
    try:
        results = [producer.send_task("tasks.add", (start + i, 1)) for i in range(count)]
        assert [r.get(timeout=20) for r in results] == [start + i + 1 for i in range(count)]
        return [r.id for r in results]
    finally:
        producer.close()


def task_events(client: httpx.Client, since: str) -> list[dict[str, Any]]:
    page = client.get(
        "/api/v1/events",
        params={"follow": "false", "since": since, "types": TASK_EVENTS, "limit": 1000},
    )
    assert page.status_code == 200, page.text
    events: list[dict[str, Any]] = page.json()["events"]
    return events


def test_sse_resume_after_a_disconnect_loses_and_repeats_nothing(
    deployment: Deployment,
) -> None:
    base = deployment.serve()
    deployment.worker()
    with httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=30)) as client:
        start = client.get("/api/v1/events", params={"follow": "false", "limit": 1}).json()
        since = start["cursor"]
        stream = Stream(client, f"/api/v1/events?since={since}&types={TASK_EVENTS}")
        first_ids = run_tasks(base, deployment, 3, 0)  # 9 events
        first = stream.take(4)
        stream.close()
        last_seen = first[-1].id
        assert last_seen is not None

        second_ids = run_tasks(base, deployment, 3, 10)
        ids = set(first_ids + second_ids)

        def all_logged() -> bool:
            logged = [e for e in task_events(client, since) if e["id"] in ids]
            return len(logged) == 18

        wait_for(all_logged, 20, lambda: json.dumps(task_events(client, since)))
        expected = [e["cursor"] for e in task_events(client, last_seen)]

        resumed = Stream(
            client, f"/api/v1/events?types={TASK_EVENTS}", **{"Last-Event-ID": last_seen}
        )
        rest = resumed.take(len(expected))
        resumed.close()
        every = [e["cursor"] for e in task_events(client, since)]

    seen = [m.id for m in first + rest]
    assert len(seen) == len(set(seen)), "an event was sent twice"
    assert [m.id for m in rest] == expected, "an event was lost"
    assert seen == every
    assert {m.event["id"] for m in first + rest} == ids


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_open_streams_and_exits_0(deployment: Deployment, stop: int) -> None:
    base = deployment.serve()
    process = deployment.processes[-1]
    with httpx.Client(base_url=base, timeout=10) as client:
        stream = Stream(client, "/api/v1/events")
        process.send_signal(stop)
        assert process.wait(15) == 0, deployment.log("serve")
        assert "Traceback" not in deployment.log("serve"), deployment.log("serve")
        with pytest.raises(StopIteration):
            stream.take(1)  # the server ended the stream
        stream.close()


def test_workers_serve_from_several_processes_and_replace_one_that_dies(
    deployment: Deployment,
) -> None:
    base = deployment.serve("--workers", "2")
    serve = deployment.processes[-1]

    def started() -> list[int]:
        """The server processes, as each announced itself (uvicorn's start line)."""
        found = re.findall(r"Started server process \[(\d+)\]", deployment.log("serve"))
        return [int(pid) for pid in found]

    wait_for(lambda: len(started()) == 2, 20, lambda: deployment.log("serve"))
    deployment.worker()
    assert submit(base, "tasks.add", 2, 3)["result"] == 5
    first = started()
    assert {p.pid for p in psutil.Process(serve.pid).children()} >= set(first)
    os.kill(first[0], signal.SIGKILL)
    replaced = "was killed by SIGKILL; starting another"
    wait_for(
        lambda: len(started()) == 3 and replaced in deployment.log("serve"),
        20,
        lambda: deployment.log("serve"),
    )
    with httpx.Client(base_url=base, timeout=10) as client:  # a new connection each time
        for _ in range(10):
            assert client.get("/live", headers={"Connection": "close"}).status_code == 200
    assert submit(base, "tasks.add", 4, 5)["result"] == 9
    serving = [psutil.Process(pid) for pid in started()[1:]]
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(20) == 0, deployment.log("serve")
    assert not any(p.is_running() for p in serving)
    assert "Traceback" not in deployment.log("serve"), deployment.log("serve")


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux spreads a port's connections")
def test_workers_share_keep_alive_connections_made_together(tmp_path: Path) -> None:
    """Clients that connect at once are spread over the processes, not all (or most)
    taken by the one that wakes first."""
    handle = Deployment(tmp_path, f"sqlite:///{tmp_path / 'gopherq.db'}")
    try:
        base = handle.serve("--workers", "2")
        port = int(base.rsplit(":", 1)[1])
        serve = psutil.Process(handle.processes[-1].pid)
        wait_for(lambda: len(serve.children()) == 2, 20, lambda: handle.log("serve"))
        children = serve.children()
        for child in children:  # the connections wait in the kernel until both run
            child.suspend()
        try:
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
        finally:
            for child in children:
                child.resume()
        try:
            for client in clients:
                client.sendall(b"GET /live HTTP/1.1\r\nHost: test\r\n\r\n")
            for client in clients:
                assert client.recv(4096).startswith(b"HTTP/1.1 200"), handle.log("serve")

            def served(process: psutil.Process) -> int:
                return sum(
                    1
                    for c in process.net_connections("tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
                )

            counts = [served(child) for child in children]
            # Spread by a hash of each connection: a quarter each at the least, unless
            # one in millions.
            assert sum(counts) == 100 and min(counts) >= 25, counts
        finally:
            for client in clients:
                client.close()
    finally:
        handle.close()


def test_port_in_use_and_no_auth_off_loopback_are_one_line_errors(tmp_path: Path) -> None:
    handle = Deployment(tmp_path, f"sqlite:///{tmp_path / 'gopherq.db'}")
    try:
        base = handle.serve()
        port = base.rsplit(":", 1)[1]
        for args, message in [
            (["--port", port], f"cannot serve on 127.0.0.1:{port}: the port is in use"),
            (["--host", "0.0.0.0", "--no-auth"], "only allowed on a loopback host"),
        ]:
            completed = handle.run("serve", "-A", "tasks", *args)
            assert completed.returncode == 1, completed.stderr
            lines = completed.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), completed.stderr
            assert message in lines[0]
    finally:
        handle.close()
