"""API keys: their records, and the secrets that name them.

A secret reads ``gq_<key id>_<random>``: the key id (public, 12 hex digits) finds
the record, the random part (32 bytes from ``secrets``) proves the holder. Only
a salted HMAC-SHA256 of the secret is stored. A slow password hash (scrypt,
bcrypt, Argon2) protects low-entropy passwords against guessing; a 256-bit
random secret cannot be guessed, so a fast keyed hash keeps a stolen store
useless while costing microseconds per request. Digests are compared with
``hmac.compare_digest`` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gopherq.access.roles import Role
from gopherq.errors import GopherQError

PREFIX = "gq_"
ID_BYTES = 6
SECRET_BYTES = 32
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SECRET = re.compile(r"^gq_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class AccessError(GopherQError):
    """A key operation that cannot be done: a taken name, an unknown key."""


class FieldError(ValueError):
    """A bad argument for a key, naming the field (``name``, ``role``, ``expires``...)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def check_name(name: str) -> str:
    """``name`` if it may name a key (1-64 of letters, digits, ``._@-``); else ``ValueError``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"bad key name {name!r}: 1 to 64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key as stored: everything but the secret, which is only hashed."""

    id: str
    name: str
    role: Role
    created: float
    expires: float | None = None
    """Unix time after which the key is refused; None: never."""
    revoked: float | None = None
    """Unix time it was revoked; None while it is not."""
    tasks: tuple[str, ...] | None = None
    """The only task names it may send; None: any."""
    queues: tuple[str, ...] | None = None
    """The only queues it may send to; None: any."""
    rate: str | None = None
    """Its send rate (``100/s``); None: the server's default."""
    salt: bytes = field(default=b"", repr=False)
    digest: bytes = field(default=b"", repr=False)

    def active(self, now: float) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked is None and (self.expires is None or now < self.expires)

    def matches(self, secret: str) -> bool:
        """Whether ``secret`` is this key's (constant-time comparison of digests)."""
        return hmac.compare_digest(digest(self.salt, secret), self.digest)

    def to_map(self) -> dict[str, Any]:
        """Public fields, for listings and JSON: never the salt or digest."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.label,
            "created": self.created,
            "expires": self.expires,
            "revoked": self.revoked,
            "tasks": None if self.tasks is None else list(self.tasks),
            "queues": None if self.queues is None else list(self.queues),
            "rate": self.rate,
        }

    def to_stored(self) -> dict[str, Any]:
        """Every field, for a store that keeps records as JSON."""
        return {**self.to_map(), "salt": self.salt.hex(), "digest": self.digest.hex()}

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> ApiKey:
        """The record ``to_stored`` wrote."""
        return cls(
            id=data["id"],
            name=data["name"],
            role=Role.parse(data["role"]),
            created=float(data["created"]),
            expires=data.get("expires"),
            revoked=data.get("revoked"),
            tasks=_names(data.get("tasks")),
            queues=_names(data.get("queues")),
            rate=data.get("rate"),
            salt=bytes.fromhex(data.get("salt", "")),
            digest=bytes.fromhex(data.get("digest", "")),
        )


def _names(values: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def digest(salt: bytes, secret: str) -> bytes:
    """The stored form of ``secret``: HMAC-SHA256 keyed with the key's own salt."""
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


def new_secret() -> tuple[str, str]:
    """A fresh ``(key id, secret)``."""
    key_id = secrets.token_hex(ID_BYTES)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def key_id_of(secret: str) -> str | None:
    """The key id a secret names; None if it is not of the form of one."""
    match = _SECRET.match(secret)
    return match.group(1) if match else None
