"""The wire protocol that producers in other languages follow: docs/protocol.md.

Protocol version 1 covers how a program that is not gopherq sends a task (on
Redis: the enqueue script, its KEYS and ARGV, the known-queue set; on SQLite:
the schema and the statements of one enqueue transaction) and reads its job
record. Everything else in the brokers' storage is private and may change in
any release.

The Redis enqueue script is shipped self-contained, as the package data file
``redis-enqueue.lua``: the broker's ``scripts/enqueue.lua`` with the
``lib.lua`` helpers it uses in front, exactly the text the broker runs (so its
SHA1 is the one the broker loads). A test keeps the two equal; after a change
to either script, write the file again with
``python -m gopherq protocol redis-enqueue-script > gopherq/protocol/redis-enqueue.lua``
(which prints the broker's text).
"""

from __future__ import annotations

from importlib import resources

__all__ = [
    "PROTOCOL_VERSION",
    "REDIS_ENQUEUE_SCRIPT",
    "redis_enqueue_script",
    "shipped_redis_enqueue_script",
    "sqlite_schema",
]

PROTOCOL_VERSION = 1
"""Raised by any incompatible change to what docs/protocol.md describes."""

REDIS_ENQUEUE_SCRIPT = "redis-enqueue.lua"
"""The name of the shipped Redis enqueue script, a data file of this package."""


def redis_enqueue_script() -> str:
    """The Redis enqueue script as the broker runs it: self-contained, shebang first."""
    from gopherq.stores.redis import script

    return script("enqueue").source


def shipped_redis_enqueue_script() -> str:
    """The text of the shipped file ``redis-enqueue.lua`` (equal to
    ``redis_enqueue_script()`` in a consistent install)."""
    return resources.files(__name__).joinpath(REDIS_ENQUEUE_SCRIPT).read_text(encoding="utf-8")


def sqlite_schema() -> list[str]:
    """The statements that create the SQLite broker's and result store's tables and
    indexes (each ``IF NOT EXISTS``), in order."""
    from gopherq.brokers.sqlite import SQLiteBroker
    from gopherq.results.sqlite import SQLiteResultBackend

    return [*SQLiteBroker.SCHEMA, *SQLiteResultBackend.SCHEMA]
