"""Shared fixtures: brokers and result backends of every kind, isolated per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import pytest
import services
from minimal_broker import DictBroker

from gopherq.brokers import Broker, open_broker
from gopherq.results import ResultBackend, open_backend

BROKER_KINDS = ["memory", "sqlite", "redis"]
MINIMAL = "minimal"
"""The broker of the hot path alone (tests/minimal_broker.py): a kind for the contract
suite's hot-path tests, not one of ``BROKER_KINDS``."""
IN_PROCESS = frozenset({"memory", MINIMAL})

T = TypeVar("T")


def broker_url(kind: str, tmp_path: Path) -> str:
    """A fresh, private URL of broker ``kind`` for one test."""
    if kind == "memory":
        return "memory://"
    if kind == MINIMAL:
        return "minimal://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'gopherq.db'}"
    if kind == "redis":
        # The shared test Redis (see services.py), under a key prefix of this test's own.
        return services.redis_test_url()
    raise ValueError(kind)


@pytest.fixture(scope="session", autouse=True)
def _delete_redis_test_keys() -> Iterator[None]:
    """Delete, at the end, the keys of every Redis prefix handed out (by any test)."""
    yield
    services.delete_handed_out_keys()


@pytest.fixture(params=BROKER_KINDS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class _Opener(Generic[T]):
    """Opens handles on one store of ``kind``; in-process kinds hand back the first handle.

    Each ``memory://`` (or minimal) broker or backend is its own store, so tests that need two
    handles on one store (two "workers") get the same instance twice; asking it
    for different options is an error.
    """

    def __init__(self, kind: str, url: str, open_: Callable[..., T]) -> None:
        self.kind, self.url, self.open = kind, url, open_
        self.opened: list[T] = []
        self.first_options: dict[str, float] = {}

    def __call__(self, **options: float) -> T:
        if self.kind in IN_PROCESS and self.opened:
            if options != self.first_options:
                raise ValueError(
                    f"the memory store was opened with {self.first_options}, not {options}"
                )
            return self.opened[0]
        handle = self.open(self.url, **options)
        self.opened.append(handle)
        self.first_options = options
        return handle


@pytest.fixture
def make_broker(broker_kind: str, tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Open brokers of the current kind on one shared store; all closed at the end."""
    open_ = DictBroker if broker_kind == MINIMAL else open_broker
    opener = _Opener(broker_kind, broker_url(broker_kind, tmp_path), open_)
    yield opener
    for broker in opener.opened:
        broker.close()
    if broker_kind == "redis":
        services.delete_keys(opener.url)


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    """One broker of each kind (the test runs once per kind)."""
    return make_broker()


@pytest.fixture
def make_backend(broker_kind: str, tmp_path: Path) -> Iterator[Callable[..., ResultBackend]]:
    """Open result backends of the current kind on one shared store; all closed at the end."""
    opener = _Opener(broker_kind, broker_url(broker_kind, tmp_path), open_backend)
    yield opener
    for store in opener.opened:
        store.close()
    if broker_kind == "redis":
        services.delete_keys(opener.url)


@pytest.fixture
def backend(make_backend: Callable[..., ResultBackend]) -> ResultBackend:
    """A result backend of each kind."""
    return make_backend()
