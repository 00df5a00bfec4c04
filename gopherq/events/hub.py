"""``app.events``: publishing, subscribing, and running callbacks on events.

Publishing is batched: the emitter ``emit``s events into a buffer and whoever
owns the batch flushes it: the producer within ``send_many``; the worker's
consumer with its settles, but only once the oldest event waited
``EVENT_DELAY`` (``flush(only_due=True)``), at once before a retry or dead
letter is settled (so that a task's next attempt never shows before its
retry), and whenever it runs out of work. So a busy worker writes events a
few times a second, however many tasks it runs. A failed flush keeps its
events for the next one (at most ``MAX_BUFFER``) and never fails the work it
reports on.

Reading never changes the log: each ``Subscription`` holds its own cursor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TypeVar

from gopherq.errors import ConfigurationError
from gopherq.events.base import JOB_EVENTS, START, Event, EventBackend, check_types

logger = logging.getLogger("gopherq.events")

Handler = Callable[[Event], object]
H = TypeVar("H", bound=Handler)

EVENT_DELAY = 0.05
"""Seconds a buffered event may wait for more before ``flush(only_due=True)`` sends it."""
DUE_COUNT = 1000
"""Buffered events that make a flush due however young they are."""
MAX_BUFFER = 10_000
"""Most unpublished events kept while the backend fails; the oldest are dropped."""
READ_SLICE = 0.25
"""Longest single blocking read: how soon a closed subscription notices."""
RETRY_AFTER = 1.0
"""Seconds before a failed publish is retried unasked, or a failed read by a listener."""


class Events:
    """Events of one app. Off (``enabled`` false) when ``url`` is None."""

    def __init__(
        self, url: str | None, open_backend: Callable[[str], EventBackend] | None = None
    ) -> None:
        self.url = url
        self._open = open_backend
        self._backend: EventBackend | None = None
        self._buffer: list[Event] = []
        self._since = 0.0  # time.monotonic() of the oldest buffered event
        self._retry_at = 0.0  # after a failed publish: when to try again unasked
        self._lock = threading.Lock()
        self.handlers: list[tuple[frozenset[str] | None, Handler]] = []
        """Callbacks registered with ``on``, and the types each takes (None: all)."""

    @classmethod
    def of(cls, backend: EventBackend) -> Events:
        """Events on a backend already open."""
        events = cls(backend.url)
        events._backend = backend
        return events

    @property
    def enabled(self) -> bool:
        """Whether events are on (setting ``events``)."""
        return self.url is not None

    @property
    def backend(self) -> EventBackend:
        """The event backend, opened on first use; raises if events are off."""
        if self._backend is None:
            if self.url is None or self._open is None:
                raise ConfigurationError(
                    "events are off: set events to a URL, or leave it at 'broker' "
                    "with a memory:// or sqlite:/// broker"
                )
            self._backend = self._open(self.url)
        return self._backend

    @property
    def opened(self) -> bool:
        """Whether the backend was opened (after which ``url`` no longer changes it)."""
        return self._backend is not None

    def open(self) -> None:
        """Open the backend now, if events are on (a worker does, before it starts threads)."""
        if self.enabled:
            self._backend = self.backend

    # Publishing.

    @property
    def pending(self) -> bool:
        """Whether events wait in the buffer (not for ``RETRY_AFTER`` after a failed publish,
        so that a worker does not spin on a backend that is down)."""
        return bool(self._buffer) and time.monotonic() >= self._retry_at

    def emit(self, event: Event) -> None:
        """Buffer ``event`` until the next ``flush``."""
        with self._lock:
            if not self._buffer:
                self._since = time.monotonic()
            self._buffer.append(event)

    def flush(self, *, only_due: bool = False) -> None:
        """Publish the buffered events in one backend call; on failure keep them, log, go on.

        With ``only_due``, only once the oldest waited ``EVENT_DELAY`` or there
        are ``DUE_COUNT``.
        """
        with self._lock:
            events = self._buffer
            if not events:
                return
            now = time.monotonic()
            young = now - self._since < EVENT_DELAY and len(events) < DUE_COUNT
            if only_due and (young or now < self._retry_at):
                return
            self._buffer = []
        try:
            self.backend.publish(events)
        except Exception as exc:
            logger.warning("could not publish %d events (kept for later): %s", len(events), exc)
            with self._lock:
                self._buffer[:0] = events
                del self._buffer[:-MAX_BUFFER]
                self._retry_at = time.monotonic() + RETRY_AFTER
            return
        self._retry_at = 0.0

    def publish(self, events: Sequence[Event]) -> None:
        """Publish ``events`` now, after what is buffered (a ``flush``)."""
        with self._lock:
            self._buffer.extend(events)
        self.flush()

    # Reading.

    def subscribe(
        self,
        types: str | Collection[str] | None = None,
        *,
        since: str = "now",
        timeout: float | None = None,
        batch: int = 100,
    ) -> Subscription:
        """Iterate over events as they come, blocking in between without busy polling.

        ``types``: an event type or several (None: all). ``since``: ``"now"``
        (only new events), ``"0"`` (every retained event) or the ``cursor`` of
        an event seen before, to resume after it. ``timeout``: end the
        iteration once no event came for that many seconds (None: never; 0:
        stop at the newest). Each event carries its ``cursor``; so does the
        subscription (the position after the last event it yielded).
        """
        names = check_types(types)
        return Subscription(self.backend, names, self._start(since), timeout, batch)

    def last(
        self,
        limit: int = 20,
        types: str | Collection[str] | None = None,
        *,
        since: float | None = None,
    ) -> list[Event]:
        """The newest ``limit`` events (of ``types``), oldest first; with ``since`` (Unix
        seconds), only those from then on, found without reading further back than
        that (``EventBackend.last``)."""
        return self.backend.last(limit, types=check_types(types), since=since)

    def for_job(
        self,
        id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = JOB_EVENTS,
    ) -> list[Event]:
        """The retained events of task ``id``, oldest first (``EventBackend.job_events``;
        ``since``: when it was sent, ``until``: when it finished, where known)."""
        return self.backend.job_events(id, since=since, until=until, limit=limit)

    def _start(self, since: str) -> str:
        if since != "now":
            return since
        newest = self.backend.last(1)
        return newest[0].cursor if newest else START

    # Callbacks.

    def on(self, *types: str) -> Callable[[H], H]:
        """Register a callback for events of ``types`` (none given: every event).

        ``@app.on("task-failed")``; callbacks run in ``listen``'s thread, in the
        order registered. An exception in one is logged and the others run.
        """
        names = check_types(types) if types else None

        def register(handler: H) -> H:
            self.handlers.append((names, handler))
            return handler

        return register

    def listen(self, *, since: str = "now") -> Listener:
        """Run the registered callbacks on events from ``since``, in a daemon thread.

        The subscription starts before this returns, so every event published
        after the call reaches the callbacks. ``stop()`` the returned listener
        to end it; its ``cursor`` is where to resume.
        """
        if not self.handlers:
            raise ConfigurationError("no event callbacks registered: use @app.on(...) first")
        if any(names is None for names, _ in self.handlers):
            types = None
        else:
            types = frozenset().union(*(names or () for names, _ in self.handlers))
        listener = Listener(self.subscribe(types, since=since), list(self.handlers))
        listener.start()
        return listener

    def close(self) -> None:
        """Publish what is buffered, then release the backend's connections."""
        if self._backend is not None:
            self.flush()
            self._backend.close()


