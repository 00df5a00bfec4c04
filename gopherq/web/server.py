"""``serve``: run the HTTP API under uvicorn; what ``gopherq serve`` runs.

The socket is bound here, before uvicorn starts, so that a port in use is one
clear error (uvicorn would log it and exit on its own), and so that port 0 (a
free port the system picks) is known and reported. SIGTERM and SIGINT stop the
server gracefully: it stops accepting, open event streams end within a poll
(``ServerState.stopping``), requests in flight get ``GRACE`` seconds to finish.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

from gopherq.app import GopherQ
from gopherq.errors import ConfigurationError
from gopherq.web.application import create_app
from gopherq.web.prefork import Prefork
from gopherq.web_extra import DEFAULT_THREADS

SPREADS_CONNECTIONS = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
"""Whether the kernel spreads the connections of one port between sockets that bind
it with ``SO_REUSEPORT``."""
GRACE = 10.0
"""Seconds requests in flight (long polls) get to finish once the server is stopping."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(host: str, port: int) -> str:
    """The base URL of a server on ``host:port``."""
    where = f"[{host}]" if ":" in host else host
    return f"http://{where}:{port}"


def bind(host: str, port: int, *, listen: bool = True, reuse_port: bool = False) -> socket.socket:
    """A socket bound to ``host:port``, listening unless ``listen`` is False;
    ``ConfigurationError`` (one line) if it cannot be. ``reuse_port`` lets other
    sockets of this user that set it too bind the same address (``SO_REUSEPORT``)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        hint = "; choose another with --port" if exc.errno == errno.EADDRINUSE else ""
        raise ConfigurationError(f"cannot serve on {host}:{port}: {why}{hint}") from None
    sock.set_inheritable(True)
    return sock


def listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """The listening sockets of ``count`` server processes on ``host:port``, one per
    process (the same one for all when the system cannot spread connections).

    One socket that every process accepts on has a flaw: the process that wakes
    first takes every connection waiting, so keep-alive clients that connect
    together all land on one process. On Linux each process listens on a socket of
    its own on the same port (``SO_REUSEPORT``) and the kernel spreads new
    connections between them. The port is first bound without that option, so that
    one in use by anything, another server of this user included, is refused. The
    sockets are made before any process starts and kept by the parent: a
    connection made meanwhile, or while a process is being replaced, waits for it.
    """
    if count == 1 or not SPREADS_CONNECTIONS:
        return [bind(host, port)] * count
    probe = bind(host, port, listen=False)
    port = probe.getsockname()[1]
    probe.close()
    return [bind(host, port, reuse_port=True) for _ in range(count)]


def serve(
    app: GopherQ,
    host: str = "127.0.0.1",
    port: int = 5555,
    *,
    auth: bool = True,
    log_level: str = "info",
    on_ready: Callable[[str], object] | None = None,
    access_log: bool = False,
    threads: int = DEFAULT_THREADS,
    workers: int = 1,
) -> int:
    """Serve ``app``'s HTTP API until SIGTERM or SIGINT; returns the exit status.

    ``auth=False`` is refused unless ``host`` is a loopback address.
    ``on_ready`` is called with the server's base URL once it accepts
    connections (with the port the system chose, for ``port`` 0). ``access_log``
    logs a line per request (uvicorn's): off by default, as it costs about a third
    of a small request's time in the server. ``threads`` bounds the thread pool
    that runs blocking calls (``gopherq.web_extra.DEFAULT_THREADS``). ``workers``
    above 1 serves from that many processes (``gopherq.web.prefork``).
    """
    if not auth and not is_loopback(host):
        raise ConfigurationError(
            f"--no-auth serves everyone as admin: only allowed on a loopback host, not {host!r}"
        )
    if workers < 1:
        raise ConfigurationError(f"workers must be 1 or more, not {workers}")
    sockets = listeners(host, port, workers)
    url = url_of(host, sockets[0].getsockname()[1])

    def ready() -> None:
        if on_ready is not None:
            on_ready(url)

    def run_one(sock: socket.socket, ready: Callable[[], object]) -> None:
        api = create_app(app, auth=auth, threads=threads)
        config = uvicorn.Config(
            api,
            log_level=log_level,
            access_log=access_log,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=int(GRACE),
        )
        server = _Server(config, api.state.gopherq.stopping.set, ready)
        try:
            server.run(sockets=[sock])
        finally:
            app.close()

    try:
        if workers == 1:
            run_one(sockets[0], ready)
            return 0
        return Prefork(workers, lambda slot: run_one(sockets[slot], lambda: None)).run(ready)
    finally:
        for sock in set(sockets):
            sock.close()


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when it starts stopping and when it is up."""

    def __init__(
        self, config: uvicorn.Config, stopping: Callable[[], None], ready: Callable[[], object]
    ) -> None:
        super().__init__(config)
        self._stopping = stopping
        self._ready = ready

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._stopping()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT start a graceful shutdown, after which ``serve`` returns
        (uvicorn's own raises the signal again once stopped, ending the process by it)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        stops = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._ready()
