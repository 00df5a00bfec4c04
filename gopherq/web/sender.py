"""``Sender``: sends from async routes, the sends of concurrent requests in one broker call.

A route that sends one job per request would pay one broker round trip per
request, and block its thread (or the event loop) meanwhile. ``Sender.send``
instead hands the signatures to one thread of its own and awaits the result:
the thread takes everything pending, calls ``app.send_many`` once for all of it,
and resolves each caller's future with its own results. Under load a batch holds
the requests that arrived during the previous broker call (group commit), so the
broker sees one round trip per batch rather than per request; a lone request is
sent at once, without waiting for company.

Errors: an error raised while the messages are built (a ``TypeError`` for
arguments the task does not take, a ``ValueError`` for a bad send option, a
``SerializationError`` for arguments the codec cannot encode, a
``ConfigurationError``) happens before anything reaches the broker, so a batch
that fails with one is sent again one request at a time: the error reaches only
the request that caused it. Any other error (``BrokerUnavailable``, ...) reaches
every request of the batch, and nothing is sent again, since part of the batch
may have been enqueued.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gopherq.app import GopherQ
from gopherq.errors import BrokerUnavailable, ConfigurationError, SerializationError
from gopherq.result import AsyncResult
from gopherq.task import Signature

MAX_BATCH = 1000
"""Signatures sent in one ``send_many`` call at most (a request with more goes alone)."""

_INPUT_ERRORS = (TypeError, ValueError, SerializationError, ConfigurationError)
"""Raised by ``send_many`` while it builds messages, before the broker is called."""


@dataclass(slots=True)
class _Request:
    signatures: Sequence[Signature[Any]]
    future: asyncio.Future[list[AsyncResult[Any]]]
    loop: asyncio.AbstractEventLoop


class Sender:
    """Sends signatures for coroutines, many requests' sends in one ``send_many``.

    The thread starts on the first send (or ``start()``, which ``create_app`` calls
    in the ASGI lifespan); ``close()`` at shutdown sends whatever is pending first.
    """

    def __init__(self, app: GopherQ, *, max_batch: int = MAX_BATCH) -> None:
        self.app = app
        self.max_batch = max_batch
        self._pending: deque[_Request] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the sending thread, also after ``close`` (if it runs, nothing changes)."""
        with self._wake:
            self._closing = False
            self._start()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="gopherq-sender", daemon=True)
            self._thread.start()

    async def send(self, signatures: Sequence[Signature[Any]]) -> list[AsyncResult[Any]]:
        """Send ``signatures`` (in this order, in one batch) and return their results.

        Raises what ``app.send_many`` raises for them, and ``BrokerUnavailable``
        once the sender is closed. Cancelling the await does not withdraw the send.
        """
        if not signatures:
            return []
        loop = asyncio.get_running_loop()
        request = _Request(signatures, loop.create_future(), loop)
        with self._wake:
            if self._closing:
                raise BrokerUnavailable("the server is stopping: it takes no more jobs")
            self._start()  # mounted in another app, the lifespan may never have run
            self._pending.append(request)
            self._wake.notify()
        return await request.future

    def close(self, timeout: float | None = 30.0) -> None:
        """Send what is pending, then stop the thread (within ``timeout`` seconds).

        Sends still pending after ``timeout`` (the broker not answering) fail with
        ``BrokerUnavailable``; later calls to ``send`` raise it at once.
        """
        with self._wake:
            self._closing = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._wake:
            left = list(self._pending)
            self._pending.clear()
        _settle(left, BrokerUnavailable("the server stopped before these jobs were sent"))

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                if not self._pending:
                    return
                batch = self._take()
            self._send(batch)

    def _take(self) -> list[_Request]:
        """The oldest pending requests, up to ``max_batch`` signatures (at least one)."""
        batch = [self._pending.popleft()]
        count = len(batch[0].signatures)
        while self._pending and count + len(self._pending[0].signatures) <= self.max_batch:
            request = self._pending.popleft()
            batch.append(request)
            count += len(request.signatures)
        return batch

    def _send(self, batch: list[_Request]) -> None:
        try:
            results = self.app.send_many([s for r in batch for s in r.signatures])
        except _INPUT_ERRORS as exc:
            if len(batch) == 1:
                _settle(batch, exc)
            else:
                for request in batch:  # nothing was sent: find whose input it was
                    self._send([request])
            return
        except BaseException as exc:
            _settle(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        _settle(batch, results)


def _settle(batch: list[_Request], outcome: list[AsyncResult[Any]] | BaseException) -> None:
    """Resolve each request's future, with its share of ``outcome`` or the error,
    in one callback per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Any]]] = {}
    start = 0
    for request in batch:
        if isinstance(outcome, BaseException):
            share: Any = outcome
        else:
            share = outcome[start : start + len(request.signatures)]
            start += len(request.signatures)
        by_loop.setdefault(request.loop, []).append((request, share))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits these
            loop.call_soon_threadsafe(_resolve, settled)


def _resolve(settled: list[tuple[_Request, Any]]) -> None:
    for request, share in settled:
        if request.future.done():  # its caller was cancelled
            continue
        if isinstance(share, BaseException):
            request.future.set_exception(share)
        else:
            request.future.set_result(share)
