"""The Redis command path's own connections: made, reused, closed, and left alone after fork.

``Connection.send`` talks to redis-py's connection objects directly (see the
docstring of ``gopherq.stores.redis``); these tests hold it to what that owes:
the pool stays whole for redis-py's own calls, ``close`` closes every connection
made, a failed exchange reconnects, and a forked child neither uses nor closes
its parent's sockets. CI runs them again with the oldest and the newest redis-py
and hiredis that setup.cfg allows (``.ci/redis-py-range``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import hiredis
import pytest
import redis
import redis.utils
import services

from gopherq.stores.redis import Connection

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def named_url() -> Iterator[str]:
    """A private URL on the shared test Redis whose connections carry a name of their own."""
    url = services.redis_test_url()
    yield f"{url}&client_name=gqtest-{uuid.uuid4().hex[:12]}"
    services.delete_keys(url)


def client_name(url: str) -> str:
    return url.rsplit("client_name=", 1)[1]


def clients_named(name: str) -> list[dict[str, str]]:
    """The server's connections that carry ``name`` (CLIENT LIST, from a client of our own)."""
    admin = redis.Redis.from_url(services.redis_url())
    try:
        return [c for c in admin.client_list() if c.get("name") == name]
    finally:
        admin.close()


def wait_for(check: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds}s: {what}")
        time.sleep(0.02)


def client_id(conn: Connection) -> int:
    """The server's id of the connection that served this call (the hot path's)."""
    return int(conn.call(lambda c: conn.run(c, "CLIENT", [], ["ID"])))


def test_redis_py_parses_replies_with_hiredis() -> None:
    # setup.cfg's hiredis floor must be one every redis-py in range parses with (8.x
    # wants 3.2 and quietly falls back to its slower Python parser below that).
    assert redis.utils.HIREDIS_AVAILABLE
    assert hiredis.pack_command(("PING",)) == b"*1\r\n$4\r\nPING\r\n"


def test_a_pool_of_one_connection_serves_hot_and_plain_calls(named_url: str) -> None:
    # The hot path used to take a connection from redis-py's pool and keep it: with
    # max_connections=1 every plain redis-py call after the first hot one was refused.
    conn = Connection(named_url + "&max_connections=1")
    key = conn.config.prefix + ":one"
    try:
        conn.call(lambda c: conn.run(c, "SET", [key], ["1"]))
        assert conn.call(lambda c: c.get(key)) == b"1"
        assert conn.call(lambda c: conn.run(c, "GET", [key], [])) == b"1"
        assert conn.call(lambda c: c.exists(key)) == 1
    finally:
        conn.close()


def test_close_closes_every_connection_the_hot_path_made(named_url: str) -> None:
    conn = Connection(named_url)
    key = conn.config.prefix + ":wake"
    name = client_name(named_url)
    # Two connections: one blocked in BLPOP on another thread, one that wakes it.
    blocked = threading.Thread(target=lambda: conn.call(lambda c: conn.run(c, "BLPOP", [key], [5])))
    blocked.start()
    wait_for(lambda: any(c.get("cmd") == "blpop" for c in clients_named(name)), "BLPOP waiting")
    conn.call(lambda c: conn.run(c, "RPUSH", [key], ["x"]))
    blocked.join()
    assert {"blpop", "rpush"} <= {c["cmd"] for c in clients_named(name)}  # and the pool's

    conn.close()
    wait_for(lambda: not clients_named(name), "no connection left open after close")
    assert client_id(conn) > 0  # and the next call opens anew


def test_a_killed_connection_reconnects_on_the_next_call(named_url: str) -> None:
    conn = Connection(named_url)
    try:
        first = client_id(conn)
        admin = redis.Redis.from_url(services.redis_url())
        try:
            admin.client_kill_filter(_id=str(first))
        finally:
            admin.close()
        again = client_id(conn)  # the failed exchange disconnects; a retry reconnects
        assert again != first
        assert client_id(conn) == again
    finally:
        conn.close()


def test_a_forked_child_opens_its_own_and_leaves_the_parents_alone(named_url: str) -> None:
    conn = Connection(named_url)
    try:
        parent = client_id(conn)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: one call, close, and exit without pytest's clean-up
            try:
                child = client_id(conn)
                conn.close()
                os.write(write, str(child).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as answer:
            child = int(answer.read() or 0)
        os.waitpid(pid, 0)
        assert child not in (0, parent)
        # The parent's connection is the same one, still open: the child neither used
        # nor shut down its socket.
        assert client_id(conn) == parent
    finally:
        conn.close()
