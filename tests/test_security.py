"""Security findings (docs/security.md): the SQLite file's mode and path, secrets kept
out of every output, terminal-safe human output, hostile ``--args``, and the warning
for a worker running as root."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import services
from click.testing import CliRunner, Result
from conftest import broker_url

from gopherq import GopherQ, State
from gopherq import cli as cli_module
from gopherq.brokers import Envelope
from gopherq.errors import BrokerError, BrokerUnavailable, ConfigurationError, GopherQError
from gopherq.events import Event
from gopherq.loader import load_app
from gopherq.message import Message
from gopherq.redaction import redact_text, redact_url
from gopherq.results import ErrorInfo, JobRecord
from gopherq.worker.startup import warn_if_root

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="planting a link owned by another user needs root (lchown)"
)
OTHER_UID = 54321  # a user that owns nothing here


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Umask 0, so that only the mode gopherq asks for limits who may read the file."""
    previous = os.umask(0)
    yield
    os.umask(previous)


# The SQLite file: created 0600, with its -wal and -shm.

_OPENERS: dict[str, Callable[[GopherQ], Any]] = {
    "broker": lambda app: app.broker.stats(),
    "result backend": lambda app: app.backend.get("x"),
    "event backend": lambda app: app.events.last(1),
    "schedule store": lambda app: app.schedules.list(),
}


@pytest.mark.parametrize("store", sorted(_OPENERS))
def test_every_store_creates_the_file_and_its_wal_and_shm_private(
    store: str, tmp_path: Path, open_umask: None
) -> None:
    app = GopherQ("modes", broker=f"sqlite:///{tmp_path / 'q.db'}")
    try:
        _OPENERS[store](app)
        names = set(os.listdir(tmp_path))
        assert {"q.db", "q.db-wal", "q.db-shm"} <= names
        assert {name: _mode(tmp_path / name) for name in names} == dict.fromkeys(names, 0o600)
    finally:
        app.close()


def test_an_existing_world_readable_file_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()
    path.chmod(0o644)
    app = GopherQ("old", broker=f"sqlite:///{path}")
    try:
        with caplog.at_level(logging.WARNING, "gopherq.sqlite"):
            app.broker.stats()
            app.backend.get("x")
        assert _mode(path) == 0o644  # an operator's choice is not undone
        warnings = [r.getMessage() for r in caplog.records if "open to every user" in r.message]
        assert warnings == [
            f"SQLite file {path} is open to every user (mode 644); chmod 600 it "
            "and its -wal and -shm files"
        ]
    finally:
        app.close()


# The path: a symbolic link planted by another user is refused.


@needs_root
def test_a_link_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "attacker.db"
    link = tmp_path / "q.db"
    link.symlink_to(target)
    os.lchown(link, OTHER_UID, OTHER_UID)
    app = GopherQ("linked", broker=f"sqlite:///{link}")
    with pytest.raises(ConfigurationError) as info:
        app.broker.stats()
    assert str(info.value) == (
        f"refusing SQLite path {link}: a symbolic link owned by another user "
        f"(uid {OTHER_UID}) could redirect the queue; use the real path"
    )
    assert not target.exists()


@needs_root
def test_a_planted_wal_link_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    wal = tmp_path / "q.db-wal"
    wal.symlink_to(victim)
    os.lchown(wal, OTHER_UID, OTHER_UID)
    with pytest.raises(ConfigurationError, match="symbolic link owned by another user"):
        GopherQ("wal", broker=f"sqlite:///{tmp_path / 'q.db'}").backend.get("x")
    assert victim.read_text() == "keep me"


@needs_root
def test_the_cli_refuses_a_planted_link_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = tmp_path / "q.db"
    link.symlink_to(tmp_path / "attacker.db")
    os.lchown(link, OTHER_UID, OTHER_UID)
    cli = _cli_for(tmp_path, monkeypatch, f"sqlite:///{link}")
    assert _failed(cli("stats")).startswith(f"Error: refusing SQLite path {link}: a symbolic")


