"""Cron and interval schedules: the DST rules, checked against a brute-force reference.

The reference walks real time minute by minute (second by second for six-field
expressions) and fires whenever the local clock *first reaches or passes* a
local time the expression matches. That one sentence is the whole rule set:
a normal time fires when reached; a skipped time (spring forward) is passed
at the jump, so it fires once there; a repeated time (fall back) is not
reached anew on the second pass, so it fires once.
"""

from __future__ import annotations

import datetime as dt
import itertools
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from gopherq.errors import ConfigurationError
from gopherq.schedules import Cron, Entry, Every, parse_every, tick_id, tick_key
from gopherq.schedules.entry import format_every

ZONES = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
MINUTE_EXPRESSIONS = [
    "* * * * *",
    "*/5 * * * *",
    "*/7 * * * *",
    "0 * * * *",
    "30 * * * *",
    "15,45 1-3 * * *",
    "30 2 * * *",
    "0 0 * * *",
    "59 23 * * *",
    "*/20 0-4 * * 0",
]
SECOND_EXPRESSIONS = ["*/10 * * * * *", "0 30 * * * *", "* 59 * * * *"]


def at(zone: str, *fields: int, fold: int = 0) -> int:
    return int(dt.datetime(*fields, tzinfo=ZoneInfo(zone), fold=fold).timestamp())


def local(zone: str, t: int) -> str:
    return dt.datetime.fromtimestamp(t, ZoneInfo(zone)).strftime("%m-%d %H:%M:%S%z")


def ticks(schedule: Cron | Every, start: float, until: float) -> list[int]:
    out: list[int] = []
    t = schedule.next_after(start)
    while t <= until:
        out.append(t)
        t = schedule.next_after(t)
    return out


# Examples, read in local time.


def test_spring_forward_fires_skipped_times_once_at_the_jump() -> None:
    cron = Cron("*/20 * * * *", "Europe/Paris")
    start = at("Europe/Paris", 2024, 3, 31, 1, 30)
    got = [local("Europe/Paris", t) for t in ticks(cron, start, start + 2 * 3600)]
    # 02:00, 02:20 and 02:40 do not exist: they fire with 03:00 CEST, once.
    assert got == [
        "03-31 01:40:00+0100",
        "03-31 03:00:00+0200",
        "03-31 03:20:00+0200",
        "03-31 03:40:00+0200",
        "03-31 04:00:00+0200",
        "03-31 04:20:00+0200",
    ]


def test_a_daily_time_in_the_gap_fires_at_the_jump() -> None:
    cron = Cron("30 2 * * *", "America/New_York")
    start = at("America/New_York", 2024, 3, 9, 12, 0)
    got = [local("America/New_York", t) for t in ticks(cron, start, start + 3 * 86400)]
    assert got == ["03-10 03:00:00-0400", "03-11 02:30:00-0400", "03-12 02:30:00-0400"]


def test_fall_back_fires_repeated_times_once_at_the_first_pass() -> None:
    cron = Cron("*/30 * * * *", "Europe/Paris")
    start = at("Europe/Paris", 2024, 10, 27, 1, 45)
    got = [local("Europe/Paris", t) for t in ticks(cron, start, start + 3 * 3600)]
    assert got == [
        "10-27 02:00:00+0200",
        "10-27 02:30:00+0200",
        # the second pass of 02:00-02:59 (+0100) fires nothing
        "10-27 03:00:00+0100",
        "10-27 03:30:00+0100",
    ]
    # A beat starting during the second pass agrees.
    second_pass = at("Europe/Paris", 2024, 10, 27, 2, 10, fold=1)
    assert local("Europe/Paris", cron.next_after(second_pass)) == "10-27 03:00:00+0100"
    assert local("Europe/Paris", cron.latest_at(second_pass) or 0) == "10-27 02:30:00+0200"


