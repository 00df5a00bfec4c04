"""The worker's start-up checks, in-process (the real processes: tests/e2e/test_startup_e2e.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gopherq import GopherQ
from gopherq.errors import BrokerUnavailable
from gopherq.worker.startup import StartupError, check_stores


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses ``check_stores`` would take, taken at once."""
    pauses: list[float] = []
    monkeypatch.setattr("gopherq.worker.startup.time.sleep", pauses.append)
    return pauses


def failing_ping(app: GopherQ, monkeypatch: pytest.MonkeyPatch, failures: int) -> None:
    """Make the app's broker refuse ``failures`` pings, then answer."""
    left = [failures]

    def ping() -> None:
        if left[0] > 0:
            left[0] -= 1
            raise BrokerUnavailable("connection refused")

    monkeypatch.setattr(app.broker, "ping", ping)
    monkeypatch.setattr(app, "close", lambda: None)  # keep the patched broker


def test_a_broker_that_answers_after_a_few_tries_is_used(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_sleep: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = GopherQ("t", broker=f"sqlite:///{tmp_path / 'q.db'}")
    failing_ping(app, monkeypatch, failures=5)
    with caplog.at_level(logging.WARNING, "gopherq.worker"):
        check_stores(app, connect_timeout=3600)
    assert no_sleep == [0.5, 1.0, 2.0, 5.0, 5.0]
    assert caplog.messages[0] == "cannot connect: connection refused; trying again in 0.5s"


def test_a_store_down_for_longer_than_connect_timeout_ends_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]
) -> None:
    app = GopherQ("t", broker=f"sqlite:///{tmp_path / 'q.db'}")
    failing_ping(app, monkeypatch, failures=1)
    with pytest.raises(StartupError, match=r"connection refused \(still failing after"):
        check_stores(app, connect_timeout=0)
    assert no_sleep == []


def test_a_sqlite_directory_not_writable_is_permanent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]
) -> None:
    """Root may write anywhere, so the directory's access check is faked."""
    app = GopherQ("t", broker=f"sqlite:///{tmp_path / 'q.db'}")
    failing_ping(app, monkeypatch, failures=1)
    monkeypatch.setattr("gopherq.worker.startup.os.access", lambda path, mode: False)
    with pytest.raises(StartupError, match=f"directory {tmp_path} is not writable by this user"):
        check_stores(app, connect_timeout=3600)
    assert no_sleep == []
