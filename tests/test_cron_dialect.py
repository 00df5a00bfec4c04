"""The cron dialect (Debian cron, plus seconds, ``L``, ``W`` and ``#``): examples, and
random expressions checked against an independent implementation, cronsim.

cronsim (https://github.com/cuu508/cronsim) implements Debian cron's rules, its
day-of-month/day-of-week rule and DST handling included, and adds ``L``, ``#``
and seconds with the same meaning as gopherq. Where the two differ by design, the
comparison leaves it out (see ``compare``):

- ``a-a/n``: cronsim reads it as ``a/n`` (a to the end, step n), cron as ``a``;
- ``W``: cronsim has only ``LW``, gopherq only ``nW``; both are tested by example;
- DST, for expressions whose minute or hour starts with ``*`` (and six-field
  ones): cron and cronsim run them in real time, so they fire twice in a repeated
  hour and never for skipped times, where gopherq fires each local time once
  (see docs/beat.md). Their ticks around a transition are left out: from one
  offset change before it to a day and one offset change after it, since after a
  half-hour change (Lord Howe) cronsim's real-time walk steps whole hours from a
  half-hour wall time and misses the first half of the next matching hour.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim, CronSimError
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cron import at, local, ticks, transitions

from gopherq.errors import ConfigurationError
from gopherq.schedules import Cron
from gopherq.schedules.cron_dialect import DAYS, MONTHS

ZONES = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]
YEAR = 365 * 86400
TICKS = 10  # compared per example


def changes(zone: str) -> tuple[int, ...]:
    """The zone's offset changes from 1999 to 2058: every start drawn and tick compared."""
    return transitions(zone, 1999, 60)


def days(expr: str, start: tuple[int, int, int], n: int, zone: str = "UTC") -> list[str]:
    """The first ``n`` ticks after midnight UTC of ``start``, as weekday and date."""
    t, out = at(zone, *start), []
    for _ in range(n):
        t = Cron(expr, zone).next_after(t)
        out.append(dt.datetime.fromtimestamp(t, ZoneInfo(zone)).strftime("%a %Y-%m-%d %H:%M"))
    return out


# One-value ranges (croniter reads a-a as *).


def test_a_one_value_range_is_that_value() -> None:
    assert days("0 0 3-3 * *", (2024, 1, 1), 2) == ["Wed 2024-01-03 00:00", "Sat 2024-02-03 00:00"]
    assert days("5-5 * * * *", (2024, 1, 1), 2) == ["Mon 2024-01-01 00:05", "Mon 2024-01-01 01:05"]
    assert days("1,5-5,9 0 * * *", (2024, 1, 1), 4)[2:] == [
        "Mon 2024-01-01 00:09",
        "Tue 2024-01-02 00:01",
    ]
    # a-a/n is a range of one value, stepped: still that value
    assert days("5-5/2 3 * * *", (2024, 1, 1), 2) == [
        "Mon 2024-01-01 03:05",
        "Tue 2024-01-02 03:05",
    ]
    assert days("0 0 * * mon-mon", (2024, 1, 2), 1) == ["Mon 2024-01-08 00:00"]


# Day of month and day of week (Debian cron: a field starting with * means AND).


def test_a_day_of_month_starting_with_star_and_a_weekday_is_and() -> None:
    # odd days that are Mondays (croniter alone fires every odd day and every Monday)
    assert days("0 0 */2 * 1", (2023, 12, 31), 3) == [
        "Mon 2024-01-01 00:00",
        "Mon 2024-01-15 00:00",
        "Mon 2024-01-29 00:00",
    ]
    assert days("0 0 * * 1", (2024, 1, 1), 2) == ["Mon 2024-01-08 00:00", "Mon 2024-01-15 00:00"]
    assert days("0 0 1-31 * */3", (2024, 1, 1), 2) == [
        "Wed 2024-01-03 00:00",
        "Sat 2024-01-06 00:00",
    ]


