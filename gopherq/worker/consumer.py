"""The consumer: one worker process's loop of reserve, run, settle.

Each worker process (or a thread, in tests) runs one ``Consumer``::

    reserve a batch ──> for each delivery: run it with the Runner
          ^                 │  outcome (record + ack / retry / dead) is pending
          │                 v
          └──── flush: store records, then settle in the broker (``settle``)

Batches adapt to the work: up to ``prefetch`` deliveries while tasks are short,
one at a time once they are long, so that a process never sits on long tasks
another process could run; and before a task expected to be long (or of a name
not seen yet) starts, the rest of its batch goes back to the broker. Outcomes
are flushed at the end of each batch, as soon as the oldest one waited
``FLUSH_AFTER``, and before a long task starts, so results never wait behind
other work. A daemon thread renews the leases of everything the consumer
holds, so a long task is never redelivered for being long. What the consumer
holds is mirrored in its ``Slot`` for the supervisor. A task with a concurrency
limit first asks the broker for a slot (``gopherq.worker.concurrency``).

No broker or store fault and no message ends ``run``: a failed reserve or
settle is retried after a pause that grows to 5 s (``gopherq.backoff``; kept while
stopping, until ``SETTLE_ON_STOP`` runs out: the leases then cover what it
holds), and a delivery the runner could not take to an outcome goes back to
the queue, counted as a delivery, as if its process had died.
"""

from __future__ import annotations

import enum
import logging
import os
import resource
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from gopherq.backoff import next_backoff
from gopherq.brokers.base import Delivery
from gopherq.errors import BrokerError
from gopherq.message import Message
from gopherq.redaction import printable
from gopherq.runner import Outcome, Runner
from gopherq.states import DeadReason
from gopherq.worker.concurrency import Admission
from gopherq.worker.rates import RateAdmission
from gopherq.worker.settle import Finished, Settler
from gopherq.worker.slots import Slot
from gopherq.worker.weights import reserver

if TYPE_CHECKING:
    from gopherq.app import GopherQ

logger = logging.getLogger("gopherq.worker")

RESERVE_TIMEOUT = 1.0
"""Seconds one reserve blocks; also how soon an idle consumer notices a stop."""
SHORT_TASK = 0.005
"""Tasks averaging less than this many seconds are prefetched in batches."""
FLUSH_AFTER = 0.02
"""Seconds a finished outcome may wait for others before it is flushed anyway."""
EMA_WEIGHT = 0.3
"""Weight of the newest runtime in the moving averages."""
SETTLE_ON_STOP = 10.0
"""Seconds a stopping consumer keeps trying to settle what it ran while that fails."""


class Exit(enum.IntEnum):
    """Why ``Consumer.run`` returned; a worker process exits with this code."""

    STOPPED = 0
    """``stop()`` was called."""
    DRAINED = 3
    """Burst mode: the queues were empty."""
    RECYCLE = 4
    """``max_tasks`` or ``max_memory`` reached: replace this process."""
    UNAVAILABLE = 5
    """Burst mode: the broker or result store kept failing for ``connect_timeout``."""


