"""``gopherq serve`` without the ``web`` extra: one line naming the install command."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from gopherq import web_extra
from gopherq.cli import main


def test_missing_web_extra_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "served_app.py").write_text("from gopherq import GopherQ\napp = GopherQ('s')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        web_extra.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "fastapi" else real(name, *a),
    )
    result = CliRunner().invoke(main, ["serve", "-A", "served_app", "--port", "0"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: the HTTP API needs fastapi: pip install 'gopherq[web]'"
    ]
