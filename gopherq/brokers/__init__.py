"""Brokers, chosen by URL scheme.

=================================  =============================================
URL                                broker
=================================  =============================================
``memory://``                      in-process, for tests and eager mode
``sqlite:///path/to/gopherq.db``   the embedded default: durable, zero set-up
``redis://host:6379/0``            Redis; also ``rediss://`` (TLS), ``unix://``
``redis+cluster://host:6379``      Redis Cluster (any node)
=================================  =============================================
"""

from __future__ import annotations

import os

from gopherq.brokers.base import (
    Broker,
    BrokerAdmin,
    Cancellation,
    DeadLetter,
    Delivery,
    Envelope,
    Peeked,
    QueueDepth,
    QueueStats,
    ReserveOrder,
    redact_url,
)
from gopherq.errors import ConfigurationError

DEFAULT_URL = "sqlite:///./gopherq.db"
"""The default SQLite broker before resolution: an app puts ``gopherq.db`` beside the
module that defines it (see ``default_url``)."""
DEFAULT_FILE = "gopherq.db"
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"})

__all__ = [
    "DEFAULT_URL",
    "Broker",
    "BrokerAdmin",
    "Cancellation",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "Peeked",
    "QueueDepth",
    "QueueStats",
    "ReserveOrder",
    "absolute_url",
    "default_url",
    "open_broker",
]


def default_url(directory: str) -> str:
    """The default broker URL of an app whose home is ``directory``: its ``gopherq.db``."""
    return "sqlite:///" + os.path.join(os.path.abspath(directory), DEFAULT_FILE)


def absolute_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute (from the current directory,
    as it would be opened now), query kept; any other URL as it is.

    A URL that is not a valid SQLite URL is left for ``open_broker`` to refuse.
    """
    if url.partition("://")[0].lower() != "sqlite":
        return url
    from gopherq.stores.sqlite import sqlite_path

    try:
        path = sqlite_path(url)
    except ConfigurationError:
        return url
    question, query = url.partition("?")[1:]
    return f"sqlite:///{path}{question}{query}"


def open_broker(
    url: str, *, lease_seconds: float = 30.0, dead_letter_ttl: float = 7 * 86400.0
) -> Broker:
    """Open the broker ``url`` names. Connections open lazily, after any fork."""
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        from gopherq.brokers.memory import MemoryBroker

        return MemoryBroker(url, lease_seconds=lease_seconds, dead_letter_ttl=dead_letter_ttl)
    if scheme == "sqlite":
        from gopherq.brokers.sqlite import SQLiteBroker

        return SQLiteBroker(url, lease_seconds=lease_seconds, dead_letter_ttl=dead_letter_ttl)
    if scheme in REDIS_SCHEMES:
        from gopherq.brokers.redis import RedisBroker

        return RedisBroker(url, lease_seconds=lease_seconds, dead_letter_ttl=dead_letter_ttl)
    raise ConfigurationError(
        f"unsupported broker URL {redact_url(url)!r}; use sqlite:///path, redis://host or memory://"
    )
