"""The Redis broker, result backend and event backend on a real 3-master Redis Cluster.

The module starts its own cluster on free loopback ports (``RedisClusterNodes``
in services.py) and stops it at the end. It runs the broker (with its concurrency
limits), result backend and event backend contract suites through
``redis+cluster://``: their queues (``default``, ``a``, ``b``, ``c``, ...) hash
to slots on different nodes, so every multi-queue case (priority across queues,
dead letters of all queues, stats) crosses nodes. Then
cluster-only cases: blocking on several slots, script reload on every node.

Skipped without ``redis-server``; fails instead in CI (``GOPHERQ_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster
import services
import test_broker_contract
import test_broker_contract_rates
import test_broker_order
import test_concurrency_contract
import test_event_backend_contract
import test_redis_indexes
import test_result_backend_contract
from redis.crc import key_slot
from test_broker_contract import envelope, ids_of
from test_key_concurrency import sends_with_one_key

from gopherq.brokers import Broker, open_broker
from gopherq.brokers.redis import RedisBroker
from gopherq.events import EventBackend, open_event_backend
from gopherq.results import ResultBackend, open_backend
from gopherq.results.redis import RedisResultBackend
from gopherq.states import State
from gopherq.stores.redis import script

# The contract suites, run again here with this module's fixtures (below).
for _module in (
    test_broker_contract,
    test_broker_order,
    test_result_backend_contract,
    test_event_backend_contract,
    test_concurrency_contract,
    test_broker_contract_rates,
):
    for _name in dir(_module):
        if _name.startswith("test_"):
            globals()[_name] = getattr(_module, _name)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The ``redis+cluster://`` URL of a 3-master cluster of this module's own."""
    services.redis_server_binary()  # skip (fail in CI) without it
    nodes = services.RedisClusterNodes(Path(tmp_path_factory.mktemp("cluster"))).start()
    yield nodes.url
    nodes.stop()


def private(url: str) -> str:
    """``url`` with a key prefix of its own (the cluster is thrown away afterwards)."""
    return f"{url}?prefix=gqtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_broker(cluster: str) -> Iterator[Callable[..., Broker]]:
    """Brokers on one shared store: this test's prefix on the cluster."""
    url = private(cluster)
    opened: list[Broker] = []

    def make(**options: Any) -> Broker:
        opened.append(open_broker(url, **options))
        return opened[-1]

    yield make
    for broker in opened:
        broker.close()


@pytest.fixture
def make_backend(cluster: str) -> Iterator[Callable[..., ResultBackend]]:
    url = private(cluster)
    opened: list[ResultBackend] = []

    def make(**options: Any) -> ResultBackend:
        opened.append(open_backend(url, **options))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def make_events(cluster: str) -> Iterator[Callable[..., EventBackend]]:
    url = private(cluster)
    opened: list[EventBackend] = []

    def make(**options: Any) -> EventBackend:
        opened.append(open_event_backend(url, **options))
        return opened[-1]

    yield make
    for backend in opened:
        backend.close()


@pytest.fixture
def events(make_events: Callable[..., EventBackend]) -> EventBackend:
    return make_events()


@pytest.fixture
def cluster_broker(make_broker: Callable[..., Broker]) -> RedisBroker:
    broker = make_broker()
    assert isinstance(broker, RedisBroker)
    return broker


def node_of(cluster_url: str, queue: str) -> str:
    """The node (host:port) serving the slot of ``queue``'s keys."""
    client = redis.cluster.RedisCluster.from_url(cluster_url.replace("redis+cluster", "redis"))
    try:
        node = client.get_node_from_key(f"gq:{{{queue}}}:ready")  # type: ignore[no-untyped-call]
        return f"{node.host}:{node.port}"
    finally:
        client.close()


def test_contract_queues_span_several_nodes(cluster: str) -> None:
    assert len({node_of(cluster, q) for q in ("default", "a", "b", "c")}) == 3
    assert len({key_slot(f"gq:{{{q}}}:ready".encode()) for q in ("a", "b", "c")}) == 3