def test_a_link_of_ones_own_is_followed_and_its_target_made_private(
    tmp_path: Path, open_umask: None
) -> None:
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "real.db"
    link = tmp_path / "q.db"
    link.symlink_to(target)
    app = GopherQ("own", broker=f"sqlite:///{link}")
    try:
        app.broker.stats()
        assert _mode(target) == 0o600
        assert _mode(tmp_path / "data" / "real.db-wal") == 0o600
    finally:
        app.close()


def test_a_directory_anyone_may_write_to_warns_once_unless_sticky(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared, sticky = tmp_path / "shared", tmp_path / "sticky"
    for directory, mode in ((shared, 0o777), (sticky, 0o1777)):
        directory.mkdir()
        directory.chmod(mode)
    apps = [
        GopherQ(f"dir{i}", broker=f"sqlite:///{d / 'q.db'}")
        for i, d in enumerate((shared, shared, sticky))
    ]
    try:
        with caplog.at_level(logging.WARNING, "gopherq.sqlite"):
            for app in apps:
                app.broker.stats()
                app.backend.get("x")
        warnings = [r.getMessage() for r in caplog.records if r.name == "gopherq.sqlite"]
        assert warnings == [
            f"SQLite file in {shared}: every user may write to that directory (and it lacks "
            "the sticky bit), so anyone can replace the database; use a private directory"
        ]
    finally:
        for app in apps:
            app.close()


# Secrets: one redaction for every output.

SECRETS = ("s3cr3t", "qu3ry", "t0k3n")


def _no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, text


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://u:s3cr3t@h:6379/0", "redis://u:***@h:6379/0"),
        ("redis://:s3cr3t@h", "redis://:***@h"),
        (
            "rediss://h/0?password=qu3ry&db=1&ssl_password=qu3ry&ssl_certfile=/c.pem",
            "rediss://h/0?password=***&db=1&ssl_password=***&ssl_certfile=/c.pem",
        ),
        (
            "redis://h?PWD=qu3ry&token=t0k3n&x_secret=qu3ry",
            "redis://h?PWD=***&token=***&x_secret=***",
        ),
        ("unix://:s3cr3t@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("redis://:s3/cr#3t@h/0", "redis://:***@h/0"),  # unescaped '/' and '#' in a password
        ("redis://u:s3cr3t@[::1/0", "redis://u:***@[::1/0"),  # not parseable as a URL
        ("sqlite:///./gopherq.db", "sqlite:///./gopherq.db"),
        ("redis://h/0?client_name=a@b:c", "redis://h/0?client_name=a@b:c"),
        ("memory://", "memory://"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_redact_text_finds_urls_in_a_message() -> None:
    text = "cannot reach redis://u:s3cr3t@h/0?password=qu3ry: refused (see redis://h)."
    assert (
        redact_text(text) == "cannot reach redis://u:***@h/0?password=***: refused (see redis://h)."
    )


def _unreachable(db: int = 0) -> str:
    port = services.free_port()
    return (
        f"redis://user:s3cr3t@127.0.0.1:{port}/{db}?password=qu3ry"
        "&socket_connect_timeout=0.2&socket_timeout=0.2"
    )


def test_reprs_and_errors_of_an_app_hide_passwords() -> None:
    app = GopherQ("secret", broker=_unreachable(0), backend=_unreachable(1), events=_unreachable(2))
    try:
        shown = [repr(app), repr(app.settings), repr(app.broker), repr(app.backend)]
        shown += [repr(app.events.backend), repr(app.broker._conn.config)]  # type: ignore[attr-defined]
        assert "redis://user:***@127.0.0.1:" in shown[0]
        for call in (app.broker.stats, lambda: app.backend.get("x"), lambda: app.events.last(1)):
            with pytest.raises(BrokerUnavailable) as info:
                call()
            shown += [str(info.value), "".join(traceback.format_exception(info.value))]
        _no_secret(*shown)
    finally:
        app.close()


@pytest.mark.parametrize(
    "options",
    [
        {"broker": "redis://u:s3cr3t@127.0.0.1:1/0?protocol=3"},
        {"broker": "redis://u:s3cr3t@[::1/0"},
        {"broker": "redis://u:s3cr3t@127.0.0.1:99999/0?password=qu3ry"},
        {"broker": "redis://u:s3cr3t@127.0.0.1:1/0?dead_letter_max=x&password=qu3ry"},
        {"broker": "redis://u:s3cr3t@127.0.0.1:1/0?socket_timeout=abc&password=qu3ry"},
        {"broker": "amqp://u:s3cr3t@h/?token=t0k3n"},
        {"broker": "sqlite://u:s3cr3t@h/x.db?password=qu3ry"},
        {"broker": "memory://", "backend": "nope://u:s3cr3t@h?password=qu3ry"},
        {"broker": "memory://", "events": "nope://u:s3cr3t@h?password=qu3ry"},
    ],
)
def test_bad_urls_are_one_clear_error_without_the_secret(options: dict[str, Any]) -> None:
    with pytest.raises(GopherQError) as info:
        app = GopherQ("bad", **options)
        app.broker.ping()
        app.backend.get("x")
        app.events.last(1)
    _no_secret(str(info.value), "".join(traceback.format_exception(info.value)))


class _Cli:
    def __init__(self, module: str) -> None:
        self.module = module
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(cli_module.main, ["-A", self.module, *args])

    @property
    def app(self) -> GopherQ:
        return load_app(self.module)


APP_SOURCE = """
from gopherq import GopherQ

app = GopherQ("security-test")


@app.task(name="add")
def add(x: int, y: int) -> int:
    return x + y
"""


def _cli_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, source: str = APP_SOURCE
) -> _Cli:
    """Commands run in ``tmp_path`` on an app module of ``source``, on broker ``url``."""
    module = f"secapp_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for var in ("GOPHERQ_APP", "GOPHERQ_EAGER", "GOPHERQ_RESULT_BACKEND", "GOPHERQ_EVENTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOPHERQ_BROKER_URL", url)
    return _Cli(module)


@pytest.fixture
def cli(broker_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Cli]:
    runner = _cli_for(tmp_path, monkeypatch, broker_url(broker_kind, tmp_path))
    yield runner
    if runner.module in sys.modules:
        sys.modules.pop(runner.module).app.close()


def _failed(result: Result, code: int = 1) -> str:
    """Assert a clean failure (no traceback); return the last line of stderr."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.stderr.strip().splitlines()[-1]


COMMANDS = [
    ["health"],
    ["health", "--json"],
    ["stats"],
    ["stats", "--json"],
    ["dead", "list"],
    ["jobs"],
    ["events"],
    ["status", "some-id"],
    ["submit", "add", "--args", "[1, 2]"],
    ["schedules", "list"],
]


def test_no_command_prints_the_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = _cli_for(tmp_path, monkeypatch, _unreachable())
    try:
        for args in COMMANDS:
            result = cli(*args)
            assert result.exit_code == 1, (args, result.output)
            assert "Traceback" not in result.output
            assert "user:***@127.0.0.1" in result.output, (args, result.output)
            _no_secret(result.output)
        # A URL the parser rejects is reported without its secrets too.
        monkeypatch.setenv("GOPHERQ_BROKER_URL", "redis://u:s3cr3t@h/0?protocol=3&password=qu3ry")
        sys.modules.pop(cli.module)
        line = _failed(cli("stats"))
        assert line == (
            "Error: bad Redis URL 'redis://u:***@h/0?protocol=3&password=***': "
            "gopherq speaks RESP2 (protocol=2)"
        )
    finally:
        if cli.module in sys.modules:
            sys.modules.pop(cli.module).app.close()


def test_an_app_that_fails_to_load_is_reported_safely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = "raise RuntimeError('cannot reach redis://u:s3cr3t@h/0?password=qu3ry \\x1b[2J')\n"
    cli = _cli_for(tmp_path, monkeypatch, "memory://", source)
    line = _clean(_failed(cli("stats")))
    assert line.endswith("cannot reach redis://u:***@h/0?password=*** \\x1b[2J"), line


def test_a_redis_with_a_password_in_the_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a real Redis that requires a password: ``?password=`` works, and neither
    the right nor a wrong password is ever printed."""
    server = services.RedisServer(tmp_path / "redis", "--requirepass", "s3cr3t").start()
    try:
        right = f"redis://127.0.0.1:{server.port}/0?password=s3cr3t"
        cli = _cli_for(tmp_path, monkeypatch, right)
        assert cli("submit", "add", "--args", "[1, 2]").exit_code == 0
        outputs = [cli(*args) for args in (["health"], ["stats"], ["dead", "list"], ["jobs"])]
        assert all(result.exit_code == 0 for result in outputs), outputs
        assert "?password=*** answered in" in outputs[0].output
        shown = [result.output for result in outputs] + [repr(cli.app), repr(cli.app.broker)]
        sys.modules.pop(cli.module).app.close()
        wrong = f"redis://user:s3cr3tX@127.0.0.1:{server.port}/0"
        cli = _cli_for(tmp_path, monkeypatch, wrong)
        for args in (["health"], ["stats"]):
            result = cli(*args)
            assert result.exit_code == 1
            shown.append(result.output)
        assert "redis://user:***@127.0.0.1" in shown[-1]
        _no_secret(*shown)
    finally:
        server.stop()
        if cli.module in sys.modules:
            sys.modules.pop(cli.module).app.close()


@pytest.mark.e2e
def test_worker_logs_hide_the_password(tmp_path: Path) -> None:
    (tmp_path / "logapp.py").write_text(APP_SOURCE)
    env = {**os.environ, "GOPHERQ_BROKER_URL": _unreachable(), "GOPHERQ_APP": "logapp"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "gopherq", "worker", "-c", "1"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert worker.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = worker.stderr.readline()
            lines.append(line)
            if "cannot connect" in line or not line:  # the check before ready
                break
    finally:
        worker.send_signal(signal.SIGTERM)
        rest = worker.communicate(timeout=60)[1]
    output = "".join(lines) + rest
    assert "cannot connect" in output, output
    assert "Redis redis://user:***@127.0.0.1:" in output, output
    _no_secret(output)


# Human output: control characters escaped; JSON exact.

NASTY = "q\x1b[31mred\r\n\x07\u202eevil"
_RAW = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]")  # all but the line breaks


def _clean(text: str) -> str:
    """Assert ``text`` holds no raw control character; return it."""
    assert not _RAW.search(text), text
    return text


def _plant(app: GopherQ) -> None:
    """Queue names, task names, errors and events holding control characters."""
    body = app.codec.encode(Message(id="d1", task=NASTY, queue=NASTY))
    app.broker.enqueue([Envelope("d1", NASTY, 2, body)])
    (delivery,) = app.broker.reserve([NASTY], 1, 1.0)
    assert app.broker.dead(delivery, "DECODE_ERROR", NASTY)
    app.broker.enqueue([Envelope("r1", NASTY, 2, body)])
    now = time.time()
    error = ErrorInfo(NASTY, NASTY, f"Traceback:\n  {NASTY}\n")
    record = JobRecord(
        "j1", NASTY, State.FAILED, queue=NASTY, error=error, created=now, worker=NASTY
    )
    app.backend.store([record])
    event = Event("task-failed", now, "j1", NASTY, NASTY, NASTY, 0, {"error": NASTY})
    app.events.publish([event])
    app.schedules.add("nasty", NASTY, every="5m")  # entry names are checked, task names not


def test_control_characters_are_escaped_in_every_table(cli: _Cli) -> None:
    _plant(cli.app)
    escaped = "q\\x1b[31mred\\x0d\\x0a\\x07\\u202eevil"
    for args in (
        ["stats"],
        ["dead", "list"],
        ["jobs"],
        ["status", "j1"],
        ["events"],
        ["schedules", "list"],
    ):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert escaped in _clean(result.output), (args, result.output)
    stats = json.loads(cli("stats", "--json").stdout)
    assert NASTY in {q["name"] for q in stats}
    assert json.loads(cli("jobs", "--json").stdout)[0]["task"] == NASTY
    assert json.loads(cli("events", "--json").stdout.splitlines()[-1])["task"] == NASTY


def test_control_characters_are_escaped_in_errors(
    cli: _Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise BrokerError(f"no queue {NASTY}")

    monkeypatch.setattr(cli.app.broker, "stats", broken)
    monkeypatch.setattr(cli.app.broker, "ping", broken)
    assert _clean(_failed(cli("stats"))) == "Error: no queue q\\x1b[31mred\\x0d"
    assert "does not answer: no queue q\\x1b[31mred\\x0d\\x0a" in _clean(_failed(cli("health")))


@pytest.mark.e2e
def test_worker_log_lines_escape_control_characters(tmp_path: Path) -> None:
    (tmp_path / "logapp.py").write_text(APP_SOURCE)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    app = GopherQ("producer", broker=url)
    try:
        app.send_task(NASTY)  # not registered: dead-lettered, and logged
    finally:
        app.close()
    done = _burst_worker(tmp_path, "logapp", url, "-c", "1")
    # The formatter keeps line breaks (tracebacks) and escapes the rest; the worker's
    # task lines escape line breaks too, so a name cannot forge a log line.
    assert "task q\\x1b[31mred\\x0d\\x0a\\x07\\u202eevil[" in _clean(done.stderr), done.stderr


# Hostile --args.


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "add", "--args", "[" * 50_000 + "]" * 50_000],
        ["submit", "add", "--kwargs", '{"a":' * 50_000 + "1" + "}" * 50_000],
        ["schedules", "add", "deep", "--task", "add", "--every", "5m", "--args", "[" * 50_000],
    ],
)
def test_deeply_nested_json_is_one_line(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = _cli_for(tmp_path, monkeypatch, "memory://")
    line = _failed(cli(*args), code=2)
    assert line.endswith("JSON nested too deeply"), line


# A worker running as root.

ROOT_WARNING = "is running as root: every task (and so anyone who can write to the broker)"


def test_root_warning_only_for_root(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "gopherq.worker"):
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
        warn_if_root("w1")
        assert not caplog.records
        monkeypatch.setattr(os, "geteuid", lambda: 0)
        warn_if_root("w1")
    assert [r.getMessage() for r in caplog.records] == [
        f"worker w1 {ROOT_WARNING} can do anything on this machine; run workers as an "
        "unprivileged user (see docs/security.md)"
    ]


@pytest.mark.e2e
@pytest.mark.skipif(os.geteuid() != 0, reason="the warning is for a worker running as root")
def test_a_worker_started_as_root_warns_once(tmp_path: Path) -> None:
    (tmp_path / "rootapp.py").write_text(APP_SOURCE)
    done = _burst_worker(tmp_path, "rootapp", f"sqlite:///{tmp_path / 'q.db'}", "-c", "2")
    assert done.stderr.count(ROOT_WARNING) == 1, done.stderr


def _burst_worker(
    cwd: Path, module: str, url: str, *options: str
) -> subprocess.CompletedProcess[str]:
    """Run ``gopherq worker --burst`` on ``module`` in ``cwd`` until the queues are empty."""
    env = {**os.environ, "GOPHERQ_BROKER_URL": url}
    env.pop("GOPHERQ_EAGER", None)
    done = subprocess.run(
        [sys.executable, "-m", "gopherq", "-A", module, "worker", "--burst", *options],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done
