"""Talking to Redis: URLs, per-process clients, Lua scripts, errors and retries.

Shared by the Redis broker, result backend, event log and schedule store (see
``gopherq.stores``). A ``Connection`` parses
its URL once and opens its client (a ``redis.Redis`` pool, or a
``redis.cluster.RedisCluster``) lazily, in the process that uses it: a forked
child never touches its parent's sockets, it opens its own on first use.

Hot calls skip redis-py's per-command machinery (see ``Connection.send``) but
keep its connection classes, so every URL option, TLS and authentication work as
usual; replies that carry many fields come as one msgpack string (``unpack``).

redis-py below its client API, and why. ``send`` writes requests that hiredis
packs with a connection's ``send_packed_command`` and reads each reply with its
``read_response``, on connections of its own: made with the client pool's
``connection_class`` and ``connection_kwargs``, not taken from the pool.
Measured with redis-py 8.1 and hiredis 3.5 on a 2-CPU VM (benchmarks/bench_redis.py,
3,000 + 6,000 tasks and 150 round trips, twelve alternating runs of each, medians),
against ``Redis.execute_command`` and non-transaction pipelines: enqueue 0.52x,
drain 0.90x, a ``.delay().get()`` round trip 1.33x the time (0.80 ms against 0.60);
against the pool's ``get_connection`` and ``release`` around each call (a lock, a
readiness poll, metrics): enqueue 0.74x, drain 0.98x, round trip 1.12x. A single
``.delay()`` in-process: 44 us, 74 and 64. So the connections stay outside
the pool: nothing is taken from it and kept, and redis-py's own calls (and a
``max_connections`` option) see the pool whole. ``close`` disconnects every one
made, even one a thread is using; a failed exchange disconnects its connection
and the next call reconnects it; after a fork the child drops them unclosed
(``_forget``: redis-py closes only the child's copy of a socket, never shuts down
the parent's) and makes its own. Those three methods and two attributes are not
redis-py's documented API, so setup.cfg holds redis-py to the range CI runs the
Redis tests on (``.ci/redis-py-range``): the lowest versions it names (redis 5.0;
hiredis 3.2, the oldest redis-py 8 parses with) and the newest releases below
redis-py 9. A new major redis-py is allowed after it passes there.

Scripts are run with EVALSHA only. After NOSCRIPT (Redis restarted, or its
script cache was flushed) every script is loaded again (SCRIPT LOAD, on every
primary of a cluster) and the call repeated: a NOSCRIPT call did nothing, so
repeating it is always safe. Not Redis 7 functions (FUNCTION LOAD, FCALL),
although those would not define the ``lib.lua`` helpers again on every call
(each script carries only those it uses, which leaves a few percent): once
memory is full (maxmemory) Redis refuses outright any function that may write,
where a script may still run the commands that free memory: acks and deletes
would fail just when they are needed. Scripts declare their flags in a Redis 7
shebang line (``#!lua flags=allow-oom``, the first line of a script file, kept
first by ``script``): see lib.lua. An out-of-memory refusal raises
``BrokerUnavailable`` ("try later"), not repeated.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import hiredis
import msgpack
import redis
import redis.cluster
import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from gopherq.errors import BrokerError, BrokerUnavailable, ConfigurationError
from gopherq.redaction import redact_url

logger = logging.getLogger("gopherq.redis")

Client: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
T = TypeVar("T")

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
DEFAULT_PREFIX = "gq"
DEFAULT_DEAD_LETTER_MAX = 10_000
# Our own query options; every other one goes to redis-py (socket_timeout, ...).
OWN_OPTIONS = ("prefix", "dead_letter_max")
DEFAULTS: dict[str, Any] = {
    "socket_timeout": 5.0,  # no reply within this: the server is gone (blocking calls stay below)
    "socket_connect_timeout": 2.0,
    "socket_keepalive": True,
    "protocol": 2,  # RESP2: replies have the plain shapes the scripts return
}
# Producers retry a failed call this many times in all, backing off, within RETRY_BUDGET.
RETRIES = 3
BACKOFF = (0.2, 0.6)
RETRY_BUDGET = 2.0

UNAVAILABLE: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # refused, reset, LOADING (BusyLoadingError), auth failures
    rex.TimeoutError,
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.ReadOnlyError,  # a failover is in progress
    rex.RedisClusterException,  # no node reachable to read the slot map from
    OSError,
)


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed gopherq Redis URL."""

    url: str = field(repr=False)
    client_url: str = field(repr=False)
    """The URL redis-py gets: our scheme mapped to its own, our options removed."""
    cluster: bool
    prefix: str
    dead_letter_max: int
    safe: str
    """The URL with any password masked, for messages and logs."""


