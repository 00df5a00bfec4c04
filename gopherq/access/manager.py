"""``app.access``: the API keys and the audit log of an app, in the store beside its
broker. The ``gopherq keys`` and ``gopherq audit`` commands and the HTTP API both
go through it."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from gopherq.access.audit import AuditEntry
from gopherq.access.keys import (
    AccessError,
    ApiKey,
    FieldError,
    check_name,
    digest,
    key_id_of,
    new_secret,
)
from gopherq.access.rate import parse_rate
from gopherq.access.roles import Role
from gopherq.access.store import AccessStore, open_store
from gopherq.errors import ConfigurationError
from gopherq.schedules.entry import parse_every

if TYPE_CHECKING:
    from gopherq.app import GopherQ

MAX_AUDIT_LIMIT = 10_000


class Access:
    """The API keys and audit log of ``app``; the store opens on first use."""

    def __init__(self, app: GopherQ) -> None:
        self._app = app
        self._store: AccessStore | None = None
        self.clock: Callable[[], float] = time.time
        """The clock of creation, expiry and audit times (tests set another)."""

    @property
    def store(self) -> AccessStore:
        """The app's access store beside its broker, opened on first use."""
        if self._store is None:
            self._store = open_store(self._app.broker, self._app.name)
        return self._store

    def close(self) -> None:
        """Close the store's connections (they reopen on next use)."""
        if self._store is not None:
            self._store.close()

    # Keys.

    def create(
        self,
        name: str,
        role: Role | str,
        *,
        expires: float | str | dt.timedelta | dt.datetime | None = None,
        tasks: Iterable[str] | None = None,
        queues: Iterable[str] | None = None,
        rate: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret, which is not stored and cannot be shown again.

        ``expires``: a ``datetime``, or a time from now (seconds, a ``timedelta``,
        or text such as ``90d`` or ``12h``). ``tasks``/``queues`` limit what it
        may send (empty or None: anything); ``rate`` (``100/s``) is its send rate
        in place of the server's ``api_rate``, ``none`` for no limit.
        ``FieldError`` (a ``ValueError``) naming a bad argument, ``AccessError`` if
        the name is taken.
        """
        _check("name", check_name, name)
        role = role if isinstance(role, Role) else _check("role", Role.parse, role)
        if rate is not None:
            rate = str(_check("rate", parse_rate, rate) or "none")
        only_tasks = _check("tasks", _limits, tasks)
        only_queues = _check("queues", _limits, queues)
        now = self.clock()
        key_id, secret = new_secret()
        salt = secrets.token_bytes(16)
        key = ApiKey(
            id=key_id,
            name=name,
            role=role,
            created=now,
            expires=_check("expires", expiry, expires, now),
            tasks=only_tasks,
            queues=only_queues,
            rate=rate,
            salt=salt,
            digest=digest(salt, secret),
        )
        if not self.store.add_key(key):
            raise AccessError(f"a key named {name!r} exists already (names are never reused)")
        return key, secret

    def list_keys(self) -> list[ApiKey]:
        """Every key (no secrets), revoked and expired ones included, oldest first."""
        return self.store.list_keys()

    def revoke(self, name: str) -> ApiKey:
        """Revoke the key named ``name`` at once; ``AccessError`` if there is none."""
        key = self.store.revoke(name, self.clock())
        if key is None:
            raise AccessError(f"no key named {name!r}")
        return key

    def verify(self, secret: str, key: ApiKey | None = None) -> ApiKey | None:
        """The key ``secret`` belongs to if it is valid now (known, unexpired, not
        revoked); None otherwise, whatever the reason. ``key``: the record of the
        secret's key id when the caller has it already (a cache)."""
        key_id = key_id_of(secret)
        if key_id is None:
            return None
        if key is None or key.id != key_id:
            key = self.store.key(key_id)
        if key is None or not key.matches(secret) or not key.active(self.clock()):
            return None
        return key

    # The audit log.

    def record(self, entries: Sequence[AuditEntry]) -> None:
        """Append audit entries; those past ``audit_retention`` or beyond the newest
        ``audit_max_count`` go at the same time."""
        settings = self._app.settings
        keep_after = self.clock() - settings.audit_retention
        self.store.append(entries, keep_after, settings.audit_max_count)

    def audit(self, since: float | None = None, limit: int = 100) -> list[AuditEntry]:
        """Audit entries at or after ``since`` (Unix time), newest first, at most ``limit``."""
        return self.store.entries(since, max(0, min(limit, MAX_AUDIT_LIMIT)))

    def cleanup(self) -> None:
        """Delete audit entries past ``audit_retention`` and ``audit_max_count``."""
        self.record(())


def expiry(value: float | str | dt.timedelta | dt.datetime | None, now: float) -> float | None:
    """The Unix time a key made at ``now`` expires: see ``Access.create``."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.astimezone()
        return value.timestamp()
    try:
        return now + parse_every(value)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


def parse_since(text: str, now: float) -> float:
    """A point in time from text: a duration ago (``1h``, ``7d``, ``90m``), Unix seconds,
    or an ISO 8601 date or time (local time without an offset). ``ValueError`` otherwise."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return now - parse_every(text)
    except ConfigurationError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"bad time {text!r}: use a duration ago (1h, 7d), Unix seconds or ISO 8601"
        ) from None
    return (when if when.tzinfo else when.astimezone()).timestamp()


def _check(field: str, parse: Callable[..., Any], *args: Any) -> Any:
    """``parse(*args)``, its ``ValueError`` a ``FieldError`` naming ``field``."""
    try:
        return parse(*args)
    except ValueError as exc:
        raise FieldError(field, str(exc)) from None


def _limits(names: Iterable[str] | None) -> tuple[str, ...] | None:
    found = tuple(dict.fromkeys(names or ()))
    for name in found:
        if not isinstance(name, str) or not name or len(name) > 200 or not name.isprintable():
            raise ValueError(f"bad name {name!r}")
    return found or None
