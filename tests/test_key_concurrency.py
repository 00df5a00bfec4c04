"""One idempotency key under concurrency: processes sending with the same key at once
make exactly one job, while a worker takes and finishes it meanwhile (the key moves
from the live message to the finished one without a gap). On a SQLite file and a
real Redis here; on the Redis Cluster in test_redis_cluster.py."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import services

from gopherq import GopherQ
from gopherq.brokers import Delivery, open_broker

PROCESSES = 4
SENDS = 200

pytestmark = pytest.mark.timeout(120)


def _send(url: str, key: str, start: Any, out: Any) -> None:
    """One producer process: ``SENDS`` sends with ``key``, the ids they returned to ``out``."""
    app = GopherQ("producer", broker=url)
    app.broker.ping()  # connected before the start, so that the sends overlap
    start.wait()
    out.put({app.send_task("tasks.job", key=key).id for _ in range(SENDS)})
    app.close()


def sends_with_one_key(url: str) -> tuple[set[str], list[Delivery]]:
    """``PROCESSES`` processes send ``SENDS`` times each with one key while this one
    reserves and acks what comes; the ids the sends returned and what was reserved."""
    key = f"order-{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(PROCESSES + 1), context.Queue()
    producers = [
        context.Process(target=_send, args=(url, key, start, out)) for _ in range(PROCESSES)
    ]
    for process in producers:
        process.start()
    broker = open_broker(url)
    taken: list[Delivery] = []
    done = threading.Event()

    def work() -> None:
        while not done.is_set():
            got = broker.reserve(["default"], 10, 0.05)
            taken.extend(got)
            broker.ack(got)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        start.wait(timeout=60)
        ids: set[str] = set().union(*(out.get(timeout=60) for _ in producers))
        for process in producers:
            process.join(timeout=30)
            assert process.exitcode == 0
    finally:
        done.set()
        worker.join()
    taken.extend(broker.reserve(["default"], 10, 0))  # anything left over
    broker.close()
    return ids, taken


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_concurrent_sends_with_one_key_make_one_job(kind: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gopherq.db'}" if kind == "sqlite" else services.redis_test_url()
    try:
        ids, taken = sends_with_one_key(url)
    finally:
        if kind == "redis":
            services.delete_keys(url)
    assert len(ids) == 1
    assert [d.id for d in taken] == list(ids)
