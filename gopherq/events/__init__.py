"""Lifecycle events: what happens to tasks and workers, as a log anyone can follow.

=================================  =============================================
URL                                event backend
=================================  =============================================
``memory://``                      in-process, for tests and eager mode
``sqlite:///path/to/gopherq.db``   an ``events`` table in the broker's file
``redis://host:6379/0``            a capped stream in the broker's Redis (also
                                   ``rediss://``, ``unix://``, ``redis+cluster://``)
=================================  =============================================

``app.events`` (an ``Events``) publishes, subscribes and runs callbacks; the
``EventEmitter`` middleware produces the events. See docs/events.md.
"""

from __future__ import annotations

from gopherq.brokers import REDIS_SCHEMES
from gopherq.errors import ConfigurationError
from gopherq.events.base import EVENT_TYPES, START, Event, EventBackend, EventType, check_types
from gopherq.events.hub import Events, Listener, Subscription
from gopherq.redaction import redact_url

__all__ = [
    "EVENT_TYPES",
    "START",
    "Event",
    "EventBackend",
    "EventType",
    "Events",
    "Listener",
    "Subscription",
    "check_types",
    "event_backend_for",
    "open_event_backend",
]

BACKEND_SCHEMES = frozenset({"memory", "sqlite"}) | REDIS_SCHEMES
"""URL schemes with an event backend."""


def open_event_backend(
    url: str, *, max_age: float = 86400.0, max_count: int = 100_000
) -> EventBackend:
    """Open the event backend ``url`` names; keep events ``max_age`` s, at most ``max_count``."""
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        from gopherq.events.memory import MemoryEventBackend

        return MemoryEventBackend(url, max_age=max_age, max_count=max_count)
    if scheme == "sqlite":
        from gopherq.events.sqlite import SQLiteEventBackend

        return SQLiteEventBackend(url, max_age=max_age, max_count=max_count)
    if scheme in REDIS_SCHEMES:
        from gopherq.events.redis import RedisEventBackend

        return RedisEventBackend(url, max_age=max_age, max_count=max_count)
    raise _unsupported(url)


def event_backend_for(setting: str | bool | None, broker_url: str) -> str | None:
    """The event backend URL the ``events`` setting means, or None when events are off.

    ``"broker"`` (or ``True``) means the broker's own store where it has an event
    backend, and off where it has none; ``False``, ``None``, ``""`` and ``"off"``
    mean off.
    """
    if setting is True:
        setting = "broker"
    if not setting or setting.strip().lower() == "off":
        return None
    if setting == "broker":
        scheme = broker_url.partition("://")[0].lower()
        return broker_url if scheme in BACKEND_SCHEMES else None
    if setting.partition("://")[0].lower() not in BACKEND_SCHEMES:
        raise _unsupported(setting)
    return setting


def _unsupported(url: str) -> ConfigurationError:
    return ConfigurationError(
        f"unsupported event backend URL {redact_url(url)!r}; use sqlite:///path, redis://..., "
        "memory://, 'broker' (the broker's store) or 'off'"
    )
