"""``app.schedules``: every periodic entry of an app, wherever it was declared.

Entries declared in code (``@app.periodic``, ``app.add_periodic``) and in the
``beat_schedule`` setting live in the process; dynamic entries live in the
schedule store beside the broker's messages, so that every beat and every
``gopherq schedules`` command sees them. A name is unique across all three; a
dynamic entry whose name a declared entry took is ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from gopherq.errors import ConfigurationError, GopherQError
from gopherq.schedules.entry import CatchUp, Entry, entry_every, parse_priority
from gopherq.schedules.store import EntryState, ScheduleStore, open_store
from gopherq.task import BaseTask

if TYPE_CHECKING:
    import datetime as dt

    from gopherq.app import GopherQ

logger = logging.getLogger("gopherq.beat")

Source = Literal["code", "settings", "dynamic"]


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """One entry as ``app.schedules.list()`` shows it."""

    entry: Entry
    source: Source
    paused: bool
    last_tick: int | None
    """The last tick sent (Unix seconds)."""
    next_tick: int | None
    """When it fires next (Unix seconds); None while paused."""

    def to_map(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        return {
            "name": self.entry.name,
            **self.entry.to_map(),
            "source": self.source,
            "paused": self.paused,
            "last_tick": self.last_tick,
            "next_tick": self.next_tick,
        }


class Schedules:
    """The periodic entries of ``app``; see the module docstring."""

    def __init__(self, app: GopherQ, beat_schedule: Mapping[str, Any] | None = None) -> None:
        self._app = app
        self.clock: Callable[[], float] = time.time
        """The clock that stamps new dynamic entries and ``list`` reads (tests set another)."""
        self._store: ScheduleStore | None = None
        self._declared: dict[str, tuple[Entry, Source]] = {}
        self._ignored: set[str] = set()
        self.declare_settings(beat_schedule)

    def declare_settings(self, beat_schedule: Mapping[str, Any] | None) -> None:
        """Declare the entries of a ``beat_schedule`` setting, in place of those of the
        previous one (``app.config_from_object`` may bring a new one)."""
        entries = [Entry.from_map(name, spec) for name, spec in (beat_schedule or {}).items()]
        for name, (_, source) in list(self._declared.items()):
            if source == "settings":
                del self._declared[name]
        for entry in entries:
            self.declare(entry, "settings")

    @property
    def store(self) -> ScheduleStore:
        """The app's schedule store beside its broker, opened on first use."""
        if self._store is None:
            self._store = open_store(self._app.broker, self._app.name)
        return self._store

    def close(self) -> None:
        """Close the store's connections (they reopen on next use)."""
        if self._store is not None:
            self._store.close()

    # Declared entries.

    def entry(
        self,
        task: BaseTask[Any, Any] | str,
        *,
        name: str | None = None,
        cron: str | None = None,
        every: float | dt.timedelta | str | None = None,
        tz: str = "UTC",
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        priority: int | str | None = None,
        catch_up: CatchUp = "latest",
        paused: bool = False,
        created: float | None = None,
    ) -> Entry:
        """Build and check an entry for ``task`` (a task or a task name); the name
        defaults to the task's. Arguments are checked against a registered task."""
        task_name = task if isinstance(task, str) else task.name
        name = name or task_name
        entry = Entry(
            name=name,
            task=task_name,
            cron=cron,
            every=entry_every(name, every),
            tz=tz,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            queue=queue,
            priority=None if priority is None else parse_priority(priority),
            catch_up=catch_up,
            paused=paused,
            created=created,
        )
        registered = self._app.tasks.get(task_name)
        if registered is not None:
            try:
                registered.check_arguments(entry.args, entry.kwargs)
            except TypeError as exc:
                raise ConfigurationError(f"periodic entry {entry.name!r}: {exc}") from None
        return entry

    def declare(self, entry: Entry, source: Source = "code") -> Entry:
        """Add an entry declared in code (or settings); a second one of the same name raises."""
        if entry.name in self._declared:
            raise ConfigurationError(
                f"a periodic entry named {entry.name!r} is already declared; pass name=..."
            )
        self._declared[entry.name] = (entry, source)
        return entry

    # Dynamic entries.

    def add(
        self,
        name: str,
        task: BaseTask[Any, Any] | str,
        *,
        replace: bool = False,
        **options: Any,
    ) -> Entry:
        """Store a dynamic entry (``cron=`` or ``every=``, and the options of
        ``@app.periodic``); running beats pick it up within a second.

        An existing dynamic entry of that name raises unless ``replace``; the name
        of an entry declared in code or settings always raises.
        """
        if name in self._declared:
            raise ConfigurationError(f"{name!r} is declared in {self._declared[name][1]}")
        entry = self.entry(task, name=name, created=self.clock(), **options)
        if not replace and name in self.dynamic()[1]:
            raise ConfigurationError(f"a dynamic entry named {name!r} exists; remove it first")
        self._put(entry)
        return entry

    def _put(self, entry: Entry) -> None:
        """Store a dynamic entry, if it is small enough to be read back."""
        codec = self._app.codec
        packed = codec.pack(entry.to_map(), what="entry")
        if len(packed) > codec.max_message_size:
            raise ConfigurationError(
                f"periodic entry {entry.name!r}: its arguments take {len(packed)} bytes, "
                f"above the limit of {codec.max_message_size}"
            )
        self.store.put(entry.name, packed)

    def update(self, name: str, **changes: Any) -> Entry:
        """Change options of the dynamic entry ``name`` (those of ``add``: ``task``,
        ``cron`` or ``every``, ``args``, ...), keeping the others; giving ``cron``
        drops ``every`` and the other way round. Pause with ``pause``, not here.

        Raises ``ConfigurationError`` for an entry declared in code or settings, an
        unknown name, or options that do not make an entry.
        """
        if name in self._declared:
            raise ConfigurationError(
                f"{name!r} is declared in {self._declared[name][1]}: change it there"
            )
        current = self.dynamic()[1].get(name)
        if current is None:
            raise ConfigurationError(f"no dynamic entry named {name!r}")
        values = current.to_map()
        for one, other in (("cron", "every"), ("every", "cron")):
            if changes.get(one) is not None:
                values.pop(other, None)
        values.update(changes)
        task = values.pop("task")
        entry = self.entry(task, name=name, **values)
        self._put(entry)
        return entry

    def source(self, name: str) -> Source | None:
        """Where entry ``name`` comes from; None if there is no such entry."""
        if name in self._declared:
            return self._declared[name][1]
        # Stored counts, even an entry that does not decode (so that it can be removed).
        return "dynamic" if name in self.store.entries()[1] else None

    def remove(self, name: str) -> bool:
        """Delete a dynamic entry (and its cursor); False if there is none."""
        if name in self._declared:
            raise ConfigurationError(
                f"{name!r} is declared in {self._declared[name][1]}: pause it, or remove it there"
            )
        return self.store.delete(name)

    def pause(self, name: str) -> None:
        """Stop sending ``name`` (any entry) until ``resume``."""
        self._check_known(name)
        self.store.set_paused(name, True)

    def resume(self, name: str) -> None:
        """Send ``name`` again from its next tick; ticks missed while paused are skipped."""
        self._check_known(name)
        self.store.set_paused(name, False)

    def _check_known(self, name: str) -> None:
        if name not in self._declared and name not in self.dynamic()[1]:
            raise ConfigurationError(f"no periodic entry named {name!r}")

    def dynamic(self) -> tuple[int, dict[str, Entry]]:
        """The store's version and its dynamic entries (an undecodable one is logged and
        left out)."""
        version, specs = self.store.entries()
        entries = {}
        for name, spec in specs.items():
            try:
                entries[name] = Entry.from_map(name, self._app.codec.unpack(spec))
            except GopherQError as exc:
                logger.error("beat: ignoring dynamic entry %r: %s", name, exc)
        return version, entries

    def load(self) -> tuple[int, dict[str, tuple[Entry, Source]]]:
        """The version of the dynamic entries, and every entry with its source."""
        version, dynamic = self.dynamic()
        out = dict(self._declared)
        for name, entry in dynamic.items():
            if name in out:
                if name not in self._ignored:
                    self._ignored.add(name)
                    logger.warning("beat: dynamic entry %r ignored: declared in code", name)
                continue
            out[name] = (entry, "dynamic")
        return version, out

    def list(self, now: float | None = None) -> list[ScheduleInfo]:
        """Every entry, by name, with its state and next tick."""
        now = self.clock() if now is None else now
        states = self.store.states()
        infos = []
        for name, (entry, source) in sorted(self.load()[1].items()):
            state = states.get(name, EntryState())
            paused = entry.paused if state.paused is None else state.paused
            next_tick = None if paused else entry.schedule.next_after(max(now, state.since))
            infos.append(ScheduleInfo(entry, source, paused, state.tick, next_tick))
        return infos
