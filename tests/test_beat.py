"""The beat on a memory broker with a fake clock: ticks, leadership, catch-up, changes.

Every test drives ``Beat.step()`` by hand and moves the clock by the wait it
returns, so hours of schedule run in milliseconds and every assertion is exact.
"""

from __future__ import annotations

import datetime as dt

import pytest

import gopherq.schedules.plan
from gopherq import ConfigurationError, GopherQ, State
from gopherq.beat import CHANGE_POLL, Beat
from gopherq.brokers import Broker
from gopherq.brokers.memory import MemoryBroker
from gopherq.schedules import Claim, tick_id, tick_key

T0 = 1_700_000_000  # a multiple of 10; minutes start at T0 + 40


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + 0.5)


@pytest.fixture
def app(clock: Clock) -> GopherQ:
    return beat_app(clock, "memory://")


def beat_app(clock: Clock, broker: str | Broker) -> GopherQ:
    app = GopherQ("beat-test", broker=broker)

    @app.task(name="ping")
    def ping(n: int = 0) -> int:
        return n

    app.schedules.store.clock = clock  # type: ignore[attr-defined]
    app.schedules.clock = clock
    return app


def beat(app: GopherQ, clock: Clock, lease: float = 3.0) -> Beat:
    return Beat(app, lease_seconds=lease, loglevel=None, clock=clock)


def run(clock: Clock, until: float, *beats: Beat) -> None:
    """Step ``beats`` in turn, moving the clock to the earliest time one is due."""
    due = dict.fromkeys(beats, clock.t)
    for _ in range(100_000):
        b = min(due, key=due.__getitem__)
        clock.t = max(clock.t, due[b])
        if clock.t > until:
            clock.t = until
            return
        due[b] = clock.t + b.step()
    raise AssertionError("the beats never went idle")


def sent(app: GopherQ) -> list[tuple[str, int]]:
    """(entry, tick) of every message sent since the last call, checking id and key."""
    out = []
    for delivery in app.broker.reserve(["default", "other"], 10_000, 0):
        message = app.codec.decode(delivery.body)
        assert message.key is not None
        _, entry, tick = message.key.rsplit(":", 2)
        assert message.key == tick_key(entry, int(tick))
        assert message.id == tick_id(entry, int(tick))
        out.append((entry, int(tick)))
    app.broker.ack(app.broker.reserve(["default", "other"], 0, 0))
    return out


def test_each_tick_is_sent_once(app: GopherQ, clock: Clock) -> None:
    app.add_periodic("ping", every=2, args=[7])
    app.add_periodic("ping", name="minutely", cron="* * * * *", queue="other")
    b = beat(app, clock)
    run(clock, T0 + 130, b)
    got = sent(app)
    assert [t for e, t in got if e == "ping"] == list(range(T0 + 2, T0 + 131, 2))
    assert [t for e, t in got if e == "minutely"] == [T0 + 40, T0 + 100]
    assert b.leading


def test_ticks_are_sent_on_time(app: GopherQ, clock: Clock) -> None:
    app.add_periodic("ping", every=10)
    b = beat(app, clock)
    times = []
    for _ in range(50):
        clock.t += b.step()
        if sent(app):
            times.append(clock.t)
    assert times and all(t % 10 == 0 for t in times)  # not a moment late, nor early


def test_one_leads_and_another_takes_over_within_the_lease(app: GopherQ, clock: Clock) -> None:
    app.add_periodic("ping", every=1, catch_up="all")
    a, b = beat(app, clock), beat(app, clock)
    run(clock, T0 + 10, a, b)
    assert a.leading and not b.leading
    died = clock.t
    run(clock, T0 + 30, b)  # a is dead: it never steps again
    assert b.leading
    ticks = [t for _, t in sent(app)]
    assert ticks == list(range(T0 + 1, T0 + 31))  # none lost, none doubled
    assert b._term_start - died <= 3.0  # took over within the lease


@pytest.mark.parametrize(
    ("catch_up", "gap"),
    [
        ("latest", [T0 + 40]),
        ("all", list(range(T0 + 14, T0 + 41, 2))),
        ("none", []),
    ],
)
def test_missed_ticks_follow_catch_up(
    app: GopherQ, clock: Clock, catch_up: str, gap: list[int]
) -> None:
    app.add_periodic("ping", every=2, catch_up=catch_up)
    run(clock, T0 + 13, beat(app, clock))
    assert [t for _, t in sent(app)] == list(range(T0 + 2, T0 + 13, 2))
    clock.t = T0 + 40.5  # no beat ran meanwhile
    run(clock, T0 + 45, beat(app, clock))
    assert [t for _, t in sent(app)] == [*gap, T0 + 42, T0 + 44]


