"""A producer in another language, written from docs/protocol.md alone.

``node/producer.mjs`` (Node.js, with npm's ``@msgpack/msgpack``, ``ioredis`` and
``better-sqlite3``) enqueues tasks with every kind of argument, a batch of
priorities and idempotency keys into the broker, a real worker runs them, and the
producer sends a countdown, reads the job records and checks every result: on
SQLite and on Redis.

The npm packages are installed once (``npm ci`` from the committed lock file) into
``node/node_modules``, and again only when the lock file or node changes. Without
node and npm the test is skipped with the reason; it fails instead when
``GOPHERQ_REQUIRE_SERVICES=1`` (CI, whose ``.ci/run`` installs them).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import services
from harness import Run, on_each_broker, run  # noqa: F401  (run: a fixture)

from gopherq.stores.redis import parse_url

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

NODE = Path(__file__).parent / "node"
MIN_NODE = 20  # better-sqlite3 12 needs it
INSTALL_TIMEOUT = 600.0
RUN_TIMEOUT = 180.0


def node_packages() -> str:
    """The path of ``node``, with the producer's npm packages installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        services.unavailable("node and npm are not on PATH (apt-get install nodejs npm)")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE:
        services.unavailable(f"node {version} is too old: the producer needs {MIN_NODE} or later")
    lock = (NODE / "package-lock.json").read_bytes()
    wanted = hashlib.sha256(lock + version.encode()).hexdigest()
    stamp = NODE / "node_modules" / ".gopherq-installed"
    # One install at a time (xdist runs the brokers' tests in parallel).
    with (NODE / ".install.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == wanted):
            try:
                subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
                    cwd=NODE,
                    capture_output=True,
                    text=True,
                    timeout=INSTALL_TIMEOUT,
                    check=True,
                )
            except subprocess.CalledProcessError as exc:
                services.unavailable(f"npm ci failed:\n{exc.stdout}\n{exc.stderr}")
            except subprocess.TimeoutExpired:
                services.unavailable(f"npm ci took more than {INSTALL_TIMEOUT:.0f}s")
            stamp.write_text(wanted)
    return node


@on_each_broker
def test_a_node_producer_sends_tasks_and_reads_their_results(run: Run) -> None:  # noqa: F811
    node = node_packages()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
    env["GQ_STATE"] = str(run.path / "sent.json")
    if run.url.startswith("redis"):
        config = parse_url(run.url)
        script = run.path / "redis-enqueue.lua"
        # The documented way to get the script: from the release the workers run.
        with script.open("wb") as out:
            subprocess.run(
                [sys.executable, "-m", "gopherq", "protocol", "redis-enqueue-script"],
                stdout=out,
                check=True,
            )
        env.update(
            GQ_BROKER="redis",
            GQ_REDIS_URL=config.client_url,
            GQ_PREFIX=config.prefix,
            GQ_ENQUEUE_SCRIPT=str(script),
        )
    else:
        run.producer.broker.stats()  # a gopherq process creates the file (docs/protocol.md)
        env.update(GQ_BROKER="sqlite", GQ_SQLITE_PATH=str(run.path / "gopherq.db"))

    def producer(phase: str) -> str:
        done = subprocess.run(
            [node, str(NODE / "producer.mjs"), phase],
            cwd=NODE,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,  # the assertion shows its output
        )
        assert done.returncode == 0, f"{phase}:\n{done.stdout}\n{done.stderr}\n{run.log()}"
        return done.stdout

    producer("send")  # before any worker: the priorities wait in line together
    worker = run.worker("-c", "1")  # one process: tasks start one by one, in line order
    run.wait_ready(worker)
    assert producer("check").startswith("ok ")
    assert "Traceback" not in run.log(), run.log()
