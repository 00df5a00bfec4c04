"""Redis access store: keys beside the broker's, under the broker URL's prefix.

Every key carries the hash tag ``{access}``, so on Redis Cluster they share one
slot. ``P`` is the prefix (default ``gq``), ``N`` the namespace (the app's name)::

    P:{access}:N:keys     hash  key id -> the key's record as JSON (salt and digest
                                of the secret, never the secret)
    P:{access}:N:names    hash  key name -> key id: names are unique
    P:{access}:N:revoked  hash  key id -> Unix time it was revoked
    P:{access}:N:audit    zset  audit entries as JSON, scored by time
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from gopherq.access.audit import AuditEntry
from gopherq.access.keys import ApiKey
from gopherq.access.store import AccessStore
from gopherq.stores.redis import Client, Connection

_ADD = """
-- KEYS names, keys; ARGV name, id, record: stores the key unless the name is taken
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

_REVOKE = """
-- KEYS names, keys, revoked; ARGV name, time: returns {record, revoked} or nil
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then
  return nil
end
redis.call('HSETNX', KEYS[3], id, ARGV[2])
return {redis.call('HGET', KEYS[2], id), redis.call('HGET', KEYS[3], id)}
"""


class RedisAccessStore(AccessStore):
    """Keys and the audit log in the broker's Redis. See the module docstring."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self._conn = Connection(url)
        base = f"{self._conn.config.prefix}:{{access}}:{namespace}:"
        self._keys, self._names = base + "keys", base + "names"
        self._revoked, self._audit = base + "revoked", base + "audit"

    def add_key(self, key: ApiKey) -> bool:
        """Store a new key unless its name is taken (not retried: a lost answer to a
        stored key would read as a taken name)."""
        record = json.dumps(key.to_stored())
        args = [key.name, key.id, record]
        return bool(self._eval(_ADD, [self._names, self._keys], args, retry=False))

    def key(self, key_id: str) -> ApiKey | None:
        """The key with this id."""

        def read(client: Client) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.hget(self._keys, key_id)
            pipe.hget(self._revoked, key_id)
            return pipe.execute()

        record, revoked = self._conn.call(read)
        return None if record is None else _key(record, revoked)

    def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""

        def read(client: Client) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(self._keys)
            pipe.hgetall(self._revoked)
            return pipe.execute()

        records, revoked = self._conn.call(read)
        found = [_key(record, revoked.get(key_id)) for key_id, record in records.items()]
        return sorted(found, key=lambda k: (k.created, k.name))

    def revoke(self, name: str, at: float) -> ApiKey | None:
        """Mark the named key revoked."""
        keys = [self._names, self._keys, self._revoked]
        answer = self._eval(_REVOKE, keys, [name, repr(at)])
        return None if answer is None else _key(answer[0], answer[1])

    def append(
        self, entries: Sequence[AuditEntry], keep_after: float, max_count: int | None = None
    ) -> None:
        """Append, and delete the old entries. Each member carries a random nonce:
        entries alike stay apart, and a retried write adds nothing."""
        nonces = os.urandom(4 * len(entries)).hex()
        members = {
            json.dumps({**e.to_map(), "n": nonces[8 * i : 8 * i + 8]}): e.time
            for i, e in enumerate(entries)
        }

        def write(client: Client) -> None:
            pipe = client.pipeline(transaction=False)
            if members:
                pipe.zadd(self._audit, members)
            pipe.zremrangebyscore(self._audit, "-inf", f"({keep_after!r}")
            if max_count is not None:
                pipe.zremrangebyrank(self._audit, 0, -max_count - 1)
            pipe.execute()

        self._conn.call(write)

    def entries(self, since: float | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""
        low = "-inf" if since is None else repr(since)
        found: list[Any] = self._conn.call(
            lambda c: c.zrevrangebyscore(self._audit, "+inf", low, start=0, num=limit)
        )
        return [AuditEntry.from_map(json.loads(member)) for member in found]

    def close(self) -> None:
        """Close this process's connections."""
        self._conn.close()

    def _eval(self, source: str, keys: list[str], args: list[Any], *, retry: bool = True) -> Any:
        return self._conn.eval_inline(source, keys, args, retry=retry)


def _key(record: bytes, revoked: bytes | None) -> ApiKey:
    key = ApiKey.from_stored(json.loads(record))
    return key if revoked is None else replace(key, revoked=float(revoked))