def test_a_long_backlog_is_bounded(
    app: GopherQ, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gopherq.schedules.plan, "CATCH_UP_LIMIT", 5)
    app.add_periodic("ping", every=1, catch_up="all")
    run(clock, T0 + 3, beat(app, clock))
    assert len(sent(app)) == 3
    clock.t = T0 + 100.5
    run(clock, T0 + 101, beat(app, clock))
    assert [t for _, t in sent(app)] == [T0 + 96, T0 + 97, T0 + 98, T0 + 99, T0 + 100, T0 + 101]


def test_dynamic_entries_are_seen_while_running(app: GopherQ, clock: Clock) -> None:
    b = beat(app, clock)
    run(clock, T0 + 5, b)
    clock.t = T0 + 5.2
    app.schedules.add("dyn", "ping", every=1, kwargs={"n": 3})
    run(clock, T0 + 5.2 + CHANGE_POLL + 1, b)
    assert sent(app) == [("dyn", T0 + 6)]  # the first tick after it was added
    app.schedules.add("dyn", "ping", every=5, replace=True)  # a new schedule starts afresh
    run(clock, T0 + 20, b)
    ticks = [t for _, t in sent(app)]
    assert ticks[-3:] == [T0 + 10, T0 + 15, T0 + 20]
    assert all(t <= T0 + 6.7 + CHANGE_POLL for t in ticks[:-3])  # the old schedule, until seen
    assert app.schedules.remove("dyn")
    run(clock, T0 + 40, b)
    assert sent(app) == []
    assert not app.schedules.remove("dyn")


def test_pause_and_resume(app: GopherQ, clock: Clock) -> None:
    app.add_periodic("ping", every=1, catch_up="all")
    b = beat(app, clock)
    run(clock, T0 + 3, b)
    app.schedules.pause("ping")
    run(clock, T0 + 10, b)
    app.schedules.resume("ping")
    run(clock, T0 + 12, b)
    # Nothing while paused, and what fell due then is not caught up.
    assert [t for _, t in sent(app)] == [T0 + 1, T0 + 2, T0 + 3, T0 + 11, T0 + 12]
    with pytest.raises(ConfigurationError, match="no periodic entry"):
        app.schedules.pause("nope")


def test_a_claimed_tick_is_sent_by_the_next_leader(app: GopherQ, clock: Clock) -> None:
    app.add_periodic("ping", every=1)
    store = app.schedules.store
    # A leader claimed T0 + 1 (pending), sent nothing, and died.
    store.acquire("dead", 3.0)
    store.claim("dead", [Claim("ping", None, T0 + 1, True, T0, "every 1")])
    clock.t = T0 + 3.6
    run(clock, T0 + 4, beat(app, clock))
    # T0 + 1 as claimed, then the latest of those missed (catch_up="latest"), then on time.
    assert [t for _, t in sent(app)] == [T0 + 1, T0 + 3, T0 + 4]


def test_a_claimed_tick_that_was_sent_is_not_sent_again(app: GopherQ, clock: Clock) -> None:
    app.add_periodic("ping", every=1)
    store = app.schedules.store
    store.acquire("dead", 3.0)
    store.claim("dead", [Claim("ping", None, T0 + 1, True, T0, "every 1")])
    app.send_task("ping", task_id=tick_id("ping", T0 + 1), key=tick_key("ping", T0 + 1))
    clock.t = T0 + 3.6
    b = beat(app, clock)
    run(clock, T0 + 4, b)
    assert [t for _, t in sent(app)] == [T0 + 1, T0 + 3, T0 + 4]  # T0 + 1 once
    assert not store.states()["ping"].pending


class CannotLocate(MemoryBroker):
    """A broker without ``locate`` (an optional operation)."""

    def locate(self, id: str) -> State | None:
        raise self.not_supported("locate")


def test_a_claimed_tick_still_queued_is_stored_once_by_a_broker_that_cannot_locate(
    clock: Clock,
) -> None:
    app = beat_app(clock, CannotLocate())
    app.add_periodic("ping", every=1)
    store = app.schedules.store
    store.acquire("dead", 3.0)
    store.claim("dead", [Claim("ping", None, T0 + 1, True, T0, "every 1")])
    app.send_task("ping", task_id=tick_id("ping", T0 + 1), key=tick_key("ping", T0 + 1))
    clock.t = T0 + 3.6
    run(clock, T0 + 4, beat(app, clock))
    assert [t for _, t in sent(app)] == [T0 + 1, T0 + 3, T0 + 4]  # sent again, stored once
    assert not store.states()["ping"].pending


