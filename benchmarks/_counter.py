"""The benchmark workload: one Redis ``INCR`` per task, on a counter the benchmark reads.

The counter's URL and key come from the environment (``GQBENCH_COUNTER_URL``,
``GQBENCH_COUNTER_KEY``), which the worker processes inherit. Each process opens
its own connection on first use, after any fork.
"""

from __future__ import annotations

import os

import redis

URL_VARIABLE = "GQBENCH_COUNTER_URL"
KEY_VARIABLE = "GQBENCH_COUNTER_KEY"

_client: redis.Redis | None = None
_pid = 0


def _redis() -> redis.Redis:
    global _client, _pid
    if _client is None or _pid != os.getpid():
        _client, _pid = redis.Redis.from_url(os.environ[URL_VARIABLE]), os.getpid()
    return _client


def incr() -> int:
    """The task body: one ``INCR``; the new count."""
    return int(_redis().incr(os.environ[KEY_VARIABLE]))


def value() -> int:
    """The count so far."""
    return int(_redis().get(os.environ[KEY_VARIABLE]) or 0)


def reset() -> None:
    _redis().delete(os.environ[KEY_VARIABLE])
