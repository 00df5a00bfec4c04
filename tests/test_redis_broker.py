"""The Redis broker and result backend beyond the contract suites.

Three kinds of test: plain unit tests (URLs, key layout, the scripts' own
layout comments); fast tests on fakeredis, which runs the Lua scripts itself;
and tests against real servers: the shared test Redis (services.py, under a key
prefix of each test's own), or a ``redis-server`` a test starts for itself when
it stops, restarts, flushes or reconfigures it. The shared server is never
flushed, restarted or reconfigured.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import multiprocessing
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
import services
from redis.crc import key_slot
from test_broker_contract import envelope, ids_of

from gopherq import protocol
from gopherq.brokers import Broker, Envelope, open_broker
from gopherq.brokers import redis as redis_broker_module
from gopherq.brokers.redis import RedisBroker
from gopherq.errors import BrokerUnavailable, ConfigurationError
from gopherq.results import JobRecord, open_backend
from gopherq.results import redis as result_redis
from gopherq.results.redis import RedisResultBackend
from gopherq.states import State
from gopherq.stores import redis as connection_module
from gopherq.stores.redis import SCRIPT_NAMES, Connection, parse_url, script

pytestmark = pytest.mark.timeout(60)
SCRIPTS = Path(redis_broker_module.__file__).parent / "scripts"


# Fixtures.


@pytest.fixture
def shared_url() -> Iterator[str]:
    """A private URL on the shared test Redis; its keys are deleted afterwards."""
    url = services.redis_test_url()
    yield url
    services.delete_keys(url)


@pytest.fixture
def shared(shared_url: str) -> Iterator[RedisBroker]:
    broker = RedisBroker(shared_url)
    yield broker
    broker.close()


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., services.RedisServer]]:
    """Start redis-servers of this test's own; all stopped at the end."""
    servers: list[services.RedisServer] = []

    def start(*args: str, unix_socket: bool = False) -> services.RedisServer:
        server = services.RedisServer(
            tmp_path / f"redis{len(servers)}", *args, unix_socket=unix_socket
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> RedisBroker:
    """A broker on fakeredis (with Lua): fast, no server."""
    services.use_fakeredis(monkeypatch)
    return RedisBroker(services.FAKE_URL)


def count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record, per ``Connection.run_many``, how many calls it sent (one round trip each)."""
    sizes: list[int] = []
    real = Connection.run_many

    def spy(self: Connection, client: Any, calls: Any) -> list[Any]:
        sizes.append(len(calls))
        return real(self, client, calls)

    monkeypatch.setattr(Connection, "run_many", spy)
    return sizes


# URLs, keys and scripts: no server.


def test_url_forms() -> None:
    plain = parse_url("redis://127.0.0.1:6379/0")
    assert (plain.cluster, plain.prefix, plain.dead_letter_max) == (False, "gq", 10_000)
    assert plain.client_url == "redis://127.0.0.1:6379/0"

    full = parse_url(
        "redis://ann:s3cret@host:6380/2?prefix=app&dead_letter_max=50&socket_timeout=3"
    )
    assert (full.prefix, full.dead_letter_max) == ("app", 50)
    assert full.client_url == "redis://ann:s3cret@host:6380/2?socket_timeout=3"
    assert "s3cret" not in full.safe and "ann:***@host" in full.safe

    assert parse_url("rediss://host/0").client_url == "rediss://host/0"
    unix = parse_url("unix:///run/redis.sock?db=3&prefix=x")
    assert (unix.client_url, unix.prefix) == ("unix:///run/redis.sock?db=3", "x")
    cluster = parse_url("redis+cluster://h:7000?prefix=c")
    assert (cluster.cluster, cluster.client_url) == (True, "redis://h:7000")
    assert parse_url("rediss+cluster://h:7000").client_url == "rediss://h:7000"


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h",
        "redis://h/0?prefix=a{b}",
        "redis://h/0?prefix=",
        "redis://h?dead_letter_max=x",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_url(url)


def test_open_is_lazy_for_every_scheme() -> None:
    """Opening connects nowhere: a forked worker opens its own connections."""
    for url in (
        "redis://nowhere.invalid:1/0",
        "rediss://nowhere.invalid:1/0",
        "unix:///nowhere.sock",
    ):
        broker = open_broker(url)
        assert isinstance(broker, RedisBroker)
        assert isinstance(open_backend(url), RedisResultBackend)
        broker.close()


@pytest.mark.parametrize("queue", ["default", "a:b", "x{y}z", "{", "x}", "{}", "émoji✓"])
def test_every_key_of_a_queue_shares_one_slot(queue: str) -> None:
    base = RedisBroker("redis://h/0?prefix=p")._base(queue)
    suffixes = re.findall(r"P:\{q\}(:[a-z]+:?)", (SCRIPTS / "lib.lua").read_text())
    assert len(set(suffixes)) == 14  # ready ... wake, fair, m:, keys:, dead:, parked:, credit:
    keys = [base, *(base + suffix for suffix in suffixes), base + ":m:some-id"]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert all(k.startswith("p:") for k in keys)


@pytest.mark.parametrize("queue", ["", "}", "}x"])
def test_queue_names_that_would_split_a_queue_across_slots(queue: str) -> None:
    with pytest.raises(ConfigurationError, match="must not be empty or start with"):
        RedisBroker("redis://h/0").enqueue([envelope(queue)])


def test_every_script_opens_with_its_layout() -> None:
    assert {p.stem for p in SCRIPTS.glob("*.lua")} == {*SCRIPT_NAMES, "lib"}
    for name in SCRIPT_NAMES:
        text = (SCRIPTS / f"{name}.lua").read_text()
        if text.startswith("#!lua"):  # flags (Redis 7), see lib.lua
            text = text.split("\n", 1)[1]
        assert text.startswith(f"-- {name}: "), name
        header = text.split("\n\n")[0]
        assert "KEYS" in header and "ARGV" in header and "key layout: lib.lua" in header, name
    assert "P:{q}:ready" in (SCRIPTS / "lib.lua").read_text()


def test_scripts_that_free_or_move_memory_run_at_maxmemory() -> None:
    """Flags (a Redis 7 shebang, kept the first line): see lib.lua."""
    grows = {
        "enqueue": "#!lua\n",
        "event_add": "#!lua\n",
        "event_index": "#!lua\n",
        "event_job": "#!lua flags=no-writes\n",
        "cancel_requested": "#!lua flags=no-writes\n",
        "dead_letters": "#!lua flags=no-writes\n",
    }
    for name in SCRIPT_NAMES:
        source = script(name).source
        if name.startswith("result_"):
            assert not source.startswith("#!"), name
        else:
            assert source.startswith(grows.get(name, "#!lua flags=allow-oom\n")), name
            assert source.count("#!") == 1, name


def test_a_script_carries_only_the_helpers_it_uses() -> None:
    lib = (
        "-- layout\n\n"
        "local A = 1\n"
        "local function b() return A end\n"
        "local function c() return 2 end -- b() is not used here\n"
        "local function d() return b() end\n"
    )
    source = connection_module._with_helpers(lib, "-- c() in a comment\nreturn d()")
    assert source.startswith("-- layout\n\n")
    assert re.findall(r"^local (?:function )?(\w+)", source, re.MULTILINE) == ["A", "b", "d"]
    ack = script("ack").source
    assert "local function forget" in ack and "local function tidy" not in ack


def test_every_script_compiles(shared_url: str) -> None:
    client = redis.Redis.from_url(shared_url.partition("?")[0])
    try:
        for name in SCRIPT_NAMES:
            assert client.script_load(script(name).source) == script(name).sha
    finally:
        client.close()


def test_the_shipped_enqueue_script_is_the_one_the_broker_runs() -> None:
    """docs/protocol.md: producers in other languages run the package's
    redis-enqueue.lua, which must stay the broker's own enqueue script."""
    assert protocol.shipped_redis_enqueue_script() == script("enqueue").source, (
        "gopherq/protocol/redis-enqueue.lua is stale: write it again with "
        "python -m gopherq protocol redis-enqueue-script > gopherq/protocol/redis-enqueue.lua"
    )


def test_a_foreign_producer_enqueues_with_the_shipped_script(shared_url: str) -> None:
    """The Redis enqueue of docs/protocol.md, by a plain client: SADD, then EVALSHA of
    the shipped file with KEYS and ARGV as documented (after NOSCRIPT: SCRIPT LOAD)."""
    prefix = parse_url(shared_url).prefix
    source = protocol.shipped_redis_enqueue_script().encode()
    sha = hashlib.sha1(source).hexdigest()
    client = redis.Redis.from_url(shared_url.partition("?")[0])
    broker = RedisBroker(shared_url)
    try:
        client.sadd(f"{prefix}:{{_}}:queues", "mail")

        def evalsha(*argv: Any) -> Any:
            try:
                return client.evalsha(sha, 1, f"{prefix}:{{mail}}", *argv)
            except redis.exceptions.NoScriptError:
                assert client.script_load(source) == sha
                return client.evalsha(sha, 1, f"{prefix}:{{mail}}", *argv)

        later = repr(time.time() + 3600)
        assert evalsha("a", "3", "", "", b"\x81\xa1v\x01") == b"a"
        assert evalsha("b", "0", "", "k", b"B") == b"b"
        assert evalsha("c", "2", later, "", b"C") == b"c"
        # A batch replies with its exceptions only: (position, holder) pairs, in msgpack.
        batch = ("d", "1", "", "", b"D", "e", "4", "", "k", b"E", "a", "2", "", "", b"A2")
        assert msgpack.unpackb(evalsha(*batch)) == [2, "b"]
        assert broker.stats()["mail"].scheduled == 1
        taken = broker.reserve(["mail"], 10, 0)
        assert [(d.id, d.priority, d.body) for d in taken] == [
            ("b", 0, b"B"), ("d", 1, b"D"), ("a", 3, b"\x81\xa1v\x01"),
        ]  # fmt: skip
        assert broker.locate("c") is State.SCHEDULED
    finally:
        client.close()
        broker.close()


# fakeredis: the scripts without a server.


def test_fakeredis_round_trip(fake: RedisBroker) -> None:
    batch = [envelope(priority=p) for p in (3, 0, 2)]
    assert fake.enqueue(batch) == [e.id for e in batch]
    got = fake.reserve(["default"], 10, 0)
    assert [d.priority for d in got] == [0, 2, 3]
    assert fake.retry(got[0], -1, "again")
    assert fake.dead(got[1], "REJECTED", "no")
    assert fake.ack(got) == 1
    [again] = fake.reserve(["default"], 10, 0)
    assert (again.id, again.attempt) == (got[0].id, 1)
    stats = fake.stats()["default"]
    assert (stats.ready, stats.running, stats.dead) == (0, 1, 1)


def test_locate_many_with_every_queue_named_reads_no_queue_list(
    fake: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job page names each STARTED job's queue: one round trip, not two."""
    [id] = fake.enqueue([envelope()])
    assert len(fake.reserve(["default"], 1, 0)) == 1

    def unread() -> list[str]:
        raise AssertionError("the known queues were read")

    monkeypatch.setattr(fake, "_known", unread)
    assert fake.locate_many([id, "other"], ["default", "default"]) == [State.STARTED, None]
    with pytest.raises(AssertionError, match="known queues"):
        fake.locate_many([id], [None])


def test_a_redis_without_script_flags_runs_the_scripts_without(
    fake: RedisBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis before 7 (here fakeredis, see the fixture) refuses a shebang line."""
    with caplog.at_level(logging.WARNING, logger="gopherq.redis"):
        [id] = fake.enqueue([envelope()])
        [delivery] = fake.reserve(["default"], 1, 0)
        assert delivery.id == id and fake.ack([delivery]) == 1
    assert "takes no script flags" in caplog.text
    assert fake._conn._command(script("ack"), [], [])[1] == script("ack").plain_sha


def test_big_batches_go_in_chunks_in_one_round_trip(
    fake: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_broker_module, "ENQUEUE_CHUNK", 3)
    monkeypatch.setattr(redis_broker_module, "SETTLE_CHUNK", 4)
    trips = count_round_trips(monkeypatch)
    batch = [envelope("a" if i % 3 else "b") for i in range(10)]
    assert fake.enqueue(batch) == [e.id for e in batch]
    assert trips == [1 + 2 + 2]  # the known-queue set, then 3 chunks of "a" and 2 of "b"
    got = fake.reserve(["a", "b"], 10, 0)
    assert sorted(ids_of(got)) == sorted(e.id for e in batch)
    assert fake.ack(got) == 10
    assert trips[-1] == 2 + 1  # 6 of "a" in chunks of 4, 3 of "b"


def test_a_chunked_batch_reports_the_ids_its_keys_stand_for(
    fake: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_broker_module, "ENQUEUE_CHUNK", 3)
    held = {queue: envelope(queue, key="k") for queue in ("a", "b")}
    fake.enqueue(list(held.values()))
    batch = [envelope("ab"[i % 2], key="k" if i % 3 == 0 else None) for i in range(10)]
    expected = [held[e.queue].id if e.key else e.id for e in batch]
    assert fake.enqueue(batch) == expected


def test_priority_may_be_an_int_enum(fake: RedisBroker) -> None:
    class Priority(enum.IntEnum):
        HIGH = 1

    message = Envelope(uuid.uuid4().hex, "default", Priority.HIGH, b"x")
    fake.enqueue([message])
    [got] = fake.reserve(["default"], 1, 0)
    assert got.priority == 1


def test_priorities_beyond_the_score_range_keep_their_value(fake: RedisBroker) -> None:
    messages = [envelope(priority=p) for p in (99, -5, 2)]
    fake.enqueue(messages)
    got = fake.reserve(["default"], 10, 0)
    assert [d.priority for d in got] == [-5, 2, 99]  # clamped to 0..31 for ordering only


# The shared test Redis.


def test_bulk_enqueue_of_10000_in_one_round_trip(
    shared: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = count_round_trips(monkeypatch)
    batch = [envelope(body=b"x" * 100) for _ in range(10_000)]
    assert shared.enqueue(batch) == [e.id for e in batch]
    assert trips == [1 + 10]  # one pipeline: the known-queue set and 10 chunks of 1,000
    assert shared.stats()["default"].ready == 10_000
    got = shared.reserve(["default"], 10_000, 0)
    assert ids_of(got) == [e.id for e in batch]
    assert shared.ack(got) == 10_000


def test_dead_letters_are_kept_by_count(shared_url: str) -> None:
    broker = RedisBroker(shared_url + "&dead_letter_max=3")
    assert broker.dead_letter_max == 3
    ids = broker.enqueue([envelope("q") for _ in range(5)])
    for delivery in broker.reserve(["q"], 5, 0):
        assert broker.dead(delivery, "REJECTED", "no")
    assert [d.id for d in broker.dead_letters("q")] == ids[:1:-1]
    assert broker.stats()["q"].dead == 3
    assert broker.locate(ids[0]) is None
    assert RedisBroker(shared_url, dead_letter_max=7).dead_letter_max == 7  # keyword wins
    broker.close()


def test_the_reasons_of_dead_letters_follow_them(shared_url: str) -> None:
    """P:{q}:dead:reasons holds the reason of every dead letter and of no other id, and
    P:{q}:dead:r:<reason> the letters with that reason, as letters die, are trimmed,
    requeued, deleted, purged and dropped by age."""
    broker = RedisBroker(shared_url + "&dead_letter_max=4")
    client = redis.Redis.from_url(shared_url.partition("?")[0], decode_responses=True)
    base = broker._base("q")

    def check() -> None:
        dead = client.zrange(f"{base}:dead", 0, -1, withscores=True)
        reasons = client.hgetall(f"{base}:dead:reasons")
        assert sorted(reasons) == sorted(id for id, _ in dead)
        indexed = {
            (key.rpartition(":r:")[2], id, score)
            for key in client.scan_iter(f"{base}:dead:r:*")
            for id, score in client.zrange(key, 0, -1, withscores=True)
        }
        assert indexed == {(reasons[id], id, score) for id, score in dead}
        for id, _ in dead:
            letter = broker.dead_letter(id)
            assert letter is not None and reasons[id] == letter.reason

    ids = broker.enqueue([envelope("q") for _ in range(6)])
    for n, delivery in enumerate(broker.reserve(["q"], 6, 0)):
        assert broker.dead(delivery, ("REJECTED", "MAX_RETRIES")[n % 2], "no")
    check()  # the two oldest trimmed
    assert broker.requeue_dead([ids[2]], "q") == 1
    check()
    assert broker.delete(ids[3])
    check()
    [got] = broker.reserve(["q"], 1, 0)
    assert broker.dead(got, "EXPIRED", "no")
    assert [d.id for d in broker.dead_letters_for("EXPIRED")] == [ids[2]]
    check()
    assert broker.purge_dead("q") == 3
    check()
    broker.enqueue([envelope("q")])
    [got] = broker.reserve(["q"], 1, 0)
    assert broker.dead(got, "REJECTED", "no")
    aged = RedisBroker(shared_url, dead_letter_ttl=0.0)  # every letter is past its ttl
    aged.purge("q")  # a script that tidies: drops letters by age
    assert aged.dead_letters("q") == [] and broker.stats()["q"].dead == 0
    check()
    assert client.exists(f"{base}:dead:reasons") == 0
    client.close()
    broker.close()
    aged.close()


def test_a_dead_letter_missing_from_the_reasons_is_found_by_its_own(shared_url: str) -> None:
    """A letter without an entry in P:{q}:dead:reasons (a foreign writer's, or dead
    before the reasons were kept) is matched by the reason in its hash: the queue's
    index of reasons is not complete, so its newest letters are looked through."""
    broker = RedisBroker(shared_url)
    client = redis.Redis.from_url(shared_url.partition("?")[0])
    ids = broker.enqueue([envelope("q") for _ in range(3)])
    for delivery in broker.reserve(["q"], 3, 0):
        assert broker.dead(delivery, "MAX_RETRIES", "no")
    base = broker._base("q")
    client.hdel(f"{base}:dead:reasons", ids[1])
    client.zrem(f"{base}:dead:r:MAX_RETRIES", ids[1])
    assert [d.id for d in broker.dead_letters_for("MAX_RETRIES")] == ids[::-1]
    assert broker.dead_letters_for("REJECTED") == []
    client.close()
    broker.close()


def test_a_dead_letter_from_before_the_key_release_does_not_hold_its_key(
    shared_url: str,
) -> None:
    """Dead letters of earlier releases kept their key in P:{q}:keys: it is stale."""
    broker = RedisBroker(shared_url)
    client = redis.Redis.from_url(shared_url.partition("?")[0])
    first = envelope(key="k")
    broker.enqueue([first])
    [got] = broker.reserve(["default"], 1, 0)
    assert broker.dead(got, "REJECTED", "no")
    client.hset(f"{broker._base('default')}:keys", "k", first.id)  # as dead.lua once left it
    fresh = envelope(key="k")
    assert broker.enqueue([fresh]) == [fresh.id]
    client.close()
    broker.close()


def test_requeue_all_dead_passes_over_those_whose_key_is_held(
    shared_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_broker_module, "ADMIN_BATCH", 2)
    broker = RedisBroker(shared_url)
    keyed = [envelope(key=f"k{n}") for n in range(3)]  # the oldest dead letters
    plain = [envelope() for _ in range(3)]
    broker.enqueue(keyed + plain)
    for delivery in broker.reserve(["default"], 10, 0):
        assert broker.dead(delivery, "REJECTED", "no")
    broker.enqueue([envelope(key=f"k{n}") for n in range(3)])  # live holders of the keys
    assert broker.requeue_dead() == 3
    assert {d.id for d in broker.dead_letters()} == {e.id for e in keyed}
    broker.close()


def test_a_dead_letters_error_text_is_bounded(shared: RedisBroker) -> None:
    """Dead letters are stored even at maxmemory: what one adds is bounded."""
    shared.enqueue([envelope("q")])
    [delivery] = shared.reserve(["q"], 1, 0)
    assert shared.dead(delivery, "REJECTED", "e" * (redis_broker_module.ERROR_MAX + 1))
    [letter] = shared.dead_letters("q")
    assert letter.error == "e" * redis_broker_module.ERROR_MAX


def test_times_are_whole_units(shared_url: str) -> None:
    """Scores and the died field are integers (see lib.lua: Redis formats and parses a
    fractional score on every insert into a small zset), on the scale of seqs."""
    broker = RedisBroker(shared_url)
    client = redis.Redis.from_url(shared_url.partition("?")[0])
    base = broker._base("q")
    later, now = envelope("q", eta=time.time() + 60.123456), envelope("q")
    broker.enqueue([later, now, envelope("q")])
    leased = broker.reserve(["q"], 2, 0)
    assert broker.dead(leased[1], "REJECTED", "no")
    scores = {
        place: client.zrange(f"{base}:{place}", 0, -1, withscores=True)
        for place in ("delayed", "leased", "dead")
    }
    assert all(len(pairs) == 1 for pairs in scores.values())
    assert all(score == int(score) for pairs in scores.values() for _, score in pairs)
    unit = 1e-5
    epoch = 1_704_067_200
    eta_units = scores["delayed"][0][1]
    assert later.eta is not None
    assert -1e-6 < epoch + eta_units * unit - later.eta < unit  # rounded up: never due early
    lease_end = epoch + scores["leased"][0][1] * unit
    assert lease_end == pytest.approx(time.time() + float(broker._lease), abs=5)
    [letter] = broker.dead_letters("q")
    assert letter.died == pytest.approx(time.time(), abs=5)
    assert int(client.hget(f"{base}:m:{letter.id}", "x") or 0) == scores["dead"][0][1]
    client.close()
    broker.close()


def test_idle_consumers_wake_in_a_chain(shared_url: str) -> None:
    """One batch wakes every blocked consumer, not only the first."""
    brokers = [RedisBroker(shared_url) for _ in range(3)]
    took: list[float] = []

    def consume(broker: Broker) -> None:
        start = time.monotonic()
        if broker.reserve(["default"], 1, 10):
            took.append(time.monotonic() - start)

    threads = [threading.Thread(target=consume, args=(b,)) for b in brokers]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    brokers[0].enqueue([envelope() for _ in range(3)])
    for thread in threads:
        thread.join(15)
    assert len(took) == 3
    assert max(took) < 0.2 + 1.5
    for broker in brokers:
        broker.close()


def test_every_queue_with_ready_work_keeps_its_wake_token(shared_url: str) -> None:
    """A reserve of [a, b] whose BLPOP takes a's token, then takes only b's better
    message, leaves a a token: a worker blocked on a alone must not sleep on a's work."""
    producer, both, only_a = (RedisBroker(shared_url) for _ in range(3))
    client = redis.Redis.from_url(shared_url.partition("?")[0])
    assert both.reserve(["a", "b"], 1, 0) == []  # nothing due: the next reserve blocks first
    producer.enqueue([envelope("a", priority=4)])
    producer.enqueue([envelope("b", priority=0)])
    assert client.llen(producer._base("a") + ":wake") == 1
    [taken] = both.reserve(["a", "b"], 1, 10)  # BLPOP pops a:wake, its first key
    assert taken.queue == "b"
    assert client.llen(producer._base("a") + ":wake") == 1
    assert client.llen(producer._base("b") + ":wake") == 0  # nothing ready: no stale token
    assert [d.queue for d in only_a.reserve(["a"], 1, 10)] == ["a"]
    client.close()
    for broker in (producer, both, only_a):
        broker.close()


def test_a_blocked_reserve_wakes_at_once(shared_url: str) -> None:
    consumer, producer = RedisBroker(shared_url), RedisBroker(shared_url)
    latencies = []
    for _ in range(5):
        got: list[float] = []

        def run(got: list[float] = got) -> None:
            [delivery] = consumer.reserve(["a", "b"], 1, 10)
            got.append(time.time() - float(delivery.body))
            consumer.ack([delivery])

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.05)
        producer.enqueue([Envelope(uuid.uuid4().hex, "b", 2, repr(time.time()).encode())])
        thread.join(10)
        latencies.append(got[0])
    assert min(latencies) < 0.05  # typically well under a millisecond


def test_a_forked_child_opens_its_own_connection(shared: RedisBroker) -> None:
    shared.ping()
    inherited = shared._conn.client
    context = multiprocessing.get_context("fork")
    message = envelope()

    def child() -> None:
        ok = shared._conn.client is not inherited and shared.enqueue([message]) == [message.id]
        raise SystemExit(0 if ok else 1)

    process = context.Process(target=child)
    process.start()
    process.join(20)
    assert process.exitcode == 0
    assert shared._conn.client is inherited
    assert ids_of(shared.reserve(["default"], 1, 5)) == [message.id]


def test_every_waiter_of_a_result_wakes(shared_url: str) -> None:
    backend = open_backend(shared_url)
    assert isinstance(backend, RedisResultBackend)
    running = JobRecord(uuid.uuid4().hex, "t", State.STARTED)
    backend.store([running])
    woke: list[float] = []

    def wait() -> None:
        start = time.monotonic()
        record = RedisResultBackend(shared_url).wait(running.id, 10)
        if record is not None and record.state is State.SUCCEEDED:
            woke.append(time.monotonic() - start)

    threads = [threading.Thread(target=wait) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    backend.store([JobRecord(running.id, "t", State.SUCCEEDED, finished=time.time())])
    for thread in threads:
        thread.join(15)
    assert len(woke) == 3 and max(woke) < 0.2 + 1.5
    backend.close()


def test_result_records_expire_only_when_finished(shared_url: str) -> None:
    backend = RedisResultBackend(shared_url, expires=600)
    done = JobRecord(uuid.uuid4().hex, "t", State.SUCCEEDED, finished=time.time())
    running = JobRecord(uuid.uuid4().hex, "t", State.STARTED)
    backend.store([done, running])
    client = redis.Redis.from_url(shared_url.partition("?")[0])
    try:
        assert 0 < client.pttl(f"{backend.prefix}:result:{{{done.id}}}") <= 600_000
        assert client.pttl(f"{backend.prefix}:result:{{{running.id}}}") == -1
    finally:
        client.close()
    backend.close()


def test_filtered_job_pages_search_a_bounded_window_and_say_where_to_go_on(
    shared_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two filters walk the smaller index and test the other: JOBS_SCAN entries a page."""
    monkeypatch.setattr(result_redis, "JOBS_SCAN", 16)  # windows of 6 (limit + 1), then 10
    monkeypatch.setattr(result_redis, "JOBS_WINDOW_MAX", 10)
    backend = RedisResultBackend(shared_url)
    now = time.time()
    rare = JobRecord("rare", "t", State.FAILED, created=now - 50)
    common = [
        JobRecord(f"c{i:02}", *(("t", State.SUCCEEDED) if i % 2 else ("u", State.FAILED)))
        for i in range(40)
    ]
    common = [replace(r, created=now - i) for i, r in enumerate(common)]
    backend.store([*common, rare])
    page = backend.job_page(state=State.FAILED, task="t", limit=5)
    assert page.records == [] and page.next is not None  # searched 16 of 21, more to search
    page = backend.job_page(state=State.FAILED, task="t", after=page.next, limit=5)
    assert page.records == [rare] and page.next is None
    page = backend.job_page(state=State.FAILED, limit=5)  # one filter: its index, no search
    assert [r.id for r in page.records] == ["c00", "c02", "c04", "c06", "c08"]
    backend.close()


def test_no_warning_when_redis_does_not_evict(
    shared: RedisBroker, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(shared.url.partition("?")[0])
    try:
        policy = client.config_get("maxmemory-policy")["maxmemory-policy"]
    finally:
        client.close()
    if policy != "noeviction":
        pytest.skip(f"the shared test Redis has maxmemory-policy {policy}")
    with caplog.at_level(logging.WARNING, "gopherq.redis"):
        shared.ping()
    assert caplog.records == []


# Servers of the test's own.


def test_warns_when_redis_may_evict(
    start_redis: Callable[..., services.RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis("--maxmemory-policy", "allkeys-lru")
    broker = RedisBroker(server.url)
    with caplog.at_level(logging.WARNING, "gopherq.redis"):
        broker.ping()
        broker.enqueue([envelope()])
    [warning] = caplog.records
    assert "allkeys-lru" in warning.getMessage() and "noeviction" in warning.getMessage()
    broker.close()


def used_memory(client: redis.Redis) -> int:
    """Memory the data takes: the scripts the broker loads on first use left out."""
    info = client.info("memory")
    return int(info["used_memory"]) - int(info.get("used_memory_scripts", 0))


def test_a_full_redis_drains(start_redis: Callable[..., services.RedisServer]) -> None:
    """At maxmemory under noeviction, enqueue is refused (BrokerUnavailable, nothing
    stored), while taking, giving back, retrying, dead-lettering, resuming, expired
    leases and acks all still run: everything stored drains and memory frees."""
    server = start_redis("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    broker = RedisBroker(server.url, lease_seconds=0.3)
    client = redis.Redis.from_url(server.url)
    empty = used_memory(client)
    broker.pause("q")
    stored: set[str] = set()
    with pytest.raises(BrokerUnavailable, match=r"full \(maxmemory\)"):
        for _ in range(10_000):
            batch = [envelope("q", body=b"x" * 2000) for _ in range(20)]
            broker.enqueue(batch)
            stored |= {e.id for e in batch}
    assert len(stored) > 200
    full = used_memory(client)
    assert broker.stats()["q"].ready == len(stored)  # the refused batch left nothing
    broker.resume("q")
    held = broker.reserve(["q"], 150, 0)
    assert broker.requeue(held[:50]) == 50
    assert broker.retry(held[50], 0, "again")  # at once, as an eta or a countdown
    assert broker.dead(held[51], "REJECTED", "no")
    time.sleep(0.5)  # the other leases expire: reserve makes them ready again
    done: set[str] = {held[51].id}
    while True:
        deliveries = broker.reserve(["q"], 100, 0)
        if not deliveries:
            break
        assert broker.extend(deliveries[:1]) == 1
        assert broker.ack(deliveries) == len(deliveries)
        done |= {d.id for d in deliveries}
    assert done == stored
    stats = broker.stats()["q"]
    assert (stats.ready, stats.scheduled, stats.running, stats.dead) == (0, 0, 0, 1)
    assert broker.purge_dead("q") == 1
    assert sorted(client.keys("*")) == [b"gq:{_}:queues", b"gq:{q}:seq"]
    assert used_memory(client) < (empty + full) / 2  # most of what the messages took
    broker.enqueue([envelope("q")])  # room again
    client.close()
    broker.close()


@pytest.mark.parametrize("records", ["elsewhere", "in the same Redis"])
def test_a_worker_drains_a_full_redis(
    start_redis: Callable[..., services.RedisServer], records: str
) -> None:
    """A real consumer (events in the full Redis too, which it cannot store) drains it,
    whether job records go elsewhere or into the full Redis (settled with their acks in
    one step, which runs at maxmemory: see docs/brokers.md)."""
    from gopherq import GopherQ
    from gopherq.worker import Consumer, Exit

    server = start_redis("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    backend = "memory://" if records == "elsewhere" else None
    app = GopherQ("full", broker=server.url, backend=backend, lease_seconds=0.3)
    ran: list[int] = []

    @app.task(name="note")
    def note(n: int, pad: str) -> None:
        ran.append(n)

    sent = 0
    with pytest.raises(BrokerUnavailable, match=r"full \(maxmemory\)"):
        for sent in range(10_000):  # how many were sent
            note.delay(sent, "x" * 2000)
    assert app.broker.reserve(["default"], 50, 0)  # leases that expire unsettled
    time.sleep(0.5)
    consumer = Consumer(app, ["default"], burst=True, reserve_timeout=0.2)
    assert consumer.run() is Exit.DRAINED
    assert sorted(ran) == list(range(sent))
    stats = app.broker.stats()["default"]
    assert (stats.ready, stats.scheduled, stats.running, stats.dead) == (0, 0, 0, 0)
    note.delay(0, "")  # room again


def test_scripts_reload_after_script_flush(
    start_redis: Callable[..., services.RedisServer],
) -> None:
    server = start_redis()
    broker = RedisBroker(server.url)
    client = redis.Redis(port=server.port)
    broker.enqueue([envelope("a"), envelope("b")])
    client.script_flush()
    got = broker.reserve(["a", "b"], 10, 0)  # one script
    assert len(got) == 2
    client.script_flush()
    assert broker.ack(got) == 2  # a pipeline of two
    assert client.script_exists(script("ack").sha) == [True]
    client.close()
    broker.close()


def test_outage_then_everything_kept_is_back(
    start_redis: Callable[..., services.RedisServer],
) -> None:
    server = start_redis()
    broker = RedisBroker(server.url + "?prefix=outage")
    first, second = envelope(), envelope()
    broker.enqueue([first, second])
    [leased] = broker.reserve(["default"], 1, 0)
    server.stop(save=True)

    start = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"Redis redis://127\.0\.0\.1"):
        broker.enqueue([envelope()])
    assert 0.5 < time.monotonic() - start < 5  # retried, briefly
    start = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        broker.reserve(["default"], 1, 5)
    with pytest.raises(BrokerUnavailable):
        broker.ping()
    assert time.monotonic() - start < 2  # consumers are not held up: they back off

    server.start()
    assert broker.ack([leased]) == 1  # the lease survived the restart
    assert ids_of(broker.reserve(["default"], 10, 0)) == [second.id]
    late = envelope()
    broker.enqueue([late])
    assert ids_of(broker.reserve(["default"], 10, 1)) == [late.id]
    broker.close()


def test_password_acl_user_database_and_unix_socket(
    start_redis: Callable[..., services.RedisServer],
) -> None:
    server = start_redis("--requirepass", "s3cret", unix_socket=True)
    admin = redis.Redis(port=server.port, password="s3cret")
    admin.acl_setuser("ann", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all"])
    urls = [
        f"redis://:s3cret@127.0.0.1:{server.port}/2?prefix=p",
        f"redis://ann:pw@127.0.0.1:{server.port}/0?prefix=p",
        f"unix://:s3cret@{server.socket}?db=3&prefix=p",
    ]
    for url, db in zip(urls, (2, 0, 3), strict=True):
        broker = open_broker(url)
        message = envelope()
        broker.enqueue([message])
        assert redis.Redis(port=server.port, password="s3cret", db=db).exists("p:{default}:ready")
        [got] = broker.reserve(["default"], 1, 0)
        assert got.id == message.id and broker.ack([got]) == 1
        broker.close()
    wrong = RedisBroker(f"redis://:nope@127.0.0.1:{server.port}/0")
    with pytest.raises(BrokerUnavailable) as caught:
        wrong.ping()
    assert "nope" not in str(caught.value)
    admin.close()


def test_tls(start_redis: Callable[..., services.RedisServer], tmp_path: Path) -> None:
    """rediss:// with the server's certificate checked against a CA of the test's own."""
    openssl = shutil.which("openssl")
    if openssl is None:
        services.unavailable("openssl is not on PATH")
    ca, cert, key = tmp_path / "ca.crt", tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    shutil.copy(cert, ca)  # self-signed: the certificate is its own CA
    tls_port = services.free_port()
    start_redis(
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
    )  # fmt: skip
    broker = open_broker(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}&prefix=p")
    message = envelope()
    broker.enqueue([message])
    assert ids_of(broker.reserve(["default"], 1, 0)) == [message.id]
    broker.close()
    untrusted = RedisBroker(f"rediss://127.0.0.1:{tls_port}/0")  # the system CAs
    with pytest.raises(BrokerUnavailable):
        untrusted.ping()


def test_socket_timeout_in_the_url_bounds_blocking(shared_url: str) -> None:
    broker = RedisBroker(shared_url + "&socket_timeout=0.6")
    assert broker._conn.max_block == 0.3
    start = time.monotonic()
    assert broker.reserve(["default"], 1, 1) == []  # several short blocks, no timeout error
    assert 0.9 < time.monotonic() - start < 3
    broker.close()


def test_module_constants_match_the_scripts() -> None:
    assert f"local BATCH = {redis_broker_module.TIDY_BATCH}" in (SCRIPTS / "lib.lua").read_text()
    assert connection_module.DEFAULT_DEAD_LETTER_MAX == 10_000


def test_reading_rate_limits_deletes_ended_holds(shared: RedisBroker) -> None:
    shared.set_rate_limit("tasks.limited", "5/s")
    shared.hold_rate("tasks.limited", 0.1)
    shared.hold_rate("tasks.held", 0.1)
    shared.hold_rate("tasks.later", 60.0)
    time.sleep(0.2)
    assert shared.rate_limits().keys() == {"tasks.limited", "tasks.later"}
    fields = shared._conn.client.hkeys(f"{shared.prefix}:{{_}}:rate-limits")
    assert sorted(fields) == [b"hold:tasks.later", b"rate:tasks.limited"]
