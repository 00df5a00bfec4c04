"""Periodic entries: what the beat sends, and where beats keep their state.

=================================  =============================================
module                             holds
=================================  =============================================
``cron``                           when entries fire: cron in a time zone
                                   (DST rules), fixed intervals
``entry``                          ``Entry``; tick ids and idempotency keys
``registry``                       ``Schedules`` (``app.schedules``): entries
                                   from code, settings and the store
``plan``                           what the leader does next for an entry:
                                   the catch-up rules
``store``                          the store contract: leader lease, cursors,
                                   dynamic entries; ``open_store``
``memory``, ``sqlite``, ``redis``  the stores, beside the broker of that kind
=================================  =============================================

The process that sends them is ``gopherq.beat``. See docs/beat.md.
"""

from __future__ import annotations

from gopherq.schedules.cron import Cron, Every, Schedule
from gopherq.schedules.entry import CATCH_UPS, CatchUp, Entry, parse_every, tick_id, tick_key
from gopherq.schedules.registry import ScheduleInfo, Schedules
from gopherq.schedules.store import Claim, EntryState, Lease, ScheduleStore, open_store

__all__ = [
    "CATCH_UPS",
    "CatchUp",
    "Claim",
    "Cron",
    "Entry",
    "EntryState",
    "Every",
    "Lease",
    "Schedule",
    "ScheduleInfo",
    "ScheduleStore",
    "Schedules",
    "open_store",
    "parse_every",
    "tick_id",
    "tick_key",
]