def test_a_leader_that_lost_its_lease_sends_nothing(app: GopherQ, clock: Clock) -> None:
    app.add_periodic("ping", every=1)
    a = beat(app, clock)
    run(clock, T0 + 2, a)
    assert len(sent(app)) == 2
    clock.t = T0 + 6  # a stalled past its lease, and another beat took over
    assert app.schedules.store.acquire("other", 30).owner == "other"
    run(clock, T0 + 9, a)
    assert not a.leading
    assert sent(app) == []


def test_only_the_leader_promotes_delayed_messages(
    app: GopherQ, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []
    monkeypatch.setattr(app.broker, "recover", lambda: calls.append(clock.t) or 0)
    a, b = beat(app, clock), beat(app, clock)
    run(clock, T0 + 5.5, a, b)
    assert [round(t - calls[0], 6) for t in calls] == [0, 1, 2, 3, 4, 5]


def test_beat_tick_events(app: GopherQ, clock: Clock) -> None:
    app.add_periodic("ping", every=2)
    b = beat(app, clock)
    run(clock, T0 + 4, b)
    ticks = app.events.last(10, "beat-tick")
    assert [(e.id, e.task, e.queue, e.extra["entry"], e.extra["tick"]) for e in ticks] == [
        (tick_id("ping", T0 + 2), "ping", "default", "ping", T0 + 2),
        (tick_id("ping", T0 + 4), "ping", "default", "ping", T0 + 4),
    ]
    assert ticks[0].worker == b.name


# Declaring entries.


def test_periodic_goes_above_task(app: GopherQ) -> None:
    @app.periodic(every=dt.timedelta(seconds=30), tz="Europe/Paris")
    @app.periodic(name="nightly", cron="0 3 * * *", tz="Europe/Paris", priority="low")
    @app.task
    def report(day: str = "today") -> None: ...

    infos = {i.entry.name: i for i in app.schedules.list(now=T0)}
    assert infos["nightly"].entry.when == "cron 0 3 * * * (Europe/Paris)"
    assert infos["nightly"].entry.priority == 3
    assert infos[report.name].entry.every == 30
    assert infos[report.name].next_tick == T0 + 10
    assert infos[report.name].source == "code"

    with pytest.raises(TypeError, match=r"above @app\.task"):

        @app.task
        @app.periodic(every=5)
        def wrong() -> None: ...

    with pytest.raises(ConfigurationError, match="already declared"):
        app.add_periodic(report, every=60)
    with pytest.raises(ConfigurationError, match="unexpected keyword"):
        app.add_periodic(report, name="bad", every=60, kwargs={"month": 1})
    with pytest.raises(ConfigurationError, match="periodic entry 'bad': bad interval"):
        app.add_periodic(report, name="bad", every="soon")


def test_beat_schedule_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = {"sweep": {"task": "x.sweep", "every": "5m", "queue": "low"}}
    app = GopherQ("s", broker="memory://", beat_schedule=schedule)
    [info] = app.schedules.list(now=T0)
    assert (info.entry.task, info.entry.every, info.source) == ("x.sweep", 300, "settings")
    with pytest.raises(ConfigurationError, match="did you mean 'cron'"):
        GopherQ("s", broker="memory://", beat_schedule={"x": {"task": "t", "corn": "* * * * *"}})
    monkeypatch.setenv("GOPHERQ_BEAT_SCHEDULE", '{"tick": {"task": "t", "cron": "* * * * *"}}')
    assert GopherQ("s", broker="memory://").schedules.list()[0].entry.cron == "* * * * *"
    monkeypatch.setenv("GOPHERQ_BEAT_SCHEDULE", "[1]")
    with pytest.raises(ConfigurationError, match="GOPHERQ_BEAT_SCHEDULE"):
        GopherQ("s", broker="memory://")


def test_dynamic_names_must_not_clash(app: GopherQ) -> None:
    app.add_periodic("ping", every=5)
    with pytest.raises(ConfigurationError, match="declared in code"):
        app.schedules.add("ping", "ping", every=1)
    with pytest.raises(ConfigurationError, match="declared in code"):
        app.schedules.remove("ping")
    app.schedules.add("other", "elsewhere.task", cron="*/5 * * * *", tz="Asia/Tokyo")
    with pytest.raises(ConfigurationError, match="exists"):
        app.schedules.add("other", "ping", every=1)
    assert [i.entry.name for i in app.schedules.list()] == ["other", "ping"]


def test_sent_ticks_are_logged_as_local_iso_times(
    app: GopherQ, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    app.add_periodic("ping", every=10)
    caplog.set_level("INFO", logger="gopherq.beat")
    run(clock, T0 + 10, beat(app, clock))
    stamp = dt.datetime.fromtimestamp(T0 + 10).astimezone().isoformat(sep=" ")
    assert f"beat: sent ping (ping) for {stamp}" in caplog.text
    assert str(T0 + 10) not in caplog.text