def test_the_day_rule_reads_the_first_character_as_cron_does() -> None:
    # the same days, spelled two ways: a field starting with * makes it AND
    assert days("0 12 *,10 * 2", (2024, 1, 1), 2) == [
        "Tue 2024-01-02 12:00",
        "Tue 2024-01-09 12:00",
    ]
    assert days("0 12 10,* * 2", (2024, 1, 1), 2) == [
        "Mon 2024-01-01 12:00",
        "Tue 2024-01-02 12:00",
    ]
    # six fields: the same rule, seconds first
    assert days("0 30 9 */2 * 1", (2024, 1, 2), 1) == ["Mon 2024-01-15 09:30"]


def test_both_days_restricted_is_or() -> None:
    # the first seven days, and every Monday: not "the first Monday"
    assert days("0 0 1-7 * mon", (2024, 1, 7), 3) == [
        "Mon 2024-01-08 00:00",
        "Mon 2024-01-15 00:00",
        "Mon 2024-01-22 00:00",
    ]
    # croniter alone fires only on second Mondays here
    assert days("0 0 8 * 1#2", (2024, 2, 1), 3) == [
        "Thu 2024-02-08 00:00",
        "Mon 2024-02-12 00:00",
        "Fri 2024-03-08 00:00",
    ]
    # day 31 never comes in February, Mondays do
    assert days("0 0 31 2 1", (2024, 1, 1), 2) == ["Mon 2024-02-05 00:00", "Mon 2024-02-12 00:00"]


def test_last_nth_and_nearest_weekday() -> None:
    assert days("0 0 L * *", (2024, 1, 31), 2) == ["Thu 2024-02-29 00:00", "Sun 2024-03-31 00:00"]
    assert days("0 0 * * 5L", (2024, 1, 1), 2) == ["Fri 2024-01-26 00:00", "Fri 2024-02-23 00:00"]
    assert days("0 0 * * friL", (2024, 1, 1), 2) == days("0 0 * * 5L", (2024, 1, 1), 2)
    assert days("0 0 1,L * *", (2024, 1, 1), 2) == ["Wed 2024-01-31 00:00", "Thu 2024-02-01 00:00"]
    assert days("0 0 * * fri#5,1#1", (2024, 1, 1), 4) == [
        "Mon 2024-02-05 00:00",
        "Mon 2024-03-04 00:00",
        "Fri 2024-03-29 00:00",
        "Mon 2024-04-01 00:00",
    ]
    assert days("0 0 L * 5L", (2024, 1, 1), 3) == [  # OR
        "Fri 2024-01-26 00:00",
        "Wed 2024-01-31 00:00",
        "Fri 2024-02-23 00:00",
    ]
    # AND: fifth Sundays on odd days (not 2024-06-30)
    assert days("0 0 */2 * 0#5", (2024, 1, 1), 2) == [
        "Sun 2024-03-31 00:00",
        "Sun 2024-09-29 00:00",
    ]
    # the weekday nearest to the 1st, within the month; to the 15th; to the 31st or the last
    assert days("0 0 1W * *", (2024, 5, 31), 2) == ["Mon 2024-06-03 00:00", "Mon 2024-07-01 00:00"]
    assert days("0 0 15W * *", (2024, 6, 1), 2) == ["Fri 2024-06-14 00:00", "Mon 2024-07-15 00:00"]
    assert days("0 0 1W,31W * *", (2024, 6, 1), 2) == [
        "Mon 2024-06-03 00:00",
        "Fri 2024-06-28 00:00",
    ]


