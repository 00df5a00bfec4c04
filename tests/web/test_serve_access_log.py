"""``gopherq serve``: uvicorn's access log is off unless ``--access-log`` asks for it."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from gopherq import GopherQ
from gopherq.cli import main


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The options of each server ``gopherq serve`` would run (it runs none)."""
    calls: list[dict[str, Any]] = []

    def run(server: Any, sockets: Any = None) -> None:
        calls.append({"access_log": server.config.access_log})

    monkeypatch.setattr("gopherq.web.server._Server.run", run)
    return calls


@pytest.mark.parametrize(("flags", "logged"), [([], False), (["--access-log"], True)])
def test_the_access_log_is_off_by_default(
    app: GopherQ,
    runs: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    logged: bool,
) -> None:
    monkeypatch.setattr("gopherq.cli_support.load_app", lambda spec: app)
    result = CliRunner().invoke(main, ["serve", "-A", "x", "--no-auth", "--port", "0", *flags])
    assert result.exit_code == 0, result.output
    assert runs[0]["access_log"] is logged
