"""Dashboard sessions: a signed cookie naming an API key's id, never the key.

The cookie holds ``(key id, expiry, session id)`` signed with HMAC-SHA256 under a
secret drawn when the server starts, so a restart ends every session. Each request
reads the key's record again: a key revoked or expired ends its sessions at once.
The CSRF token of a session is derived from its session id under the same secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "gopherq_session"
LIFETIME = 12 * 3600.0
"""Seconds a session lasts after login."""
ANONYMOUS_KEY = ""
"""The key id of the sessions of a ``--no-auth`` server (no key)."""


@dataclass(frozen=True, slots=True)
class Session:
    """One signed-in browser."""

    key_id: str
    """The API key's id; ``ANONYMOUS_KEY`` on a ``--no-auth`` server."""
    expires: float
    """Unix time after which the cookie is refused."""
    sid: str
    """Random; what the CSRF token is derived from and what logout ends."""


@dataclass(slots=True)
class Sessions:
    """Issues, reads and ends the sessions of one server."""

    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    lifetime: float = LIFETIME
    _ended: dict[str, float] = field(default_factory=dict)
    """Session ids logged out before their expiry, with that expiry."""

    def new(self, key_id: str, now: float | None = None) -> Session:
        """A fresh session for ``key_id``."""
        now = time.time() if now is None else now
        return Session(key_id, now + self.lifetime, secrets.token_urlsafe(16))

    def encode(self, session: Session) -> str:
        """The cookie value of ``session``."""
        payload = json.dumps([session.key_id, session.expires, session.sid]).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._sign(body.encode())}"

    def decode(self, value: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value holds; None when it is missing, forged,
        malformed, expired or logged out."""
        if not value or value.count(".") != 1:
            return None
        body, signature = value.split(".")
        if not hmac.compare_digest(signature, self._sign(body.encode())):
            return None
        try:
            key_id, expires, sid = json.loads(
                base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            )
        except (ValueError, TypeError):
            return None
        now = time.time() if now is None else now
        if not (isinstance(key_id, str) and isinstance(sid, str)):
            return None
        if isinstance(expires, bool) or not isinstance(expires, (int, float)):
            return None
        if expires <= now or sid in self._ended:
            return None
        return Session(key_id, float(expires), sid)

    def end(self, session: Session, now: float | None = None) -> None:
        """Refuse ``session`` from now on (logout)."""
        now = time.time() if now is None else now
        self._ended = {sid: t for sid, t in self._ended.items() if t > now}
        self._ended[session.sid] = session.expires

    def csrf_token(self, session: Session) -> str:
        """The token every form of ``session`` carries."""
        return self._sign(b"csrf:" + session.sid.encode())

    def csrf_valid(self, session: Session, token: str | None) -> bool:
        """Whether ``token`` is ``session``'s CSRF token."""
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(session))

    def _sign(self, data: bytes) -> str:
        digest = hmac.new(self.secret, data, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
