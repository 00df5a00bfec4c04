"""Message signing: HMAC-SHA256 over the envelope bytes, under a key id.

Off by default. Without it, anyone who can write to the broker can run any
registered task with any arguments. With ``signing_keys`` set, every message
sent is signed, and a worker dead-letters a message that is unsigned, signed
with an unknown key or altered as ``SIGNATURE_INVALID``, before it decodes the
envelope (its arguments are never unpacked).

A signed body is a msgpack array of four items::

    ["gq-sig", kid, mac, envelope]

    "gq-sig"   str   marks a signed body (this format)
    kid        str   id of the key that signed, a key of ``signing_keys``
    mac        bin   HMAC-SHA256(key, envelope): 32 bytes
    envelope   bin   the envelope bytes exactly as sent without signing

Every key of ``signing_keys`` verifies; ``signing_key`` names the one that signs
(needed when there are several), so keys rotate without a stop: add the new key
everywhere, then make it the signing key, then remove the old one once the
messages it signed are gone. A foreign producer signs in a few lines::

    body = msgpack.packb(["gq-sig", kid, hmac.digest(key, envelope, "sha256"), envelope])
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import msgpack

from gopherq.errors import ConfigurationError, DecodeError, PayloadTooLarge, SignatureError
from gopherq.message import SIGNED, Message
from gopherq.serializer import DEFAULT_MAX_SIZE, Codec
from gopherq.settings import Settings

MIN_KEY_BYTES = 16
"""Shortest secret accepted (32 random bytes are recommended)."""
MAX_KID = 64
"""Longest key id, in characters."""
_ARRAY_OF_FOUR = 0x94  # msgpack fixarray header: how every signed body starts


class Signer:
    """Signs envelope bytes with one key and verifies them against all keys."""

    def __init__(self, keys: Mapping[str, str | bytes], signing_key: str | None = None) -> None:
        """``keys``: key id to secret (``str`` secrets are UTF-8 encoded).
        ``signing_key``: the id of the key that signs; may be left out when there
        is only one. Raises ``ConfigurationError`` on a short secret or a bad id."""
        if not keys:
            raise ConfigurationError("signing needs at least one key in signing_keys")
        self._keys: dict[str, bytes] = {}
        for kid, secret in keys.items():
            if not isinstance(kid, str) or not 1 <= len(kid) <= MAX_KID:
                raise ConfigurationError(
                    f"a signing key id must be a string of 1-{MAX_KID} characters"
                )
            if not isinstance(secret, (str, bytes)):
                raise ConfigurationError(f"signing key {kid!r} must be str or bytes")
            key = secret.encode() if isinstance(secret, str) else bytes(secret)
            if len(key) < MIN_KEY_BYTES:
                raise ConfigurationError(
                    f"signing key {kid!r} is {len(key)} bytes; use at least {MIN_KEY_BYTES}"
                    " random bytes (32 recommended)"
                )
            self._keys[kid] = key
        if signing_key is None:
            if len(keys) > 1:
                raise ConfigurationError(
                    f"set signing_key to the id of the key that signs: one of {_ids(keys)}"
                )
            signing_key = next(iter(keys))
        if signing_key not in self._keys:
            raise ConfigurationError(f"signing_key {signing_key!r} is not one of {_ids(keys)}")
        self.kid = signing_key
        """The id of the key that signs."""
        self._key = self._keys[signing_key]

    @property
    def kids(self) -> list[str]:
        """The ids of the keys that verify."""
        return list(self._keys)

    def sign(self, envelope: bytes) -> bytes:
        """The signed body of ``envelope`` bytes."""
        mac = hmac.digest(self._key, envelope, "sha256")
        signed: bytes = msgpack.packb([SIGNED, self.kid, mac, envelope], use_bin_type=True)
        return signed

    def verify(self, body: bytes) -> bytes:
        """The envelope bytes of a signed body; ``SignatureError`` unless signed by a
        known key and unaltered."""
        envelope, kid, mac = _unwrap(body)
        key = self._keys.get(kid)
        if key is None:
            raise SignatureError(f"unknown signing key id {kid!r:.80}")
        if not hmac.compare_digest(hmac.digest(key, envelope, "sha256"), mac):
            raise SignatureError(
                f"bad signature (key {kid!r}): altered, or signed with another secret"
            )
        return envelope

    def __repr__(self) -> str:  # never the secrets
        return f"<Signer signing with {self.kid!r}, verifying {_ids(self._keys)}>"


def _unwrap(body: bytes) -> tuple[bytes, str, bytes]:
    """Envelope, key id and MAC of a signed body, not yet verified."""
    # An unsigned envelope is a map: told apart by its first byte, without unpacking it.
    if body[:1] != bytes([_ARRAY_OF_FOUR]):
        raise SignatureError("the message is not signed")
    try:
        items = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=False)
        tag, kid, mac, envelope = items
    except Exception as exc:  # msgpack raises several unrelated types
        raise SignatureError(f"the message is not signed: not a signed body ({exc})") from None
    if tag != SIGNED or not isinstance(kid, str) or not isinstance(envelope, bytes):
        raise SignatureError("the message is not signed: not a signed body")
    if not isinstance(mac, bytes) or len(mac) != 32:
        raise SignatureError(f"bad signature (key {kid!r:.80}): not 32 bytes of HMAC-SHA256")
    return envelope, kid, mac


def _ids(keys: Mapping[str, Any]) -> str:
    return ", ".join(repr(kid) for kid in keys)


class SignedCodec(Codec):
    """A codec that signs what it encodes and verifies what it decodes.

    Used in place of ``Codec`` only when signing is on, so that the unsigned hot
    path has no extra step.
    """

    def __init__(self, signer: Signer, max_message_size: int = DEFAULT_MAX_SIZE) -> None:
        super().__init__(max_message_size)
        self.signer = signer

    def encode(self, message: Message) -> bytes:
        """Encode and sign a message; ``PayloadTooLarge`` if the signed body is above
        the size limit."""
        body = self.signer.sign(super().encode(message))
        if len(body) > self.max_message_size:
            raise PayloadTooLarge(len(body), self.max_message_size)
        return body

    def decode(self, data: bytes) -> Message:
        """Verify, then decode and validate a message; ``SignatureError`` (a
        ``DecodeError``) if the signature does not hold."""
        if len(data) > self.max_message_size:  # before unpacking anything
            raise DecodeError(f"{len(data)} bytes is above the limit of {self.max_message_size}")
        return Message.from_map(self.unpack(self.signer.verify(data)))

    def peek(self, data: bytes) -> Any:
        """The envelope map of a signed body, unverified and unvalidated (for display)."""
        try:
            return self.unpack(_unwrap(data)[0])
        except SignatureError:
            return super().peek(data)

    def peek_field(self, data: bytes, name: str) -> Any:
        """One field of a signed body's envelope, unverified (for display)."""
        try:
            inner = _unwrap(data)[0]
        except SignatureError:
            inner = data
        return super().peek_field(inner, name)


def codec_for(settings: Settings) -> Codec:
    """The codec of an app with these settings: signing when ``signing_keys`` are set."""
    if not settings.signing_keys:
        if settings.signing_key:
            raise ConfigurationError("signing_key is set but signing_keys is empty")
        return Codec(settings.max_message_size)
    signer = Signer(settings.signing_keys, settings.signing_key)
    return SignedCodec(signer, settings.max_message_size)