def test_names_aliases_and_sunday() -> None:
    assert days("0 0 * JAN-mar Mon-FRI/2", (2024, 3, 29), 2) == [
        "Wed 2025-01-01 00:00",  # mon-fri/2: Monday, Wednesday, Friday
        "Fri 2025-01-03 00:00",
    ]
    sundays = days("0 0 * * 0", (2024, 1, 1), 3)
    assert days("0 0 * * 7", (2024, 1, 1), 3) == days("0 0 * * sun", (2024, 1, 1), 3) == sundays
    assert days("0 0 * * 5-7", (2024, 1, 1), 3) == days("0 0 * * fri,sat,sun", (2024, 1, 1), 3)
    for alias, expr in [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ]:
        assert days(alias, (2024, 1, 1), 3) == days(expr, (2024, 1, 1), 3), alias
    assert Cron("@Daily").fingerprint == "cron @Daily UTC"


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("@reboot", "@reboot is not supported"),
        ("@often", "unknown cron alias '@often'"),
        ("0 0 0 1 1 * 2030", "5 fields .* or 6 with seconds first, not 7"),
        ("0 0 ? * 1", r"day of month '\?'"),
        ("H * * * *", "minute 'h'"),
        ("R * * * *", "minute 'r'"),  # random minutes would differ from beat to beat
        ("0 22-2 * * *", "hour '22-2': the range goes backwards; write 22-23,0-2"),
        ("*/0 * * * *", "a step must be at least 1"),
        ("1,,2 * * * *", "empty item"),
        ("60 * * * *", "minute goes from 0 to 59"),
        ("0 0 0 * *", "day of month goes from 1 to 31"),
        ("0 0 * 13 *", "month goes from 1 to 12"),
        ("0 0 * * 8", "day of week goes from 0 to 7"),
        ("0 0 * * monday", "day of week 'monday'"),
        ("0 0 LW * *", "LW is not supported"),
        ("0 0 L-3 * *", "day of month 'l-3'"),
        ("0 0 5L * *", "day of month '5l'"),
        ("0 0 * * 1#6", "the n of d#n goes from 1 to 5"),
        ("0 0 * * 1W", "day of week '1w'"),
        ("0 0 1#2 * *", "day of month '1#2'"),
        ("0 0 30 2 *", "it never matches"),
        ("0 0 31 4,6,9,11 *", "it never matches"),
    ],
)
def test_what_is_rejected(expr: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=f"bad cron expression .*{error}"):
        Cron(expr)


# Random expressions against cronsim.


def value(field: tuple[int, int], names: list[str] | None) -> st.SearchStrategy[str]:
    low, high = field
    numbers = st.integers(low, high).map(str)
    return numbers if names is None else numbers | st.sampled_from(names)


@st.composite
def term(draw: st.DrawFn, field: tuple[int, int], names: list[str] | None = None) -> str:
    """A value, a range (a-a included), a stepped range (not a-a/n: see the module
    docstring), a/n or */n."""
    low, high = field
    kind = draw(st.sampled_from(["value", "range", "stepped", "start/step", "*/n"]))
    step = draw(st.integers(1, high - low + 1))
    if kind == "value":
        return draw(value(field, names))
    if kind == "*/n":
        return f"*/{step}"
    a = draw(st.integers(low, high - (kind == "stepped")))
    if kind == "start/step":
        return f"{a}/{step}"
    b = draw(st.integers(a + (kind == "stepped"), high))
    if names and b - low < len(names) and draw(st.booleans()):  # a range of names
        a_name, b_name = names[a - low], names[b - low]
        return f"{a_name}-{b_name}" + (f"/{step}" if kind == "stepped" else "")
    return f"{a}-{b}" + (f"/{step}" if kind == "stepped" else "")


