"""Celery's names for what gopherq names differently: aliases that work, hints for the rest.

Celery users reach for Celery's names. A name that means exactly what a gopherq
name means is an alias: it works, and docs/celery.md lists it. A name whose
meaning differs, or that has no counterpart, raises ``ConfigurationError`` with
a hint saying what gopherq has instead, rather than a did-you-mean guess that
would mislead (Celery's ``default_retry_delay`` is close to ``max_retry_delay``
in spelling, and to ``retry_delay`` in meaning).

Settings have no aliases (one name per setting), only hints.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from gopherq.errors import ConfigurationError

TASK_OPTION_ALIASES: Mapping[str, str] = {
    "max_retries": "retries",
    "time_limit": "timeout",
    "soft_time_limit": "soft_timeout",
}
"""``@app.task(...)`` options spelled the Celery way, and the gopherq option each sets."""

SEND_OPTION_ALIASES: Mapping[str, str] = {
    "max_retries": "retries",
    "time_limit": "timeout",
}
"""``apply_async(...)`` options spelled the Celery way, and the gopherq option each sets."""

_BY_QUEUE = "queue (gopherq routes by queue only)"
_RETRY_DELAY = (
    "retry_delay (the base delay of backoff='exponential'; "
    "backoff='fixed' waits retry_delay before every retry, as Celery does)"
)

TASK_OPTION_HINTS: Mapping[str, str] = {
    "default_retry_delay": _RETRY_DELAY,
    "retry_backoff": "backoff ('exponential', 'linear' or 'fixed') with retry_delay",
    "retry_backoff_max": "max_retry_delay",
    "retry_jitter": "jitter",
    "retry_kwargs": "retries, and raise current_task().retry(countdown=...) for a delay",
    "acks_late": "no such option: gopherq always acknowledges after the task ran "
    "(at least once; acks_late=True is accepted)",
    "acks_on_failure_or_timeout": "no such option: a failed task is retried or dead-lettered",
    "reject_on_worker_lost": "the max_deliveries setting (redeliveries after a worker died)",
    "track_started": "no such option: a task that runs long stores STARTED",
    "serializer": "no such option: gopherq always uses msgpack",
    "typing": "no such option: arguments are always checked against the signature",
    "throws": "dont_autoretry_for (expected errors that are not retried)",
    "store_errors_even_if_ignored": "no such option: failures are always stored",
    "base": "no such option: use middleware (gopherq.Middleware) for shared behaviour",
    "routing_key": _BY_QUEUE,
    "exchange": _BY_QUEUE,
}
"""Celery task options gopherq does not take as they are, and what it has instead."""

SEND_OPTION_HINTS: Mapping[str, str] = {
    "retry": "no such option: a send that fails raises BrokerError (retries= sets "
    "how often the task itself is retried)",
    "retry_policy": "no such option: a send that fails raises BrokerError",
    "soft_time_limit": "the task option soft_timeout (not set per message)",
    "routing_key": _BY_QUEUE,
    "exchange": _BY_QUEUE,
    "serializer": "no such option: gopherq always uses msgpack",
    "compression": "no such option: keep messages small (max_message_size)",
    "link": "no callbacks: send the next task from the task itself",
    "link_error": "no error callbacks: use middleware's after_execute or app.on('task-failed')",
    "shadow": "no such option",
    "ignore_result": "the task option ignore_result",
}
"""Celery send options gopherq does not take as they are, and what it has instead."""

SETTING_HINTS: Mapping[str, str] = {
    "task_always_eager": "eager",
    "always_eager": "eager",
    "task_eager_propagates": "eager (an eager task's .get() raises TaskFailed)",
    "task_default_queue": "default_queue",
    "worker_concurrency": "concurrency",
    "worker_prefetch_multiplier": "prefetch (messages per worker process, not a multiplier)",
    "worker_max_tasks_per_child": "max_tasks_per_child",
    "worker_max_memory_per_child": "max_memory_per_child",
    "task_time_limit": "the task option timeout",
    "task_soft_time_limit": "the task option soft_timeout",
    "task_acks_late": "no such setting: gopherq always acknowledges after the task ran",
    "task_serializer": "no such setting: gopherq always uses msgpack",
    "result_serializer": "no such setting: gopherq always uses msgpack",
    "accept_content": "no such setting: gopherq always uses msgpack, never pickle",
    "timezone": "the tz of each periodic entry (@app.periodic(..., tz='Europe/Paris'))",
    "enable_utc": "no such setting: times are stored as unix seconds",
    "task_track_started": "no such setting: a task that runs long stores STARTED",
    "broker_connection_retry_on_startup": "no such setting",
    "worker_send_task_events": "events",
    "task_send_sent_event": "events",
    "task_ignore_result": "the task option ignore_result",
    "task_create_missing_queues": "no such setting: queues need no declaring",
    "imports": "include (GopherQ(..., include=[...]))",
    "result_backend_transport_options": "no such setting",
    "broker_transport_options": "no such setting: options go in the broker URL",
}
"""Celery settings gopherq names differently or lacks, and what it has instead."""

ROUTE_KEY_HINTS: Mapping[str, str] = {
    "routing_key": _BY_QUEUE,
    "exchange": _BY_QUEUE,
    "exchange_type": _BY_QUEUE,
}
"""Keys of a Celery ``task_routes`` route gopherq does not take, and what it has instead."""

CLI_HINTS: Mapping[str, str] = {
    "inspect": "gopherq has 'stats', 'jobs' and 'status ID' instead",
    "control": "gopherq has 'cancel', 'pause' and 'resume' instead",
    "revoke": "gopherq has 'cancel ID' instead",
    "call": "gopherq has 'submit NAME' instead",
    "result": "gopherq has 'status ID' instead",
    "flower": "gopherq has 'events --follow', 'jobs' and 'stats' instead",
    "multi": "gopherq has no 'multi': run one 'gopherq worker' per service (systemd, "
    "supervisord), each with -c processes",
    "shell": "gopherq has no 'shell': import your app in python",
    "migrate": "gopherq has no 'migrate': 'dead retry-all' requeues dead letters",
    "list": "gopherq has 'stats' (queues) and 'tasks' instead",
    "report": "gopherq has '--version' and 'health' instead",
    "amqp": "gopherq has no 'amqp'",
    "graph": "gopherq has no 'graph'",
    "logtool": "gopherq has no 'logtool'",
    "upgrade": "gopherq has no 'upgrade'",
}
"""Celery subcommands ``gopherq`` lacks, and what it has instead."""

CLI_OPTION_HINTS: Mapping[str, str] = {
    "-P": "one pool, prefork (-c processes; async def tasks run on an event loop in each)",
    "--pool": "one pool, prefork (-c processes; async def tasks run on an event loop in each)",
    "--autoscale": "no autoscaling: set the processes with -c",
    "-E": "events on by default (setting events)",
    "--task-events": "events on by default (setting events)",
    "-n": "workers named host:pid",
    "--hostname": "workers named host:pid",
    "--detach": "no daemon mode: run it under a service manager (systemd, supervisord)",
    "--pidfile": "no daemon mode: run it under a service manager (systemd, supervisord)",
    "-f": "logs on standard error, for the service manager to keep",
    "--logfile": "logs on standard error, for the service manager to keep",
    "-s": "no schedule file: beats keep their state in the broker",
    "--schedule": "no schedule file: beats keep their state in the broker",
    "--time-limit": "the task option timeout",
    "--soft-time-limit": "the task option soft_timeout",
    "--prefetch-multiplier": "the setting prefetch (messages per process)",
    "--without-gossip": "no gossip to turn off",
    "--without-mingle": "no mingle to turn off",
    "--without-heartbeat": "heartbeats as events (setting worker_heartbeat)",
}
"""Celery command-line options ``gopherq`` lacks, and what it has instead."""

APP_ATTRIBUTE_HINTS: Mapping[str, str] = {
    "conf": "settings (read only: set them with GopherQ(...) keywords or config_from_object)",
    "AsyncResult": "result(id)",
    "control": "cancel(ids), and broker.pause(queue) / broker.resume(queue)",
    "Task": "middleware (gopherq.Middleware) for behaviour shared by tasks",
}
"""Celery app attributes gopherq names differently, and what it has instead."""

TASK_ATTRIBUTE_HINTS: Mapping[str, str] = {
    "max_retries": "options.retries",
    "default_retry_delay": "options.retry_delay",
    "time_limit": "options.timeout",
    "soft_time_limit": "options.soft_timeout",
    "queue": "options.queue",
    "priority": "options.priority",
    "request": "current_task() inside the task (or bind=True)",
    "retry": "raise current_task().retry(...) inside the task",
    "update_state": "current_task().progress(...) inside the task",
    "si": "s(...) (no argument is ever passed on from another task)",
    "AsyncResult": "app.result(id)",
    "map": "app.send_many([task.s(x) for x in items])",
    "starmap": "app.send_many([task.s(*x) for x in items])",
    "chunks": "app.send_many([task.s(x) for x in items])",
    "on_failure": "middleware after_execute, or app.on('task-failed')",
    "on_success": "middleware after_execute, or app.on('task-succeeded')",
    "on_retry": "middleware after_execute, or app.on('task-retried')",
    "after_return": "middleware after_execute",
}
"""Celery task attributes gopherq names differently, and what it has instead."""


def no_attribute(obj: object, name: str, hints: Mapping[str, str]) -> AttributeError:
    """The ``AttributeError`` for ``obj.name``: what gopherq has, when it is Celery's."""
    kind = type(obj).__name__
    hint = hints.get(name)
    if hint is not None:
        return AttributeError(f"{kind} has no {name!r} (Celery's); gopherq has {hint}")
    return AttributeError(f"{kind!r} object has no attribute {name!r}")


