"""Result backends, chosen by URL scheme; by default the broker's own store."""

from __future__ import annotations

from gopherq.brokers import REDIS_SCHEMES
from gopherq.errors import ConfigurationError
from gopherq.redaction import redact_url
from gopherq.results.base import ErrorInfo, JobCursor, JobPage, JobRecord, ResultBackend

__all__ = [
    "ErrorInfo",
    "JobCursor",
    "JobPage",
    "JobRecord",
    "ResultBackend",
    "open_backend",
]


def open_backend(url: str, *, expires: float = 86400.0) -> ResultBackend:
    """Open the result backend ``url`` names (a broker URL names that broker's store)."""
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        from gopherq.results.memory import MemoryResultBackend

        return MemoryResultBackend(url, expires=expires)
    if scheme == "sqlite":
        from gopherq.results.sqlite import SQLiteResultBackend

        return SQLiteResultBackend(url, expires=expires)
    if scheme in REDIS_SCHEMES:
        from gopherq.results.redis import RedisResultBackend

        return RedisResultBackend(url, expires=expires)
    raise ConfigurationError(
        f"unsupported result backend URL {redact_url(url)!r}; use sqlite:///path, redis://host or memory://"
    )
