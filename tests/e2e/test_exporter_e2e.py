"""``gopherq exporter`` as operators run it: a process of its own, scraped over HTTP,
beside a real worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest
from harness import Run, on_each_broker, run, stop, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120), on_each_broker]
__all__ = ["run"]  # the fixture

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Exporter:
    """``gopherq exporter -A tasks --port PORT`` in the run's directory."""

    def __init__(self, run: Run, port: int = 0) -> None:
        self.log_path = run.path / "exporter.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
        environ["GOPHERQ_BROKER_URL"] = run.url
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gopherq", "exporter", "-A", "tasks", "--port", str(port)],
                cwd=run.path,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text()

    def url(self) -> str:
        """The URL it printed once serving."""
        wait_for(lambda: "serving " in self.log() or self.process.poll() is not None, 30, self.log)
        assert self.process.poll() is None, self.log()
        return self.log().split("serving ", 1)[1].split()[0]

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def exporter(run: Run) -> Iterator[Exporter]:
    started = Exporter(run)
    yield started
    started.close()


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def gauge(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_scraped_over_http_beside_a_worker(run: Run, exporter: Exporter) -> None:
    run.send_batch("add", [(i, i) for i in range(3)])
    run.producer.broker.pause("idle")
    url = exporter.url()

    first = scrape(url)
    assert gauge(first, "gopherq_broker_up") == 1
    assert gauge(first, "gopherq_queue_ready", queue="default", priority="normal") == 3
    assert gauge(first, "gopherq_queue_paused", queue="idle") == 1
    assert gauge(first, "gopherq_workers_online") == 0

    worker = run.worker("-c", "1")
    run.wait_ready(worker)

    def drained_and_online() -> bool:
        now = scrape(url)
        ready = gauge(now, "gopherq_queue_ready", queue="default", priority="normal") or 0
        return ready == 0 and gauge(now, "gopherq_workers_online") == 1

    wait_for(drained_and_online, 30, lambda: f"{scrape(url)}\n{run.log()}")
    assert stop(worker) == 0
    wait_for(lambda: gauge(scrape(url), "gopherq_workers_online") == 0, 30, run.log)

    exporter.process.send_signal(signal.SIGTERM)
    assert exporter.process.wait(30) == 0, exporter.log()


def test_a_port_in_use_is_one_line_and_exit_1(run: Run) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = Exporter(run, port)
        try:
            assert exporter.process.wait(30) == 1
        finally:
            exporter.close()
    lines = exporter.log().strip().splitlines()
    assert lines == [
        f"Error: cannot serve metrics on 127.0.0.1:{port}: the port is in use "
        "(another exporter?); choose another with --port"
    ]
