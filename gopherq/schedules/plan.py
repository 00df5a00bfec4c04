"""What the leader does next for one entry: the catch-up rules, as a pure function.

``plan`` looks at an entry, its cursor, the time and when the leader's term
began, and answers with a ``Claim`` to make (a tick to send, or a lower bound
to raise) or, when nothing is due, the tick to wait for. See ``gopherq.beat``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gopherq.schedules.cron import Schedule
from gopherq.schedules.entry import Entry
from gopherq.schedules.store import Claim, EntryState

CATCH_UP_LIMIT = 1000
"""Most missed ticks an entry with ``catch_up="all"`` sends after a gap; older ones are
skipped."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A claim to make, or none; ``tick`` is what the claim sends (None: it only moves
    the lower bound), or without a claim when the next tick is due."""

    claim: Claim | None
    tick: int | None
    bounded: bool = False
    """The backlog was checked against ``CATCH_UP_LIMIT`` (and skipped beyond it when
    ``tick`` is None)."""


def plan(entry: Entry, state: EntryState, now: float, term_start: float, *, bound: bool) -> Plan:
    """The next step for ``entry`` at store time ``now``.

    Ticks at or before ``term_start`` were missed while no beat led and follow
    ``entry.catch_up``; ``bound`` asks to check an ``"all"`` backlog against
    ``CATCH_UP_LIMIT`` (once per term is enough).
    """
    schedule, name = entry.schedule, entry.name
    if state.fingerprint != schedule.fingerprint:
        # New, or its schedule changed: nothing before now (or its creation) is owed.
        since = entry.created if not state.fingerprint and entry.created else now
        return Plan(Claim(name, state.tick, state.tick, False, since, schedule.fingerprint), None)
    low = state.since if state.tick is None else max(state.since, state.tick)
    tick = schedule.next_after(low)
    if tick > now:
        return Plan(None, tick)
    if tick <= term_start:
        if entry.catch_up == "none":
            return Plan(_raise_floor(name, state, term_start), None)
        if entry.catch_up == "latest":
            tick = schedule.latest_at(min(now, term_start)) or tick
        elif bound:
            floor = _backlog_floor(schedule, tick, term_start)
            if floor is not None:
                return Plan(_raise_floor(name, state, floor), None, bounded=True)
    claim = Claim(name, state.tick, tick, True, state.since, schedule.fingerprint)
    return Plan(claim, tick, bounded=bound and entry.catch_up == "all" and tick <= term_start)


def _raise_floor(name: str, state: EntryState, since: float) -> Claim:
    """A claim that sends nothing and raises the lower bound to ``since``."""
    return Claim(name, state.tick, state.tick, False, since, state.fingerprint)


def _backlog_floor(schedule: Schedule, first: int, term_start: float) -> int | None:
    """When more than ``CATCH_UP_LIMIT`` ticks from ``first`` to ``term_start`` were
    missed, the tick just below the last ``CATCH_UP_LIMIT`` of them; else None."""
    tick = first
    for _ in range(CATCH_UP_LIMIT):
        tick = schedule.next_after(tick)
        if tick > term_start:
            return None
    floor = schedule.latest_at(term_start)
    for _ in range(CATCH_UP_LIMIT):
        if floor is None:
            return None
        floor = schedule.latest_at(floor - 1)
    return floor
