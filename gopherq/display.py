"""How values are shown to operators: times with their zone, and JSON for any value.

Every ``--json`` output of the ``gopherq`` command goes through ``to_json``, and
every time in a table or a log line through ``local_time``, so that they read
the same everywhere (docs/cli.md, "Output"):

- times: ISO 8601 in the local time zone with its UTC offset,
  ``2025-01-01 09:30:00+01:00`` (a space between date and time, as RFC 3339
  allows);
- JSON: values msgpack carries but JSON does not become ``{"$bytes": "<base64>"}``
  for bytes, ISO 8601 text for datetimes, dates and times, text for UUIDs and
  decimals, arrays for tuples and sets; a map key that is not text becomes its
  JSON text.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid
from typing import Any

BYTES_MARKER = "$bytes"
"""The key of the one-key JSON object that stands for bytes: ``{"$bytes": "<base64>"}``."""


def local_time(timestamp: float, *, ms: bool = False) -> str:
    """Unix seconds as ISO 8601 local time with its offset: ``2025-01-01 09:30:00+01:00``."""
    moment = dt.datetime.fromtimestamp(timestamp).astimezone()
    return moment.isoformat(sep=" ", timespec="milliseconds" if ms else "seconds")


def to_json(data: Any, *, indent: int | None = None) -> str:
    """``data`` as JSON text (see the module docstring for the types JSON lacks)."""
    return json.dumps(jsonable(data), indent=indent, ensure_ascii=False)


def jsonable(value: Any) -> Any:
    """``value`` with every part JSON lacks replaced (see the module docstring)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(item) for item in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {BYTES_MARKER: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return str(value)


def _key(key: Any) -> str | int | float | bool | None:
    if key is None or isinstance(key, (str, int, float, bool)):
        return key  # json writes these as text itself
    return json.dumps(jsonable(key), ensure_ascii=False)
