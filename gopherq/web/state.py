"""What every request of one server reaches: the app and the server's settings."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from gopherq.access.audit import AuditWriter
from gopherq.access.keys import ApiKey, key_id_of
from gopherq.access.rate import Rate, TokenBuckets, parse_rate
from gopherq.app import GopherQ
from gopherq.limits import parse_optional_rate
from gopherq.web.probes import Probes
from gopherq.web.sender import Sender

if TYPE_CHECKING:
    from gopherq.web.auth import Caller


@dataclass(slots=True)
class ServerState:
    """One server's shared state, kept on the ASGI app as ``app.state.gopherq``."""

    app: GopherQ
    auth: bool = True
    """False only with ``--no-auth`` (loopback): every caller is an anonymous admin."""
    threads: int | None = None
    """How many blocking calls (plain ``def`` routes, store reads) run at once in the
    thread pool; None: the ASGI framework's default (40). See
    ``gopherq.web_extra.DEFAULT_THREADS``."""
    key_cache: float = 1.0
    """Seconds a key's record is reused before it is read again: a key revoked
    elsewhere (``gopherq keys revoke``) is refused within this time; at once when
    revoked through this server."""
    default_rate: Rate | None = field(init=False)
    """The send rate of keys without their own (setting ``api_rate``); None: no limit."""
    buckets: TokenBuckets = field(default_factory=TokenBuckets)
    """Each key's token bucket for sending jobs (``gopherq.web.limits``)."""
    audit: AuditWriter = field(init=False)
    """Writes the audit log's entries off the request path."""
    _keys: dict[str, tuple[float, ApiKey, Caller]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the server begins to shut down: open event streams end."""
    probes: Probes = field(init=False)
    """``/ready``'s checks and ``/metrics``' registry."""
    sender: Sender = field(init=False)
    """Sends jobs for async routes, concurrent requests' jobs in one broker call."""

    def __post_init__(self) -> None:
        self.default_rate = parse_optional_rate(self.app.settings.api_rate, what="setting api_rate")
        self.audit = AuditWriter(self.app.access.record)
        self.probes = Probes(self.app)
        self.sender = Sender(self.app)

    def authenticate(self, token: str) -> Caller | None:
        """The caller a bearer token names, or None if it is not a valid key (unknown,
        malformed, expired or revoked: the reason is not told)."""
        from gopherq.web.auth import Caller

        key_id = key_id_of(token)
        if key_id is None:
            return None
        now = time.monotonic()
        cached = self._keys.get(key_id)
        if cached is not None and now - cached[0] < self.key_cache:
            if self.app.access.verify(token, cached[1]) is None:
                return None
            return cached[2]
        key = self.app.access.verify(token)
        if key is None:
            self._keys.pop(key_id, None)
            return None
        caller = Caller(
            key.name,
            key.role,
            tasks=None if key.tasks is None else frozenset(key.tasks),
            queues=None if key.queues is None else frozenset(key.queues),
            rate=self.default_rate if key.rate is None else parse_rate(key.rate),
        )
        self._keys[key_id] = (now, key, caller)
        return caller

    def reads_store(self, token: str) -> bool:
        """Whether ``authenticate(token)`` would read the store: the token has the form
        of a key whose record was not read in the last ``key_cache`` seconds."""
        key_id = key_id_of(token)
        if key_id is None:
            return False
        cached = self._keys.get(key_id)
        return cached is None or time.monotonic() - cached[0] >= self.key_cache

    def forget_key(self, key_id: str) -> None:
        """Read the key's record again on its next use (after a revocation)."""
        self._keys.pop(key_id, None)


def server_state(request: Request) -> ServerState:
    """The ``ServerState`` of the server that received ``request``."""
    state: ServerState = request.app.state.gopherq
    return state


def current_app(request: Request) -> GopherQ:
    """The gopherq app the server serves."""
    return server_state(request).app


# The dependencies are coroutines although they do not await: FastAPI runs a plain
# function dependency in its thread pool, a hop that costs more than most routes'
# own work (docs/http-api.md, Performance).


async def _state_dependency(request: Request) -> ServerState:
    return server_state(request)


async def _app_dependency(request: Request) -> GopherQ:
    return current_app(request)


AppDep = Annotated[GopherQ, Depends(_app_dependency)]
"""A route parameter of this type receives the gopherq app."""
StateDep = Annotated[ServerState, Depends(_state_dependency)]
"""A route parameter of this type receives the ``ServerState``."""
