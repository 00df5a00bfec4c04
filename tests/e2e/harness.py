"""Helpers for end-to-end tests: real ``python -m gopherq worker`` processes.

Each test gets its own directory with the app module (``tasks.py``), the
workers' logs and the tasks' ``events.log``, and a broker of its own: a SQLite
file in that directory, or the suite's shared Redis (``tests/services.py``)
under a fresh key prefix, deleted afterwards. Producers in the test process
send by name, as another service would. (Not a ``conftest.py``: a second module
named ``conftest`` would shadow ``tests/conftest.py``, which other tests import
by name.)

The ``run`` fixture is on SQLite; ``on_each_broker`` (a mark) runs a test once
per broker of ``BROKERS``, ids ``sqlite`` and ``redis``; ``redis_run`` is on
Redis only. Without a Redis the Redis runs are skipped with the reason, or fail
when ``GOPHERQ_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
import services

from gopherq import GopherQ
from gopherq.brokers import Envelope
from gopherq.message import Message, new_id

HERE = Path(__file__).parent
BROKERS = ("sqlite", "redis")
"""The brokers ``on_each_broker`` runs a test on."""


class Run:
    """One test's directory, broker and worker processes."""

    def __init__(self, path: Path, url: str | None = None) -> None:
        """``url``: the broker (and result store) of producer and workers; by
        default a SQLite file in ``path``. A ``redis://`` URL with a ``prefix``
        runs the test on Redis (see ``open_run``)."""
        self.path = path
        self.url = url or f"sqlite:///{path / 'gopherq.db'}"
        shutil.copy(HERE / "app_module.py", path / "tasks.py")
        self.producer = GopherQ("producer", broker=self.url)
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def send(self, task: str, *args: Any, **options: Any) -> Any:
        """Send ``tasks.<task>`` by name; returns its ``AsyncResult``."""
        return self.producer.send_task(f"tasks.{task}", args, **options)

    def send_batch(self, task: str, arguments: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``tasks.<task>`` once per argument tuple, in one broker transaction."""
        messages = [Message(id=new_id(), task=f"tasks.{task}", args=list(a)) for a in arguments]
        self.producer.broker.enqueue(
            [Envelope(m.id, m.queue, m.priority, self.producer.codec.encode(m)) for m in messages]
        )
        return [self.producer.result(m.id) for m in messages]

    def worker(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``gopherq worker -A tasks *args``; ``env`` adds ``GOPHERQ_*`` variables."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
        environ["GOPHERQ_BROKER_URL"] = self.url
        environ.update({f"GOPHERQ_{k.upper()}": v for k, v in env.items()})
        log = (self.path / f"worker{len(self.workers)}.log").open("wb")
        self._logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "gopherq", "worker", "-A", "tasks", *args],
            cwd=self.path,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, so teardown can kill what it left
        )
        self.workers.append(process)
        return process

    def log(self) -> str:
        """Every worker's log so far (for assertion messages)."""
        return "".join(p.read_text() for p in sorted(self.path.glob("worker*.log")))

    def wait_ready(self, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
        """Wait until the supervisor logged ``ready`` and its children are up."""
        wait_for(lambda: " ready: " in self.log(), timeout, self.log)
        assert process.poll() is None, self.log()
        time.sleep(0.2)  # the children reach their first blocking reserve

    def events(self, kind: str | None = None) -> list[list[Any]]:
        """The tasks' events ``[time, pid, kind, *details]``, of one kind or all."""
        path = self.path / "events.log"
        lines = path.read_text().splitlines() if path.exists() else []
        events = [json.loads(line) for line in lines]
        return [e for e in events if kind is None or e[2] == kind]

    def close(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in self._logs:
            log.close()
        self.producer.close()


@contextmanager
def open_run(broker: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    """A ``Run`` in ``path`` on ``broker`` (one of ``BROKERS``), without ``GOPHERQ_*``
    variables of the environment; at the end its workers die and its Redis keys go."""
    if broker not in BROKERS:
        raise ValueError(f"unknown broker {broker!r}; use one of {BROKERS}")
    # The shared test Redis under a fresh prefix; skips (fails in CI) without one.
    # Found first: GOPHERQ_TEST_REDIS_URL may name it.
    url = services.redis_test_url() if broker == "redis" else None
    for name in list(os.environ):
        if name.startswith("GOPHERQ_"):
            monkeypatch.delenv(name)
    handle = Run(path, url)
    try:
        yield handle
    finally:
        handle.close()
        if url is not None:
            services.delete_keys(url)


@pytest.fixture
def run(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Run]:
    """A private directory, broker and app module; its workers die with the test.

    On SQLite, unless parametrized indirectly with a broker name (``on_each_broker``).
    Import it into a test module (``from harness import run``) to use it.
    """
    with open_run(getattr(request, "param", "sqlite"), tmp_path, monkeypatch) as handle:
        yield handle


@pytest.fixture
def redis_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    """A ``Run`` on the shared Redis under a fresh key prefix; its keys go at the end."""
    with open_run("redis", tmp_path, monkeypatch) as handle:
        yield handle


on_each_broker = pytest.mark.parametrize("run", BROKERS, indirect=True)
"""Mark a test (or a module, in ``pytestmark``) that takes ``run``, to run it once
per broker: ``test_x[sqlite]`` and ``test_x[redis]``."""


def wait_for(
    condition: Callable[[], object], timeout: float, why: Callable[[], str] = lambda: ""
) -> None:
    """Poll ``condition`` every 10 ms until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s\n{why()}")
        time.sleep(0.01)


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> int:
    """SIGTERM the supervisor and return its exit code."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout)
