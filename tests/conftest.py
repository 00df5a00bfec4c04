"""Shared fixtures: brokers and result backends of every kind, isolated per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gopherq.brokers import Broker, open_broker
from gopherq.results import ResultBackend, open_backend

BROKER_KINDS = ["memory", "sqlite"]


def broker_url(kind: str, tmp_path: Path) -> str:
    """A fresh, private URL of broker ``kind`` for one test."""
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'gopherq.db'}"
    raise ValueError(kind)


@pytest.fixture(params=BROKER_KINDS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_broker(
    broker_kind: str, tmp_path: Path
) -> Iterator[Callable[..., Broker]]:
    """Open brokers of the current kind on one shared store; all closed at the end."""
    opened: list[Broker] = []
    url = broker_url(broker_kind, tmp_path)

    def make(**options: float) -> Broker:
        broker = open_broker(url, **options)
        opened.append(broker)
        return broker

    yield make
    for broker in opened:
        broker.close()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    """One broker of each kind (the test runs once per kind)."""
    return make_broker()


@pytest.fixture
def backend(broker_kind: str, tmp_path: Path) -> Iterator[ResultBackend]:
    """A result backend of each kind."""
    store = open_backend(broker_url(broker_kind, tmp_path))
    yield store
    store.close()
