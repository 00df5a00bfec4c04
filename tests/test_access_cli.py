"""``gopherq keys`` and ``gopherq audit``, in-process and as real commands beside a real
``gopherq serve``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import broker_url
from services import free_port

from gopherq import GopherQ
from gopherq import cli as cli_module
from gopherq.access.audit import AuditEntry
from gopherq.loader import load_app

APP_SOURCE = """
from gopherq import GopherQ

app = GopherQ("keys-test")


@app.task(name="add")
def add(x: int, y: int) -> int:
    return x + y
"""


class Cli:
    def __init__(self, module: str) -> None:
        self.module = module
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(cli_module.main, ["-A", self.module, *args])

    @property
    def app(self) -> GopherQ:
        return load_app(self.module)


@pytest.fixture(params=["memory", "sqlite"])
def cli(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cli]:
    module = f"keysapp_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text(APP_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for var in ("GOPHERQ_APP", "GOPHERQ_EAGER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOPHERQ_BROKER_URL", broker_url(request.param, tmp_path))
    yield Cli(module)
    if module in sys.modules:
        sys.modules.pop(module).app.close()


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def test_create_prints_the_secret_once(cli: Cli) -> None:
    result = cli("keys", "create", "ci", "--role", "submitter", "--expires", "90d",
                 "--task", "add", "--queue", "math", "--rate", "100/s")  # fmt: skip
    secret = ok(result).strip()
    assert secret.startswith("gq_") and "\n" not in secret
    assert "not shown again" in result.stderr and "submitter" in result.stderr
    key = cli.app.access.verify(secret)
    assert key is not None and key.name == "ci" and key.tasks == ("add",)
    assert key.queues == ("math",) and key.rate == "100/s" and key.expires is not None
    listing = ok(cli("keys", "list"))
    assert "ci" in listing and "submitter" in listing and "active" in listing
    assert secret not in listing and secret not in ok(cli("keys", "list", "--json"))


def test_list_json_and_revoke(cli: Cli) -> None:
    ok(cli("keys", "create", "ci", "--role", "viewer"))
    ok(cli("keys", "create", "ops", "--role", "operator"))
    assert "revoked 'ci'" in ok(cli("keys", "revoke", "ci"))
    listed = json.loads(ok(cli("keys", "list", "--json")))
    assert [(k["name"], k["role"], k["state"]) for k in listed] == [
        ("ci", "viewer", "revoked"),
        ("ops", "operator", "active"),
    ]
    assert all("digest" not in k and "salt" not in k for k in listed)
    assert ok(cli("keys", "list")).count("\n") == 3


def test_errors_are_one_line(cli: Cli) -> None:
    ok(cli("keys", "create", "ci", "--role", "viewer"))
    taken = cli("keys", "create", "ci", "--role", "admin")
    assert taken.exit_code == 1 and "exists already" in taken.stderr
    missing = cli("keys", "revoke", "nobody")
    assert missing.exit_code == 1 and "no key named 'nobody'" in missing.stderr
    bad_rate = cli("keys", "create", "x", "--role", "viewer", "--rate", "fast")
    assert bad_rate.exit_code == 2 and "'--rate'" in bad_rate.stderr
    bad_role = cli("keys", "create", "x", "--role", "root")
    assert bad_role.exit_code == 2
    bad_name = cli("keys", "create", "../x", "--role", "viewer")
    assert bad_name.exit_code == 2 and "NAME" in bad_name.stderr
    assert "Traceback" not in bad_name.output
    assert ok(cli("keys", "list")).strip().count("\n") == 1


def test_audit(cli: Cli) -> None:
    assert ok(cli("audit")) == "no audit entries\n"
    now = time.time()
    cli.app.access.record(
        [
            AuditEntry(now - 7200, "ops", "operator", "queues.pause", "mail", "10.0.0.1", 200),
            AuditEntry(now - 60, None, None, "jobs.create", "add", "10.0.0.2", 401),
        ]
    )
    table = ok(cli("audit"))
    assert table.index("jobs.create") < table.index("queues.pause")
    entries = json.loads(ok(cli("audit", "--since", "1h", "--json")))
    assert [(e["action"], e["status"], e["key"]) for e in entries] == [("jobs.create", 401, None)]
    assert len(json.loads(ok(cli("audit", "--limit", "1", "--json")))) == 1
    bad = cli("audit", "--since", "whenever")
    assert bad.exit_code == 2 and "'--since'" in bad.stderr


# End to end: the commands and a real server, on SQLite.


@pytest.mark.e2e
def test_a_key_made_by_the_cli_opens_a_real_server(tmp_path: Path) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    (tmp_path / "e2e_keys_app.py").write_text(APP_SOURCE)
    env = {
        **os.environ,
        "GOPHERQ_BROKER_URL": broker_url("sqlite", tmp_path),
        "GOPHERQ_APP": "e2e_keys_app",
    }
    env.pop("GOPHERQ_EAGER", None)
    gopherq = [sys.executable, "-m", "gopherq"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*gopherq, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done

    created = run("keys", "create", "ci", "--role", "operator")
    secret = created.stdout.strip()
    assert "not shown again" in created.stderr
    port = free_port()
    server = subprocess.Popen(
        [*gopherq, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {secret}"}
    try:
        _wait_up(httpx, base, server)
        assert httpx.get(f"{base}/api/v1/health", headers=auth).status_code == 200
        assert httpx.get(f"{base}/api/v1/health").status_code == 401
        denied = httpx.post(
            f"{base}/api/v1/keys", headers=auth, json={"name": "x", "role": "admin"}
        )
        assert denied.status_code == 403
        entries = _wait_for_audit(run)
        assert (entries[0]["key"], entries[0]["action"], entries[0]["status"]) == (
            "ci",
            "keys.create",
            403,
        )
        assert entries[0]["client"] == "127.0.0.1"
        run("keys", "revoke", "ci")
        time.sleep(1.2)  # the server reads a key's record again after a second
        assert httpx.get(f"{base}/api/v1/health", headers=auth).status_code == 401
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def _wait_up(httpx: Any, base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(server.stderr.read().decode() if server.stderr else "exited")
        try:
            httpx.get(f"{base}/live", timeout=1.0)
            return
        except Exception:
            time.sleep(0.1)
    raise AssertionError("gopherq serve did not answer within 30 s")


def _wait_for_audit(run: Callable[..., subprocess.CompletedProcess[str]]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        entries: list[dict[str, Any]] = json.loads(run("audit", "--json").stdout)
        if entries or time.monotonic() > deadline:
            return entries
        time.sleep(0.1)
