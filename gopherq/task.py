"""Tasks: a decorated function plus the options that say how it runs.

``Task[P, R]`` keeps the function's parameter list ``P`` and return type ``R``
so that mypy rejects a ``.delay()`` whose arguments do not fit, and
``AsyncResult[R].get()`` returns ``R``.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import math
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar

from gopherq.celery_names import (
    SEND_OPTION_ALIASES,
    SEND_OPTION_HINTS,
    TASK_ATTRIBUTE_HINTS,
    TASK_OPTION_ALIASES,
    TASK_OPTION_HINTS,
    no_attribute,
    resolve_aliases,
    unknown,
)
from gopherq.context import TaskContext, _current
from gopherq.errors import ConfigurationError
from gopherq.fairness import KeyOf, key_of
from gopherq.limits import Rate, parse_burst, parse_rate
from gopherq.message import field_problem, new_id
from gopherq.states import Priority
from gopherq.uniqueness import DEFAULT_KEY_TTL, UniqueUntil, check_task_options

if TYPE_CHECKING:
    from gopherq.app import GopherQ
    from gopherq.result import AsyncResult, EagerResult

MAX_SHAPES = 64
"""Most argument shapes a task remembers as fitting (see ``BaseTask.check_arguments``)."""

P = ParamSpec("P")
R = TypeVar("R")

Backoff = Literal["exponential", "linear", "fixed"]
BACKOFFS: tuple[Backoff, ...] = ("exponential", "linear", "fixed")


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How a task runs; set once with ``@app.task(...)``."""

    name: str
    queue: str = "default"
    priority: int = Priority.NORMAL
    retries: int = 0
    """Retries after the first failure; 0 sends a failed task straight to dead letters."""
    backoff: Backoff = "exponential"
    retry_delay: float = 1.0
    """Base delay in seconds between retries."""
    max_retry_delay: float = 300.0
    jitter: bool = True
    """Full jitter: each delay is uniform between 0 and the computed delay."""
    autoretry_for: tuple[type[BaseException], ...] = (Exception,)
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    timeout: float | None = None
    """Hard time limit in seconds: the worker process running it is killed."""
    soft_timeout: float | None = None
    """Soft time limit: ``SoftTimeLimitExceeded`` is raised inside the task."""
    expires: float | None = None
    """Seconds after enqueue past which the task no longer runs (EXPIRED)."""
    ignore_result: bool = False
    concurrency: int | None = None
    """Most runs of this task at once across all workers (see docs/flow-control.md);
    None: no limit."""
    rate_limit: Rate | None = None
    """Runs of this task across all workers, at most (``"100/s"``; see ``gopherq.limits``)."""
    burst: int | None = None
    """Runs that may start at once under ``rate_limit`` (and each ``rate_limit_per_key``); 1."""
    rate_limit_per_key: Rate | None = None
    """Runs per fair key (``apply_async(fair_key=...)``) across all workers, at most."""
    unique: bool = False
    """Each send's idempotency key, unless ``key=`` gives one, is derived from the task
    name and the arguments (see ``gopherq.uniqueness``)."""
    unique_until: UniqueUntil = "ttl"
    """When a send's key (derived or given) is free again: ``start``, ``finish``, or
    ``ttl``: ``key_ttl`` seconds after the job succeeded."""
    key_ttl: float = DEFAULT_KEY_TTL
    fair_key: str | Callable[..., Any] | None = None
    """Fair sharing between the keys of this task's messages (see docs/flow-control.md):
    the name of the parameter whose value (a string or an integer) is the key, or a
    function of the task's arguments that returns it."""

    def retry_delay_for(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (``attempt`` from 0)."""
        if self.backoff == "exponential":
            delay = self.retry_delay * 2.0 ** min(attempt, 62)
        elif self.backoff == "linear":
            delay = self.retry_delay * (attempt + 1)
        else:
            delay = self.retry_delay
        delay = min(delay, self.max_retry_delay)
        return random.uniform(0, delay) if self.jitter else delay

    def should_retry(self, exc: BaseException) -> bool:
        """Whether ``exc`` is one this task retries on (retries left aside)."""
        return isinstance(exc, self.autoretry_for) and not isinstance(exc, self.dont_autoretry_for)


OPTION_NAMES = frozenset(TaskOptions.__dataclass_fields__) - {"name"}


def make_options(
    fn: Callable[..., Any], overrides: Mapping[str, Any], default_queue: str
) -> TaskOptions:
    """Validate ``@app.task(...)`` keywords and build the options; raise on unknown ones.

    Celery's ``max_retries``, ``time_limit`` and ``soft_time_limit`` are aliases
    (see ``gopherq.celery_names``); ``acks_late=True`` says what gopherq always does.
    """
    values = resolve_aliases("task option", overrides, TASK_OPTION_ALIASES)
    if values.get("acks_late") is True:
        del values["acks_late"]
    for key in values:
        if key not in OPTION_NAMES and key != "name":
            where = f" for {fn.__qualname__}"
            raise unknown("task option", key, OPTION_NAMES, TASK_OPTION_HINTS, where)
    values.setdefault("name", default_name(fn))
    values.setdefault("queue", default_queue)
    # Here rather than as a dead letter at the worker, which refuses these at decode.
    for key, field_name in (("name", "task"), ("queue", "queue")):
        problem = field_problem(field_name, values[key])
        if problem:
            raise ConfigurationError(f"task {key} {problem}")
    if "priority" in values:
        values["priority"] = _priority(values["priority"])
    if values.get("backoff", "exponential") not in BACKOFFS:
        raise ConfigurationError(f"backoff must be one of {', '.join(BACKOFFS)}")
    for key in ("autoretry_for", "dont_autoretry_for"):
        if key in values:
            values[key] = _exception_types(key, values[key])
    if "expires" in values:
        values["expires"] = _seconds("expires", values["expires"])
    check_task_options(values)
    for key in ("retries", "retry_delay", "max_retry_delay", "timeout", "soft_timeout"):
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not 0 <= value < math.inf):
            raise ConfigurationError(f"task option {key} must be a finite non-negative number")
    if values.get("concurrency") is not None:
        values["concurrency"] = _concurrency(values["concurrency"])
    _rates(values)
    for key in ("timeout", "soft_timeout"):  # 0 would kill (or interrupt) every run at once
        if values.get(key) == 0:
            raise ConfigurationError(f"task option {key} must be positive (leave it out: no limit)")
    return TaskOptions(**values)


def default_name(fn: Callable[..., Any]) -> str:
    """The name a task registers under unless ``name=`` says otherwise."""
    return f"{fn.__module__}.{fn.__qualname__}"


def _rates(values: dict[str, Any]) -> None:
    """Parse ``rate_limit`` and ``rate_limit_per_key`` (with ``burst``) in ``values``."""
    burst = parse_burst(values.get("burst"))
    for key in ("rate_limit", "rate_limit_per_key"):
        if values.get(key) is not None:
            values[key] = parse_rate(values[key], burst, what=f"task option {key}")


def _priority(value: Any) -> int:
    try:
        return int(Priority.parse(value))
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _concurrency(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ConfigurationError(
        f"task option concurrency={value!r}: expected a whole number of runs at once, "
        "1 or more (leave it out: no limit)"
    )


def _exception_types(key: str, value: Any) -> tuple[type[BaseException], ...]:
    types = value if isinstance(value, (tuple, list)) else (value,)
    if not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise ConfigurationError(f"task option {key} takes exception classes")
    return tuple(types)


def _seconds(key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ConfigurationError(f"task option {key} takes a finite number of seconds or a timedelta")


class BaseTask(Generic[P, R]):
    """What sync and async tasks share: sending, signatures, options."""

    def __init__(
        self,
        app: GopherQ,
        fn: Callable[..., Any],
        options: TaskOptions,
        *,
        bind: bool = False,
    ) -> None:
        self.app = app
        self.fn: Callable[P, Any] = _bound(fn, self.context) if bind else fn
        """What runs: the function, or with ``bind`` a wrapper passing it the context."""
        self.options = options
        self.bind = bind
        """Whether the function takes the task's ``TaskContext`` first (``bind=True``)."""
        self.signature = inspect.signature(self.fn)
        self.fair_key_of: KeyOf | None = key_of(options.name, self.signature, options.fair_key)
        """The fair key of a call's arguments, from the ``fair_key`` option (None: none)."""
        self._fitting: set[int | tuple[int, tuple[str, ...]]] = set()
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", options.name)
        self.__qualname__ = getattr(fn, "__qualname__", options.name)
        self.__module__ = fn.__module__

    @property
    def name(self) -> str:
        """The registered name (``module.function`` unless given)."""
        return self.options.name

    def context(self) -> TaskContext:
        """What a ``bind=True`` task gets first: ``current_task()`` while a worker (or
        eager mode, or ``apply``) runs this task; called directly, a context with a
        fresh id and no job control (``progress`` and ``checkpoint`` raise)."""
        running = _current.get()
        if running is not None and running.name == self.name:
            return running
        options = self.options
        return TaskContext(new_id(), options.name, options.queue, 0, options.retries)

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise ``TypeError`` unless the function accepts these arguments.

        Whether a call binds depends only on how many positional arguments it
        has and which keywords, never on their values: shapes that bound once are
        remembered (a few dozen at most), so a task sent again and again pays for
        ``inspect.Signature.bind`` once.
        """
        shape = (len(args), tuple(kwargs)) if kwargs else len(args)
        if shape in self._fitting:
            return
        self.signature.bind(*args, **kwargs)
        if len(self._fitting) < MAX_SHAPES:
            self._fitting.add(shape)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task to run in the background with these arguments."""
        return self.app.send(Signature(self, args, kwargs))

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Send with per-call options.

        Options: ``countdown`` (seconds), ``eta`` (datetime or unix seconds),
        ``priority``, ``queue``, ``retries``, ``timeout``, ``expires`` (seconds,
        timedelta or datetime), ``key`` (idempotency key), ``key_ttl`` (seconds a
        finished job's key stays held, see ``gopherq.uniqueness``), ``fair_key`` (fair
        sharing, over the task's own), ``headers``, ``task_id``.
        """
        return self.app.send(Signature(self, tuple(args), dict(kwargs or {}), options))

    def apply(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Run the task here and now, as Celery's ``apply`` does: through msgpack as a
        worker would (arguments and result must travel), retrying at once, and
        return an ``EagerResult`` with the outcome. No broker or result backend
        is needed. Takes ``apply_async``'s options; ``countdown`` and ``eta`` are
        ignored."""
        return self.app.apply(Signature(self, tuple(args), dict(kwargs or {}), options))

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """A signature: this task with arguments, to send later or in a batch."""
        return Signature(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    if not TYPE_CHECKING:  # at run time only: mypy must still see unknown attributes

        def __getattr__(self, name: str) -> Any:
            raise no_attribute(self, name, TASK_ATTRIBUTE_HINTS)


def _bound(fn: Callable[..., Any], context: Callable[[], TaskContext]) -> Callable[..., Any]:
    """``fn`` with the task context passed first, its signature shown without it (the
    arguments a message carries are checked against that)."""
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not parameters or parameters[0].kind not in positional:
        raise ConfigurationError(
            f"bind=True: {fn.__qualname__} must take the task context as its first parameter"
        )
    wrapper: Any  # a function that is given a __signature__
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            return await fn(context(), *args, **kwargs)

        wrapper = run_async
    else:

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            return fn(context(), *args, **kwargs)

        wrapper = run
    wrapper.__signature__ = signature.replace(parameters=parameters[1:])
    bound: Callable[..., Any] = wrapper
    return bound


class Task(BaseTask[P, R]):
    """A task made from a plain function; calling it runs the function inline."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self.fn(*args, **kwargs)
        return result


class AsyncTask(BaseTask[P, R]):
    """A task made from an ``async def`` function; calling it returns the coroutine."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        coroutine: Coroutine[Any, Any, R] = self.fn(*args, **kwargs)
        return coroutine


SEND_OPTIONS = frozenset(
    {
        "countdown",
        "eta",
        "priority",
        "queue",
        "retries",
        "timeout",
        "expires",
        "key",
        "key_ttl",
        "fair_key",
        "headers",
        "task_id",
    }
)


@dataclass(frozen=True, slots=True)
class Signature(Generic[R]):
    """A task with its arguments and send options: what ``.s()`` builds."""

    task: BaseTask[Any, R]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.options.keys() <= SEND_OPTIONS:
            options = resolve_aliases("send option", self.options, SEND_OPTION_ALIASES)
            if not options.keys() <= SEND_OPTIONS:
                name = sorted(options.keys() - SEND_OPTIONS)[0]
                raise unknown("send option", name, SEND_OPTIONS, SEND_OPTION_HINTS)
            object.__setattr__(self, "options", options)  # frozen: set once, here

    def set(self, **options: Any) -> Signature[R]:
        """A copy with more send options (``queue=``, ``countdown=``, ...)."""
        return replace(self, options={**self.options, **options})

    def delay(self) -> AsyncResult[R]:
        """Send it."""
        return self.task.app.send(self)