def unknown(
    kind: str,
    name: str,
    known: Collection[str],
    hints: Mapping[str, str],
    where: str = "",
) -> ConfigurationError:
    """The error for an unknown name of ``kind`` (``"task option"``...): Celery's hint
    when ``name`` is Celery's, else the closest known name."""
    hint = hints.get(name)
    if hint is not None:
        return ConfigurationError(
            f"unknown {kind} {name!r}{where}; {name!r} is Celery's: gopherq has {hint}"
        )
    return ConfigurationError(f"unknown {kind} {name!r}{where}{did_you_mean(name, known)}")


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the known name ``name`` most likely means, or ''.

    A known name that ``name`` contains as whole words comes first, the longest
    (``default_retry_delay`` means ``retry_delay``, not the closer spelling
    ``max_retry_delay``); else the closest spelling.
    """
    known = sorted(names)
    inside = [n for n in known if f"_{n}_" in f"_{name}_" and n != name]
    close = [max(inside, key=len)] if inside else difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def resolve_aliases(
    kind: str, options: Mapping[str, Any], aliases: Mapping[str, str]
) -> dict[str, Any]:
    """``options`` with Celery's aliases renamed to gopherq's names; an alias given
    with its gopherq name raises ``ConfigurationError``."""
    resolved = dict(options)
    for alias, name in aliases.items():
        if alias in resolved:
            if name in resolved:
                raise ConfigurationError(
                    f"{kind}s {alias!r} and {name!r} are the same; give only {name!r}"
                )
            resolved[name] = resolved.pop(alias)
    return resolved