def test_half_hour_dst_of_lord_howe() -> None:
    zone = "Australia/Lord_Howe"
    cron = Cron("*/15 * * * *", zone)
    spring = at(zone, 2024, 10, 6, 1, 40)  # 02:00 +1030 jumps to 02:30 +1100
    assert [local(zone, t) for t in ticks(cron, spring, spring + 3600)] == [
        "10-06 01:45:00+1030",
        "10-06 02:30:00+1100",  # 02:00 and 02:15 do not exist
        "10-06 02:45:00+1100",
        "10-06 03:00:00+1100",
    ]
    autumn = at(zone, 2024, 4, 7, 1, 10)  # 02:00 +1100 goes back to 01:30 +1030
    assert [local(zone, t) for t in ticks(cron, autumn, autumn + 5400)] == [
        "04-07 01:15:00+1100",
        "04-07 01:30:00+1100",
        "04-07 01:45:00+1100",
        "04-07 02:00:00+1030",  # the second pass of 01:30-01:59 fires nothing
    ]


def test_santiago_changes_at_midnight() -> None:
    zone = "America/Santiago"
    cron = Cron("0 0 * * *", zone)  # midnight does not exist on 2024-09-08
    start = at(zone, 2024, 9, 7, 12, 0)
    assert [local(zone, t) for t in ticks(cron, start, start + 2 * 86400)] == [
        "09-08 01:00:00-0300",
        "09-09 00:00:00-0300",
    ]


def test_six_fields_put_seconds_first() -> None:
    cron = Cron("*/10 * * * * *")
    assert ticks(cron, 0, 35) == [10, 20, 30]
    assert cron.latest_at(29.9) == 20
    assert Cron("0 0 * * * *").next_after(0) == 3600


def test_every_is_aligned_on_the_epoch() -> None:
    every = Every(30)
    assert every.next_after(1_000_000_005.5) == 1_000_000_020
    assert every.next_after(1_000_000_020) == 1_000_000_050
    assert every.latest_at(1_000_000_049.9) == 1_000_000_020
    with pytest.raises(ConfigurationError):
        Every(0.5)


@pytest.mark.parametrize(
    ("expr", "tz", "error"),
    [
        ("61 * * * *", "UTC", "bad cron expression"),
        ("0 0 31 2 *", "UTC", "bad cron expression"),
        ("* * * * *", "Mars/Olympus", "unknown time zone"),
        ("* * *", "UTC", "bad cron expression"),
    ],
)
def test_bad_schedules_fail_early(expr: str, tz: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        Cron(expr, tz)


def test_intervals_parse_and_print() -> None:
    assert parse_every("30s") == 30
    assert parse_every("1h30m") == 5400
    assert parse_every("1d") == 86400
    assert parse_every(" 45 ") == 45
    assert parse_every(dt.timedelta(minutes=2)) == 120
    assert format_every(5400) == "1h30m"
    for bad in ("0s", "1.5", "soon", "5x", 0.5, True):
        with pytest.raises(ConfigurationError):
            parse_every(bad)


def test_entries_check_their_fields() -> None:
    entry = Entry.from_map("nightly", {"task": "t", "cron": "0 3 * * *", "tz": "Europe/Paris"})
    assert entry.when == "cron 0 3 * * * (Europe/Paris)"
    assert Entry.from_map(entry.name, entry.to_map()) == entry
    assert Entry("e", "t", every=90, priority="high").priority == 1  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="did you mean 'every'"):
        Entry.from_map("x", {"task": "t", "evry": 5})
    with pytest.raises(ConfigurationError, match="not both"):
        Entry("x", "t", cron="* * * * *", every=5)
    with pytest.raises(ConfigurationError, match="catch_up"):
        Entry("x", "t", every=5, catch_up="some")  # type: ignore[arg-type]


def test_tick_ids_are_deterministic_version_8_and_time_ordered() -> None:
    import uuid

    first = tick_id("report", 1_700_000_000)
    assert first == tick_id("report", 1_700_000_000)
    assert first != tick_id("other", 1_700_000_000)
    assert uuid.UUID(first).version == 8
    assert tick_id("report", 1_700_000_000) < tick_id("report", 1_700_000_001)
    assert tick_key("report", 5) == "beat:report:5"