def parse_url(url: str) -> RedisURL:
    """Parse ``redis://``, ``rediss://``, ``unix://`` and ``redis+cluster://`` URLs."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # a malformed IPv6 host
        raise ConfigurationError(f"bad Redis URL {redact_url(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"unsupported Redis URL {redact_url(url)!r}; use one of "
            + ", ".join(s + "://" for s in SCHEMES)
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "protocol" and v != "2" for k, v in query):
        raise ConfigurationError(
            f"bad Redis URL {redact_url(url)!r}: gopherq speaks RESP2 (protocol=2)"
        )
    own = {k: v for k, v in query if k in OWN_OPTIONS}
    prefix = own.get("prefix", DEFAULT_PREFIX)
    if not prefix or any(c in prefix for c in "{}*?[]"):
        raise ConfigurationError(f"bad Redis key prefix {prefix!r}: no braces or glob characters")
    try:
        dead_letter_max = int(own.get("dead_letter_max", DEFAULT_DEAD_LETTER_MAX))
    except ValueError:
        raise ConfigurationError(
            f"bad dead_letter_max in {redact_url(url)!r}: not an integer"
        ) from None
    cluster = scheme.endswith("+cluster")
    client_scheme = scheme.removesuffix("+cluster")
    rest = urlencode([(k, v) for k, v in query if k not in OWN_OPTIONS])
    # Not urlunsplit: it drops the empty host of unix:///path.
    client_url = f"{client_scheme}://{parts.netloc}{parts.path}" + (f"?{rest}" if rest else "")
    return RedisURL(url, client_url, cluster, prefix, dead_letter_max, redact_url(url))


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script: the ``lib.lua`` helpers it uses followed by the file's own text."""

    name: str
    source: str
    sha: str
    plain: str
    """``source`` without its shebang line (flags), for Redis before 7."""
    plain_sha: str


@functools.cache
def script(name: str) -> Script:
    """The script ``gopherq/brokers/redis/scripts/<name>.lua`` with the shared helpers it
    uses in front.

    The scripts stay beside the Redis broker, whose key layout (``lib.lua``) they
    act on; they are read as package data, without importing the broker.
    """
    folder = resources.files("gopherq").joinpath("brokers").joinpath("redis").joinpath("scripts")
    own = folder.joinpath(name + ".lua").read_text(encoding="utf-8")
    # A shebang line (#!lua flags=..., Redis 7) must stay the first line of the source.
    shebang, own = own.split("\n", 1) if own.startswith("#!") else ("", own)
    plain = _with_helpers(folder.joinpath("lib.lua").read_text(encoding="utf-8"), own)
    source = shebang + "\n" + plain if shebang else plain
    return Script(name, source, _sha(source), plain, _sha(plain))


def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


_inline_sha = functools.cache(_sha)


_DEFINITION = re.compile(r"^local (?:function )?(\w+)", re.MULTILINE)
_COMMENT = re.compile(r"--[^\n]*")


def _with_helpers(lib: str, own: str) -> str:
    """``own`` behind the definitions of ``lib`` it uses, directly or through others.

    Redis runs a script's whole text on every call, so each helper it carries costs
    a closure per call whether used or not: all of lib.lua was about a tenth of the
    enqueue script's time. A definition runs from a top-level ``local`` to the
    next; it may use only those above it, so one pass from the last one up finds
    them all. lib.lua's opening comment (the key layout) stays, at no cost.
    """
    starts = [m.start() for m in _DEFINITION.finditer(lib)] + [len(lib)]
    chosen: list[str] = []
    used = _COMMENT.sub("", own)
    for start, end in reversed(list(itertools.pairwise(starts))):
        definition = lib[start:end]
        helper = _DEFINITION.match(definition)
        if helper and re.search(rf"\b{helper[1]}\b", used):
            chosen.append(definition)
            used += _COMMENT.sub("", definition)
    return lib[: starts[0]] + "".join(reversed(chosen)) + "\n" + own


