"""The HTTP endpoint of a worker or an exporter: ``/metrics``, ``/live``, ``/ready``.

Served by a thread of the worker's supervisor (never by the children, which may
be busy or dead) or of ``gopherq exporter``: prometheus-client's own
``start_http_server`` serves only the exposition, and probes need answers of
their own::

    GET /metrics   200, the Prometheus text exposition of the registry
    GET /live      200 "ok", or 503 and why: the supervisor loop stopped ticking
    GET /ready     200 "ok", or 503 and why: the broker does not answer, or (a
                   worker) a process slot is empty
    anything else  404

A check returns None when all is well, else the reason (one line).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from gopherq.redaction import error_line, printable

logger = logging.getLogger("gopherq.worker")

PING_EVERY = 2.0
"""Seconds a broker ping's answer is reused by ``/ready``: probes never load the broker."""
_EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"

Check = Callable[[], str | None]
"""A probe: None when all is well, else why not."""


class Pingable(Protocol):
    """What ``BrokerCheck`` asks: a broker."""

    def ping(self) -> None:
        """Return if it answers; raise otherwise."""


class BrokerCheck:
    """Whether ``broker`` answers ``ping``, asked at most every ``PING_EVERY`` seconds
    (one probe at a time; give it a connection of its own, not the supervisor's)."""

    def __init__(self, broker: Pingable) -> None:
        self.broker = broker
        self._lock = threading.Lock()
        self._next = 0.0
        self._error: str | None = None

    def __call__(self) -> str | None:
        with self._lock:
            if time.monotonic() >= self._next:
                try:
                    self.broker.ping()
                    self._error = None
                except Exception as exc:  # a probe reports, it does not raise
                    self._error = f"the broker does not answer: {error_line(exc)}"
                self._next = time.monotonic() + PING_EVERY
            return self._error


def cannot_serve(host: str, port: int, exc: OSError) -> str:
    """One line saying why ``host:port`` cannot be served: mostly a port in use."""
    why = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return f"cannot serve metrics on {host}:{port}: {why}"


def all_well() -> str | None:
    """The check of a process that is live whenever it can answer."""
    return None


class MetricsServer:
    """Serves ``registry`` and the ``live`` and ``ready`` checks on ``host:port``.

    The constructor binds the port (``OSError`` if it is taken); ``start`` serves
    from a daemon thread; ``close`` stops it.
    """

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, live: Check, ready: Check
    ) -> None:
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), _Handler)
        self._server.endpoints = {"/metrics": self._metrics, "/live": live, "/ready": ready}
        self.host = host
        self.registry = registry
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gopherq-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        """The port bound (the one asked for, or the one the system chose for 0)."""
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        """The URL of ``/metrics`` on the address bound."""
        where = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"http://{where}:{self.port}/metrics"

    def start(self) -> None:
        """Serve from a daemon thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def _metrics(self) -> bytes:
        return generate_latest(self.registry)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    endpoints: dict[str, Callable[[], bytes | str | None]]


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10.0  # a client that sends nothing does not hold a thread forever

    def do_GET(self) -> None:
        endpoint = self.server.endpoints.get(self.path.partition("?")[0])
        if endpoint is None:
            self._reply(404, b"not found: try /metrics, /live or /ready\n")
            return
        try:
            answer = endpoint()
        except Exception:
            logger.exception("metrics endpoint %s failed", printable(self.path))
            self._reply(500, b"internal error (see the worker's log)\n")
            return
        if isinstance(answer, bytes):
            self._reply(200, answer, _EXPOSITION)
        elif answer is None:
            self._reply(200, b"ok\n")
        else:
            self._reply(503, f"{answer}\n".encode())

    def _reply(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds are not worth a log line each."""
