"""The access store contract, on every broker kind: keys and the audit log."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BROKER_KINDS, broker_url

from gopherq.access.audit import AuditEntry
from gopherq.access.keys import ApiKey, digest
from gopherq.access.roles import Role
from gopherq.access.store import AccessStore, open_store
from gopherq.brokers import Broker, open_broker


@pytest.fixture(params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    broker = open_broker(broker_url(request.param, tmp_path))
    yield broker
    broker.close()


@pytest.fixture
def store(broker: Broker) -> Iterator[AccessStore]:
    store = open_store(broker, "shop")
    yield store
    store.close()


def make_key(name: str, key_id: str = "", created: float = 100.0, **fields: object) -> ApiKey:
    salt = b"s" * 16
    return dataclasses.replace(
        ApiKey(
            id=key_id or name.encode().hex()[:12].ljust(12, "0"),
            name=name,
            role=Role.OPERATOR,
            created=created,
            salt=salt,
            digest=digest(salt, "secret-" + name),
        ),
        **fields,  # type: ignore[arg-type]
    )


def entry(time: float, action: str = "jobs.create", **fields: object) -> AuditEntry:
    values: dict[str, object] = {
        "time": time,
        "key": "ci",
        "role": "submitter",
        "action": action,
        "target": "add",
        "client": "127.0.0.1",
        "status": 201,
        "method": "POST",
        "path": "/api/v1/jobs",
    }
    return AuditEntry(**{**values, **fields})  # type: ignore[arg-type]


def test_keys_round_trip(store: AccessStore) -> None:
    full = make_key(
        "ci", expires=500.0, tasks=("add", "mul"), queues=("math",), rate="10/s", created=1.5
    )
    plain = make_key("ops", created=2.5)
    assert store.add_key(full) and store.add_key(plain)
    assert store.key(full.id) == full
    assert store.key(plain.id) == plain
    assert store.key("000000000000") is None
    assert [k.name for k in store.list_keys()] == ["ci", "ops"]


def test_names_are_unique_revoked_or_not(store: AccessStore) -> None:
    assert store.add_key(make_key("ci", "aaaaaaaaaaaa"))
    assert not store.add_key(make_key("ci", "bbbbbbbbbbbb"))
    assert store.key("bbbbbbbbbbbb") is None
    store.revoke("ci", 5.0)
    assert not store.add_key(make_key("ci", "cccccccccccc"))
    assert len(store.list_keys()) == 1


def test_revoke_keeps_the_first_time(store: AccessStore) -> None:
    key = make_key("ci")
    store.add_key(key)
    revoked = store.revoke("ci", 200.0)
    assert revoked is not None and revoked.revoked == 200.0
    again = store.revoke("ci", 300.0)
    assert again is not None and again.revoked == 200.0
    found = store.key(key.id)
    assert found is not None and found.revoked == 200.0 and not found.active(250.0)
    assert store.revoke("nobody", 1.0) is None


def test_apps_sharing_a_broker_keep_their_own(broker: Broker, store: AccessStore) -> None:
    other = open_store(broker, "billing")
    try:
        store.add_key(make_key("ci"))
        other.append([entry(10.0)], 0.0)
        assert other.list_keys() == []
        assert other.add_key(make_key("ci"))  # the same name in another app
        assert store.entries() == []
    finally:
        other.close()


def test_audit_newest_first_with_since_and_limit(store: AccessStore) -> None:
    store.append([entry(10.0, "a"), entry(30.0, "c")], 0.0)
    store.append([entry(20.0, "b")], 0.0)
    store.append([entry(20.0, "b")], 0.0)  # alike entries are both kept
    assert [e.action for e in store.entries()] == ["c", "b", "b", "a"]
    assert [e.action for e in store.entries(since=20.0)] == ["c", "b", "b"]
    assert [e.action for e in store.entries(limit=2)] == ["c", "b"]
    assert store.entries()[0] == entry(30.0, "c")


def test_audit_entries_without_a_key(store: AccessStore) -> None:
    denied = entry(5.0, "keys.create", key=None, role=None, status=401, target="/api/v1/keys")
    store.append([denied], 0.0)
    assert store.entries() == [denied]


def test_audit_retention_drops_old_entries_on_write(store: AccessStore) -> None:
    store.append([entry(10.0, "old"), entry(50.0, "kept")], 0.0)
    store.append([entry(60.0, "new")], 40.0)
    assert [e.action for e in store.entries()] == ["new", "kept"]
    store.append([], 55.0)
    assert [e.action for e in store.entries()] == ["new"]


def test_the_sqlite_store_lives_in_the_broker_file(tmp_path: Path) -> None:
    url = broker_url("sqlite", tmp_path)
    broker = open_broker(url)
    store = open_store(broker, "shop")
    try:
        store.add_key(make_key("ci"))
        data = (tmp_path / "gopherq.db").read_bytes() + _wal(tmp_path)
        assert b"access_keys" in data
        assert b"secret-ci" not in data
    finally:
        store.close()
        broker.close()


def _wal(tmp_path: Path) -> bytes:
    wal = tmp_path / "gopherq.db-wal"
    return wal.read_bytes() if wal.exists() else b""


def test_audit_keeps_the_newest_max_count(store: AccessStore) -> None:
    store.append([entry(float(t), f"a{t}") for t in range(1, 6)], 0.0, 3)
    assert [e.action for e in store.entries()] == ["a5", "a4", "a3"]
    store.append([entry(6.0, "a6")], 0.0, 2)
    assert [e.action for e in store.entries()] == ["a6", "a5"]
    store.append([entry(7.0, "a7")], 0.0, None)
    assert len(store.entries()) == 3