SCRIPT_NAMES = (
    "enqueue", "reserve", "ack", "retry", "dead", "extend", "requeue", "stats", "depths", "purge",
    "dead_letters", "requeue_dead", "purge_dead", "delete", "locate", "peek",
    "result_store", "result_token", "cancel", "cancel_requested", "resume", "rename",
    "settle_held", "event_add", "event_job", "event_index", "result_index", "result_unindex",
    "concurrency_admit", "concurrency_park", "concurrency_wake", "concurrency_release",
    "concurrency_renew", "concurrency_forget",
    "rate_admit", "rate_keep", "rate_release", "rate_hold", "rate_limits", "defer", "defer_release",
)  # fmt: skip

Call: TypeAlias = "tuple[Script | str, Sequence[str], Sequence[Any]]"
"""A script, or a plain command name, with its keys and arguments."""


class Connection:
    """A Redis client for one URL, opened lazily in each process that uses it."""

    def __init__(self, url: str | RedisURL) -> None:
        self.config = url if isinstance(url, RedisURL) else parse_url(url)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._client: Client | None = None
        # The hot path's own connections (see send): every one made, and those free now.
        self._connections: list[redis.connection.AbstractConnection] = []
        self._idle: list[redis.connection.AbstractConnection] = []
        self._policy_checked = False
        self._flags = True  # the server takes script flags (Redis 7); see load_scripts
        timeout = _query_float(self.config.client_url, "socket_timeout")
        timeout = DEFAULTS["socket_timeout"] if timeout is None else timeout
        # Blocking calls return before the socket timeout would call the server gone.
        self.max_block = min(2.0, max(timeout - 1.0, timeout / 2))

    @property
    def cluster(self) -> bool:
        return self.config.cluster

    @property
    def client(self) -> Client:
        """This process's client, created on first use."""
        if self._pid != os.getpid():
            self._forget()
            self._policy_checked = False
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._open()
                client = self._client
        return client

    def _open(self) -> Client:
        options = dict(DEFAULTS)  # options in the URL win over these
        if self.config.client_url.startswith("unix:"):
            del options["socket_keepalive"]  # TCP only
        try:
            if self.config.cluster:
                # One retry lets the client follow a failover (it re-reads the slot map).
                return redis.cluster.RedisCluster.from_url(
                    self.config.client_url, retry=Retry(NoBackoff(), 1), **options
                )
            # No hidden retries: a repeated reserve could lease messages nobody receives.
            client = redis.Redis.from_url(
                self.config.client_url, retry=Retry(NoBackoff(), 0), **options
            )
            # redis-py refuses an unknown URL option only when it makes a connection, with
            # a TypeError on every call: make one (unconnected) now, to fail here instead.
            self._idle.append(self._connect(client))
            return client
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"bad Redis URL {self.config.safe}: {exc}") from exc

    def call(self, fn: Callable[[Client], T], *, retry: bool = True) -> T:
        """Run ``fn(client)``, turning Redis errors into gopherq's.

        With ``retry``, a connection failure is retried (``RETRIES`` tries within
        about ``RETRY_BUDGET`` seconds) before ``BrokerUnavailable`` is raised; use it
        only for calls that are safe to repeat.
        """
        start = time.monotonic()
        for attempt in range(RETRIES):
            try:
                if not self._policy_checked:
                    self._check_policy()
                return fn(self.client)
            except UNAVAILABLE as exc:
                last = attempt == RETRIES - 1 or time.monotonic() - start > RETRY_BUDGET
                if not retry or last:
                    raise BrokerUnavailable(f"Redis {self.config.safe}: {exc}") from exc
                time.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            except rex.OutOfMemoryError as exc:
                # Not repeated: memory frees only as workers finish messages (the scripts
                # that drain run at maxmemory, see lib.lua), not within a retry's budget.
                raise BrokerUnavailable(
                    f"Redis {self.config.safe} is full (maxmemory) and refuses to store "
                    "more until workers finish some messages; try again later "
                    f"(or raise maxmemory): {exc}"
                ) from exc
            except rex.RedisError as exc:
                raise BrokerError(f"Redis {self.config.safe}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def eval_inline(
        self, source: str, keys: Sequence[str], args: Sequence[Any], *, retry: bool = True
    ) -> Any:
        """EVALSHA a script given as text (a store's own, not one of the broker's files)
        through ``call``; after NOSCRIPT, load it and run it again."""
        sha = _inline_sha(source)

        def run(client: Client) -> Any:
            try:
                return client.evalsha(sha, len(keys), *keys, *args)
            except rex.NoScriptError:
                client.script_load(source)
                return client.evalsha(sha, len(keys), *keys, *args)

        return self.call(run, retry=retry)

    def run(
        self, client: Client, script_: Script | str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """EVALSHA ``script_`` (or run the command so named); after NOSCRIPT, load every
        script and run it again."""
        return self.run_many(client, [(script_, keys, args)])[0]

    def run_many(self, client: Client, calls: Sequence[Call]) -> list[Any]:
        """Run every call in one round trip (per node of a cluster); their results.

        Calls that failed with NOSCRIPT run again after the scripts are loaded.
        """
        commands = [self._command(*call) for call in calls]
        results = self.send(client, commands)
        missing = [i for i, r in enumerate(results) if isinstance(r, rex.NoScriptError)]
        if missing:
            self.load_scripts(client)  # may find the server takes no flags: commands anew
            again = self.send(client, [self._command(*calls[i]) for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def run_blocking(self, client: Client, calls: Sequence[Call]) -> list[Any]:
        """Run calls in order where some block (BLPOP, BLMOVE); their results.

        On a plain ``redis.Redis`` they go in one write: Redis holds the calls after
        a blocking one until it returns, then runs them at once, a round trip sooner
        than a client could send them. Elsewhere one by one (cluster pipelines
        refuse blocking commands).
        """
        if type(client) is redis.Redis:
            return self.run_many(client, calls)
        return [self.run(client, *call) for call in calls]

    def send(self, client: Client, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send commands in one write (a pipeline per node on a cluster) and return their
        replies in order, error replies as exception objects.

        On a plain ``redis.Redis`` this skips redis-py's per-call machinery (its retry
        wrapper, event dispatch and metrics, the pool's readiness poll: a syscall per
        command), most of the client-side cost of a small command, and talks to the
        connection directly; redis-py still opens it (URL options, TLS, AUTH, SELECT)
        and parses the replies (in C, with hiredis). hiredis packs the requests, as it
        does inside redis-py, but without redis-py's wrapping (its checks of every
        argument cost about 2 us of a small call). The connections are this object's
        own, made with the pool's class and options but not taken from the pool (see
        the module docstring): each thread takes one from ``_idle`` (list pop and
        append are atomic) and puts it back; a failed exchange disconnects it, and its
        next use reconnects.
        """
        if type(client) is not redis.Redis:  # a cluster, or a test double
            if len(commands) == 1:
                try:
                    return [client.execute_command(*commands[0])]  # type: ignore[no-untyped-call]
                except rex.ResponseError as exc:
                    return [exc]
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = pipe.execute(raise_on_error=False)
            return replies
        idle = self._idle
        try:
            connection = idle.pop()
        except IndexError:
            connection = self._connect(client)
        try:
            request = b"".join([hiredis.pack_command(tuple(command)) for command in commands])
            connection.send_packed_command([request], False)  # type: ignore[no-untyped-call]
            return [_reply(connection) for _ in commands]
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]  # no replies left unread
            raise
        finally:
            idle.append(connection)

    def load_scripts(self, client: Client) -> None:
        """SCRIPT LOAD every script (on every primary of a cluster).

        Redis before 7 reads no shebang line (a compile error at the ``#``): when a
        script with flags is refused but loads without them, every script goes
        without, as before flags existed (see lib.lua), and a warning says what that
        costs. A script refused both ways raises.
        """
        for name in SCRIPT_NAMES:
            script_ = script(name)
            if self._flags and script_.plain != script_.source:
                try:
                    client.script_load(script_.source)
                    continue
                except rex.ResponseError:
                    client.script_load(script_.plain)
                    self._flags = False
                    logger.warning(
                        "Redis %s takes no script flags (Redis 7 does): when it is full "
                        "(maxmemory), workers may be refused taking and finishing messages",
                        self.config.safe,
                    )
                    continue
            client.script_load(script_.source if self._flags else script_.plain)

    def _command(
        self, script_: Script | str, keys: Sequence[str], args: Sequence[Any]
    ) -> list[Any]:
        """The command line of a call: EVALSHA with its keys and arguments, or a command."""
        if isinstance(script_, str):
            return [script_, *keys, *args]
        sha = script_.sha if self._flags else script_.plain_sha
        return ["EVALSHA", sha, len(keys), *keys, *args]

    def _check_policy(self) -> None:
        """Warn once per process when Redis may evict keys (gopherq's messages)."""
        client: Any = self.client
        try:
            if self.config.cluster:
                answer = client.config_get("maxmemory-policy", target_nodes="primaries")
            else:
                answer = client.config_get("maxmemory-policy")
        except rex.ResponseError:  # CONFIG is renamed or not permitted: nothing to check
            self._policy_checked = True
            return
        self._policy_checked = True
        evicting = sorted(p for p in _policies(answer) if p != "noeviction")
        if evicting and self.config.client_url not in _WARNED:
            _WARNED.add(self.config.client_url)  # once per server per process
            logger.warning(
                "Redis %s has maxmemory-policy %s: it may evict gopherq's messages when "
                "memory runs out; set maxmemory-policy noeviction",
                self.config.safe,
                "/".join(evicting),
            )

    def _connect(self, client: redis.Redis) -> redis.connection.AbstractConnection:
        """A new connection of the hot path, unconnected: the first command connects it."""
        pool = client.connection_pool
        connection: redis.connection.AbstractConnection
        connection = pool.connection_class(**pool.connection_kwargs)
        self._connections.append(connection)
        return connection

    def _forget(self) -> None:
        """After a fork: drop the parent's client and connections without closing them.

        Their sockets are the parent's, still in use there; redis-py closes only the
        child's copy of a socket when the objects go (no shutdown from another pid).
        """
        self._client, self._pid, self._connections, self._idle = None, os.getpid(), [], []

    def close(self) -> None:
        """Close this process's connections; the next call opens new ones."""
        if self._pid != os.getpid():
            self._forget()
            return
        with self._lock:
            client, self._client = self._client, None
            connections, self._connections, self._idle = self._connections, [], []
        for connection in connections:  # also one that a thread uses now: its call fails
            connection.disconnect()  # type: ignore[no-untyped-call]
        if client is not None:
            client.close()


_WARNED: set[str] = set()


def unpack(reply: Any) -> Any:
    """A script's array reply, which ``reply()`` (lib.lua) sends as one msgpack string
    where the server has cmsgpack (strings come back as bytes, as from RESP)."""
    return msgpack.unpackb(reply, raw=True) if isinstance(reply, bytes) else reply


def scored(reply: Sequence[Any]) -> list[tuple[Any, float]]:
    """A ``WITHSCORES`` reply as (member, score) pairs: Redis sends them one after the
    other; a client that parses replies itself (a cluster's, or a test double) may
    have paired them already."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(member, float(score)) for member, score in reply]
    return [(reply[j], float(reply[j + 1])) for j in range(0, len(reply), 2)]


def _reply(connection: Any) -> Any:
    """The next reply on ``connection``, an error reply as its exception object."""
    try:
        return connection.read_response()
    except rex.ResponseError as exc:
        return exc


def _query_float(url: str, name: str) -> float | None:
    for key, value in parse_qsl(urlsplit(url).query):
        if key == name:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _policies(answer: Any) -> set[str]:
    """The policies in a CONFIG GET answer: ``{name: value}``, or one such map per node."""
    if not isinstance(answer, dict):
        return set()
    found: set[str] = set()
    for value in answer.values():
        if isinstance(value, dict):
            found |= _policies(value)
        elif value:
            found.add(value.decode() if isinstance(value, bytes) else str(value))
    return found
