"""End to end: two ``python -m gopherq beat`` processes against SQLite and real Redis.

The test process plays the workers: a thread takes every message as it is sent
and acknowledges it at once, so that a tick sent twice would be seen twice
(while a message exists, its id and idempotency key would hide a second send).

``GOPHERQ_TEST_SOAK=<seconds>`` runs the two-beat test that long instead of about
ten seconds (the issue asks for minutes; CI keeps to seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import services
from harness import wait_for

from gopherq import GopherQ
from gopherq.schedules import tick_id

HERE = Path(__file__).parent
LEASE = 2.0
SOAK = float(os.environ.get("GOPHERQ_TEST_SOAK") or 0)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120 + 2 * SOAK)]
QUEUES = ["default"]


class BeatRun:
    """One test's directory, broker, processes, and a consumer thread."""

    def __init__(self, path: Path, url: str) -> None:
        self.path, self.url = path, url
        shutil.copy(HERE / "beat_app.py", path / "beatapp.py")
        self.app = GopherQ("beat-e2e", broker=url, events=None)  # the beats' app name
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self.received: list[tuple[str, int, str, float]] = []  # entry, tick, id, when
        self._stop = threading.Event()
        self._consumer: threading.Thread | None = None

    def start(self, command: str, *args: str) -> subprocess.Popen[bytes]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
        environ["GOPHERQ_BROKER_URL"] = self.url
        environ["GOPHERQ_BEAT_LEASE_SECONDS"] = str(LEASE)
        log = (self.path / f"{command}{len(self.processes)}.log").open("wb")
        self._logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "gopherq", command, "-A", "beatapp", *args],
            cwd=self.path,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def log(self, index: int | None = None) -> str:
        paths = sorted(self.path.glob("*.log"))
        if index is not None:
            paths = [p for p in paths if p.stem.endswith(str(index))]
        return "".join(p.read_text() for p in paths if p.name != "stamps.log")

    def consume(self) -> None:
        """Take and acknowledge every message in a thread, noting entry and tick."""

        def loop() -> None:
            broker = self.app.broker
            while not self._stop.is_set():
                deliveries = broker.reserve(QUEUES, 100, 0.2)
                for delivery in deliveries:
                    message = self.app.codec.decode(delivery.body)
                    _, entry, tick = (message.key or "::").rsplit(":", 2)
                    self.received.append((entry, int(tick), message.id, time.time()))
                if deliveries:
                    broker.ack(deliveries)

        self._consumer = threading.Thread(target=loop, daemon=True)
        self._consumer.start()

    def ticks(self, entry: str) -> list[int]:
        return sorted(tick for name, tick, _, _ in self.received if name == entry)

    def close(self) -> None:
        self._stop.set()
        if self._consumer is not None:
            self._consumer.join(5)
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in self._logs:
            log.close()
        self.app.close()


