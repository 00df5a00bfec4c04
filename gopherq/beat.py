"""The beat: sends periodic tasks, each tick exactly once, however many beats run.

Any number of ``gopherq beat`` processes may run, on one machine or many. One
leads by holding a lease in the schedule store (see ``gopherq.schedules``);
the others look at the lease and take it over when it lapses, within the lease
time of the leader's death (setting ``beat_lease_seconds``, default 10 s).
SIGTERM gives the lease up at once.

The leader, in a loop:

1. renews the lease every third of its length; it stops sending the moment it
   cannot be sure it still holds it;
2. every ``CHANGE_POLL`` seconds reads one version number, and reloads the
   entries and cursors when dynamic entries or pauses changed;
3. sends again the ticks left pending by a leader that died between claim and
   confirm (or a send that failed), unless the message is still in the broker
   or has a job record: then it was sent, and is only confirmed;
4. for each entry whose next tick is due: **claims** the tick in the store (a
   compare-and-set of the entry's cursor, fenced by the lease, marking it
   pending), **sends** the task with a message id and idempotency key derived
   from entry and tick (``tick_id``, ``tick_key``), then **confirms** it;
5. every ``PROMOTE_EVERY`` seconds calls ``broker.recover()``, so that due
   delayed messages become ready even on queues no worker watches;
6. sleeps until the next tick, renewal or poll.

Missed ticks: ticks that fell due while no beat led (before this leader's
term began) follow the entry's ``catch_up``: ``"latest"`` sends the last one,
``"all"`` each of them (at most ``CATCH_UP_LIMIT``), ``"none"`` none. Ticks due
during the term are always sent. A new entry starts with the first tick after
it was added (a dynamic entry) or first seen (a declared one); an entry whose
schedule changed starts afresh; a resumed entry skips what fell due while paused.

Residual windows, where exactly-once rests on timing: a leader that stalls
(frozen, swapped out) for longer than its lease between a claim and its send
may send a tick that the next leader also sends, when the first message was
already run and gone by then; and a tick whose leader died between send and
confirm is sent again if, by the time the next leader looks, its message was
run, acknowledged and left no job record (``ignore_result`` tasks).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import Any

from gopherq.admin import task_queue
from gopherq.app import GopherQ
from gopherq.display import local_time
from gopherq.errors import BrokerError, GopherQError
from gopherq.events import Event, EventType
from gopherq.observability.logs import configure_logging
from gopherq.result import located
from gopherq.schedules.entry import Entry, tick_id, tick_key
from gopherq.schedules.plan import CATCH_UP_LIMIT, plan
from gopherq.schedules.store import Claim, EntryState, ScheduleStore

logger = logging.getLogger("gopherq.beat")

FOLLOW_POLL = 1.0
"""Longest sleep of a beat that does not lead, between looks at the lease."""
CHANGE_POLL = 0.5
"""Seconds between the leader's looks at the version of the dynamic entries."""
PROMOTE_EVERY = 1.0
"""Seconds between the leader's ``broker.recover()`` calls."""
ERROR_BACKOFF = 1.0
"""Seconds to wait after a pass failed (the broker is down)."""


