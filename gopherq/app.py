"""The application object: task registry, settings, broker, result backend, events
and middleware."""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Concatenate, Literal, Protocol, TypeVar, overload

from gopherq.access.manager import Access
from gopherq.admin_rates import RateLimits
from gopherq.brokers import (
    Broker,
    Cancellation,
    Envelope,
    absolute_url,
    default_url,
    open_broker,
)
from gopherq.celery_names import APP_ATTRIBUTE_HINTS, no_attribute
from gopherq.context import TaskContext
from gopherq.errors import ConfigurationError, NotRegistered, TaskCancelled
from gopherq.events import EventBackend, Events, event_backend_for, open_event_backend
from gopherq.events.emitter import EventEmitter
from gopherq.events.hub import H
from gopherq.fairness import checked as checked_fair_key
from gopherq.message import MAX_TIMESTAMP, Message, field_problem, new_id
from gopherq.middleware import Middleware, MiddlewareStack
from gopherq.observability.tracing import TracingMiddleware
from gopherq.redaction import redact_url
from gopherq.result import AsyncResult, EagerResult
from gopherq.results import (
    ErrorInfo,
    JobCursor,
    JobPage,
    JobRecord,
    ResultBackend,
    open_backend,
)
from gopherq.routes import Routes
from gopherq.runner import run_eagerly, run_inline
from gopherq.schedules import CatchUp, Entry, Schedules
from gopherq.settings import Settings, merged, settings_from_object
from gopherq.signing import codec_for
from gopherq.states import Priority, State
from gopherq.task import (
    AsyncTask,
    BaseTask,
    P,
    R,
    Signature,
    Task,
    default_name,
    make_options,
)
from gopherq.uniqueness import key_hold, key_ttl_problem, unique_key

T = TypeVar("T")
TaskT = TypeVar("TaskT", bound=BaseTask[Any, Any])


class TaskDecorator(Protocol):
    """What ``@app.task(...)`` with options returns."""

    @overload
    def __call__(  # type: ignore[overload-overlap]  # a coroutine function is callable too
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncTask[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


class BoundTaskDecorator(Protocol):
    """What ``@app.task(bind=True, ...)`` returns: the function takes the task's
    ``TaskContext`` first, and the task's parameters are the rest."""

    @overload
    def __call__(  # type: ignore[overload-overlap]  # a coroutine function is callable too
        self, fn: Callable[Concatenate[TaskContext, P], Coroutine[Any, Any, R]], /
    ) -> AsyncTask[P, R]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[TaskContext, P], R], /) -> Task[P, R]: ...


