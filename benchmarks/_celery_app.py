"""The Celery 5 side of ``bench_redis.py --celery``: the same INCR workload.

Broker and result backend on one Redis database (``GQBENCH_CELERY_URL``), every
key under ``GQBENCH_CELERY_PREFIX`` (kombu's and the backend's
``global_keyprefix``), msgpack for tasks and results. The worker runs as
``celery -A _celery_app worker -P prefork -c 2``.
"""

from __future__ import annotations

import os

import _counter
from celery import Celery  # type: ignore[import-untyped]

QUEUE = "bench"

app = Celery("gqbench", broker=os.environ["GQBENCH_CELERY_URL"])
app.conf.update(
    result_backend=os.environ["GQBENCH_CELERY_URL"],
    task_serializer="msgpack",
    result_serializer="msgpack",
    accept_content=["msgpack"],
    task_default_queue=QUEUE,
    broker_transport_options={"global_keyprefix": os.environ["GQBENCH_CELERY_PREFIX"]},
    result_backend_transport_options={"global_keyprefix": os.environ["GQBENCH_CELERY_PREFIX"]},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.incr", ignore_result=True)  # type: ignore[untyped-decorator]
def incr() -> int:
    """One INCR; no result is stored."""
    return _counter.incr()


@app.task(name="bench.incr_get")  # type: ignore[untyped-decorator]
def incr_get() -> int:
    """One INCR; the count is the result."""
    return _counter.incr()