def test_open_gives_the_redis_classes(cluster: str) -> None:
    url = private(cluster)
    assert isinstance(open_broker(url), RedisBroker)
    assert isinstance(open_backend(url), RedisResultBackend)


def test_bulk_enqueue_across_nodes_in_one_call(cluster_broker: RedisBroker) -> None:
    batch = [envelope(q, p) for q, p in (("a", 2), ("b", 1), ("c", 0)) for _ in range(400)]
    assert cluster_broker.enqueue(batch) == [e.id for e in batch]
    stats = cluster_broker.stats()
    assert [stats[q].ready for q in "abc"] == [400, 400, 400]
    depths = cluster_broker.queue_depths()  # one script per queue, on each queue's node
    assert [dict(depths[q].ready) for q in "abc"] == [{2: 400}, {1: 400}, {0: 400}]
    got = cluster_broker.reserve(["a", "b", "c"], 1000, 0)
    assert [d.queue for d in got] == ["c"] * 400 + ["b"] * 400 + ["a"] * 200
    assert cluster_broker.ack(got) == 1000


def test_blocked_on_several_slots_wakes_for_each(cluster_broker: RedisBroker) -> None:
    """The first queue wakes a blocked reserve at once; the others within the poll
    (bounds loose for a loaded machine, yet below the 2 s of one blocking slice)."""
    for queue, bound in (("a", 1.0), ("c", 1.5)):
        out: list[tuple[list[str], float]] = []

        def run(out: list[tuple[list[str], float]] = out) -> None:
            start = time.monotonic()
            got = cluster_broker.reserve(["a", "b", "c"], 10, 5)
            out.append((ids_of(got), time.monotonic() - start))

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.15)
        message = envelope(queue)
        cluster_broker.enqueue([message])
        thread.join(10)
        [(got, took)] = out
        assert got == [message.id]
        assert took < bound


def test_concurrent_sends_with_one_key_make_one_job(cluster: str) -> None:
    ids, taken = sends_with_one_key(private(cluster))  # the key lives in the queue's slot
    assert len(ids) == 1
    assert [d.id for d in taken] == list(ids)


def test_scripts_reload_on_every_node_after_a_flush(cluster: str) -> None:
    broker = open_broker(private(cluster))
    broker.enqueue([envelope(q) for q in "abc"])
    client = redis.cluster.RedisCluster.from_url(cluster.replace("redis+cluster", "redis"))
    sha = script("reserve").sha
    try:
        client.script_flush()  # on every primary
        assert client.script_exists(sha) == [False]
        assert len(broker.reserve(["a", "b", "c"], 10, 0)) == 3
        assert client.script_exists(sha) == [True]  # loaded on every primary again
    finally:
        client.close()
        broker.close()


def test_job_indexes_page_as_the_history_filtered(cluster: str) -> None:
    """The state, task and queue indexes (one slot, ``{jobs}``) beside records in
    slots all over the cluster: filtered pages, a state change, a delete."""
    backend = RedisResultBackend(private(cluster))
    try:
        records = test_redis_indexes.history(120)
        backend.store(records)
        for filters in test_redis_indexes.FILTERS:
            got = test_redis_indexes.pages(backend, 7, **filters)
            assert got == test_redis_indexes.expected(backend, 7, **filters), filters
        failed = next(r for r in records if r.state is State.FAILED)
        backend.store([replace(failed, state=State.SUCCEEDED)])
        assert failed.id not in {r.id for r in backend.jobs(state=State.FAILED, limit=1000)}
        assert failed.id in {r.id for r in backend.jobs(state=State.SUCCEEDED, limit=1000)}
        assert backend.delete(failed.id)
        assert failed.id not in {r.id for r in backend.jobs(task=failed.task, limit=1000)}
    finally:
        backend.close()