class GopherQ:
    """A gopherq application.

    ``GopherQ("myapp")`` uses the embedded SQLite broker ``gopherq.db`` in the
    directory of the module that creates the app (see ``home``), so that its
    producers and workers share it whatever their current directory; pass
    ``broker="redis://..."`` or a ``Broker`` instance to use another. A relative
    SQLite URL is relative to the current directory when the app is created.
    Results and events go to the broker's own store unless ``backend`` and
    ``events`` (a URL, an ``EventBackend``, or ``None`` for none) say otherwise.
    ``middleware`` hooks into sending and running (see ``gopherq.middleware``).
    ``include`` names modules that declare tasks, imported when a worker (or any
    ``gopherq`` command) loads the app (see ``import_tasks``).
    Other keywords are settings (see ``gopherq.settings.Settings``);
    ``GOPHERQ_*`` environment variables override them.
    """

    def __init__(
        self,
        name: str,
        broker: str | Broker | None = None,
        backend: str | ResultBackend | None = None,
        *,
        middleware: Iterable[Middleware] = (),
        include: Iterable[str] = (),
        **settings: Any,
    ) -> None:
        if isinstance(broker, str):
            settings["broker_url"] = broker
        if isinstance(backend, str):
            settings["result_backend"] = backend
        event_backend = settings.get("events")
        if isinstance(event_backend, EventBackend):
            settings["events"] = event_backend.url
        self.name = name
        self.home = _defining_directory(sys._getframe(1))
        """The directory of the module that created the app (of the script for
        ``__main__``; the current directory for an interactive session or
        ``python -c``): where the default ``gopherq.db`` lives."""
        self.settings = _absolute_urls(Settings.load(settings))
        self.codec = codec_for(self.settings)
        """Encodes and decodes messages; signs and verifies them when signing is on."""
        self.tasks: dict[str, BaseTask[Any, Any]] = {}
        self.include = list(include)
        """Modules imported by ``import_tasks``, for the tasks they declare."""
        self._discover: list[tuple[tuple[str, ...], str]] = []
        self._broker = broker if isinstance(broker, Broker) else None
        self._backend = backend if isinstance(backend, ResultBackend) else None
        if isinstance(event_backend, EventBackend):
            self.events = Events.of(event_backend)
        else:
            self.events = Events(
                event_backend_for(self.settings.events, self.broker_url), self._open_events
            )
        """Publishing, subscribing to and listening for events (see ``gopherq.events``)."""
        self.middleware = MiddlewareStack()
        """The installed middleware, the event emitter first while events are on."""
        if self.events.enabled:
            self.middleware.add(EventEmitter(self.events))
        if self.settings.tracing:
            self.middleware.add(TracingMiddleware())
        for member in middleware:
            self.middleware.add(member)
        self.schedules = Schedules(self, self.settings.beat_schedule)
        """Periodic entries: declared in code and settings, and dynamic ones kept in the
        broker (see ``gopherq.schedules`` and ``gopherq beat``)."""
        self.rate_limits = RateLimits(self)
        """Rate limits of the tasks, declared and set at run time (``gopherq.admin_rates``)."""
        self.access = Access(self)
        """API keys and the audit log of the HTTP API, kept beside the broker (see
        ``gopherq.access`` and ``gopherq keys``)."""

    def config_from_object(
        self, source: Any, *, namespace: str | None = None, silent: bool = False
    ) -> None:
        """Take settings from an object, as Celery's ``config_from_object`` does.

        ``source``: a mapping, a module, a class or other object, or the dotted
        name of one (``"proj.celeryconfig"``, ``"django.conf:settings"``). Names
        are settings' names in either case (``broker_url`` or ``BROKER_URL``);
        with ``namespace="CELERY"`` only ``CELERY_*`` names are read, without
        the prefix. They go over ``GopherQ(...)``'s keywords; ``GOPHERQ_*``
        variables still win. An unknown name raises ``ConfigurationError`` with
        the name to use (see ``gopherq.settings.settings_from_object``).

        Call it before the app connects (its first send, result or worker) and
        before declaring tasks when it sets ``task_routes`` or ``default_queue``:
        later, a change that cannot take effect raises ``ConfigurationError``.
        With ``silent``, a dotted name that cannot be imported changes nothing.
        """
        values = settings_from_object(source, namespace=namespace, silent=silent)
        settings = _absolute_urls(merged(self.settings, values))
        changed = {
            spec.name
            for spec in dataclasses.fields(settings)
            if getattr(settings, spec.name) != getattr(self.settings, spec.name)
        }
        connected = self._broker is not None or self._backend is not None or self.events.opened
        late = changed & _CONNECTION_SETTINGS if connected else set()
        if self.tasks:
            late |= changed & {"task_routes", "default_queue"}
        if late:
            raise ConfigurationError(
                f"config_from_object: {', '.join(sorted(late))} can no longer change "
                "(the app has connected or declared tasks); call it first, right after "
                "GopherQ(...)"
            )
        self.settings = settings
        self.codec = codec_for(settings)
        if "beat_schedule" in changed:
            self.schedules.declare_settings(settings.beat_schedule)
        self._reconfigure_events()
        if "tracing" in changed:
            self._reconfigure_tracing()

    def _reconfigure_events(self) -> None:
        """Point the (unopened) events at what the settings now say; the event emitter
        is installed first while events are on, and only then."""
        url = event_backend_for(self.settings.events, self.broker_url)
        if url == self.events.url:
            return
        emitters = [m for m in self.middleware if isinstance(m, EventEmitter)]
        self.events.url = url
        if url is None:
            for emitter in emitters:
                self.middleware.remove(emitter)
        elif not emitters:
            self.middleware.insert_first(EventEmitter(self.events))

    def _reconfigure_tracing(self) -> None:
        """Install or remove the built-in ``TracingMiddleware`` as ``tracing`` now says."""
        tracing = [m for m in self.middleware if isinstance(m, TracingMiddleware)]
        if self.settings.tracing and not tracing:
            self.middleware.add(TracingMiddleware())
        for member in tracing if not self.settings.tracing else ():
            self.middleware.remove(member)

    # Connections, opened on first use so that a forked worker opens its own.

    @property
    def broker_url(self) -> str:
        """The broker URL in force (settings, else the default for the mode)."""
        if self._broker is not None:
            return self._broker.url
        if self.settings.broker_url:
            return self.settings.broker_url
        return "memory://" if self.settings.eager else default_url(self.home)

    @property
    def broker(self) -> Broker:
        """The broker, opened on first use."""
        if self._broker is None:
            self._broker = open_broker(
                self.broker_url,
                lease_seconds=self.settings.lease_seconds,
                dead_letter_ttl=self.settings.dead_letter_ttl,
            )
        return self._broker

    @property
    def backend(self) -> ResultBackend:
        """The result backend, opened on first use (by default the broker's own store)."""
        if self._backend is None:
            url = self.settings.result_backend or self.broker_url
            self._backend = open_backend(url, expires=self.settings.result_expires)
        return self._backend

    def close(self) -> None:
        """Close broker, backend and event connections (they reopen on next use)."""
        self.events.close()
        self.schedules.close()
        self.access.close()
        if self._broker is not None:
            self._broker.close()
        if self._backend is not None:
            self._backend.close()

    def asgi(self, *, auth: bool = True) -> Any:
        """The HTTP API of this app as an ASGI application (a FastAPI app; needs the
        ``web`` extra), to mount in an ASGI app of one's own or run under any ASGI
        server. ``auth=False`` serves every request as admin: loopback only."""
        from gopherq.web_extra import require_web

        require_web()
        from gopherq.web import create_app

        return create_app(self, auth=auth)

    def _open_events(self, url: str) -> EventBackend:
        return open_event_backend(
            url,
            max_age=self.settings.events_max_age,
            max_count=self.settings.events_max_count,
        )

    # Middleware and events.

    def add_middleware(self, middleware: Middleware) -> None:
        """Install ``middleware`` after those already installed."""
        self.middleware.add(middleware)

    def on(self, *types: str) -> Callable[[H], H]:
        """Register a callback for events of ``types`` (none: all): ``@app.on("task-failed")``.

        Callbacks run in ``app.events.listen()``'s thread, or under
        ``gopherq events -A module --listen``.
        """
        return self.events.on(*types)

    # Declaring tasks.

    @overload
    def task(  # type: ignore[overload-overlap]  # a coroutine function is callable too
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncTask[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, fn: None = None, /, *, bind: Literal[True], **options: Any
    ) -> BoundTaskDecorator: ...

    @overload
    def task(self, fn: None = None, /, **options: Any) -> TaskDecorator: ...

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Declare a task: ``@app.task`` or ``@app.task(retries=3, priority="high")``.

        Options: ``name``, ``queue``, ``priority``, ``retries``, ``backoff``,
        ``retry_delay``, ``max_retry_delay``, ``jitter``, ``autoretry_for``,
        ``dont_autoretry_for``, ``timeout``, ``soft_timeout``, ``expires``,
        ``ignore_result``, ``concurrency``, ``unique``, ``unique_until``, ``key_ttl``
        (see ``gopherq.uniqueness``). An unknown option raises ``ConfigurationError``;
        Celery's names work where they mean the same (``max_retries``) and say what
        gopherq has where they do not (see docs/celery.md). ``bind=True`` passes the
        task's ``TaskContext`` (``current_task()``) as the first argument.
        """
        declared = dict(options)
        bind = bool(declared.pop("bind", False))

        def register(fn: Callable[..., Any]) -> BaseTask[Any, Any]:
            routed = self.routes.match(declared.get("name") or default_name(fn))
            opts = make_options(fn, {**routed, **declared}, self.settings.default_queue)
            existing = self.tasks.get(opts.name)
            if existing is not None and _declared_fn(existing) is not fn:
                raise ConfigurationError(f"a task named {opts.name!r} is already registered")
            kind: type[BaseTask[Any, Any]] = AsyncTask if inspect.iscoroutinefunction(fn) else Task
            task = kind(self, fn, opts, bind=bind)
            self.tasks[opts.name] = task
            if fn.__module__ == "__main__" and "name" not in options:
                self._warn_main(fn, opts.name)
            return task

        if fn is not None:
            if options:
                raise TypeError("pass options as @app.task(...), not with the function")
            return register(fn)
        return register

    def autodiscover_tasks(
        self, packages: Iterable[str], related_name: str = "tasks", *, force: bool = False
    ) -> None:
        """Have ``import_tasks`` import the ``related_name`` module of each package
        (``shop.tasks`` for ``"shop"``) where there is one, as Celery's does.

        Lazy, so that the app's own module can call it while those packages still
        import it; ``force=True`` imports them now.
        """
        self._discover.append((tuple(packages), related_name))
        if force:
            self.import_tasks()

    def import_tasks(self) -> list[str]:
        """Import the modules of ``include`` and those ``autodiscover_tasks`` finds,
        registering their tasks; the names of the modules imported.

        Loading the app with ``-A`` (the worker, every ``gopherq`` command) calls it.
        A module listed in ``include`` that cannot be found raises
        ``ConfigurationError``; a package without the related module is skipped.
        """
        from gopherq.loader import import_task_modules

        return import_task_modules(self.name, self.include, self._discover)

    def _warn_main(self, fn: Callable[..., Any], name: str) -> None:
        """Warn that a task of the script being run is named ``__main__.*``: a worker
        imports that module under its real name and knows the task by another."""
        if self.settings.eager or self.broker_url.startswith("memory:"):
            return  # run in this process only: the name cannot go astray
        message = (
            f"task {name!r} is declared in the script being run (__main__): a worker "
            "that imports this module registers it under the module's name, so it will "
            "dead-letter these messages UNKNOWN_TASK; declare the task in an importable "
            "module, or give it a name: @app.task(name=...)"
        )
        code = getattr(fn, "__code__", None)
        if code is None:
            warnings.warn(message, stacklevel=4)
        else:
            warnings.warn_explicit(message, UserWarning, code.co_filename, code.co_firstlineno)

    @property
    def routes(self) -> Routes:
        """The task routes in force (setting ``task_routes``; see ``gopherq.routes``)."""
        table = self.settings.task_routes
        if self._routes is None or self._routes.table is not table:
            self._routes = Routes(table)
        return self._routes

    _routes: Routes | None = None

    def get_task(self, name: str) -> BaseTask[Any, Any]:
        """The registered task ``name``; raises ``NotRegistered``."""
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(f"no task named {name!r} is registered in {self.name}") from None

    # Periodic tasks.

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | dt.timedelta | str | None = None,
        name: str | None = None,
        tz: str = "UTC",
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        priority: int | str | None = None,
        catch_up: CatchUp = "latest",
        paused: bool = False,
    ) -> Callable[[TaskT], TaskT]:
        """Send a task on a schedule; stack it above ``@app.task``::

            @app.periodic(cron="0 3 * * *", tz="Europe/Paris")
            @app.task
            def report() -> None: ...

        ``cron`` (five fields, or six with seconds first) read in time zone ``tz``,
        or ``every`` (seconds, a ``timedelta`` or ``"30s"``); ``name`` defaults to
        the task's. ``catch_up`` is ``"latest"``, ``"all"`` or ``"none"``: which ticks
        missed while no beat ran are sent. ``gopherq beat`` sends them.
        """
        options = {
            "cron": cron,
            "every": every,
            "name": name,
            "tz": tz,
            "args": args,
            "kwargs": kwargs,
            "queue": queue,
            "priority": priority,
            "catch_up": catch_up,
            "paused": paused,
        }

        def declare(task: TaskT) -> TaskT:
            if not isinstance(task, BaseTask):
                raise TypeError("@app.periodic goes above @app.task: it schedules a task")
            self.add_periodic(task, **options)
            return task

        return declare

    def add_periodic(self, task: BaseTask[Any, Any] | str, **options: Any) -> Entry:
        """Declare a periodic entry for ``task`` (a task or a task name) with the options
        of ``periodic``, such as ``every=timedelta(seconds=30)``; returns it."""
        return self.schedules.declare(self.schedules.entry(task, **options))

    # Sending.

    def send(self, signature: Signature[R]) -> AsyncResult[R]:
        """Send one signature; what ``.delay()`` and ``.apply_async()`` call."""
        return self.send_many([signature])[0]

    def send_many(self, signatures: Iterable[Signature[Any]]) -> list[AsyncResult[Any]]:
        """Send a batch in one broker call (one transaction on SQLite)."""
        if not isinstance(signatures, list):
            signatures = list(signatures)
        messages = [self._message(sig) for sig in signatures]
        middleware = self.middleware
        if middleware:
            try:
                middleware.before_enqueue(self, messages)
            except BaseException as exc:
                middleware.on_enqueue_error(self, messages, exc)
                raise
        if self.settings.eager:
            if middleware:
                middleware.after_enqueue(self, messages, [m.id for m in messages])
            return [AsyncResult(run_eagerly(self, message), self) for message in messages]
        try:
            envelopes = list(map(self._envelope, messages, signatures))
            ids = self.broker.enqueue(envelopes)
        except BaseException as exc:
            if middleware:
                middleware.on_enqueue_error(self, messages, exc)
            raise
        if middleware:
            middleware.after_enqueue(self, messages, ids)
        return [AsyncResult(id, self) for id in ids]

    def envelope(self, signature: Signature[Any]) -> Envelope:
        """The envelope a send of ``signature`` would enqueue, without sending it or
        calling middleware: raises as ``send`` does, ``TypeError`` for arguments that
        do not fit, ``ValueError`` for an option out of bounds, ``SerializationError``
        for a value that does not encode or a message too large."""
        return self._envelope(self._message(signature), signature)

    def apply(self, signature: Signature[R]) -> EagerResult[R]:
        """Run one signature here and now, through the codec as a worker would, retrying
        at once; what ``task.apply()`` calls. Its records are not stored: the
        ``EagerResult`` holds the last. Send options that schedule (``countdown``,
        ``eta``) are ignored; the enqueue hooks of middleware are not called."""
        message = self._message(signature)
        return EagerResult(message.id, run_inline(self, message), self)

    def send_task(
        self,
        name: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send a task by name, registered here or not (another service's task)."""
        return self.send(self.signature(name, args, kwargs, **options))

    def signature(
        self,
        name: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature[Any]:
        """A signature of the task named ``name``, registered here or not, as
        ``send_task`` sends it; ``send_many`` sends many in one broker call."""
        task = self.tasks.get(name) or _RemoteTask(self, name)
        return Signature(task, tuple(args), dict(kwargs or {}), options)

    def result(self, id: str) -> AsyncResult[Any]:
        """The ``AsyncResult`` of a task id."""
        return AsyncResult(id, self)

    def cancel(self, ids: Iterable[str]) -> list[Cancellation]:
        """Cancel tasks by id; what the broker found, one ``Cancellation`` each.

        A queued or scheduled task is removed from the broker at once: it ends
        ``CANCELLED`` (record and ``task-cancelled`` event written here) and never
        runs. A running or prefetched one (``was=STARTED``) is marked in the
        broker; its worker sees the mark within about half a second, the task
        can stop cleanly (``current_task().cancelled``), and if it does not
        within ``cancel_grace`` seconds its process is killed; it ends
        ``CANCELLED`` too. The mark stays with the message, so it holds when no
        worker is up and reaches whichever worker takes the task next. Finished,
        dead-lettered and unknown ids are left out.
        """
        found = self.broker.cancel(list(ids))
        removed = [(c, self._decoded(c)) for c in found if c.was is not State.STARTED]
        if removed:
            now = time.time()
            error = ErrorInfo.from_exception(TaskCancelled("cancelled before it started"))
            records = [
                JobRecord(
                    id=c.id,
                    task=message.task,
                    state=State.CANCELLED,
                    queue=c.queue,
                    error=error,
                    attempts=c.attempt,
                    created=message.created or None,
                    finished=now,
                )
                for c, message in removed
            ]
            self.backend.store(records)
            if self.middleware:
                for c, message in removed:
                    self.middleware.on_cancel(self, message, c.was, c.attempt)
        return found

    def jobs(
        self,
        *,
        state: State | str | None = None,
        task: str | None = None,
        queue: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: JobCursor | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """Job records, newest (sent) first: the job history, kept as long as results.

        Filter by ``state`` (a ``State`` or its name), task name, queue, and the
        time sent: ``since`` (included) and ``until`` (excluded), Unix seconds.
        ``after`` goes on from a page's ``next`` (see ``job_page``).
        """
        return self.job_page(
            state=state,
            task=task,
            queue=queue,
            since=since,
            until=until,
            after=after,
            limit=limit,
        ).records

    def job_page(
        self,
        *,
        state: State | str | None = None,
        task: str | None = None,
        queue: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: JobCursor | None = None,
        limit: int = 100,
    ) -> JobPage:
        """A page of ``jobs`` and the cursor of the next (``next``, None at the end)."""
        if isinstance(state, str):
            try:
                state = State(state.upper())
            except ValueError:
                names = ", ".join(s.value for s in State)
                raise ConfigurationError(f"unknown state {state!r}; use one of {names}") from None
        return self.backend.job_page(
            state=state,
            task=task,
            queue=queue,
            since=since,
            until=until,
            after=after,
            limit=limit,
        )

    def _message(self, sig: Signature[Any]) -> Message:
        task, opts = sig.task, sig.options
        if not isinstance(task, _RemoteTask):
            try:
                task.check_arguments(sig.args, sig.kwargs)
            except TypeError as exc:
                raise TypeError(f"{task.name}: {exc}") from None
        now = time.time()
        defaults = task.options
        message = Message(
            id=new_id(),
            task=defaults.name,
            args=list(sig.args),
            kwargs=sig.kwargs,
            queue=defaults.queue,
            priority=defaults.priority,
            expires=_timestamp(defaults.expires, now, relative=True),
            created=now,
        )
        # The options' slot first: a send without the option reads no task attribute.
        if defaults.fair_key is not None and task.fair_key_of is not None:
            message.fair_key = task.fair_key_of(sig.args, sig.kwargs)
        if opts:  # most sends have none: .delay() and .s() never do
            _apply_send_options(message, opts, now, self.settings.max_eta)
        if defaults.unique and message.key is None:
            message.key = unique_key(self.codec, message.task, message.args, message.kwargs)
        return message

    def _decoded(self, cancellation: Cancellation) -> Message:
        """The message a cancellation removed (a stand-in if its body is unreadable)."""
        try:
            return self.codec.decode(cancellation.body)
        except Exception:
            return Message(id=cancellation.id, task="?", queue=cancellation.queue)

    def _envelope(self, message: Message, sig: Signature[Any]) -> Envelope:
        body = self.codec.encode(message)
        if message.key is None:  # the rule: nothing more to work out
            return Envelope(
                message.id, message.queue, message.priority, body, message.eta,
                fair_key=message.fair_key,
            )  # fmt: skip
        # How long the broker holds the key (gopherq.uniqueness).
        ttl, until_start = key_hold(sig.task.options, sig.options, self.settings.result_expires)
        return Envelope(
            message.id,
            message.queue,
            message.priority,
            body,
            message.eta,
            message.key,
            key_ttl=ttl,
            key_until_start=until_start,
            fair_key=message.fair_key,
        )

    def __repr__(self) -> str:
        return f"<GopherQ {self.name} broker={redact_url(self.broker_url)}>"

    if not TYPE_CHECKING:  # at run time only: mypy must still see unknown attributes

        def __getattr__(self, name: str) -> Any:
            raise no_attribute(self, name, APP_ATTRIBUTE_HINTS)


# What the open connections were made with: they cannot change once open.
_CONNECTION_SETTINGS = frozenset(
    {
        "broker_url",
        "result_backend",
        "events",
        "lease_seconds",
        "dead_letter_ttl",
        "result_expires",
        "events_max_age",
        "events_max_count",
    }
)


def _defining_directory(frame: Any) -> str:
    """The directory of the module whose code runs in ``frame`` (its ``__file__``);
    the current directory where the module has no file (a REPL, ``python -c``)."""
    path = frame.f_globals.get("__file__")
    if isinstance(path, str) and path and not path.startswith("<"):
        return os.path.dirname(os.path.abspath(path))
    return os.getcwd()


def _absolute_urls(settings: Settings) -> Settings:
    """``settings`` with relative SQLite paths made absolute now, so that they are
    shown as the file they name and a later ``chdir`` keeps that file."""
    changes: dict[str, Any] = {
        name: absolute_url(url)
        for name in ("broker_url", "result_backend")
        if isinstance(url := getattr(settings, name), str) and url
    }
    if all(getattr(settings, name) == url for name, url in changes.items()):
        return settings
    return dataclasses.replace(settings, **changes)


class _RemoteTask(BaseTask[Any, Any]):
    """Stands for a task known only by name, for ``send_task``."""

    def __init__(self, app: GopherQ, name: str) -> None:
        options = {**app.routes.match(name), "name": name}
        super().__init__(app, _unknown, make_options(_unknown, options, app.settings.default_queue))


def _declared_fn(task: BaseTask[Any, Any]) -> Callable[..., Any]:
    """The function ``task`` was declared with (``bind=True`` wraps it)."""
    declared: Callable[..., Any] = getattr(task.fn, "__wrapped__") if task.bind else task.fn  # noqa: B009
    return declared


def _unknown(*args: Any, **kwargs: Any) -> Any:
    raise NotRegistered("this task is not registered in this process")


def _apply_send_options(
    message: Message, opts: Mapping[str, Any], now: float, max_eta: float
) -> None:
    """Per-call send options over the task's defaults (see ``BaseTask.apply_async``).

    Raises ``ValueError`` for a value the worker would refuse at decode time (it
    would dead-letter the message), and for an ``eta`` more than ``max_eta``
    seconds away.
    """
    message.id = opts.get("task_id") or message.id
    eta = _timestamp(opts.get("eta"), now, what="eta")
    countdown = opts.get("countdown")
    if countdown is not None:
        eta = _timestamp(float(countdown), now, relative=True, what="countdown")
    if eta is not None and eta - now > max_eta:
        raise ValueError(
            f"eta is {eta - now:.0f} seconds away, beyond the max_eta setting of {max_eta:.0f}"
        )
    message.eta = eta if eta is not None and eta > now else None
    if "expires" in opts:
        message.expires = _timestamp(opts["expires"], now, relative=True)
    message.queue = opts.get("queue") or message.queue
    priority = opts.get("priority")
    if priority is not None:
        try:
            message.priority = int(Priority.parse(priority))
        except ValueError as exc:  # a bad value of a call: ValueError (docs/tasks.md)
            raise ValueError(f"send option priority: {exc}") from None
    message.retries = opts.get("retries")
    message.timeout = opts.get("timeout")
    message.key = opts.get("key")
    if opts.get("key_ttl") is not None and (problem := key_ttl_problem(opts["key_ttl"])):
        raise ValueError(f"send option key_ttl {problem}")
    if "fair_key" in opts:  # over the task's own; None: no key
        fair_key = opts["fair_key"]
        message.fair_key = None if fair_key is None else checked_fair_key(fair_key)
    message.headers = dict(opts.get("headers") or {})
    for name, option in _CHECKED_OPTIONS:
        problem = field_problem(name, getattr(message, name))
        if problem:
            raise ValueError(f"send option {option} {problem}")


def send_option_problems(options: Mapping[str, Any], max_eta: float) -> dict[str, str]:
    """Why each of these send options would be refused by a send (option name to the
    reason), each checked alone; empty when all are fine."""
    problems: dict[str, str] = {}
    now = time.time()
    for name, value in options.items():
        scratch = Message(id=new_id(), task="check")
        try:
            _apply_send_options(scratch, {name: value}, now, max_eta)
        except (TypeError, ValueError) as exc:
            problems[name] = str(exc)
    return problems


# The envelope fields that send options set and ``_timestamp`` does not check.
_CHECKED_OPTIONS = (
    ("id", "task_id"),
    ("queue", "queue"),
    ("retries", "retries"),
    ("timeout", "timeout"),
    ("key", "key"),
    ("headers", "headers"),
)


def _timestamp(
    value: Any, now: float, *, relative: bool = False, what: str = "expires"
) -> float | None:
    """Unix seconds from a datetime, a timedelta, or a number (relative seconds if
    ``relative``); ``ValueError`` if not finite or past what an envelope holds."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        # A naive datetime means local time, as everywhere in the standard library.
        moment: dt.datetime = value if value.tzinfo else value.astimezone()
        seconds = moment.timestamp()
    elif isinstance(value, dt.timedelta):
        seconds = now + value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = now + float(value) if relative else float(value)
    else:
        raise TypeError(f"expected a datetime, timedelta or number of seconds, not {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"{what} is not a finite number: {value!r}")
    if seconds > MAX_TIMESTAMP:
        raise ValueError(f"{what} is past the year 9999: {value!r}")
    return max(seconds, 0.0)  # a time before 1970 has passed as surely as any
