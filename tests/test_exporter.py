"""The broker exporter: ``Broker.queue_depths`` on every broker, and the gauges that
``gopherq.observability.exporter`` serves from it, read back with prometheus-client's
own parser."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gopherq import GopherQ
from gopherq.brokers import Broker, Envelope, QueueDepth, QueueStats
from gopherq.brokers.memory import MemoryBroker
from gopherq.errors import BrokerUnavailable
from gopherq.events import Event, EventType
from gopherq.observability import workers
from gopherq.observability.exporter import (
    BrokerCollector,
    Exposition,
    Snapshot,
    families,
    serve,
)
from gopherq.observability.workers import MISSED_BEATS, WorkerRoll

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(app: GopherQ) -> Samples:
    """Every sample the exporter of ``app`` serves, parsed from the text exposition
    (``/metrics``, which must equal prometheus-client's text of the same gauges)."""
    collector = BrokerCollector(app, cache_seconds=1.0)
    try:
        text = collector.exposition().decode()
        assert text == generate_latest(registry_for_collector(collector)).decode()
    finally:
        collector.close()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def registry_for_collector(collector: BrokerCollector) -> Any:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def envelope(id: str, queue: str, priority: int = 2, eta: float | None = None) -> Envelope:
    return Envelope(id, queue, priority, b"body-" + id.encode(), eta)


def known_workload(broker: Broker) -> float:
    """Enqueue, lease, dead-letter and pause a known set; returns the time just before
    the first enqueue.

    a: 3 normal and 2 critical ready, 1 scheduled an hour ahead.
    b: 4 enqueued, 2 leased, of which 1 dead-lettered: 2 ready, 1 running, 1 dead.
    c: no message, paused.
    """
    start = time.time()
    broker.enqueue([envelope(f"a{i}", "a") for i in range(3)])
    broker.enqueue([envelope(f"a-crit{i}", "a", priority=0) for i in range(2)])
    broker.enqueue([envelope("a-later", "a", eta=time.time() + 3600)])
    broker.enqueue([envelope(f"b{i}", "b") for i in range(4)])
    leased = broker.reserve(["b"], 2, 0)
    assert len(leased) == 2
    assert broker.dead(leased[0], "REJECTED", "no")
    broker.pause("c")
    return start


def counts(depth: QueueDepth) -> tuple[dict[int | None, int], int, int, int, bool]:
    """Ready by priority, scheduled, running, dead, paused."""
    return dict(depth.ready), depth.scheduled, depth.running, depth.dead, depth.paused


def test_queue_depths_after_a_known_workload(broker: Broker) -> None:
    start = known_workload(broker)
    depths = broker.queue_depths()
    elapsed = time.time() - start

    assert set(depths) == {"a", "b", "c"}
    a, b, c = depths["a"], depths["b"], depths["c"]
    assert counts(a) == ({2: 3, 0: 2}, 1, 0, 0, False)
    assert counts(b) == ({2: 2}, 0, 1, 1, False)
    assert counts(c) == ({}, 0, 0, 0, True)
    # The oldest ready message of a and b was enqueued after start: within the time since
    # (Redis counts in 10 us steps from its own clock, on this machine).
    for depth in (a, b):
        assert depth.oldest_age is not None
        assert 0 <= depth.oldest_age <= elapsed + 0.001
    assert c.oldest_age is None


def test_queue_depths_agree_with_stats(broker: Broker) -> None:
    known_workload(broker)
    stats, depths = broker.stats(), broker.queue_depths()
    assert set(stats) == set(depths)
    for name, s in stats.items():
        ready, *others = counts(depths[name])
        assert (sum(ready.values()), *others) == (s.ready, s.scheduled, s.running, s.dead, s.paused)


def test_a_due_eta_counts_as_ready_at_its_priority(broker: Broker) -> None:
    broker.enqueue([envelope("soon", "q", priority=1, eta=time.time() + 0.05)])
    time.sleep(0.1)  # due: no worker has made it ready yet
    depth = broker.queue_depths()["q"]
    assert (dict(depth.ready), depth.scheduled) == ({1: 1}, 0)
    assert depth.oldest_age is not None and depth.oldest_age > 0


def test_an_expired_lease_counts_as_ready_at_its_priority(
    make_broker: Callable[..., Broker],
) -> None:
    broker = make_broker(lease_seconds=0.05)
    broker.enqueue([envelope("held", "q", priority=3)])
    [delivery] = broker.reserve(["q"], 1, 0)
    assert delivery.id == "held"
    time.sleep(0.1)  # the lease expires: its worker is gone
    assert counts(broker.queue_depths()["q"]) == ({3: 1}, 0, 0, 0, False)


def test_the_default_queue_depths_is_built_on_stats() -> None:
    class StatsOnly(MemoryBroker):
        """A broker with ``stats`` and the contract's default ``queue_depths``."""

        def stats(self) -> dict[str, QueueStats]:
            return {name: d.stats() for name, d in MemoryBroker.queue_depths(self).items()}

        queue_depths = Broker.queue_depths

    broker = StatsOnly()
    known_workload(broker)
    depths = broker.queue_depths()
    assert depths["a"] == QueueDepth("a", {None: 5}, scheduled=1)
    assert depths["b"] == QueueDepth("b", {None: 2}, running=1, dead=1)
    assert depths["c"] == QueueDepth("c", {}, paused=True)


def app_on(broker: Broker, **settings: Any) -> GopherQ:
    return GopherQ("exported", broker=broker, events="memory://", **settings)


def test_the_gauges_after_a_known_workload(broker: Broker) -> None:
    start = known_workload(broker)
    samples = scrape(app_on(broker))
    elapsed = time.time() - start

    assert value(samples, "gopherq_broker_up") == 1
    assert value(samples, "gopherq_workers_online") == 0
    ready = {
        dict(labels)["queue"] + " " + dict(labels)["priority"]: v
        for (name, labels), v in samples.items()
        if name == "gopherq_queue_ready" and v
    }
    assert ready == {"a critical": 2, "a normal": 3, "b normal": 2}
    # Every queue has a series for each named priority, 0 where none is ready.
    for queue in "abc":
        for priority in ("critical", "high", "normal", "low", "bulk"):
            assert ("gopherq_queue_ready", (("priority", priority), ("queue", queue))) in samples
    expected = {  # per queue: scheduled, running, dead, paused
        "a": (1, 0, 0, 0),
        "b": (0, 1, 1, 0),
        "c": (0, 0, 0, 1),
    }
    for queue, counts in expected.items():
        found = tuple(
            value(samples, f"gopherq_queue_{gauge}", queue=queue)
            for gauge in ("scheduled", "running", "dead", "paused")
        )
        assert found == counts, queue
    assert 0 <= value(samples, "gopherq_queue_oldest_age_seconds", queue="a") <= elapsed + 0.001
    assert value(samples, "gopherq_queue_oldest_age_seconds", queue="c") == 0


def test_a_priority_outside_the_named_ones_is_labelled_by_number() -> None:
    broker = MemoryBroker()
    broker.enqueue([envelope("x", "q", priority=7)])
    samples = scrape(app_on(broker))
    assert value(samples, "gopherq_queue_ready", queue="q", priority="7") == 1


def test_a_broker_that_does_not_answer_is_reported_down(caplog: pytest.LogCaptureFixture) -> None:
    class Down(MemoryBroker):
        def queue_depths(self) -> dict[str, QueueDepth]:
            raise ConnectionError("refused at redis://:secret@db:6379")

    with caplog.at_level(logging.WARNING, "gopherq.exporter"):
        samples = scrape(app_on(Down()))
    assert value(samples, "gopherq_broker_up") == 0
    assert not [k for k in samples if k[0].startswith("gopherq_queue_")]
    assert "refused" in caplog.text and "secret" not in caplog.text


def test_without_events_workers_online_is_left_out() -> None:
    samples = scrape(GopherQ("quiet", broker=MemoryBroker(), events=None))
    assert ("gopherq_workers_online", ()) not in samples
    assert value(samples, "gopherq_broker_up") == 1


class CountingBroker(MemoryBroker):
    """Counts ``queue_depths`` calls; each waits for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.threads: set[int] = set()
        self.release = threading.Event()
        self.release.set()

    def queue_depths(self) -> dict[str, QueueDepth]:
        self.calls += 1
        self.threads.add(threading.get_ident())
        self.release.wait(10)
        return super().queue_depths()


def test_scrapes_within_the_cache_time_share_one_query() -> None:
    broker = CountingBroker()
    now = [100.0]
    collector = BrokerCollector(app_on(broker), cache_seconds=1.0, clock=lambda: now[0])
    broker.release.clear()
    scrapes = [threading.Thread(target=lambda: list(collector.collect())) for _ in range(4)]
    for thread in scrapes:
        thread.start()
    broker.release.set()
    for thread in scrapes:
        thread.join(10)
    assert broker.calls == 1
    now[0] += 0.5
    list(collector.collect())
    assert broker.calls == 1
    now[0] += 1.0
    list(collector.collect())
    assert broker.calls == 2


def test_every_query_runs_on_one_thread_whichever_thread_scrapes() -> None:
    """The HTTP server scrapes on a new thread each time; a SQLite broker opens a
    connection per thread, so the queries keep to one."""
    broker = CountingBroker()
    collector = BrokerCollector(app_on(broker), cache_seconds=0)
    done = threading.Event()

    def scrape(scraped: threading.Event) -> None:
        list(collector.collect())
        scraped.set()
        done.wait(10)  # alive until the end, so that no two scrapers share an ident

    scrapers = []
    for _ in range(3):
        scraped = threading.Event()
        scrapers.append(threading.Thread(target=scrape, args=(scraped,)))
        scrapers[-1].start()
        assert scraped.wait(10)
    done.set()
    for thread in scrapers:
        thread.join(10)
    assert broker.calls == 3
    assert len(broker.threads) == 1
    assert threading.get_ident() not in broker.threads


def publish(app: GopherQ, kind: EventType, worker: str, at: float) -> None:
    app.events.backend.publish([Event(kind, at, worker=worker)])


def test_workers_online_follow_their_events() -> None:
    app = app_on(MemoryBroker(), worker_heartbeat=5.0)
    roll = WorkerRoll(app)
    now = time.time()
    stale = now - MISSED_BEATS * 5.0 - 1
    publish(app, EventType.WORKER_ONLINE, "w1", now - 1)
    publish(app, EventType.WORKER_HEARTBEAT, "w2", stale)  # missed its beats: gone
    publish(app, EventType.WORKER_ONLINE, "w3", now - 2)
    publish(app, EventType.WORKER_OFFLINE, "w3", now - 1)  # stopped
    assert roll.online(now) == 1

    publish(app, EventType.WORKER_HEARTBEAT, "w2", now)  # back
    publish(app, EventType.WORKER_HEARTBEAT, "w1", now)
    assert roll.online(now) == 2
    assert roll.online(now + MISSED_BEATS * 5.0 + 1) == 0


def test_a_long_log_is_caught_up_with_over_several_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "READ_LIMIT", 1)
    monkeypatch.setattr(workers, "MAX_READS", 2)
    app = app_on(MemoryBroker())
    roll = WorkerRoll(app)
    for name in ("w1", "w2", "w3"):
        publish(app, EventType.WORKER_ONLINE, name, time.time())
    assert roll.online() == 2
    assert roll.online() == 3


def test_workers_online_in_the_exposition() -> None:
    app = app_on(MemoryBroker())
    publish(app, EventType.WORKER_ONLINE, "w1", time.time())
    assert value(scrape(app), "gopherq_workers_online") == 1


class DownBroker(MemoryBroker):
    def ping(self) -> None:
        raise BrokerUnavailable("down")


@pytest.mark.parametrize(("broker", "ready"), [(MemoryBroker, 200), (DownBroker, 503)])
def test_the_exporter_serves_probes_beside_its_metrics(
    broker: type[MemoryBroker], ready: int
) -> None:
    """``/live`` while it answers; ``/ready`` 503 while the broker does not."""
    app = GopherQ("t", broker=broker(), backend="memory://", events=False)
    server = serve(app, 0)
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert urllib.request.urlopen(f"{base}/live", timeout=10).status == 200
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as reply:
            assert b"gopherq_broker_up" in reply.read()
        try:
            status = urllib.request.urlopen(f"{base}/ready", timeout=10).status
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == ready
    finally:
        server.close()


def written(snapshot: Snapshot, exposition: Exposition | None = None) -> str:
    """``snapshot`` as ``/metrics`` writes it, checked against prometheus-client's text."""

    class Fixed:
        def collect(self) -> Any:
            return iter(families(snapshot))

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    text = (exposition or Exposition()).render(snapshot).decode()
    assert text == generate_latest(registry).decode()
    return text


ODD_NAMES = ['quote"d', "back\\slash", "new\nline", "ünïcode-队列", "a" * 200, "sp ace"]


def test_the_exposition_is_prometheus_clients_text_byte_for_byte() -> None:
    depths = {
        name: QueueDepth(
            name,
            {0: 3, 2: 10**9, 7: 1, -3: 2},
            scheduled=12_345_678,
            running=i,
            dead=1,
            paused=bool(i % 2),
            oldest_age=1.5e-7 * (i + 1) if i % 3 else None,
        )
        for i, name in enumerate(ODD_NAMES)
    }
    depths["idle"] = QueueDepth("idle", {})
    depths["flat"] = QueueDepth("flat", {None: 4})  # a broker without priorities, no age
    text = written(Snapshot(depths, workers=3, seconds=0.012345))
    parsed = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert value(parsed, "gopherq_queue_ready", queue='quote"d', priority="normal") == 10**9
    assert value(parsed, "gopherq_queue_ready", queue="new\nline", priority="-3") == 2
    assert value(parsed, "gopherq_queue_scheduled", queue="ünïcode-队列") == 12_345_678
    assert ("gopherq_queue_oldest_age_seconds", (("queue", "flat"),)) not in parsed
    assert value(parsed, "gopherq_queue_oldest_age_seconds", queue="idle") == 0


@pytest.mark.parametrize("workers", [None, 0, 5])
def test_the_exposition_of_a_broker_down_and_of_no_queues(workers: int | None) -> None:
    written(Snapshot(None, workers, 2.5))
    written(Snapshot({}, workers, 0.0))


def test_the_exposition_keeps_labels_of_present_queues_only() -> None:
    exposition = Exposition()
    first = {name: QueueDepth(name, {2: 1}) for name in ("a", 'b"')}
    written(Snapshot(first, None, 0.1), exposition)
    second = {name: QueueDepth(name, {2: 2}, oldest_age=3.0) for name in ('b"', "c")}
    text = written(Snapshot(second, None, 0.1), exposition)
    assert 'queue="a"' not in text and 'queue="b\\""' in text
    assert set(exposition._labels) == {'b"', "c"}


def test_closing_the_exporter_stops_its_query_thread() -> None:
    def queriers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("gopherq-exporter")]

    before = len(queriers())
    app = GopherQ("t", broker=MemoryBroker(), backend="memory://", events=False)
    server = serve(app, 0)
    urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10).read()
    assert len(queriers()) == before + 1
    server.close()
    assert len(queriers()) == before
