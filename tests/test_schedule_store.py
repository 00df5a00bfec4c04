"""The schedule store contract: every store (memory, SQLite, Redis) passes this suite.

Two "beats" are two store handles on one broker's storage (the same instance
for memory). Lease expiry is tested with short leases in real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from gopherq.brokers import Broker
from gopherq.schedules import Claim, EntryState, ScheduleStore, open_store

SHORT = 1.0
"""A lease term for the tests of lapsing: long enough that a busy machine's delays
(a tenth of a second and more) stay well inside its margins."""


@pytest.fixture
def stores(make_broker: Callable[..., Broker]) -> Iterator[tuple[ScheduleStore, ScheduleStore]]:
    """Two handles on one store, as two beat processes hold."""
    first, second = open_store(make_broker(), "app"), open_store(make_broker(), "app")
    yield first, second
    first.close()
    second.close()


def claim(name: str, expected: int | None, tick: int | None, pending: bool = True) -> Claim:
    return Claim(name, expected, tick, pending, 0.0, "every 1")


def test_one_owner_at_a_time(stores: tuple[ScheduleStore, ScheduleStore]) -> None:
    a, b = stores
    lease = a.acquire("a", 10)
    assert lease.owner == "a"
    assert lease.now <= lease.expires <= lease.now + 10.01
    held = b.acquire("b", 10)
    assert held.owner == "a"  # b learns who leads, and until when
    assert held.expires == pytest.approx(lease.expires, abs=0.05)
    assert a.acquire("a", 10).owner == "a"  # a renewal
    b.release("b")  # not b's to release
    assert b.acquire("b", 10).owner == "a"
    a.release("a")
    assert b.acquire("b", 10).owner == "b"


def test_a_lease_lapses_unless_renewed(stores: tuple[ScheduleStore, ScheduleStore]) -> None:
    a, b = stores
    assert a.acquire("a", SHORT).owner == "a"
    time.sleep(SHORT / 2)
    # Renewed for a longer term, so that a busy machine's delays stay inside it.
    renewed = time.monotonic()
    assert a.acquire("a", 3 * SHORT).owner == "a"
    time.sleep(SHORT * 0.7)  # past the first term, well within the renewed one
    assert b.acquire("b", SHORT).owner == "a"
    time.sleep(max(0.0, renewed + 3 * SHORT + 0.1 - time.monotonic()))
    assert b.acquire("b", SHORT).owner == "b"
    assert a.claim("a", [claim("e", None, 1)]) == [False]  # a no longer leads


def test_claims_are_compare_and_set_fenced_by_the_lease(
    stores: tuple[ScheduleStore, ScheduleStore],
) -> None:
    a, b = stores
    a.acquire("a", 10)
    assert b.claim("b", [claim("e", None, 100)]) == [False]  # b does not lead
    assert a.claim("a", [claim("e", None, 100), claim("f", 5, 6)]) == [True, False]
    assert a.states() == {"e": EntryState(100, True, 0.0, "every 1", None)}
    assert a.claim("a", [claim("e", None, 101)]) == [False]  # stale expectation
    assert a.claim("a", [claim("e", 100, 101), claim("g", None, None, pending=False)]) == [
        True,
        True,
    ]
    states = b.states()
    assert states["e"].tick == 101 and states["e"].pending
    assert states["g"] == EntryState(None, False, 0.0, "every 1", None)


def test_confirm_clears_pending_at_that_tick_only(
    stores: tuple[ScheduleStore, ScheduleStore],
) -> None:
    a, b = stores
    a.acquire("a", 10)
    a.claim("a", [claim("e", None, 100)])
    b.confirm([("e", 99)])  # an old tick: nothing
    assert a.states()["e"].pending
    b.confirm([("e", 100), ("nobody", 1)])
    assert a.states()["e"] == EntryState(100, False, 0.0, "every 1", None)


def test_since_only_rises_and_resume_skips_the_pause(
    stores: tuple[ScheduleStore, ScheduleStore],
) -> None:
    a, b = stores
    a.acquire("a", 10)
    a.claim("a", [Claim("e", None, 10, False, 500.0, "fp")])
    a.claim("a", [Claim("e", 10, 11, False, 400.0, "fp")])
    assert a.states()["e"].since == 500.0
    version = a.version()
    b.set_paused("e", True)
    assert a.version() != version
    assert a.states()["e"].paused is True
    before = time.time()
    b.set_paused("e", False)
    state = a.states()["e"]
    assert state.paused is False
    assert before - 1 <= state.since <= time.time() + 1
    assert state.tick == 11
    # A claim keeps the pause override.
    b.set_paused("e", True)
    assert a.claim("a", [Claim("e", 11, 12, True, 0.0, "fp")]) == [True]
    assert a.states()["e"].paused is True
    b.set_paused("unseen", True)  # an entry without a cursor yet
    assert a.states()["unseen"] == EntryState(None, False, 0.0, "", True)


def test_dynamic_entries_and_their_version(stores: tuple[ScheduleStore, ScheduleStore]) -> None:
    a, b = stores
    v0, entries = a.entries()
    assert entries == {}
    a.put("one", b"\x01spec")
    a.put("two", b"spec2")
    v1, entries = b.entries()
    assert entries == {"one": b"\x01spec", "two": b"spec2"}
    assert v1 != v0 and b.version() == v1
    a.put("one", b"new")
    assert b.entries()[1]["one"] == b"new"
    assert b.version() != v1
    a.acquire("a", 10)
    a.claim("a", [claim("two", None, 5)])
    assert b.delete("two") is True
    assert b.delete("two") is False
    assert a.entries()[1] == {"one": b"new"}
    assert "two" not in a.states()  # its cursor went with it


def test_apps_sharing_a_broker_keep_apart(make_broker: Callable[..., Broker]) -> None:
    broker = make_broker()
    mine, theirs = open_store(broker, "mine"), open_store(broker, "theirs")
    assert mine.acquire("a", 10).owner == "a"
    assert theirs.acquire("b", 10).owner == "b"
    mine.put("e", b"spec")
    assert mine.claim("a", [claim("e", None, 1)]) == [True]
    assert theirs.entries()[1] == {} and theirs.states() == {}
    assert theirs.claim("b", [claim("e", None, 7)]) == [True]
    assert mine.states()["e"].tick == 1
