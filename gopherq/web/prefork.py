"""Several server processes on one port (``gopherq serve --workers N``).

The parent binds the port, forks ``count`` children that each serve it with an
event loop of their own (on Linux from a listening socket of their own, between
which the kernel spreads connections: ``server.listeners``), and then only
watches: SIGTERM or SIGINT is passed on to every child, which finishes its
requests in flight (``server.GRACE``) and exits; a child that dies otherwise is
forked again, unless children keep dying within ``QUICK_EXIT`` seconds of their
start (a broken setup, not bad luck), which stops the others and ends ``run``
with exit status 1. One process serves about one CPU's worth of requests: the
Python code of a request holds the GIL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger(__name__)

QUICK_EXIT = 1.0
"""A child that exits within this many seconds of its fork counts as a failed start."""
FAILED_STARTS = 5
"""Failed starts in a row after which the parent gives up."""
KILL_AFTER = 15.0
"""Seconds after a stop request past which children still running are killed."""
_STOPS = (signal.SIGINT, signal.SIGTERM)


class Prefork:
    """Runs ``child`` (which serves until SIGTERM, then returns) in ``count`` forked
    processes, replacing those that die, until SIGTERM or SIGINT. Each process gets
    its slot, 0 to ``count`` - 1, as the argument of ``child``; one that replaces
    another gets the same."""

    def __init__(self, count: int, child: Callable[[int], None]) -> None:
        self.count = count
        self._child = child
        self._children: dict[int, tuple[int, float]] = {}  # pid -> its slot, when forked
        self._stop_at: float | None = None
        self._failed_starts = 0

    def run(self, on_started: Callable[[], object] = lambda: None) -> int:
        """Fork the children, call ``on_started``, watch them; the exit status."""
        original = {sig: signal.signal(sig, self._stop) for sig in _STOPS}
        try:
            for slot in range(self.count):
                self._fork(slot)
            on_started()
            return self._watch()
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: int) -> None:
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _watch(self) -> int:
        status = 0
        while self._children:
            if self._stop_at is not None and time.monotonic() - self._stop_at > KILL_AFTER:
                self._signal_all(signal.SIGKILL)
            pid, code = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(0.1)  # no child exited: a SIGCHLD-free wait that sees signals
                continue
            child = self._children.pop(pid, None)
            if child is None or self._stop_at is not None:
                continue
            slot, forked = child
            logger.warning("server process %d %s; starting another", pid, _ended(code))
            quick = time.monotonic() - forked < QUICK_EXIT
            self._failed_starts = self._failed_starts + 1 if quick else 0
            if self._failed_starts >= FAILED_STARTS:
                logger.error("server processes keep exiting at start; stopping")
                status = 1
                self._stop(signal.SIGTERM, None)
                continue
            self._fork(slot)
        return status

    def _fork(self, slot: int) -> None:
        # Signals stay blocked across fork, so that the child runs none of the
        # parent's handlers before it puts back the defaults.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        try:
            pid = os.fork()
            if pid == 0:
                self._become_child(slot)
            self._children[pid] = (slot, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)

    def _become_child(self, slot: int) -> None:
        """In the forked child: serve, then exit without returning to the caller."""
        code = 0
        try:
            for sig in _STOPS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
            self._child(slot)
        except BaseException:  # the parent logs the exit; the traceback is said here
            logger.exception("server process %d failed", os.getpid())
            code = 1
        finally:
            os._exit(code)


def _ended(status: int) -> str:
    """How a child ended, from its ``waitpid`` status: "exited with status N" or
    "was killed by SIGNAME"."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"
