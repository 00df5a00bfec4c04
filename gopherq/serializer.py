"""The msgpack codec: messages and values to bytes and back, safely.

Extension types carry what msgpack lacks; bytes travel natively::

    code  type                 payload
    1     datetime (aware)     ISO 8601 text with its UTC offset
    2     datetime (naive)     ISO 8601 text
    3     date                 ISO 8601 text
    4     UUID                 16 bytes
    5     Decimal              text

msgpack's own Timestamp extension (code -1), which JavaScript encoders use for
every ``Date``, is decoded too, into an aware UTC ``datetime``; gopherq itself
sends datetimes as code 1 or 2, which keep their offset or naivety.

Decoding never runs code (no pickle): unknown extension codes are rejected, and
the input size and nesting depth are bounded. Map keys that are tuples travel
as arrays and come back as tuples.
"""

from __future__ import annotations

import datetime as dt
import decimal
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import msgpack

from gopherq.errors import DecodeError, PayloadTooLarge, SerializationError
from gopherq.message import Message

DEFAULT_MAX_SIZE = 1024 * 1024
MAX_DEPTH = 64
_SMALL_BODY = 512
"""Bodies up to this size are decoded whole by ``Codec.peek_field``."""

_EXT_DATETIME_AWARE = 1
_EXT_DATETIME_NAIVE = 2
_EXT_DATE = 3
_EXT_UUID = 4
_EXT_DECIMAL = 5


def _encode_ext(value: Any) -> msgpack.ExtType:
    if isinstance(value, dt.datetime):
        code = _EXT_DATETIME_NAIVE if value.tzinfo is None else _EXT_DATETIME_AWARE
        return msgpack.ExtType(code, value.isoformat().encode())
    if isinstance(value, dt.date):
        return msgpack.ExtType(_EXT_DATE, value.isoformat().encode())
    if isinstance(value, uuid.UUID):
        return msgpack.ExtType(_EXT_UUID, value.bytes)
    if isinstance(value, decimal.Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(value).encode())
    if isinstance(value, (set, frozenset)):
        raise TypeError("sets are not supported; pass a list")
    raise TypeError(f"cannot encode {type(value).__name__}")


def _decode_ext(code: int, data: bytes) -> Any:
    try:
        if code in (_EXT_DATETIME_AWARE, _EXT_DATETIME_NAIVE):
            return dt.datetime.fromisoformat(data.decode())
        if code == _EXT_DATE:
            return dt.date.fromisoformat(data.decode())
        if code == _EXT_UUID:
            return uuid.UUID(bytes=data)
        if code == _EXT_DECIMAL:
            return decimal.Decimal(data.decode())
    except (ValueError, UnicodeDecodeError, decimal.InvalidOperation) as exc:
        raise DecodeError(f"malformed extension value (code {code}): {exc}") from exc
    raise DecodeError(f"unknown msgpack extension type {code}")