class Consumer:
    """Reserves, runs and settles the deliveries of ``app`` from ``queues``.

    ``run()`` blocks until ``stop()`` (safe from a signal handler or another
    thread), until the queues are empty in ``burst`` mode, or until the process
    should be recycled (``max_tasks`` run, or RSS above ``max_memory`` KiB).
    ``slot`` mirrors what it holds for a supervisor (a private one by default);
    ``reserve_timeout`` bounds how long an idle consumer takes to notice ``stop()``.
    ``weights`` (queue -> weight) and ``strict`` order the queues (``gopherq.worker.weights``).
    """

    def __init__(
        self,
        app: GopherQ,
        queues: Sequence[str],
        *,
        name: str | None = None,
        burst: bool = False,
        max_tasks: int | None = None,
        max_memory: int | None = None,
        slot: Slot | None = None,
        reserve_timeout: float = RESERVE_TIMEOUT,
        weights: Mapping[str, int] | None = None,
        strict: bool = False,
    ) -> None:
        self.app = app
        # Opened here, in the constructing thread: the app opens them lazily, and
        # two threads racing to open a memory:// store would get one store each.
        self.broker = app.broker
        self.backend = app.backend
        app.events.open()
        self.queues = list(queues)
        self._reserve = reserver(self.broker, app.settings, self.queues, weights, strict=strict)
        self.name = name or worker_name()
        self.burst = burst
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        self.prefetch = max(app.settings.prefetch, 1)
        self.slot = slot or Slot.allocate(1, self.prefetch)[0]
        self.reserve_timeout = reserve_timeout
        self.tasks_run = 0
        self._runner = Runner(app, worker=self.name, cancelled=self.slot.cancelled, fenced=True)
        self._stopping = False
        self._recycle = False
        self._average: float | None = None  # runtime of all tasks (EMA)
        self._averages: dict[str, float] = {}  # runtime by task name (EMA)
        self._settler = Settler(app, self.name)
        self._concurrency = Admission.for_app(app, self.name)  # None: no task is limited
        self._rates = RateAdmission(app, self.broker, self.name)
        self._all_waited = False  # the last batch all went back to wait for its rate limit
        self._pending: list[Finished] = []
        self._pending_since = 0.0
        self._held: dict[str, Delivery] = {}  # id -> delivery, for lease renewal
        self._held_lock = threading.Lock()
        self._done = threading.Event()  # wakes the lease thread at exit
        self._backoff = 0.0
        self._failing_since: float | None = None  # monotonic start of the current outage
        self._give_up_at: float | None = None  # stopping, settles failing: when to give up

    def stop(self) -> None:
        """Finish the running task, give back the rest, and return from ``run``."""
        self._stopping = True  # a plain flag: safe in a signal handler

    def run(self) -> Exit:
        """Consume until stopped, drained (burst) or due for recycling."""
        renewer = threading.Thread(target=self._renew_leases, name="gopherq-leases", daemon=True)
        renewer.start()
        try:
            return self._loop()
        finally:
            self.app.events.flush()
            self._done.set()
            renewer.join()
            self._runner.close()

    def _loop(self) -> Exit:
        while True:
            if self._pending and not self._flush():
                if self._stopping and self._settles_given_up():
                    return Exit.STOPPED
                if self._burst_given_up():
                    return Exit.UNAVAILABLE
                self._pause()  # the broker or backend is failing; keep what we hold
                continue
            if self._stopping:
                return Exit.STOPPED
            if self._recycle:
                return Exit.RECYCLE
            # With events waiting, look for work without blocking: if there is
            # none, they go out now rather than wait for more.
            events = self.app.events
            timeout = 0.0 if events.pending else self.reserve_timeout
            try:
                batch = self._reserve(self._limit(), timeout)
            except Exception as exc:
                if isinstance(exc, BrokerError):  # an outage: one line each time, no traceback
                    logger.error("worker %s: reserve failed: %s", self.name, exc)
                else:
                    logger.exception("worker %s: reserve failed", self.name)
                if self._burst_given_up():
                    return Exit.UNAVAILABLE
                self._pause()
                continue
            self._backoff = 0.0
            self._failing_since = None
            if batch:
                self._run_batch(batch)
            elif events.pending:
                events.flush()
            elif self.burst:
                return Exit.DRAINED

    def _limit(self) -> int:
        """How many to reserve: a batch while tasks are short (or all wait for their
        rate limit), else one."""
        short = self._average is not None and self._average < SHORT_TASK
        # A batch that only goes back to wait holds nobody: take whole ones while they do.
        limit = self.prefetch if short or self._all_waited else 1
        if self.max_tasks is not None:
            limit = max(min(limit, self.max_tasks - self.tasks_run), 1)
        return limit

    def _run_batch(self, batch: list[Delivery]) -> None:
        """Run a batch in order; what will not run here soon goes back to the broker, and
        so does what must wait for its rate limit (``RateAdmission``)."""
        messages: dict[str, Message] | None = None
        if self._rates.active:
            batch, messages = self._rates.admit(batch)
            self._all_waited = not batch
            if not batch:
                return
        with self._held_lock:
            self._held.update((d.id, d) for d in batch)
        self.slot.hold(batch)
        waiting = deque(batch)
        while waiting:
            if self._stopping or self._recycle:
                self._give_back(list(waiting), stopping=True)
                break
            delivery = waiting.popleft()
            # Counted as started from here on: a process that dies on this delivery,
            # even in decoding it, must not give it back uncounted (max_deliveries).
            self.slot.start()
            message = self._peek(delivery) if messages is None else messages.get(delivery.id)
            if self._concurrency is not None and not self._concurrency.admit(delivery, message):
                self._forget(delivery)  # parked by the broker until a slot frees
                self.slot.skip()
                continue
            long = self._is_long(message)
            if waiting and long:
                # Another process may be idle: the rest must not wait behind this one.
                self._give_back(list(waiting))
                waiting.clear()
            self._run_one(delivery, message, long)
        self._flush()

    def _run_one(self, delivery: Delivery, message: Message | None, long: bool) -> None:
        """Run one delivery (``long`` if expected to take a while) and keep its outcome."""
        task = self.app.tasks.get(message.task) if message else None
        timeout = retries = None
        if message is not None:
            retries = message.retries
            timeout = message.timeout
            if timeout is None and task is not None:
                timeout = task.options.timeout
        # Flush first if this task may take a while (or may be killed by its time
        # limit): outcomes already in hand must not wait for it, or die with it.
        # And announce its start (STARTED record, events) rather than batch it.
        long = long or timeout is not None
        if self._pending and long:
            self._flush()
        name = message.task if message else "?"
        started = time.monotonic()
        self.slot.begin(delivery, name, retries, timeout, started)
        try:
            outcome = self._runner.run(delivery, message, announce=long)
        except Exception:  # a bug or a hook that raised: no outcome, but the process lives on
            logger.exception("worker %s: could not run task %s[%s]", self.name, name, delivery.id)
            self.slot.end()
            self._return(delivery)
            return
        elapsed = time.monotonic() - started
        self.slot.end()
        self._learn(name if task is not None else None, elapsed)
        self._rates.ran(name, outcome)
        self._log(delivery, name, outcome, elapsed)
        if not self._pending:
            self._pending_since = started + elapsed
        self._pending.append(Finished(delivery, name, outcome))
        self.tasks_run += 1
        self._check_recycle()
        if time.monotonic() - self._pending_since >= FLUSH_AFTER:
            self._flush()

    def _peek(self, delivery: Delivery) -> Message | None:
        """Decode the body ahead of the Runner (which reports a bad one)."""
        try:
            return self.app.codec.decode(delivery.body)
        except Exception:
            return None

    def _is_long(self, message: Message | None) -> bool:
        if message is None or message.task not in self.app.tasks:
            return False  # it will be dead-lettered at once
        average = self._averages.get(message.task)
        return average is None or average >= SHORT_TASK

    def _learn(self, task: str | None, elapsed: float) -> None:
        """Update the runtime averages that size batches and decide early flushes."""
        if self._average is None:
            self._average = elapsed
        else:
            self._average += EMA_WEIGHT * (elapsed - self._average)
        if task is not None:
            previous = self._averages.get(task, elapsed)
            self._averages[task] = previous + EMA_WEIGHT * (elapsed - previous)

    def _flush(self) -> bool:
        """Store the pending records, publish the buffered events, then settle the
        deliveries (``Settler``: only those still held); False if that failed.

        Safe to repeat after a failure: the settler finishes what the failed
        attempt left, storing a record again replaces it, and the events went out
        (or wait in their buffer).
        """
        if not self._pending:
            return True
        pending = self._pending
        try:
            self._settler.settle(pending)
        except Exception:
            logger.exception("worker %s: could not settle %d tasks", self.name, len(pending))
            return False
        self._pending = []
        self._backoff = 0.0
        self._failing_since = None
        with self._held_lock:
            for finished in pending:
                self._held.pop(finished.delivery.id, None)
        if self._concurrency is not None:
            self._concurrency.release(finished.delivery for finished in pending)
        self.slot.settle()
        return True

    def _give_back(self, deliveries: Sequence[Delivery], *, stopping: bool = False) -> None:
        """Requeue prefetched deliveries that will not run here (their lease covers a failure)."""
        try:
            self.broker.requeue(deliveries, started=False)
            logger.log(
                logging.INFO if stopping else logging.DEBUG,
                "worker %s: gave back %d unstarted tasks",
                self.name,
                len(deliveries),
            )
        except Exception:
            logger.exception("worker %s: could not give back %d tasks", self.name, len(deliveries))
        with self._held_lock:
            for delivery in deliveries:
                self._held.pop(delivery.id, None)
        self.slot.release()

    def _return(self, delivery: Delivery) -> None:
        """Requeue a started delivery that has no outcome, counted (its lease covers a
        failure): as if its process had died, so that ``max_deliveries`` ends a loop."""
        try:
            self.broker.requeue([delivery], started=True)
        except Exception as exc:
            logger.error("worker %s: could not give back task %s: %s", self.name, delivery.id, exc)
        self._forget(delivery)
        if self._concurrency is not None:
            self._concurrency.release([delivery])

    def _forget(self, delivery: Delivery) -> None:
        """Stop renewing the lease of a delivery that is no longer this consumer's."""
        with self._held_lock:
            self._held.pop(delivery.id, None)

    def _check_recycle(self) -> None:
        if self.max_tasks is not None and self.tasks_run >= self.max_tasks:
            self._recycle = True
        elif self.max_memory is not None and rss_kib() > self.max_memory:
            logger.info("worker %s: RSS above %d KiB, recycling", self.name, self.max_memory)
            self._recycle = True

    def _pause(self) -> None:
        """Back off after a failure (0.1 s doubling to 5 s, see ``next_backoff``); a stop that
        comes meanwhile ends this pause, not the next ones."""
        self._backoff = next_backoff(self._backoff)
        until = time.monotonic() + self._backoff
        stopping = self._stopping
        while (stopping or not self._stopping) and (left := until - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))

    def _burst_given_up(self) -> bool:
        """Whether a burst consumer should stop waiting for a failing broker or store:
        once it failed for ``connect_timeout`` seconds on end (a burst run never waits
        forever; a long-running worker keeps trying)."""
        if not self.burst:
            return False
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since < self.app.settings.connect_timeout:
            return False
        logger.error(
            "worker %s: the broker kept failing for %ss; a burst run gives up",
            self.name,
            self.app.settings.connect_timeout,
        )
        return True

    def _settles_given_up(self) -> bool:
        """Whether a stopping consumer should stop trying to settle: after
        ``SETTLE_ON_STOP`` seconds, logged once (the leases return what it holds)."""
        now = time.monotonic()
        if self._give_up_at is None:
            self._give_up_at = now + SETTLE_ON_STOP
        if now < self._give_up_at:
            return False
        logger.error(
            "worker %s: stopping with %d tasks ran but not settled; "
            "their leases will return them, to run again",
            self.name,
            len(self._pending),
        )
        return True

    def _renew_leases(self) -> None:
        """Lease thread: renew what this consumer holds every third of a lease."""
        interval = max(self.app.settings.lease_seconds / 3, 0.01)
        while not self._done.wait(interval):
            with self._held_lock:
                held = list(self._held.values())
            if not held:
                continue
            try:
                self.broker.extend(held)
            except Exception:
                logger.exception("worker %s: could not renew %d leases", self.name, len(held))
            if self._concurrency is not None:
                self._concurrency.renew()

    def _log(self, delivery: Delivery, task: str, outcome: Outcome, elapsed: float) -> None:
        """One line per task: DEBUG for a success (at INFO it costs some 15% of a drain
        of short tasks, see docs/worker.md), WARNING for a retry or a message that
        will not run (no traceback: it would show gopherq's code), ERROR for a failure."""
        if outcome.action == "ack":
            logger.debug("task %s[%s] succeeded in %.3fs", task, delivery.id, elapsed)
            return
        # Names, ids and error text come from the message: one line each, whatever they
        # hold (the log formatter keeps line breaks, for tracebacks).
        task, id = printable(task), printable(delivery.id)
        if outcome.action == "cancel":
            logger.info("task %s[%s] %s", task, id, printable(outcome.error.partition(": ")[2]))
            return
        reason = outcome.reason
        if outcome.action == "dead" and reason in _NOT_RUN:
            logger.warning(
                "task %s[%s] dead-lettered (%s): %s", task, id, reason, printable(outcome.error)
            )
            return
        error = outcome.record.error if outcome.record else None
        trace = f"\n{error.traceback.rstrip()}" if error and error.traceback else ""
        if outcome.action == "retry" and not outcome.counts_attempt:
            logger.info("task %s[%s] %s", task, id, printable(outcome.error))
        elif outcome.action == "retry":
            logger.warning(
                "task %s[%s] failed, retry in %.1fs: %s%s",
                task,
                id,
                max(outcome.countdown, 0.0),
                printable(outcome.error),
                trace,
            )
        else:
            logger.error(
                "task %s[%s] dead-lettered (%s): %s%s",
                task,
                id,
                reason.value if reason else "?",
                printable(outcome.error),
                trace,
            )


_NOT_RUN = frozenset(
    {
        DeadReason.UNKNOWN_TASK,
        DeadReason.REJECTED,
        DeadReason.DECODE_ERROR,
        DeadReason.SIGNATURE_INVALID,
        DeadReason.BAD_ARGS,
        DeadReason.EXPIRED,
    }
)
"""Dead-letter reasons logged as one WARNING line: the message was refused (by the
worker, or by the task raising ``Reject``), no code of the task failed."""


def worker_name(pid: int | None = None) -> str:
    """A worker process's name in logs and job records: ``hostname:pid`` (this one's)."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def rss_kib() -> int:
    """This process's resident set size in KiB (peak size where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
