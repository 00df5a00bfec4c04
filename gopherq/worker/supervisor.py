"""The prefork supervisor: ``Worker.run()`` forks consumers and watches over them.

::

    supervisor ──fork──> child 0: Consumer.run() ──writes──> slot 0 ┐ shared
        │      ──fork──> child 1: Consumer.run() ──writes──> slot 1 ┘ memory
        ├── every TICK: read the slots; SIGKILL a child past its task's deadline
        ├── every CANCEL_POLL: ask the broker which held tasks were cancelled;
        │   tell their children (slot notices); SIGKILL a child whose cancelled
        │   task is still running ``cancel_grace`` seconds later
        ├── SIGCHLD: reap; settle a timed-out task (TIME_LIMIT or retry) or a
        │   cancelled one, requeue what else the child held; fork a replacement
        ├── every ``worker_heartbeat`` seconds: the middleware's heartbeat
        │   (the event emitter's ``worker-heartbeat``), with counts from the slots
        ├── with ``metrics_port``: a thread serves /metrics, /live and /ready
        │   (``gopherq.observability``); a dead child's counts are kept
        ├── SIGTERM/SIGINT: children finish their task and give back the
        │   rest, within ``shutdown_timeout``; a second signal kills them now
        └── with ``beat`` (``gopherq worker -B``, for development): one more
            child runs ``gopherq.beat.Beat``; replaced if it dies, stopped last

The supervisor sleeps in ``select`` on a pipe that ``signal.set_wakeup_fd``
writes to, so a signal wakes it at once; otherwise it wakes every ``TICK`` for
a few cheap shared-memory reads. It never runs tasks and holds no lease. On
Linux the children get SIGTERM if the supervisor itself dies, so none runs on
unsupervised.

A child the supervisor kills is killed for one delivery, recorded with the
kill: the child may have finished that task and begun another between the
reading of its slot and the signal, so the task the kill was for is settled by
id (``TIME_LIMIT`` or ``CANCELLED``) wherever the slot shows it, and what else
the child held goes back uncounted. Only a child that died by itself has its
started deliveries counted towards ``max_deliveries``. No step of the loop
ends the supervisor by raising: an error is logged, and the next tick retries.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from gopherq.brokers.base import Delivery
from gopherq.observability.logs import configure_logging
from gopherq.routes import declared_queues
from gopherq.runner import Outcome, Runner
from gopherq.worker.concurrency import Admission
from gopherq.worker.consumer import Consumer, Exit, worker_name
from gopherq.worker.presence import Presence
from gopherq.worker.settle import Finished, Settler
from gopherq.worker.slots import Holding, Running, Slot
from gopherq.worker.startup import (
    StartupError,
    banner,
    check_stores,
    warn_if_no_tasks,
    warn_if_root,
)
from gopherq.worker.weights import aging_unsupported, check_order, labels, split_weights

if TYPE_CHECKING:
    from gopherq.app import GopherQ
    from gopherq.observability.endpoint import WorkerEndpoint
    from gopherq.observability.metrics import WorkerView

__all__ = ["Worker", "configure_logging"]
"""``configure_logging`` lives in ``gopherq.observability.logs``; still importable from here."""

logger = logging.getLogger("gopherq.worker")

TICK = 0.1
"""Longest sleep of the supervisor: how late a hard time limit may strike."""
CANCEL_POLL = 0.5
"""Seconds between the supervisor's checks for cancelled tasks, while children hold any."""
RESPAWN_DELAY = 1.0
"""Wait before replacing a child that died young outside any task (a crash loop)."""
BEAT_STOP_TIMEOUT = 10.0
"""Seconds the ``-B`` beat process gets to give its lease up and exit when the worker stops."""
_BEAT = -1
"""The slot index that stands for the ``-B`` beat process when forking."""
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_HANDLED = {*_STOP_SIGNALS, signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


@dataclass(frozen=True, slots=True)
class _Kill:
    """Why the supervisor SIGKILLed a child, and for which delivery."""

    running: Running
    """The task the kill was for, as the slot showed it then."""
    cancelled: bool
    """A cancel not obeyed within ``cancel_grace``; else its hard time limit."""


@dataclass(slots=True)
class _Child:
    index: int
    """Its slot; a replacement child takes over the slot."""
    pid: int
    born: float
    kill: _Kill | None = None
    """Set when the supervisor SIGKILLed it: hard time limit, or a cancel not obeyed."""
    notified: frozenset[str] = frozenset()
    """Ids of its tasks it was told were cancelled."""
    stopping: str | None = None
    """Id of its running task that was cancelled, until that task ends."""
    stop_by: float = float("inf")
    """``time.monotonic()`` past which a ``stopping`` task's process is killed."""

    @property
    def name(self) -> str:
        return worker_name(self.pid)

    @property
    def killed(self) -> bool:
        return self.kill is not None


class Worker:
    """A prefork worker: ``concurrency`` processes consuming ``queues`` of ``app``.

    Options left ``None`` come from the app's settings. ``queues`` defaults to
    the default queue plus every queue a registered task is declared on (or
    routed to: see ``gopherq.routes``); a mapping of queue to weight (None: 1)
    takes tasks in those shares (``-Q high:3,low:1``), and ``strict`` in listed
    order (``gopherq.worker.weights``). ``beat`` runs the beat in a child process
    as well (``gopherq worker -B``). Before forking, ``run()`` logs a banner and
    checks the broker and result store (``gopherq.worker.startup``): it returns 1
    when they cannot work, or stay down for ``connect_timeout`` seconds.
    ``metrics_port`` serves Prometheus metrics and health probes on
    ``metrics_host`` (docs/observability.md); ``run()`` returns 1 at once when
    the port is taken. ``run()`` must be called from the main thread; it
    returns the exit code.
    """

    def __init__(
        self,
        app: GopherQ,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | Mapping[str, int | None] | None = None,
        strict: bool = False,
        burst: bool = False,
        loglevel: str | None = "INFO",
        log_format: str | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        shutdown_timeout: float | None = None,
        connect_timeout: float | None = None,
        beat: bool = False,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        settings = app.settings
        self.app = app
        self.concurrency = max(concurrency or settings.concurrency or os.cpu_count() or 1, 1)
        self.queues, self.weights = split_weights(queues or declared_queues(app))
        check_order(self.weights, strict)
        self.strict = strict
        self.burst = burst
        self.loglevel = loglevel
        self.log_format = log_format or settings.log_format
        self.max_tasks_per_child = max_tasks_per_child or settings.max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child or settings.max_memory_per_child
        self.shutdown_timeout = (
            settings.shutdown_timeout if shutdown_timeout is None else shutdown_timeout
        )
        self.connect_timeout = (
            settings.connect_timeout if connect_timeout is None else connect_timeout
        )
        self.cancel_grace = settings.cancel_grace
        self.beat = beat
        """Run the beat in a child process too (``gopherq worker -B``, for development)."""
        self._beat_pid = 0
        self.name = worker_name()
        self._settler = Settler(app, self.name)
        self._admission = Admission.for_app(app, self.name)  # frees a dead child's slots
        self._pid = 0
        self._next_cancel_poll = 0.0
        self._children: dict[int, _Child] = {}  # pid -> child
        self._respawns: list[tuple[float, int]] = []  # (when, slot index)
        self._slots: list[Slot] = []
        self._signals = 0  # SIGTERM/SIGINT received
        self._stop_deadline: float | None = None
        self._forced = False
        self._unavailable = False  # a burst child gave up on a failing broker
        self._next_deadline = float("inf")
        self._pipe = (-1, -1)
        self._presence = Presence(app, self.name, self.concurrency, self.queues)
        self._failing: set[str] = set()  # steps of the loop that raised last time
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self._endpoint: WorkerEndpoint | None = None  # with metrics_port
        self._tick: float | None = None  # time.monotonic() of the loop's last round

    def run(self) -> int:
        """Fork the children and supervise them until stopped or drained; the exit code."""
        if self.loglevel:
            configure_logging(self.loglevel, self.log_format)
        if self.app.broker_url.partition("://")[0] == "memory":
            logger.error("memory:// lives in one process; workers need sqlite:///... or another")
            return 2
        self.name, self._pid = worker_name(), os.getpid()
        shown = labels(self.queues, self.weights, self.strict)
        logger.info("%s", banner(self.app, self.name, shown, self.concurrency, burst=self.burst))
        warn_if_root(self.name)
        warn_if_no_tasks(self.app)
        if not self._can_start():
            return 1
        unsupported = aging_unsupported(self.app.broker, self.app.settings, self.queues)
        if unsupported:
            logger.error("worker %s cannot start: %s", self.name, unsupported)
            self._close_endpoint()
            return 1
        self._presence = Presence(self.app, self.name, self.concurrency, self.queues)
        self._slots = Slot.allocate(self.concurrency, self.app.settings.prefetch)
        self._pipe = os.pipe()
        for fd in self._pipe:
            os.set_blocking(fd, False)
        previous_fd = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _HANDLED}
        try:
            for index in range(self.concurrency):
                self._spawn(index)
            if self.beat:
                logger.warning(
                    "worker %s: -B runs the beat in this worker, for development; in "
                    "production run 'gopherq beat' on its own (any number may run: one leads)",
                    self.name,
                )
                self._spawn(_BEAT)
            logger.info(
                "worker %s ready: %d processes, queues %s",
                self.name,
                self.concurrency,
                ", ".join(self.queues),
            )
            self._presence.start()
            while self._children or self._respawns:
                self._tick = time.monotonic()
                self._sleep()
                self._step(self._reap)
                self._step(self._handle_signals)
                self._step(self._enforce_time_limits)
                self._step(self._watch_cancels)
                self._step(self._respawn_due)
                self._step(self._heartbeat)
            self._step(self._presence.stop)
        finally:
            self._stop_beat()
            self._close_endpoint()
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in self._pipe:
                os.close(fd)
            self.app.close()
        # Last, once everything that may log (the stop hooks, closing the stores) ran.
        logger.info("worker %s stopped", self.name)
        return 1 if self._forced or self._unavailable else 0

    def _can_start(self) -> bool:
        """Bind the metrics port (if any), then check the stores; False, logged in one
        line, when the worker cannot start."""
        if self.metrics_port is not None:
            from gopherq.observability.endpoint import WorkerEndpoint
            from gopherq.observability.server import cannot_serve

            host, port = self.metrics_host, self.metrics_port
            try:
                self._endpoint = WorkerEndpoint(
                    self.app,
                    self.queues,
                    self.concurrency,
                    host=host,
                    port=port,
                    view=self._metrics_view,
                )
            except OSError as exc:
                logger.error("worker %s cannot start: %s", self.name, cannot_serve(host, port, exc))
                return False
            logger.info("worker %s: metrics on %s", self.name, self._endpoint.url)
        try:
            check_stores(self.app, self.connect_timeout)
        except StartupError as exc:
            logger.error("worker %s cannot start: %s", self.name, exc)
            self._close_endpoint()
            return False
        return True

    def _step(self, step: Callable[[], None]) -> None:
        """Run one step of the loop: an error is logged (once until the step works
        again) and never ends the supervisor; the next tick runs the step again."""
        name = step.__name__
        try:
            step()
        except Exception:
            if name not in self._failing:
                logger.exception("worker %s: supervisor step %s failed", self.name, name)
                self._failing.add(name)
            return
        self._failing.discard(name)

    def _metrics_view(self) -> WorkerView:
        """What the metrics endpoint shows of this supervisor (read in its thread)."""
        from gopherq.observability.metrics import WorkerView

        running: dict[str, int] = {}
        for child in list(self._children.values()):
            holding = self._slots[child.index].read()
            if holding.running is not None:
                queue = holding.running.delivery.queue
                running[queue] = running.get(queue, 0) + 1
        stopping = self._stopping or self._signals > 0
        return WorkerView(len(self._children), running, self.concurrency, stopping, self._tick)

    def _close_endpoint(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    def _heartbeat(self) -> None:
        if self._presence.due():
            children = self._children.values()
            self._presence.beat([(c.name, self._slots[c.index].read()) for c in children])

    # Children.

    def _spawn(self, index: int) -> None:
        """Fork the consumer of slot ``index`` (or, for ``_BEAT``, the beat)."""
        # Block the signals we handle across fork: the child must not run the
        # supervisor's handlers before it installs its own.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        sys.stdout.flush()
        sys.stderr.flush()
        # The child's collector never walks what it inherits (modules, the app):
        # its collections cost what its own objects cost (a traced task's spans
        # are many), and the inherited pages stay shared. The supervisor itself
        # goes back to collecting everything (unless the app froze objects first).
        thawed = gc.get_freeze_count() == 0
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            logger.exception("worker %s: fork failed", self.name)
            self._respawns.append((time.monotonic() + RESPAWN_DELAY, index))
            pid = -1
        if pid != 0 and thawed:
            gc.unfreeze()
        if pid == 0:
            if index == _BEAT:
                self._beat_main(mask)
            self._child_main(index, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if pid > 0 and index == _BEAT:
            self._beat_pid = pid
        elif pid > 0:
            self._children[pid] = _Child(index, pid, time.monotonic())

    def _beat_main(self, mask: set[int | signal.Signals]) -> NoReturn:
        """Run the beat in the forked child (``-B``), then exit; it stops on SIGTERM."""
        from gopherq.beat import Beat

        def run() -> int:
            if self._endpoint is not None:
                self._endpoint.in_child(None)  # it runs no tasks
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)  # until the beat installs its own
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            return Beat(self.app, loglevel=None).run()

        self._in_child(run)

    def _beat_exited(self, code: int) -> None:
        """The beat process ended: replace it unless the worker is stopping."""
        self._beat_pid = 0
        if self._stopping or self._signals:  # (Ctrl-C reaches the beat and us at once)
            return
        how = f"signal {_signal_name(-code)}" if code < 0 else f"exit code {code}"
        logger.warning("worker %s: beat process died (%s); restarting it", self.name, how)
        self._respawns.append((time.monotonic() + RESPAWN_DELAY, _BEAT))

    def _stop_beat(self) -> None:
        """Stop the beat process and wait for it (it gives its lease up), killing it if it
        has not exited within ``BEAT_STOP_TIMEOUT``."""
        pid, self._beat_pid = self._beat_pid, 0
        if not pid:
            return
        try:
            os.kill(pid, signal.SIGTERM)  # not reaped yet, so the pid is still ours
            deadline = time.monotonic() + BEAT_STOP_TIMEOUT
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() >= deadline:
                    logger.warning("worker %s: beat process did not stop; killing it", self.name)
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    return
                time.sleep(0.05)
        except ChildProcessError:
            pass

    def _child_main(self, index: int, mask: set[int | signal.Signals]) -> NoReturn:
        """Run a consumer in the forked child, then exit without returning to the caller."""

        def run() -> int:
            if self._endpoint is not None:
                self._endpoint.in_child(index)
            consumer = Consumer(
                self.app,
                self.queues,
                burst=self.burst,
                max_tasks=self.max_tasks_per_child,
                max_memory=self.max_memory_per_child,
                slot=self._slots[index],
                weights=self.weights,
                strict=self.strict,
            )

            def stop(signum: int, frame: FrameType | None) -> None:
                consumer.stop()

            for sig in _STOP_SIGNALS:
                signal.signal(sig, stop)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            logger.debug("worker %s: process started", consumer.name)
            return int(consumer.run())

        self._in_child(run)

    def _in_child(self, run: Callable[[], int]) -> NoReturn:
        """In a forked child: cut it loose from the supervisor's wakeup pipe and signal
        handling, have it die with the supervisor, run the middleware's
        ``worker_process_init``, call ``run``, run ``worker_process_shutdown`` and exit
        with its code."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for fd in self._pipe:
                os.close(fd)
            _die_with_parent(self._pid)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            if self.app.middleware:
                self.app.middleware.worker_process_init(self.app)
            code = run()
        except BaseException:
            logger.exception("worker process %d failed", os.getpid())
        finally:
            try:
                if self.app.middleware:
                    self.app.middleware.worker_process_shutdown(self.app)
                self.app.close()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)  # never unwind into the supervisor's stack or atexit hooks

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self._children.pop(pid, None)
            if child is not None:
                self._exited(child, os.waitstatus_to_exitcode(status))
            elif pid == self._beat_pid:
                self._beat_exited(os.waitstatus_to_exitcode(status))

    def _exited(self, child: _Child, code: int) -> None:
        """Settle what a child that exited held, and schedule its replacement."""
        slot = self._slots[child.index]
        holding = slot.read(final=True)  # a delivery it began but never recorded counts
        how = f"signal {_signal_name(-code)}" if code < 0 else f"exit code {code}"
        self._presence.exited(holding)
        try:
            self._give_back(child, holding, how)
        except Exception:  # (a middleware hook): the child is replaced all the same
            logger.exception("worker %s: could not give back tasks (leases will)", child.name)
        slot.clear()
        if self._endpoint is not None:
            replaced = not self._stopping and not (code == Exit.DRAINED and self.burst)
            self._endpoint.exited(child.index, _restart_cause(child, code) if replaced else None)
        if code == Exit.DRAINED and self.burst:
            logger.debug("worker %s: queues empty, process exited", child.name)
            return
        if code == Exit.UNAVAILABLE and self.burst:
            self._unavailable = True  # it said why; the worker exits 1 once all are done
            return
        if code == Exit.RECYCLE:
            logger.info("worker %s: process recycled", child.name)
        elif code != Exit.STOPPED or not self._stopping:
            running = child.kill.running if child.kill else holding.running
            during = f" running {running.task}[{running.delivery.id}]" if running else ""
            logger.warning("worker %s: process died (%s)%s", child.name, how, during)
        if self._stopping:
            return
        young = time.monotonic() - child.born < RESPAWN_DELAY
        delay = RESPAWN_DELAY if young and code != Exit.RECYCLE and not holding.running else 0.0
        self._respawns.append((time.monotonic() + delay, child.index))

    def _respawn_due(self) -> None:
        now = time.monotonic()
        due = [index for when, index in self._respawns if when <= now]
        self._respawns = [(when, index) for when, index in self._respawns if when > now]
        for index in due:
            self._spawn(index)

    def _give_back(self, child: _Child, holding: Holding, how: str) -> None:
        """Settle what a dead child held: now, not when its leases run out."""
        if not holding:
            return
        if child.kill is not None:
            self._give_back_killed(child, child.kill, holding)
            return
        started = list(holding.finished)
        running = holding.running
        try:
            if running is not None and not running.recorded:
                pass  # too large to record: its lease brings it back, counted
            elif running is not None:
                if running.delivery.id == child.stopping:
                    self._settle_cancelled(child, running)
                elif running.deadline is not None and time.monotonic() >= running.deadline:
                    self._settle_time_limit(child, running)
                else:
                    started.append(running.delivery)  # counts towards max_deliveries
                    self._presence.lost(child.name, running, how)
                    self._free_slot(running.task, running.delivery)
            if started:
                self.app.broker.requeue(started, started=True)
            if holding.unstarted:
                self.app.broker.requeue(holding.unstarted, started=False)
                # as the process itself says when it gives them back before exiting
                logger.info(
                    "worker %s: gave back %d unstarted tasks", child.name, len(holding.unstarted)
                )
        except Exception:
            logger.exception("worker %s: could not give back tasks (leases will)", child.name)

    def _give_back_killed(self, child: _Child, kill: _Kill, holding: Holding) -> None:
        """Settle the task a kill was for by id, wherever the slot shows it (running,
        or finished but not settled); what else the child held was not at fault
        and goes back uncounted."""
        target = kill.running
        started = list(holding.finished)
        if holding.running is not None and holding.running.recorded:
            started.append(holding.running.delivery)
        rest = [d for d in started if not _same(d, target.delivery)]
        try:
            if target.recorded and len(rest) < len(started):
                if kill.cancelled:
                    self._settle_cancelled(child, target)
                else:
                    self._settle_time_limit(child, target)
        except Exception:
            logger.exception(
                "worker %s: could not settle a killed task (its lease will)", child.name
            )
        try:
            if rest or holding.unstarted:
                self.app.broker.requeue([*rest, *holding.unstarted], started=False)
        except Exception:
            logger.exception("worker %s: could not give back tasks (leases will)", child.name)

    def _settle_time_limit(self, child: _Child, running: Running) -> None:
        error = (
            f"task {running.task} ran past its hard time limit "
            f"of {running.timeout}s and its process was killed"
        )
        outcome = Runner(self.app, worker=child.name).killed(
            running.delivery, task_name=running.task, retries=running.retries, error=error
        )
        self._settle(running.delivery, running.task, outcome)

    def _settle_cancelled(self, child: _Child, running: Running) -> None:
        outcome = Runner(self.app, worker=child.name).stopped(
            running.delivery, task_name=running.task, retries=running.retries
        )
        self._settle(running.delivery, running.task, outcome)

    def _settle(self, delivery: Delivery, task: str, outcome: Outcome) -> None:
        """Settle a killed child's task as the consumer settles its own: the record
        only while the lease is still held (see ``gopherq.worker.settle``)."""
        self._settler.settle([Finished(delivery, task, outcome)])
        self._free_slot(task, delivery)

    def _free_slot(self, task: str, delivery: Delivery) -> None:
        """Free the concurrency slot of a dead child's task, if it holds one."""
        if self._admission is not None:
            self._admission.free(task, delivery)

    def _watch_cancels(self) -> None:
        """Kill a child whose cancelled task outlived ``cancel_grace``; every
        ``CANCEL_POLL``, tell the children which of their tasks were cancelled."""
        now = time.monotonic()
        holdings = [(child, self._slots[child.index].read()) for child in self._children.values()]
        self._kill_overdue(holdings, now)
        if now >= self._next_cancel_poll:
            self._next_cancel_poll = now + CANCEL_POLL
            self._notify_cancels(holdings, now)

    def _kill_overdue(self, holdings: list[tuple[_Child, Holding]], now: float) -> None:
        """SIGKILL a child still running its cancelled task past ``stop_by``."""
        for child, holding in holdings:
            if child.stopping is None or child.killed:
                continue
            running = holding.running
            if running is None or running.delivery.id != child.stopping:
                child.stopping, child.stop_by = None, float("inf")  # it stopped
            elif now >= child.stop_by:
                logger.warning(
                    "task %s[%s] did not stop within %ss of its cancel: killing process %d",
                    running.task,
                    running.delivery.id,
                    self.cancel_grace,
                    child.pid,
                )
                os.kill(child.pid, signal.SIGKILL)  # reaped and settled CANCELLED next
                child.kill = _Kill(running, cancelled=True)

    def _notify_cancels(self, holdings: list[tuple[_Child, Holding]], now: float) -> None:
        """Ask the broker which held tasks were cancelled (one call for all children),
        tell each child of its own, and start the grace period of running ones."""
        held = [_cancellable(holding) for _, holding in holdings]
        cancelled: set[str] = set()
        if any(held):
            try:
                cancelled = self.app.broker.cancel_requested([d for ds in held for d in ds])
            except Exception as exc:
                logger.warning("worker %s: could not check for cancelled tasks: %s", self.name, exc)
                return
        for (child, holding), deliveries in zip(holdings, held, strict=True):
            ids = frozenset(d.id for d in deliveries if d.id in cancelled)
            if ids != child.notified:
                self._slots[child.index].notify(ids)
                child.notified = ids
            running = holding.running
            if running is not None and running.delivery.id in ids and child.stopping is None:
                child.stopping, child.stop_by = running.delivery.id, now + self.cancel_grace
                logger.info(
                    "task %s[%s] cancelled while running: %ss to stop",
                    running.task,
                    running.delivery.id,
                    self.cancel_grace,
                )

    def _enforce_time_limits(self) -> None:
        now = time.monotonic()
        self._next_deadline = float("inf")
        for child in self._children.values():
            running = None if child.killed else self._slots[child.index].read().running
            if running is None or running.deadline is None:
                continue
            if now < running.deadline:
                self._next_deadline = min(self._next_deadline, running.deadline)
                continue
            logger.error(
                "task %s[%s] exceeded its hard time limit of %ss: killing process %d",
                running.task,
                running.delivery.id,
                running.timeout,
                child.pid,
            )
            os.kill(child.pid, signal.SIGKILL)  # only this child; reaped and settled next
            child.kill = _Kill(running, cancelled=False)

    # Signals and shutdown.

    @property
    def _stopping(self) -> bool:
        return self._stop_deadline is not None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs between bytecodes of the main loop; the wakeup fd ends its select.
        if signum != signal.SIGCHLD:
            self._signals += 1

    def _handle_signals(self) -> None:
        if self._signals >= 2 and not self._forced:
            logger.warning("worker %s: second signal, killing processes now", self.name)
            self._forced = True
            self._kill_all(signal.SIGKILL)
        elif self._signals == 1 and not self._stopping:
            logger.info(
                "worker %s: stopping, waiting up to %ss for running tasks",
                self.name,
                self.shutdown_timeout,
            )
            self._stop_deadline = time.monotonic() + self.shutdown_timeout
            self._respawns.clear()
            self._kill_all(signal.SIGTERM)
        if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
            if self._children:
                logger.warning(
                    "worker %s: shutdown timeout, killing %d processes",
                    self.name,
                    len(self._children),
                )
                self._kill_all(signal.SIGKILL)
            self._stop_deadline = float("inf")  # still stopping; kill only once

    def _kill_all(self, sig: signal.Signals) -> None:
        for pid in self._children:
            os.kill(pid, sig)  # not yet reaped, so the pid is still ours
        if self._beat_pid:
            os.kill(self._beat_pid, sig)

    def _sleep(self) -> None:
        """Wait for a signal, or until the next deadline, respawn or ``TICK``."""
        now = time.monotonic()
        wake = min(now + TICK, self._next_deadline, *(when for when, _ in self._respawns))
        if self._stop_deadline is not None:
            wake = min(wake, self._stop_deadline)
        select.select([self._pipe[0]], [], [], max(wake - now, 0.0))
        try:
            while os.read(self._pipe[0], 512):
                pass
        except BlockingIOError:
            pass


def _same(a: Delivery, b: Delivery) -> bool:
    """Whether two deliveries are one: the same message under the same lease."""
    return a.id == b.id and a.token == b.token


def _cancellable(holding: Holding) -> list[Delivery]:
    """What a child holds that a cancel can still stop: the running task and the
    prefetched ones."""
    running = [holding.running.delivery] if holding.running is not None else []
    return running + list(holding.unstarted)


def _restart_cause(child: _Child, code: int) -> str:
    """Why a child that exited is replaced, as ``gopherq_worker_child_restarts_total``
    labels it."""
    if child.kill is not None:
        return "cancelled" if child.kill.cancelled else "time_limit"
    return "recycled" if code == Exit.RECYCLE else "died"


def _die_with_parent(parent: int) -> None:
    """Have Linux SIGTERM this child when the supervisor dies, so no orphan keeps consuming."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: orphans run on until stopped
        return
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