def _find_unencodable(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Yield (path, reason) for each value below ``value`` that the codec cannot carry."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _find_unencodable(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, bytes)):
                yield f"{path}[{key!r}]", f"map key of type {type(key).__name__}"
            yield from _find_unencodable(item, f"{path}[{key!r}]")
    elif value is None or isinstance(value, (str, bytes, bool, int, float)):
        if isinstance(value, int) and not -(2**63) <= value < 2**64:
            yield path, "integer out of the 64-bit range"
    else:
        try:
            _encode_ext(value)
        except TypeError as exc:
            yield path, str(exc)


_UNPACK: dict[str, Any] = {
    "ext_hook": _decode_ext,
    "raw": False,
    "strict_map_key": False,
    "timestamp": 3,  # the Timestamp extension (code -1) as an aware UTC datetime
    "use_list": True,
}


def _map_with_tuple_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    return {_frozen(key) if isinstance(key, list) else key: value for key, value in pairs}


def _frozen(items: list[Any]) -> tuple[Any, ...]:
    """A decoded array used as a map key, back to the (hashable) tuple it was."""
    return tuple(_frozen(item) if isinstance(item, list) else item for item in items)


def _describe(exc: Exception) -> str:
    """What a msgpack decoding error means; some carry no text (FormatError, StackError)."""
    if isinstance(exc, msgpack.FormatError):
        return "the reserved byte 0xc1, which starts no msgpack value"
    if isinstance(exc, msgpack.StackError):
        return "values nested too deeply for the decoder"
    return str(exc) or f"{type(exc).__name__} from the msgpack decoder"


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether anything lies more than ``limit`` arrays and maps deep in ``value``."""
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return False
    if limit == 0:
        return len(value) > 0
    # Only containers can nest: scalars are not worth a call.
    return any(isinstance(x, (list, dict)) and _depth_exceeds(x, limit - 1) for x in value)


class Codec:
    """Encodes and decodes messages and values, enforcing the size limit."""

    def __init__(self, max_message_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_message_size = max_message_size
        self._local = threading.local()

    def _packer(self) -> msgpack.Packer:
        """This thread's packer: made once, not per call as ``msgpack.packb`` does
        (half the cost of packing a small message). One per thread, since ``default``
        runs Python code mid-pack; a failed pack leaves it empty."""
        try:
            packer: msgpack.Packer = self._local.packer
        except AttributeError:
            packer = self._local.packer = msgpack.Packer(
                default=_encode_ext, use_bin_type=True, datetime=False
            )
        return packer

    def pack(self, value: Any, *, what: str = "value") -> bytes:
        """Encode any supported value; raise ``SerializationError`` naming the bad part."""
        try:
            packed: bytes = self._packer().pack(value)
        except (TypeError, ValueError, OverflowError) as exc:
            problems = list(_find_unencodable(value, what))
            if problems:
                path, reason = problems[0]
                raise SerializationError(f"cannot serialize {path}: {reason}") from None
            raise SerializationError(f"cannot serialize {what}: {exc}") from None
        return packed

    def unpack(self, data: bytes) -> Any:
        """Decode bytes made by ``pack``; raise ``DecodeError`` on anything else."""
        if not data:  # msgpack says "incomplete input": say what it is (a broker entry's)
            raise DecodeError("not valid msgpack: empty body, the broker entry holds no message")
        if len(data) > self.max_message_size:
            raise DecodeError(f"{len(data)} bytes is above the limit of {self.max_message_size}")
        try:
            try:
                value = msgpack.unpackb(data, **_UNPACK)
            except TypeError:  # an array as a map key (a tuple when packed): rare, so slower
                value = msgpack.unpackb(data, object_pairs_hook=_map_with_tuple_keys, **_UNPACK)
        except DecodeError:
            raise
        except Exception as exc:  # msgpack raises several unrelated types
            raise DecodeError(f"not valid msgpack: {_describe(exc)}") from exc
        if _depth_exceeds(value, MAX_DEPTH):
            raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels")
        return value

    def peek(self, data: bytes) -> Any:
        """The envelope map in a message body, not validated (for display); raise
        ``DecodeError`` if unreadable."""
        return self.unpack(data)

    def peek_field(self, data: bytes, name: str) -> Any:
        """One top-level field of an encoded map, the other fields skipped undecoded
        (a dead letter's task name in a list, without its arguments); None if ``data``
        is not a map, has no such field, or cannot be read."""
        if not data or len(data) > self.max_message_size:
            return None
        if len(data) <= _SMALL_BODY:  # decoding it whole is cheaper than an Unpacker
            try:
                whole = msgpack.unpackb(data, **_UNPACK)
            except Exception:  # msgpack raises several unrelated types; any means unreadable
                return None
            return whole.get(name) if isinstance(whole, dict) else None
        unpacker = msgpack.Unpacker(max_buffer_size=len(data), **_UNPACK)
        unpacker.feed(data)
        try:
            for _ in range(unpacker.read_map_header()):
                if unpacker.unpack() == name:
                    return unpacker.unpack()
                unpacker.skip()
        except Exception:  # msgpack raises several unrelated types; any means unreadable
            return None
        return None

    def encode(self, message: Message) -> bytes:
        """Encode a message; raise ``PayloadTooLarge`` above the size limit."""
        mapping = message.to_map()
        try:
            body: bytes = self._packer().pack(mapping)
        except (TypeError, ValueError, OverflowError) as exc:
            for part in ("args", "kwargs", "headers"):
                self.pack(getattr(message, part), what=part)
            raise SerializationError(f"cannot serialize message {message.id}: {exc}") from None
        if len(body) > self.max_message_size:
            raise PayloadTooLarge(len(body), self.max_message_size)
        return body

    def decode(self, data: bytes) -> Message:
        """Decode and validate a message; raise ``DecodeError`` with the reason."""
        return Message.from_map(self.unpack(data))