@pytest.fixture(params=["sqlite", "redis"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BeatRun]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gopherq.db'}"
    else:
        url = services.redis_test_url()
    handle = BeatRun(tmp_path, url)
    yield handle
    handle.close()


def contiguous(ticks: list[int], step: int) -> bool:
    return bool(ticks) and ticks == list(range(ticks[0], ticks[-1] + 1, step))


def leading(run: BeatRun, index: int) -> bool:
    return ": leading" in run.log(index)


def test_two_beats_send_each_tick_once_across_a_leader_kill(run: BeatRun) -> None:
    run.consume()
    started = time.time()
    first = run.start("beat")
    wait_for(lambda: leading(run, 0), 15, run.log)
    second = run.start("beat")
    wait_for(lambda: "starting" in run.log(1), 15, run.log)
    time.sleep(max(SOAK / 2, 3.0))
    assert not leading(run, 1), run.log()

    # Kill the leader: the other takes over within the lease, and catches up what it missed.
    first.send_signal(signal.SIGKILL)
    killed = time.time()
    first.wait()
    wait_for(lambda: leading(run, 1), LEASE + 3, run.log)
    takeover = time.time() - killed
    print(f"takeover after SIGKILL of the leader: {takeover:.3f}s (lease {LEASE}s)")
    assert takeover <= LEASE + 1.5, run.log()  # the lease, then a poll or two

    # A dynamic entry is seen within a second or so; removed, it stops.
    added = time.time()
    run.app.schedules.add("dyn", "dyn", every=1)
    wait_for(lambda: run.ticks("dyn"), 5, run.log)
    seen = next(when for name, _, _, when in run.received if name == "dyn") - added
    print(f"dynamic entry: first tick sent {seen:.3f}s after it was added")
    assert seen <= 3.0
    time.sleep(max(SOAK / 2, 2.0))
    run.app.schedules.remove("dyn")
    removed = time.time()
    time.sleep(1.5)

    # SIGTERM: the lease is given up, exit 0.
    assert second.send_signal(signal.SIGTERM) is None
    assert second.wait(10) == 0, run.log()
    assert run.app.schedules.store.acquire("probe", 1).owner == "probe"
    ended = time.time()
    time.sleep(0.5)  # the consumer takes the last messages

    counts = Counter((name, tick) for name, tick, _, _ in run.received)
    assert [key for key, n in counts.items() if n > 1] == [], run.log()  # none doubled
    assert all(id == tick_id(name, tick) for name, tick, id, _ in run.received)
    seconds = run.ticks("second")
    assert contiguous(seconds, 1), (seconds, run.log())  # none lost across the kill
    assert seconds[0] <= started + 2 and seconds[-1] >= ended - 2 - LEASE
    assert contiguous(run.ticks("two_seconds"), 2)
    assert all(t % 2 == 0 for t in run.ticks("two_seconds"))
    # Each minute boundary crossed, once (doubles are ruled out above); one within two
    # seconds of either end of the run may or may not have been sent.
    crossed = [m for m in range(int(started) // 60 * 60 + 60, int(ended) + 1, 60) if m > started]
    sure = [m for m in crossed if started + 2 < m < ended - 2]
    minutes = run.ticks("minute")
    assert set(sure) <= set(minutes) <= set(crossed), (minutes, crossed, run.log())
    dyn = run.ticks("dyn")
    assert contiguous(dyn, 1) and dyn[-1] <= removed + 1.5, (dyn, removed)
    assert "Traceback" not in run.log(), run.log()


# Loose bounds: CI runs this beside other tests on two CPUs, where a process may wait
# a hundred milliseconds for one. Idle, lateness is 1 to 7 ms on both (run with -s).
BOUNDS = {"sqlite": 1.0, "redis": 0.5}


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_eta_tasks_start_on_time(kind: str, tmp_path: Path) -> None:
    """Not before the eta, and with an idle worker not later than the bound."""
    url = f"sqlite:///{tmp_path / 'gopherq.db'}" if kind == "sqlite" else services.redis_test_url()
    run = BeatRun(tmp_path, url)
    try:
        run.start("worker", "-c", "1")
        wait_for(lambda: " ready: " in run.log(), 15, run.log)
        time.sleep(0.3)  # the child reaches its blocking reserve
        etas = []
        for i in range(8):
            eta = time.time() + 0.5 + 0.37 * i
            run.app.send_task("stamp", [eta], eta=eta)
            etas.append(eta)
        stamps = run.path / "stamps.log"
        wait_for(lambda: stamps.exists() and len(stamps.read_text().splitlines()) == 8, 15, run.log)
        late = sorted(
            started - eta for _, eta, started in map(json.loads, stamps.read_text().splitlines())
        )
        print(f"{kind}: eta lateness ms: " + " ".join(f"{x * 1000:.1f}" for x in late))
        assert late[0] >= 0, late  # never early
        assert late[len(late) // 2] <= BOUNDS[kind], late  # the median within the bound
        assert late[-1] <= BOUNDS[kind] + 0.5, late  # and no outlier on a loaded machine
    finally:
        run.close()