def field(terms: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.just("*") | st.lists(terms, min_size=1, max_size=3).map(",".join)


def restricted(terms: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Mostly a list, so that fixed times (cron's DST rules) and OR days come up often."""
    return st.lists(terms, min_size=1, max_size=3).map(",".join) | field(terms)


MINUTES, HOURS = restricted(term((0, 59))), restricted(term((0, 23)))
MONTH_FIELD = st.just("*") | field(term((1, 12), MONTHS))
# */n with a day of week is where cron's AND differs from croniter's OR
DOM_FIELD = restricted(term((1, 31)) | st.just("L")) | st.integers(2, 31).map("*/{}".format)
NTH = st.builds("{}#{}".format, st.integers(0, 7), st.integers(1, 5))
LAST = st.builds("{}L".format, st.integers(0, 7))
DOW_FIELD = restricted(term((0, 7), DAYS) | NTH | LAST)


@st.composite
def expressions(draw: st.DrawFn) -> str:
    five = [draw(f) for f in (MINUTES, HOURS, DOM_FIELD, MONTH_FIELD, DOW_FIELD)]
    if draw(st.integers(0, 4)) == 0:  # now and then, seconds first
        five.insert(0, draw(field(term((0, 59)))))
    return " ".join(five)


@st.composite
def starts(draw: st.DrawFn, zone: str) -> int:
    """Any second from 2000 to 2036, or up to 15 minutes or a day before one of the zone's
    offset changes (so that dense expressions reach it too)."""
    near_a_change = draw(st.booleans())
    if near_a_change and changes(zone):
        before = draw(st.integers(1, 900) | st.integers(1, 86400))
        return draw(st.sampled_from(changes(zone))) - before
    return draw(st.integers(946684800, 2_100_000_000))


def cronsim_ticks(expr: str, zone: str, start: int, until: int) -> list[int]:
    """cronsim's ticks in (start, until]."""
    out = []
    for when in CronSim(expr, dt.datetime.fromtimestamp(start, ZoneInfo(zone))):
        t = int(when.timestamp())
        if t > until:
            break
        if t > start:  # a start in a repeated hour: cronsim begins at its wall time
            out.append(t)
    return out


def compare(expr: str, zone: str, got: list[int], want: list[int]) -> None:
    """Equal, leaving out the DST transitions of expressions run in real time."""
    fields = expr.split()
    if len(fields) == 6 or fields[0].startswith("*") or fields[1].startswith("*"):
        tz = ZoneInfo(zone)
        both = got + want
        near = [
            (t, abs(_offset(tz, t) - _offset(tz, t - 1)))
            for t in changes(zone)
            if both and min(both) - 2 * 86400 < t < max(both) + 2 * 86400
        ]

        def keep(tick: int) -> bool:
            return all(not t - shift <= tick <= t + 86400 + shift for t, shift in near)

        got, want = [t for t in got if keep(t)], [t for t in want if keep(t)]
    assert [local(zone, t) for t in got] == [local(zone, t) for t in want]


def _offset(tz: ZoneInfo, t: int) -> int:
    return int(dt.datetime.fromtimestamp(t, tz).utcoffset().total_seconds())  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None, database=None)
@given(st.data(), expressions(), st.sampled_from(ZONES))
def test_random_expressions_agree_with_cronsim(data: st.DataObject, expr: str, zone: str) -> None:
    start = data.draw(starts(zone))
    try:
        cron = Cron(expr, zone)
    except ConfigurationError:
        # only expressions that never match: cronsim rejects them or finds nothing
        with pytest.raises((CronSimError, StopIteration)):
            next(CronSim(expr, dt.datetime.fromtimestamp(start, ZoneInfo(zone))))
        return
    got = _first(cron, start, TICKS)
    until = got[-1] if len(got) == TICKS else start + 20 * YEAR
    compare(expr, zone, got, cronsim_ticks(expr, zone, start, until))


def _first(cron: Cron, start: int, n: int) -> list[int]:
    """Up to ``n`` ticks after ``start``, within 20 years."""
    out: list[int] = []
    t = start
    while len(out) < n:
        t = cron.next_after(t)
        if t > start + 20 * YEAR:
            break
        out.append(t)
    return out


def test_cronsim_runs_wildcard_expressions_in_real_time_across_dst() -> None:
    """The documented difference: cron (and cronsim) fire `*/30 * * * *` twice in the
    repeated hour; gopherq once."""
    zone = "Europe/Paris"
    start = at(zone, 2024, 10, 27, 1, 45)
    until = start + 3 * 3600
    mine = ticks(Cron("*/30 * * * *", zone), start, until)
    theirs = cronsim_ticks("*/30 * * * *", zone, start, until)
    assert len(theirs) == len(mine) + 2
    assert set(mine) < set(theirs)
    # fixed times agree: 02:30 fires once, at its first occurrence
    start = at(zone, 2024, 10, 26, 12, 0)
    until = start + 2 * 86400
    assert ticks(Cron("30 2 * * *", zone), start, until) == cronsim_ticks(
        "30 2 * * *", zone, start, until
    )