class Beat:
    """One beat process (or thread). ``run()`` loops until ``stop()`` or SIGTERM;
    ``step()`` is one pass, for tests and embedding."""

    def __init__(
        self,
        app: GopherQ,
        *,
        lease_seconds: float | None = None,
        loglevel: str | None = "INFO",
        log_format: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.lease_seconds = lease_seconds or app.settings.beat_lease_seconds
        self.loglevel = loglevel
        self.log_format = log_format or app.settings.log_format
        self.name = f"beat@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        """This beat's lease token: unique per run."""
        self._clock = clock
        self._stopping = threading.Event()
        self._leading = False
        self._term_start = 0.0  # store time when this leader's term began
        self._offset = 0.0  # store clock minus ours
        self._valid_until = 0.0  # our clock: until then the lease is surely ours
        self._renew_at = 0.0
        self._check_at = math.inf
        self._promote_at = 0.0
        self._version = -1
        self._entries: dict[str, Entry] = {}
        self._states: dict[str, EntryState] = {}
        self._stale = True  # reload cursors before the next pass
        self._bounded: set[str] = set()  # entries whose backlog this term was bounded

    @property
    def store(self) -> ScheduleStore:
        """The schedule store beside the app's broker."""
        return self.app.schedules.store

    @property
    def leading(self) -> bool:
        """Whether this beat holds the lease (as far as it can be sure)."""
        return self._leading and self._clock() < self._valid_until

    # The loop.

    def run(self) -> int:
        """Lead or follow until ``stop()`` (or SIGTERM/SIGINT in the main thread);
        give the lease up and return the exit code: 0, or 2 for a ``memory://`` broker."""
        if self.loglevel:
            configure_logging(self.loglevel, self.log_format)
        if self.app.broker_url.partition("://")[0] == "memory":
            logger.error("memory:// lives in one process; beat needs sqlite:///... or another")
            return 2
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            previous = {
                s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)
            }
        logger.info("beat %s: starting, lease %gs", self.name, self.lease_seconds)
        try:
            while not self._stopping.is_set():
                try:
                    wait = self.step()
                except GopherQError as exc:  # the broker is down: no traceback every second
                    logger.warning("beat %s: pass failed: %s", self.name, exc)
                    self._stale, wait = True, ERROR_BACKOFF
                except Exception:
                    logger.exception("beat %s: pass failed", self.name)
                    self._stale, wait = True, ERROR_BACKOFF
                self._stopping.wait(wait)
        finally:
            self.resign()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.app.close()
            logger.info("beat %s: stopped", self.name)
        return 0

    def stop(self) -> None:
        """Make ``run()`` return after the current pass."""
        self._stopping.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop()

    def resign(self) -> None:
        """Give the lease up, if held, so that another beat takes over at once."""
        if self._leading:
            self._leading = False
            try:
                self.store.release(self.name)
            except GopherQError as exc:
                logger.warning("beat %s: could not release the lease: %s", self.name, exc)

    def step(self) -> float:
        """One pass: elect or renew, then, when leading, send what is due. Returns the
        seconds until the next pass is due."""
        now = self._clock()
        if now >= self._renew_at or now >= self._valid_until:
            self._elect()
        if not self.leading:
            return max(self._renew_at - self._clock(), 0.0)
        if self._stale:
            self._load()
        elif now >= self._check_at:
            self._check_changes()
        self._recover_pending()
        wait = self._fire(self._clock() + self._offset)
        now = self._clock()
        if now >= self._promote_at:
            self._promote_at = now + PROMOTE_EVERY
            self._promote()
        deadlines = (self._renew_at, self._check_at, self._promote_at, self._valid_until)
        return max(min(wait, *(t - now for t in deadlines)), 0.0)

    # Leadership.

    def _elect(self) -> None:
        before = self._clock()
        try:
            lease = self.store.acquire(self.name, self.lease_seconds)
        except GopherQError as exc:
            logger.warning("beat %s: cannot reach the lease: %s", self.name, exc)
            self._renew_at = before + ERROR_BACKOFF
            if self._leading and before >= self._valid_until:
                self._step_down("its lease may have lapsed")
            return
        after = self._clock()
        if not self.store.local_clock:
            self._offset = lease.now - (before + after) / 2
        if lease.owner == self.name:
            self._valid_until = before + self.lease_seconds
            self._renew_at = before + self.lease_seconds / 3
            if not self._leading:
                self._leading, self._term_start, self._stale = True, lease.now, True
                self._bounded.clear()
                logger.info("beat %s: leading", self.name)
            return
        if self._leading:
            self._step_down(f"{lease.owner} holds the lease")
        # Look again when the holder's lease would lapse (at most FOLLOW_POLL from now).
        self._renew_at = min(after + FOLLOW_POLL, lease.expires - self._offset + 0.001)

    def _step_down(self, why: str) -> None:
        self._leading, self._stale = False, True
        self._valid_until = 0.0
        logger.warning("beat %s: no longer leading: %s", self.name, why)

    def _load(self) -> None:
        """Read entries, version and cursors afresh."""
        self._check_at = self._clock() + CHANGE_POLL
        version, entries = self.app.schedules.load()
        names = sorted(entries)
        if version != self._version or names != sorted(self._entries):
            logger.info("beat %s: %d entries: %s", self.name, len(names), ", ".join(names))
        self._version = version
        self._entries = {name: entry for name, (entry, _) in entries.items()}
        self._states = self.store.states()
        self._stale = False

    def _check_changes(self) -> None:
        self._check_at = self._clock() + CHANGE_POLL
        if self.store.version() != self._version:
            self._load()

    # Sending.

    def _fire(self, now: float) -> float:
        """Claim, send and confirm the due ticks (one per entry); returns the seconds until
        the next one is due (0 when more are due now)."""
        claims: list[Claim] = []
        sends: list[tuple[Entry, int]] = []
        wait = math.inf
        for entry in self._entries.values():
            state = self._states.get(entry.name, EntryState())
            if state.pending or (entry.paused if state.paused is None else state.paused):
                continue
            step = plan(entry, state, now, self._term_start, bound=entry.name not in self._bounded)
            claim, tick = step.claim, step.tick
            if step.bounded:
                self._bounded.add(entry.name)
                if tick is None:
                    logger.warning("beat: %s missed over %d ticks", entry.name, CATCH_UP_LIMIT)
            if claim is not None:
                claims.append(claim)
                if tick is not None:
                    sends.append((entry, tick))
            elif tick is not None:
                wait = min(wait, tick - now)
        if not claims:
            return wait
        applied = self.store.claim(self.name, claims)
        if not all(applied):
            self._stale = True  # someone else changed a cursor, or we lost the lease
            self._renew_at = 0.0
        for claim, ok in zip(claims, applied, strict=True):
            if ok:
                self._states[claim.name] = self._states.get(claim.name, EntryState()).claimed(claim)
        claimed = {c.name for c, ok in zip(claims, applied, strict=True) if ok and c.pending}
        self._send_all([(e, t) for e, t in sends if e.name in claimed], now)
        return 0.0

    def _send_all(self, ticks: list[tuple[Entry, int]], now: float) -> None:
        """Send claimed ticks, then confirm those sent (a failed send stays pending)."""
        sent = []
        for entry, tick in ticks:
            if self._send(entry, tick):
                sent.append((entry, tick))
        self.store.confirm([(entry.name, tick) for entry, tick in sent])
        for entry, _ in sent:
            self._states[entry.name] = replace(self._states[entry.name], pending=False)
        if sent and self.app.events.enabled:
            self.app.events.publish(
                [
                    Event(
                        EventType.BEAT_TICK,
                        now,
                        tick_id(entry.name, tick),
                        entry.task,
                        self._queue(entry),
                        self.name,
                        extra={"entry": entry.name, "tick": tick, "late": round(now - tick, 3)},
                    )
                    for entry, tick in sent
                ]
            )

    def _queue(self, entry: Entry) -> str:
        """The queue a tick of ``entry`` goes to."""
        return task_queue(self.app, entry.task, entry.queue)

    def _send(self, entry: Entry, tick: int) -> bool:
        """Send one tick; False if the broker failed (it stays pending, to retry)."""
        try:
            self.app.send_task(
                entry.task,
                entry.args,
                entry.kwargs,
                task_id=tick_id(entry.name, tick),
                key=tick_key(entry.name, tick),
                queue=entry.queue,
                priority=entry.priority,
            )
        except BrokerError as exc:  # it stays pending, and is sent again
            logger.warning("beat: %s at %s not sent yet: %s", entry.name, local_time(tick), exc)
            return False
        except (TypeError, ValueError, GopherQError) as exc:  # bad arguments: never sendable
            logger.error(
                "beat: %s at %s cannot be sent, skipped: %s", entry.name, local_time(tick), exc
            )
            return True
        logger.info("beat: sent %s (%s) for %s", entry.name, entry.task, local_time(tick))
        return True

    def _recover_pending(self) -> None:
        """Send the ticks claimed before (by a leader that died, or a failed send) unless
        their message is in the broker or has a job record: then it was sent. (On a
        broker that cannot ``locate``, a tick still queued is sent again and stored
        once: its idempotency key names the queued one.)"""
        resend, sent = [], []
        for name, state in self._states.items():
            entry = self._entries.get(name)
            if not state.pending or state.tick is None or entry is None:
                continue
            id = tick_id(name, state.tick)
            if located(self.app, id) is None and self.app.backend.get(id) is None:
                logger.info(
                    "beat: sending %s for %s again (claimed, not confirmed)",
                    name,
                    local_time(state.tick),
                )
                resend.append((entry, state.tick))
            else:
                sent.append((name, state.tick))
        if sent:
            self.store.confirm(sent)
            for name, _ in sent:
                self._states[name] = replace(self._states[name], pending=False)
        if resend:
            self._send_all(resend, self._clock() + self._offset)

    def _promote(self) -> None:
        try:
            moved = self.app.broker.recover()
        except GopherQError as exc:
            logger.warning("beat %s: could not promote delayed messages: %s", self.name, exc)
            return
        if moved:
            logger.debug("beat %s: %d delayed or orphaned messages made ready", self.name, moved)