# Properties across DST transitions.


@cache
def transitions(zone: str, first: int = 2016, years: int = 20) -> tuple[int, ...]:
    """Instants (from ``first``, for ``years`` years) at which ``zone``'s UTC offset changes."""
    tz = ZoneInfo(zone)
    start = int(dt.datetime(first, 1, 1, tzinfo=dt.UTC).timestamp())
    found: list[int] = []

    def offset(t: int) -> dt.timedelta | None:
        return dt.datetime.fromtimestamp(t, tz).utcoffset()

    for day in range(start, start + years * 365 * 86400, 86400):
        lo, hi = day, day + 86400
        if offset(lo) != offset(hi):
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if offset(mid) != offset(lo) else (mid, hi)
            found.append(hi)
    return tuple(found)


def reference(expr: str, zone: str, start: int, end: int, step: int) -> list[int]:
    """Ticks in (start, end]: instants where the clock first reaches or passes a matching
    local time (walking real time in ``step`` seconds, aligned on ``step``)."""
    tz = ZoneInfo(zone)
    seconds = len(expr.split()) == 6
    unit = dt.timedelta(seconds=step)

    def wall(t: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, tz).replace(tzinfo=None)

    first = (start // step + 1) * step
    # The latest local time shown before the walk (it may be past a repeated hour).
    reached = max(wall(first - step - k * 60) for k in range(180))
    out = []
    for t in range(first, end + 1, step):
        now, passed = wall(t), []
        while reached < now:
            reached += unit
            passed.append(reached)
        if any(croniter.match(expr, m, second_at_beginning=seconds) for m in passed):
            out.append(t)
    return out


@st.composite
def around_a_transition(
    draw: st.DrawFn, expressions: list[str], before: int
) -> tuple[str, str, int]:
    """A zone, an expression, and a start up to ``before`` seconds before one of the zone's
    offset changes (any second, so starts fall between ticks too)."""
    zone = draw(st.sampled_from(ZONES))
    expr = draw(st.sampled_from(expressions))
    transition = draw(st.sampled_from(transitions(zone)))
    return zone, expr, transition - draw(st.integers(1, before))


def check_agrees(cron: Cron, got: list[int], start: int) -> None:
    """Ticks strictly increase, and a beat starting at any moment finds the same ones
    (checked at every unusual gap between ticks, and at a sample of the others)."""
    assert all(a < b for a, b in itertools.pairwise(got))
    pairs = list(itertools.pairwise([start, *got]))
    if not pairs:
        return
    usual = max(set(b - a for a, b in pairs), key=[b - a for a, b in pairs].count)
    sample = pairs[:: max(1, len(pairs) // 20)] + [(a, b) for a, b in pairs if b - a != usual]
    for a, b in sample:
        for t in {a, (a + b) // 2, b - 1}:
            assert cron.next_after(t) == b
        if a != start:
            assert cron.latest_at(a) == a
            assert cron.latest_at(b - 1) == a


@settings(max_examples=80, deadline=None, database=None)
@given(around_a_transition(MINUTE_EXPRESSIONS, before=4 * 3600))
def test_every_tick_fires_once_across_dst(case: tuple[str, str, int]) -> None:
    zone, expr, start = case
    cron = Cron(expr, zone)
    end = start + 5 * 3600
    got = ticks(cron, start, end)
    assert got == reference(expr, zone, start, end, 60), [local(zone, t) for t in got]
    check_agrees(cron, got, start)


@settings(max_examples=12, deadline=None, database=None)
@given(around_a_transition(SECOND_EXPRESSIONS, before=600))
def test_every_second_tick_fires_once_across_dst(case: tuple[str, str, int]) -> None:
    zone, expr, start = case
    cron = Cron(expr, zone)
    end = start + 1200
    got = ticks(cron, start, end)
    assert got == reference(expr, zone, start, end, 1), [local(zone, t) for t in got]
    check_agrees(cron, got, start)
