"""Finding, and where needed starting, the services the test suite runs against.

Redis, in this order:

1. ``GOPHERQ_TEST_REDIS_URL`` when set (it must answer);
2. ``redis://127.0.0.1:6379/0`` when it answers PING;
3. a ``redis-server`` from ``PATH``, started on a free loopback port for this
   test process (``--save "" --appendonly no``) and stopped when it exits;
4. else the test is skipped with the reason, or fails when
   ``GOPHERQ_REQUIRE_SERVICES=1`` (CI): a missing service must not pass as a skip.

Tests share that server but never each other's keys: each gets a URL with a
unique ``prefix`` and its keys are deleted afterwards (SCAN, never FLUSHDB).
Tests that stop, restart or reconfigure a server start their own
(``RedisServer``, ``RedisClusterNodes``), never touching the shared one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis

REQUIRE = os.environ.get("GOPHERQ_REQUIRE_SERVICES") == "1"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
TEST_PREFIX = "gqtest-"


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it in CI (``GOPHERQ_REQUIRE_SERVICES=1``)."""
    if REQUIRE:
        pytest.fail(f"{reason} (GOPHERQ_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str, timeout: float = 0.5) -> bool:
    """True if the Redis at ``url`` answers PING."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        except (redis.AuthenticationError, redis.ResponseError):
            return True  # it answers, if only to ask for a password
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str:
    """The path of ``redis-server``, or skip (fail in CI) when it is missing."""
    path = shutil.which("redis-server")
    if path is None:
        unavailable("redis-server is not on PATH")
    return path


class RedisServer:
    """A ``redis-server`` of this test process, on a free loopback port, in ``directory``.

    ``stop(save=True)`` writes a snapshot first, so that ``start()`` brings the
    data back: a Redis restart that keeps what it held.
    """

    def __init__(self, directory: Path, *args: str, unix_socket: bool = False) -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.socket: str | None = None
        if unix_socket:
            # A short path of its own: a socket path must fit in about 100 bytes.
            folder = tempfile.mkdtemp(prefix="gqsock-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            self.socket = folder + "/redis.sock"
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            *(("--unixsocket", self.socket, "--unixsocketperm", "700") if self.socket else ()),
            *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not answers(self.url, 0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.02)
        return self

    def stop(self, *, save: bool = False) -> None:
        """Stop the server (writing a snapshot first with ``save``)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if save:
            client = redis.Redis(port=self.port, socket_timeout=10)
            try:
                client.save()  # a snapshot, which the next start loads
            finally:
                client.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class RedisClusterNodes:
    """A 3-master Redis Cluster of this test process on free loopback ports."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes: list[RedisServer] = []
        for n in range(masters):
            bus = free_port()
            server = RedisServer(
                directory / f"node{n}",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(bus),
                "--cluster-node-timeout", "5000",
            )  # fmt: skip
            self.nodes.append(server)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout: float = 30.0) -> RedisClusterNodes:
        cli = shutil.which("redis-cli")
        if cli is None:
            unavailable("redis-cli is not on PATH")
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [cli, "--cluster", "create"]
                + [f"127.0.0.1:{node.port}" for node in self.nodes]
                + ["--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=timeout,
            )
            deadline = time.monotonic() + timeout
            while not all(self._ok(node) for node in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the test cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _ok(node: RedisServer) -> bool:
        client = redis.Redis(port=node.port, socket_timeout=1)
        try:
            info = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
            if isinstance(info, dict):  # redis-py parses the reply
                return info.get("cluster_state") in ("ok", b"ok")
            text = info.decode() if isinstance(info, bytes) else str(info)
            return "cluster_state:ok" in text
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


_redis_url: str | None = None
_redis_error: str | None = None
_handed_out: set[str] = set()


def redis_url() -> str:
    """The suite's shared Redis (see the module docstring); skips or fails without one."""
    global _redis_url, _redis_error
    if _redis_url is None and _redis_error is None:
        _redis_url, _redis_error = _find_redis()
    if _redis_url is None:
        unavailable(_redis_error or "no Redis")
    return _redis_url


def _find_redis() -> tuple[str | None, str | None]:
    configured = os.environ.get("GOPHERQ_TEST_REDIS_URL")
    if configured:
        if answers(configured, 2.0):
            return configured, None
        return None, f"GOPHERQ_TEST_REDIS_URL={configured} does not answer"
    if answers(LOCAL_REDIS):
        return LOCAL_REDIS, None
    if shutil.which("redis-server") is None:
        return None, "no Redis: 127.0.0.1:6379 does not answer and redis-server is not on PATH"
    directory = Path(tempfile.mkdtemp(prefix="gopherq-redis-"))
    server = RedisServer(directory)
    try:
        server.start()
    except RuntimeError as exc:
        return None, str(exc)
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    atexit.register(server.stop)
    return server.url, None


def with_prefix(url: str, prefix: str | None = None) -> str:
    """``url`` with a ``prefix`` query option: a fresh unique one unless given."""
    prefix = prefix or TEST_PREFIX + uuid.uuid4().hex[:12]
    _handed_out.add(prefix)
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def redis_test_url() -> str:
    """A private URL on the shared Redis: a unique key prefix for one test."""
    return with_prefix(redis_url())


FAKE_URL = "redis://fake:6379/0?prefix=t"
"""The URL ``use_fakeredis`` serves (any URL does; this one says so)."""


def use_fakeredis(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Give every Redis ``Connection`` opened from now on one fakeredis server (with
    Lua: the scripts run on it); skip without fakeredis or lupa. Returns a client of it.

    fakeredis reads no shebang line (script flags), as Redis before 7: it refuses a
    script with one here as Redis 6 does, and gopherq goes on without flags.
    """
    pytest.importorskip("lupa")
    fakeredis = pytest.importorskip("fakeredis")
    from fakeredis._helpers import SimpleError
    from fakeredis.commands_mixins.scripting_mixin import ScriptingCommandsMixin

    from gopherq.stores.redis import Connection

    server = fakeredis.FakeServer()
    monkeypatch.setattr(Connection, "_open", lambda self: fakeredis.FakeRedis(server=server))
    real_load = ScriptingCommandsMixin.script_load

    def script_load(self: Any, *args: bytes) -> Any:
        if args and args[0].startswith(b"#!"):
            raise SimpleError(
                "Error compiling script (new function): user_script:1: unexpected symbol near '#'"
            )
        return real_load(self, *args)

    monkeypatch.setattr(ScriptingCommandsMixin, "script_load", script_load)
    return fakeredis.FakeRedis(server=server)


def delete_keys(url: str) -> int:
    """Delete the keys of the prefix ``url`` names (SCAN, never FLUSHDB); how many."""
    from gopherq.stores.redis import Connection

    connection = Connection(url)
    prefix = connection.config.prefix
    try:
        return _delete_prefixes(connection.client, prefix + ":*", {prefix})
    finally:
        connection.close()


def delete_handed_out_keys() -> None:
    """Delete the keys of every prefix handed out on the shared Redis by this process:
    one SCAN for them all (a scan per prefix would read a large keyspace hundreds of
    times)."""
    if _redis_url is None or not _handed_out:
        return
    from gopherq.stores.redis import Connection

    with contextlib.suppress(redis.RedisError, OSError):
        connection = Connection(_redis_url)
        try:
            _delete_prefixes(connection.client, TEST_PREFIX + "*", _handed_out)
        finally:
            connection.close()
    _handed_out.clear()


def _delete_prefixes(client: Any, pattern: str, prefixes: set[str]) -> int:
    """Delete the keys matching ``pattern`` whose prefix is one of ``prefixes``; how
    many. One DEL per key, pipelined: on a cluster the keys live in many slots."""
    found = client.scan_iter(match=pattern, count=10_000)
    ours = [k for k in found if k.split(b":", 1)[0].decode() in prefixes]
    for start in range(0, len(ours), 1000):
        pipe = client.pipeline(transaction=False)
        for key in ours[start : start + 1000]:
            pipe.delete(key)
        pipe.execute()
    return len(ours)
