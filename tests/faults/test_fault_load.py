"""Many producers and two workers at once; and a result store that fails as tasks start."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import services
from ledger import BROKERS, open_fault_run, scaled, stop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(90, 900))]

PRODUCER = """
import sys
from gopherq import GopherQ
app = GopherQ("producer", broker=sys.argv[1])
count, out = int(sys.argv[2]), open(sys.argv[3], "w")
for n in range(count):
    out.write(app.send_task("tasks.work", (0.01,)).id + "\\n")
    out.flush()
app.close()
"""


@pytest.mark.parametrize("broker", BROKERS)
def test_five_producers_and_two_workers(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_fault_run(broker, tmp_path, monkeypatch) as run:
        workers = [run.worker("-c", "2"), run.worker("-c", "1")]
        each = scaled(30, 2000)
        outputs = [run.path / f"sent{n}.txt" for n in range(5)]
        run.fault()
        producers = [
            subprocess.Popen([sys.executable, "-c", PRODUCER, run.url, str(each), str(out)])
            for out in outputs
        ]
        assert [p.wait(scaled(60, 600)) for p in producers] == [0] * 5
        run.sent = [id for out in outputs for id in out.read_text().split()]
        assert len(set(run.sent)) == 5 * each
        run.wait_drained()
        run.check("5 producers, 2 workers", kills=0, recovery_bound=scaled(60, 600))
        assert [stop(worker) for worker in workers] == [0, 0], run.log()


@pytest.mark.parametrize("broker", BROKERS)
def test_result_store_outage_as_tasks_start(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The result store (a Redis of its own) stops for a while: tasks that store a
    STARTED record before they run must not kill their process nor die WORKER_LOST."""
    # Every write kept across its restart (AOF): a record stored is never lost.
    store = services.RedisServer(
        tmp_path / "store", "--appendonly", "yes", "--appendfsync", "always"
    ).start()
    try:
        with open_fault_run(broker, tmp_path, monkeypatch) as run:
            backend = services.with_prefix(store.url)
            monkeypatch.setenv("GOPHERQ_RESULT_BACKEND", backend)  # the producer's too
            run.producer.close()
            run.producer = type(run.producer)("producer", broker=run.url, result_backend=backend)
            worker = run.worker("-c", "2", result_backend=backend, max_deliveries="3")
            run.wait_ready(worker)
            children = set(run.children(worker))
            run.send_work(scaled(10, 100), "announced", 0.05)
            run.wait_drained()  # idle, with nothing to settle
            run.fault()
            store.stop()
            run.send_work(scaled(20, 400), "announced", 0.05)  # they start: no store
            time.sleep(4)
            store.start()
            run.wait_drained(timeout=scaled(45, 300))
            assert not run.producer.broker.dead_letters(), run.log()
            run.check("result store outage", kills=0, recovery_bound=scaled(45, 300))
            assert set(run.children(worker)) == children, run.log()  # none died
            assert stop(worker) == 0, run.log()
    finally:
        store.stop()
