"""End to end: what a worker says and checks when it starts, with real processes.

A broker that can never work ends the worker with one line and exit code 1
before ``ready``; one that is down at start is tried for ``--connect-timeout``
seconds; the banner names what the worker runs; a worker of an app with no
task warns; ``include=`` brings task modules in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import services
from harness import Run, run, stop, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
__all__ = ["run"]  # the fixture


def finished(run: Run, *args: str, timeout: float = 60, **env: str) -> tuple[int, str]:
    """Run a worker to its end; its exit code and log."""
    process = run.worker(*args, **env)
    code = process.wait(timeout)
    return code, run.log()


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "[ERROR]" in line]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("foo://somewhere", "unsupported broker URL 'foo://somewhere'"),
        ("sqlite:///{path}/missing/dir/q.db", "directory {path}/missing/dir does not exist"),
    ],
)
def test_a_broker_that_can_never_work_exits_1_at_once(run: Run, url: str, expected: str) -> None:
    url, expected = url.format(path=run.path), expected.format(path=run.path)
    code, log = finished(run, "--burst", "--connect-timeout", "300", broker_url=url)
    assert code == 1, log
    [line] = error_lines(log)
    assert "cannot start" in line
    assert expected in line
    assert " ready: " not in log
    assert "Traceback" not in log
    assert not (run.path / "missing").exists()


def test_a_wrong_redis_password_exits_1_at_once_without_printing_it(
    run: Run, tmp_path: Path
) -> None:
    server = services.RedisServer(tmp_path / "redis", "--requirepass", "right-pass").start()
    try:
        host = server.url.removeprefix("redis://")
        url = f"redis://:wr0ng-pass@{host}"
        code, log = finished(run, "--connect-timeout", "300", broker_url=url)
    finally:
        server.stop()
    assert code == 1, log
    [line] = error_lines(log)
    assert "cannot start" in line
    assert "check the user and password" in line
    assert "wr0ng-pass" not in log
    assert " ready: " not in log


@pytest.mark.parametrize("burst", [False, True])
def test_a_broker_down_at_start_is_tried_for_connect_timeout(run: Run, burst: bool) -> None:
    url = f"redis://127.0.0.1:{services.free_port()}/0"
    start = time.monotonic()
    args = ("--connect-timeout", "2", *(("--burst",) if burst else ()))
    code, log = finished(run, *args, broker_url=url)
    assert code == 1, log
    assert time.monotonic() - start < 60
    retries = [line for line in log.splitlines() if "cannot connect: " in line]
    assert retries, log
    assert "Connection refused" in retries[0] or "connect" in retries[0]
    [line] = error_lines(log)
    assert "after --connect-timeout 2s" in line
    assert " ready: " not in log


def test_a_result_store_down_at_start_is_checked_too(run: Run) -> None:
    url = f"redis://127.0.0.1:{services.free_port()}/0"
    code, log = finished(run, "--burst", "--connect-timeout", "1", result_backend=url)
    assert code == 1, log
    [line] = error_lines(log)
    assert url in line
    assert " ready: " not in log
    assert f"results:    {url}" in log


def test_a_broker_that_comes_up_within_connect_timeout_is_used(run: Run, tmp_path: Path) -> None:
    server = services.RedisServer(tmp_path / "redis")  # its port is chosen, not listened on
    worker = run.worker("-c", "1", "--connect-timeout", "60", broker_url=server.url)
    try:
        wait_for(lambda: "cannot connect: " in run.log(), 30, run.log)
        assert worker.poll() is None
        server.start()
        wait_for(lambda: " ready: " in run.log(), 30, run.log)
        assert stop(worker) == 0, run.log()
    finally:
        server.stop()


def test_the_banner_names_app_broker_queues_pool_and_tasks(run: Run) -> None:
    worker = run.worker("-c", "2", "-Q", "default", "-Q", "other,default")
    run.wait_ready(worker)
    assert stop(worker) == 0
    log = run.log()
    banner = log[log.index("starting") : log.index(" ready: ")]
    assert "app:        e2e" in banner
    assert f"broker:     {run.url}" in banner
    assert "results:    the broker's own store" in banner
    assert "queues:     default, other" in banner
    assert "pool:       prefork, concurrency 2" in banner
    assert "    . tasks.add\n" in banner
    assert "ready: 2 processes, queues default, other" in log
    assert log.rstrip().splitlines()[-1].endswith(" stopped"), log  # nothing after it
    quiet = run.worker("--burst", "-l", "warning")
    assert quiet.wait(60) == 0, run.log()
    assert run.log().count("starting") == 1  # -l warning hides the banner


def test_a_worker_with_no_task_warns_and_include_brings_them_in(run: Run) -> None:
    """Tasks in a module the app's module does not import: the worker knows none of
    them, and says so; listed in ``include=``, they are imported with the app."""
    (run.path / "shopapp.py").write_text("from gopherq import GopherQ\napp = GopherQ('shop')\n")
    (run.path / "shoptasks.py").write_text(
        "from shopapp import app\n@app.task(name='tasks.add')\n"
        "def add(x: int, y: int) -> int:\n    return x + y\n"
    )
    process = run.worker("--burst", "-A", "shopapp")
    assert process.wait(60) == 0, run.log()
    log = run.log()
    assert "no task is registered in app shop" in log
    assert "include=" in log
    (run.path / "shopapp.py").write_text(
        "from gopherq import GopherQ\napp = GopherQ('shop', include=['shoptasks'])\n"
    )
    result = run.send("add", 2, 3)
    process = run.worker("-c", "1", "-A", "shopapp")
    try:
        assert result.get(timeout=30) == 5, run.log()
    finally:
        assert stop(process) == 0
    assert log.count("no task is registered") == run.log().count("no task is registered")


def test_producer_and_worker_in_other_directories_share_the_default_database(
    tmp_path: Path,
) -> None:
    """No broker URL anywhere: both find ``gopherq.db`` beside the app's module."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "shopapp.py").write_text(
        "from gopherq import GopherQ\napp = GopherQ('shop')\n"
        "@app.task(name='shop.add')\ndef add(x: int, y: int) -> int:\n    return x + y\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(project), env.get("PYTHONPATH", "")])
    web, work = tmp_path / "web", tmp_path / "work"
    web.mkdir()
    work.mkdir()
    gopherq = [sys.executable, "-m", "gopherq", "-A", "shopapp"]
    sent = subprocess.run(
        [*gopherq, "submit", "shop.add", "--args", "[20, 22]"],
        cwd=web,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    drained = subprocess.run(
        [*gopherq, "worker", "-c", "1", "--burst"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert drained.returncode == 0, drained.stderr
    assert f"broker:     sqlite:///{project / 'gopherq.db'}" in drained.stderr
    status = subprocess.run(
        [*gopherq, "status", sent.stdout.strip()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "SUCCEEDED" in status.stdout, status.stderr
    assert not (web / "gopherq.db").exists()
    assert not (work / "gopherq.db").exists()


def test_nothing_is_logged_after_stopped_even_when_events_cannot_be_published(
    run: Run, tmp_path: Path
) -> None:
    """The supervisor's last events (worker-offline) fail to go out with Redis gone:
    that warning comes before ``stopped``, which stays the last line."""
    server = services.RedisServer(tmp_path / "redis").start()
    try:
        worker = run.worker("-c", "1", broker_url=server.url)
        run.wait_ready(worker)
    finally:
        server.stop()
    assert stop(worker, timeout=60) == 0, run.log()
    lines = run.log().rstrip().splitlines()
    assert any("could not publish" in line for line in lines), run.log()
    assert lines[-1].endswith(" stopped"), run.log()


def test_a_burst_worker_gives_up_on_a_broker_that_goes_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--burst`` never waits forever: a broker lost after ``ready`` ends the run with
    exit code 1 once it stayed down for ``connect_timeout``."""
    for name in list(os.environ):
        if name.startswith("GOPHERQ_"):
            monkeypatch.delenv(name)
    server = services.RedisServer(tmp_path / "redis").start()
    run = Run(tmp_path, services.with_prefix(server.url))
    try:
        run.send("nap", 1.0)
        worker = run.worker("--burst", "-c", "1", connect_timeout="2")
        run.wait_ready(worker)
        server.stop()  # while the task runs: its settle and the next reserve fail
        assert worker.wait(60) == 1, run.log()
        assert "a burst run gives up" in run.log()
    finally:
        run.close()
        server.stop()
