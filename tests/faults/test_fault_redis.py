"""Faults of a Redis broker under real workers: restarts, lost scripts, killed
connections, and a full memory. Each scenario runs on a ``redis-server`` of its
own (``tests/services.py``), which it may stop, flush or refill."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from ledger import FaultRun, open_fault_run, scaled, stop

from gopherq import BrokerError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(90, 900))]


@pytest.fixture
def redis_fault_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultRun]:
    """A ``FaultRun`` on a private Redis that keeps every write (AOF, fsync always)."""
    with open_fault_run(
        "redis", tmp_path, monkeypatch, "--appendonly", "yes", "--appendfsync", "always"
    ) as run:
        yield run


def client(run: FaultRun) -> redis.Redis:
    assert run.server is not None
    return redis.Redis(port=run.server.port, socket_timeout=10)


def test_redis_restart_with_aof(redis_fault_run: FaultRun) -> None:
    run = redis_fault_run
    assert run.server is not None and run.server.process is not None
    worker = run.worker("-c", "2", lease_seconds="5")
    run.send_work(scaled(40, 1000), "work", 0.05)
    run.wait_progress(5)
    run.fault()
    run.server.process.kill()  # a crash: no goodbye, no snapshot; the AOF has it all
    run.server.process.wait()
    time.sleep(1.5)
    run.server.start()
    run.wait_drained()
    run.check("Redis restart (AOF)", kills=2, recovery_bound=scaled(45, 120))
    assert stop(worker) == 0, run.log()


def test_script_flush(redis_fault_run: FaultRun) -> None:
    run = redis_fault_run
    worker = run.worker("-c", "2")
    run.send_work(scaled(40, 1000), "work", 0.02)
    run.wait_progress(5)
    run.fault()
    with client(run) as admin:
        for _ in range(3):
            admin.script_flush()  # the workers' scripts are gone: NOSCRIPT
            time.sleep(0.2)
    run.wait_drained()
    run.check("SCRIPT FLUSH", kills=0, recovery_bound=scaled(30, 120))
    assert stop(worker) == 0, run.log()


def test_client_kill(redis_fault_run: FaultRun) -> None:
    run = redis_fault_run
    worker = run.worker("-c", "2", lease_seconds="2")
    run.send_work(scaled(40, 1000), "work", 0.02)
    run.wait_progress(5)
    run.fault()
    with client(run) as admin:
        for _ in range(3):
            admin.client_kill_filter(_type="normal", skipme=True)  # every worker connection
            time.sleep(0.3)
    run.wait_drained()
    # A script that ran but whose reply was lost (a reserve) ends in a lease expiry.
    run.check("CLIENT KILL", kills=3, recovery_bound=scaled(30, 120))
    assert stop(worker) == 0, run.log()


def test_maxmemory_noeviction_drains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis full (the recommended ``noeviction``): enqueue refuses, but workers still
    take, give back, recover expired leases and drain everything."""
    with open_fault_run(
        "redis", tmp_path, monkeypatch, "--maxmemory", "3mb", "--maxmemory-policy", "noeviction"
    ) as run:
        assert fill(run) > 100
        run.fault()
        # Events would need memory too: this is about the broker's own scripts.
        options = {"lease_seconds": "2", "events": "off"}
        first = run.worker("-c", "2", **options)
        run.wait_progress(len(run.completed()) + 4)
        os.killpg(first.pid, signal.SIGKILL)  # its leases expire while Redis is full
        first.wait(5)
        fill(run)  # what it acked freed some memory: full again
        time.sleep(2.5)  # past its leases
        second = run.worker("-c", "2", **options)
        run.wait_progress(len(run.completed()) + 4)
        assert stop(second) == 0, run.log()  # gives back what it prefetched
        fill(run)
        third = run.worker("-c", "2", **options)
        run.wait_drained(timeout=scaled(60, 300))
        run.check("Redis at maxmemory (noeviction)", kills=2, recovery_bound=scaled(60, 300))
        run.send_work(5, "quiet", 0.005)  # and it takes work again
        run.wait_drained()
        assert stop(third) == 0, run.log()


def fill(run: FaultRun) -> int:
    """Send padded messages until Redis refuses them for want of memory, then lower
    ``maxmemory`` to below what Redis holds (the memory of connections' buffers comes
    and goes, but stays under that margin): until messages go, every write that
    needs memory fails. Returns how many messages went in."""
    padding = "x" * 2000
    before = len(run.sent)
    with pytest.raises(BrokerError, match=r"(?i)memory"):
        for _ in range(1000):  # to the limit (a few hundred messages)
            run.send_work(10, "quiet", 0.005, padding)
    with client(run) as admin:
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", used - 100_000)  # about 40 messages' worth
    return len(run.sent) - before
