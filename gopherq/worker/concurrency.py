"""Admission by concurrency limit: ``@app.task(concurrency=N)`` at the worker.

The broker keeps the count (``Broker.admit``: a lease-backed set of holders per
task, see docs/flow-control.md); a worker process only asks and obeys::

    reserve ──> admit? ──yes──> run ──> settle ──> release_admitted
                  │                                  (wakes one parked message)
                  no: the broker parked the message; drop it, run the next

A parked message holds no worker process and costs no polling: the broker makes
it ready again when a slot frees (or after one lease, should that wake-up be
lost). While a limited task runs, the lease thread renews its slot with
``renew_admitted`` next to the message leases, one broker call per tick.

A consumer builds an ``Admission`` only when one of the app's tasks declares
``concurrency``: without one, tasks pay nothing, not even a lookup; with one, an
unlimited task costs a dictionary lookup and no broker call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from gopherq.backoff import next_backoff
from gopherq.brokers.base import Delivery
from gopherq.errors import ConfigurationError
from gopherq.message import Message

if TYPE_CHECKING:
    from gopherq.app import GopherQ

logger = logging.getLogger("gopherq.worker")


def limited_tasks(app: GopherQ) -> dict[str, int]:
    """Task name -> its ``concurrency``, of the app's tasks that declare one."""
    return {
        name: task.options.concurrency
        for name, task in app.tasks.items()
        if task.options.concurrency is not None
    }


def check_support(app: GopherQ) -> None:
    """Raise ``ConfigurationError`` (one line) if a task declares ``concurrency`` and
    the app's broker cannot keep such limits."""
    limited = limited_tasks(app)
    if limited and not app.broker.supports_admission():
        name = min(limited)
        raise ConfigurationError(
            f"task {name!r} declares concurrency={limited[name]}, which the broker "
            f"{type(app.broker).__name__} does not support (use sqlite://, redis:// "
            "or memory://, or leave concurrency out)"
        )


class Admission:
    """One worker process's side of the concurrency limits of ``app``'s tasks,
    ``limits`` (task name -> most runs at once). Thread-safe: the lease thread renews."""

    def __init__(self, app: GopherQ, limits: dict[str, int], worker: str) -> None:
        self.app = app  # its broker is opened on first use, not here (the supervisor)
        self.limits = limits
        self.worker = worker
        self._admitted: dict[tuple[str, str], tuple[str, Delivery]] = {}
        self._lock = threading.Lock()
        self._backoff = 0.0  # seconds of the last pause after admit failed

    @classmethod
    def for_app(cls, app: GopherQ, worker: str) -> Admission | None:
        """The admission of ``app``'s limited tasks; None when no task is limited."""
        limits = limited_tasks(app)
        return cls(app, limits, worker) if limits else None

    def admit(self, delivery: Delivery, message: Message | None) -> bool:
        """Whether ``delivery`` may run now. An unlimited task (or an undecodable
        message, or a cancelled one: the runner settles those without running them)
        always may; a limited one when the broker gives it a slot. On False the
        broker has parked it, or it was no longer ours, or the broker failed and it
        went back (else its lease brings it back), after a pause that grows while
        the broker keeps failing: do not run it. A limit is never run over, and
        never loses a message."""
        limit = self.limits.get(message.task) if message is not None else None
        if limit is None or message is None or delivery.cancelled:
            return True
        try:
            admitted = self.app.broker.admit(delivery, message.task, limit)
        except Exception as exc:
            logger.error(
                "worker %s: could not ask for a slot of %s (concurrency=%d), giving it back: %s",
                self.worker,
                message.task,
                limit,
                exc,
            )
            with contextlib.suppress(Exception):  # else its lease brings it back
                self.app.broker.requeue([delivery], started=False)
            self._backoff = next_backoff(self._backoff)
            time.sleep(self._backoff)  # not straight back to the message just given back
            return False
        self._backoff = 0.0
        if admitted:
            with self._lock:
                self._admitted[delivery.id, delivery.token] = (message.task, delivery)
        return admitted

    def release(self, deliveries: Iterable[Delivery]) -> None:
        """Free the slots of these settled deliveries (those that hold one): one broker
        call for them all, none if none does. A failure is logged; their holder
        leases, no longer renewed, free the slots."""
        if not self._admitted:  # only this thread adds to it: no lock needed to look
            return
        with self._lock:
            done = [
                slot
                for d in deliveries
                if (slot := self._admitted.pop((d.id, d.token), None)) is not None
            ]
        self._release(done)

    def free(self, task: str, delivery: Delivery) -> None:
        """Free the slot that ``delivery`` of ``task`` may hold in a process that died
        (the supervisor, for a child it killed or lost): now, not at its lease end."""
        if task in self.limits:
            self._release([(task, delivery)])

    def _release(self, done: list[tuple[str, Delivery]]) -> None:
        if not done:
            return
        try:
            self.app.broker.release_admitted(done)
        except Exception as exc:
            logger.error(
                "worker %s: could not release %d concurrency slots (they free at the end "
                "of their lease): %s",
                self.worker,
                len(done),
                exc,
            )

    def renew(self) -> None:
        """Renew the holder leases of the slots held (the lease thread, every tick)."""
        with self._lock:
            held = list(self._admitted.values())
        if not held:
            return
        try:
            self.app.broker.renew_admitted(held)
        except Exception:
            logger.exception(
                "worker %s: could not renew %d concurrency slots", self.worker, len(held)
            )
