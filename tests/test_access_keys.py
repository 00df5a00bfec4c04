"""``app.access``: keys (secrets, hashing, expiry, revocation), rates, the audit writer."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import BROKER_KINDS, broker_url

from gopherq import GopherQ
from gopherq.access import audit
from gopherq.access import keys as keys_module
from gopherq.access.audit import AuditEntry, AuditWriter
from gopherq.access.keys import AccessError, FieldError, key_id_of
from gopherq.access.manager import parse_since
from gopherq.access.rate import Rate, TokenBuckets, parse_rate
from gopherq.access.roles import Role


@pytest.fixture(params=BROKER_KINDS)
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GopherQ]:
    app = GopherQ("shop", broker=broker_url(request.param, tmp_path))
    yield app
    app.close()


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_create_shows_the_secret_once_and_stores_a_salted_digest(app: GopherQ) -> None:
    key, secret = app.access.create("ci", "submitter", tasks=["add"], queues=["math"])
    assert secret.startswith(f"gq_{key.id}_") and key_id_of(secret) == key.id
    assert len(secret) == len("gq_") + 12 + 1 + 43  # 32 random bytes, base64url
    assert key.role is Role.SUBMITTER and key.tasks == ("add",) and key.queues == ("math",)
    stored = app.access.store.key(key.id)
    assert stored is not None and stored.digest and len(stored.salt) == 16
    assert secret.encode() not in stored.digest + stored.salt
    assert secret not in repr(stored) and "digest" not in stored.to_map()
    assert app.access.verify(secret) == stored
    _, other = app.access.create("ci2", "viewer")
    assert app.access.store.key(key_id_of(other) or "") != stored  # a salt per key


def test_the_secret_is_nowhere_in_the_store(app: GopherQ, tmp_path: Path) -> None:
    _, secret = app.access.create("ci", "admin")
    random_part = secret.rsplit("_", 1)[1] if secret.count("_") == 2 else secret[16:]
    if app.broker_url.startswith("sqlite"):
        data = b"".join(p.read_bytes() for p in tmp_path.glob("gopherq.db*"))
        assert random_part.encode() not in data
    elif app.broker_url.startswith("redis"):
        store = app.access.store
        client = store._conn.client  # type: ignore[attr-defined]
        prefix = store._conn.config.prefix  # type: ignore[attr-defined]
        for name in client.scan_iter(match=prefix + ":*"):
            kind = client.type(name)
            values = client.hvals(name) if kind == b"hash" else client.zrange(name, 0, -1)
            assert all(random_part.encode() not in v for v in values)


def test_digests_are_compared_in_constant_time(
    app: GopherQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, secret = app.access.create("ci", "viewer")
    calls: list[tuple[bytes, bytes]] = []
    real = keys_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    assert app.access.verify(secret) is not None
    assert app.access.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert len(calls) == 2


@pytest.mark.parametrize(
    "token",
    ["", "gq_", "nope", "Bearer x", "gq_zzzzzzzzzzzz_" + "a" * 43, "gq_0123456789ab_short"],
)
def test_malformed_and_unknown_secrets_are_refused(app: GopherQ, token: str) -> None:
    app.access.create("ci", "viewer")
    assert app.access.verify(token) is None
    assert app.access.verify("gq_0123456789ab_" + "a" * 43) is None  # well formed, unknown


def test_expiry(app: GopherQ) -> None:
    clock = app.access.clock = Clock()
    key, secret = app.access.create("ci", "viewer", expires="90d")
    assert key.expires == clock.now + 90 * 86400
    assert app.access.verify(secret) is not None
    clock.now += 90 * 86400
    assert app.access.verify(secret) is None
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    dated, _ = app.access.create("dated", "viewer", expires=at)
    assert dated.expires == at.timestamp()
    later, _ = app.access.create("later", "viewer", expires=dt.timedelta(hours=2))
    assert later.expires == clock.now + 7200


def test_revocation(app: GopherQ) -> None:
    key, secret = app.access.create("ci", "operator")
    revoked = app.access.revoke("ci")
    assert revoked.id == key.id and revoked.revoked is not None
    assert app.access.verify(secret) is None
    assert [k.revoked is not None for k in app.access.list_keys()] == [True]
    with pytest.raises(AccessError, match="no key named 'nobody'"):
        app.access.revoke("nobody")


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("name", {"name": "bad name"}),
        ("name", {"name": "x" * 65}),
        ("name", {"name": "../etc"}),
        ("role", {"role": "root"}),
        ("expires", {"expires": "soon"}),
        ("rate", {"rate": "5/q"}),
        ("tasks", {"tasks": ["bad\x00task"]}),
    ],
)
def test_bad_arguments_name_their_field(
    app: GopherQ, field: str, kwargs: dict[str, object]
) -> None:
    args: dict[str, object] = {"name": "ci", "role": "viewer", **kwargs}
    with pytest.raises(FieldError) as caught:
        app.access.create(args.pop("name"), args.pop("role"), **args)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert app.access.list_keys() == []


def test_a_taken_name_is_refused(app: GopherQ) -> None:
    app.access.create("ci", "viewer")
    with pytest.raises(AccessError, match="exists already"):
        app.access.create("ci", "admin")


def test_audit_records_with_retention(app: GopherQ) -> None:
    clock = app.access.clock = Clock()
    app.settings = dataclasses.replace(app.settings, audit_retention=100.0)
    old = AuditEntry(clock.now - 200, "ci", "admin", "keys.create", "x", "127.0.0.1", 201)
    new = AuditEntry(clock.now - 50, "ci", "admin", "keys.revoke", "x", "127.0.0.1", 200)
    app.access.store.append([old], 0.0)
    app.access.record([new])
    assert app.access.audit() == [new]
    assert app.access.audit(since=clock.now - 10) == []
    clock.now += 60
    app.access.cleanup()
    assert app.access.audit() == []


def test_parse_since() -> None:
    assert parse_since("1h", 10_000.0) == 6_400.0
    assert parse_since("1700000000", 0.0) == 1_700_000_000.0
    assert parse_since("2026-01-01T00:00:00+00:00", 0.0) == 1_767_225_600.0
    with pytest.raises(ValueError, match="bad time"):
        parse_since("yesterday", 0.0)


def test_rates() -> None:
    assert parse_rate("100/s") == Rate(100, 1.0)
    assert parse_rate("6000/m") == Rate(6000, 60.0) and str(Rate(6000, 60.0)) == "6000/m"
    assert parse_rate("50") == Rate(50, 1.0)
    assert parse_rate("1000/d") == Rate(1000, 86400.0) and str(parse_rate("1000/D")) == "1000/d"
    assert parse_rate("20/sec") == Rate(20, 1.0) and parse_rate("3/min") == Rate(3, 60.0)
    for off in ("none", "off", "", " None ", None):
        assert parse_rate(off) is None
    for bad in ("0/s", "x/s", "5/q", "-1"):
        with pytest.raises(ValueError, match=f"send rate {bad!r} is not a rate: expected"):
            parse_rate(bad)


def test_token_buckets() -> None:
    clock = Clock(0.0)
    buckets = TokenBuckets(clock)
    rate = Rate(2, 1.0)
    assert buckets.take("a", rate) == 0.0
    assert buckets.take("a", rate) == 0.0
    assert buckets.take("a", rate) == pytest.approx(0.5)
    assert buckets.take("b", rate) == 0.0  # one bucket per key
    clock.now = 0.5
    assert buckets.take("a", rate) == 0.0
    clock.now = 10.0
    assert buckets.take("a", rate, 5) == 0.0  # larger than the bucket: passes when full
    assert buckets.take("a", rate, 1) == pytest.approx(2.0)  # and leaves it in debt


def test_audit_writer_batches_flushes_and_survives_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    written: list[AuditEntry] = []
    fail = threading.Event()

    def write(entries: Sequence[AuditEntry]) -> None:
        if fail.is_set():
            raise RuntimeError("store down")
        written.extend(entries)

    writer = AuditWriter(write)
    entries = [AuditEntry(float(i), None, None, "-", "/", "h", 401) for i in range(50)]
    for e in entries:
        writer.submit(e)
    assert writer.flush(5.0)
    assert written == entries
    fail.set()
    with caplog.at_level(logging.ERROR, "gopherq.access"):
        writer.submit(entries[0])
        assert writer.flush(5.0)
    assert writer.dropped == 1 and "audit log write failed" in caplog.text
    writer.close()


def test_audit_writer_gathers_entries_into_one_write_and_flush_cuts_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audit, "LINGER", 30.0)  # only a full batch or a flush writes
    writes: list[int] = []
    writer = AuditWriter(lambda entries: writes.append(len(entries)))
    entries = [AuditEntry(float(i), None, None, "-", "/", "h", 401) for i in range(audit.BATCH)]
    for e in entries[:10]:
        writer.submit(e)
    time.sleep(0.2)
    assert writes == []  # gathering
    began = time.monotonic()
    assert writer.flush(10.0)
    assert time.monotonic() - began < 10.0  # at once, not after the linger
    assert writes == [10]
    for e in entries:
        writer.submit(e)
    deadline = time.monotonic() + 10.0
    while len(writes) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writes == [10, audit.BATCH]  # a full batch does not wait
    writer.close()


def test_audit_writer_backlog_is_bounded() -> None:
    gate, writing = threading.Event(), threading.Event()

    def write(entries: object) -> None:
        writing.set()
        gate.wait(5.0)

    writer = AuditWriter(write, backlog=2)
    entries = [AuditEntry(float(i), None, None, "-", "/", "h", 401) for i in range(10)]
    writer.submit(entries[0])
    assert writing.wait(5.0)  # the writer holds the first entry; two more may wait
    for e in entries[1:]:
        writer.submit(e)
    assert writer.dropped == 7
    gate.set()
    writer.close()


def test_audit_entries_queued_at_exit_are_written_without_close(tmp_path: Path) -> None:
    # As when the API is mounted in another app, whose lifespan never closes the writer.
    out = tmp_path / "audit.txt"
    program = f"""
import time
from gopherq.access.audit import AuditEntry, AuditWriter

def write(entries):
    time.sleep(0.3)  # a slow store: the process exits while this runs
    with open({str(out)!r}, "a") as f:
        f.writelines(e.action + "\\n" for e in entries)

writer = AuditWriter(write)
for action in ("jobs.create", "queues.pause"):
    writer.submit(AuditEntry(0.0, "k", "admin", action, "t", "h", 200))
"""
    subprocess.run([sys.executable, "-c", program], check=True, timeout=30)
    assert out.read_text().split() == ["jobs.create", "queues.pause"]