class Subscription(Iterator[Event]):
    """An iterator over events from a cursor. See ``Events.subscribe``."""

    def __init__(
        self,
        backend: EventBackend,
        types: frozenset[str] | None,
        cursor: str,
        timeout: float | None,
        batch: int,
    ) -> None:
        self._backend = backend
        self._types = types
        self._timeout = timeout
        self._batch = max(batch, 1)
        self._read_at = cursor  # where the next read starts
        self._yielded = cursor  # cursor of the last event yielded
        self._pending: deque[Event] = deque()
        self._closed = False
        self._caught_up = False  # the last read found nothing new
        self._idle_since = time.monotonic()

    @property
    def cursor(self) -> str:
        """Where to resume to see every event after the last one yielded."""
        return self._yielded if self._pending else self._read_at

    def close(self) -> None:
        """End the iteration (from any thread) within ``READ_SLICE`` seconds."""
        self._closed = True

    def __next__(self) -> Event:
        while not self._pending:
            if self._closed:
                raise StopIteration
            wait = READ_SLICE
            if self._timeout is not None:
                left = self._idle_since + self._timeout - time.monotonic()
                if left <= 0 and self._caught_up:
                    raise StopIteration
                wait = max(min(wait, left), 0.0)
            events, self._read_at = self._backend.read(
                self._read_at, types=self._types, limit=self._batch, timeout=wait
            )
            self._caught_up = not events
            self._pending.extend(events)
        event = self._pending.popleft()
        self._yielded = event.cursor
        self._idle_since = time.monotonic()
        return event


class Listener(threading.Thread):
    """A daemon thread running event callbacks. See ``Events.listen``."""

    def __init__(
        self, subscription: Subscription, handlers: list[tuple[frozenset[str] | None, Handler]]
    ) -> None:
        super().__init__(name="gopherq-events", daemon=True)
        self.subscription = subscription
        self._handlers = handlers

    @property
    def cursor(self) -> str:
        """Where to resume: after the last event given to the callbacks."""
        return self.subscription.cursor

    def run(self) -> None:
        """Dispatch each event to the callbacks of its type; outlive backend failures."""
        while True:
            try:
                for event in self.subscription:
                    self._dispatch(event)
                return
            except Exception as exc:  # reading failed: the cursor stays, try again
                logger.warning("reading events failed, retrying in %ss: %s", RETRY_AFTER, exc)
                time.sleep(RETRY_AFTER)

    def _dispatch(self, event: Event) -> None:
        for names, handler in self._handlers:
            if names is None or event.type in names:
                try:
                    handler(event)
                except Exception:
                    logger.exception("event callback %r failed on %s", handler, event.type)

    def stop(self, timeout: float | None = None) -> None:
        """End the subscription and wait for the thread (up to ``timeout`` seconds)."""
        self.subscription.close()
        self.join(timeout)
