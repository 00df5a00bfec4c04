"""What a worker checks and says before it is ready: the banner, the stores, the tasks.

``banner`` describes the worker (app, broker, result store, queues, pool,
tasks) in a few lines the supervisor logs at INFO, as Celery prints its own.
``check_stores`` pings the broker and the result store before any process is
forked, so that a worker that can never work says why and exits instead of
logging ``ready`` and retrying forever:

- a permanent error (a bad or unknown URL, a wrong password, a SQLite file in
  a directory that is missing or not writable) ends it at once;
- a store that is down (connection refused, a timeout) is retried, with the
  reason logged each time, for up to ``connect_timeout`` seconds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gopherq.errors import ConfigurationError
from gopherq.redaction import error_line, redact_url
from gopherq.worker.concurrency import check_support

if TYPE_CHECKING:
    from gopherq.app import GopherQ

logger = logging.getLogger("gopherq.worker")

RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
"""Pauses between tries of a store that is down (the last one repeats)."""


class StartupError(Exception):
    """The worker cannot start; the message is one line, fit for the log."""


def banner(app: GopherQ, name: str, queues: Sequence[str], concurrency: int, *, burst: bool) -> str:
    """The lines a worker logs when it starts: what it runs, where from, how."""
    tasks = sorted(app.tasks)
    lines = [
        f"worker {name} starting",
        f"  app:        {app.name} ({app.home})",
        f"  broker:     {redact_url(app.broker_url)}",
        f"  results:    {_results(app)}",
        f"  queues:     {', '.join(queues)}",
        f"  pool:       prefork, concurrency {concurrency}{' (burst)' if burst else ''}",
        f"  tasks:      {len(tasks)} registered",
        *(f"    . {task}" for task in tasks),
    ]
    return "\n".join(lines)


def _results(app: GopherQ) -> str:
    url = app.settings.result_backend
    return redact_url(url) if url else "the broker's own store"


def warn_if_no_tasks(app: GopherQ) -> None:
    """Warn that a worker with no task registered will dead-letter everything."""
    if app.tasks:
        return
    logger.warning(
        "no task is registered in app %s: every message will be dead-lettered "
        "UNKNOWN_TASK. Import the modules that declare tasks from the app's module, "
        'or list them: GopherQ(..., include=["shop.tasks"]) or '
        'app.autodiscover_tasks(["shop"])',
        app.name,
    )


def warn_if_root(name: str) -> None:
    """Warn that a worker runs as root: its tasks run with every privilege (see
    docs/security.md). Called once, when the worker starts."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        logger.warning(
            "worker %s is running as root: every task (and so anyone who can write to "
            "the broker) can do anything on this machine; run workers as an unprivileged "
            "user (see docs/security.md)",
            name,
        )


def check_stores(app: GopherQ, connect_timeout: float) -> None:
    """Return once the broker and the result store answer.

    Raises ``StartupError`` at once for a permanent error, and after
    ``connect_timeout`` seconds of tries for a store that stays down.
    """
    deadline = time.monotonic() + connect_timeout
    tries = 0
    while True:
        try:
            _ping(app)
            return
        except Exception as exc:  # classified below; a library may raise anything
            reason = error_line(exc)
            problem = _permanent(app, exc)
            if problem is not None:
                raise StartupError(f"{reason}: {problem}" if problem else reason) from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise StartupError(
                    f"{reason} (still failing after --connect-timeout {connect_timeout:g}s)"
                ) from None
            delay = min(RETRY_DELAYS[min(tries, len(RETRY_DELAYS) - 1)], left)
            tries += 1
            logger.warning("cannot connect: %s; trying again in %.1fs", reason, delay)
            time.sleep(delay)
        finally:
            app.close()  # the processes about to be forked open their own


def _ping(app: GopherQ) -> None:
    app.broker.ping()
    check_support(app)  # a limit the broker cannot keep: refuse to start
    url = app.settings.result_backend
    if url and url != app.broker_url:
        app.backend.get("gopherq-startup-check")  # any answer will do: the id is unknown


def _permanent(app: GopherQ, exc: BaseException) -> str | None:
    """Why trying again cannot help (the configuration must change first): a hint,
    or ``""`` when the error says it all; ``None`` when it may."""
    if isinstance(exc, ConfigurationError):
        return ""
    causes: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(causes) < 10:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(_is_auth_error(c) for c in causes):
        return "check the user and password in the URL"
    for url in _sqlite_urls(app):
        problem = _sqlite_directory_problem(url)
        if problem:
            return problem
    return None


def _is_auth_error(exc: BaseException) -> bool:
    try:
        from redis.exceptions import AuthenticationError, AuthorizationError
    except ImportError:  # pragma: no cover - no Redis client, so no Redis error
        return False
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return True
    return str(exc).startswith(("WRONGPASS", "NOAUTH", "NOPERM"))


def _sqlite_urls(app: GopherQ) -> list[str]:
    urls = [app.broker_url, app.settings.result_backend or ""]
    return [url for url in urls if url.partition("://")[0].lower() == "sqlite"]


def _sqlite_directory_problem(url: str) -> str | None:
    """What is wrong with the directory of a SQLite URL's file, if anything: missing,
    or not writable (the ``-wal`` and ``-shm`` files beside the file go there)."""
    from gopherq.stores.sqlite import sqlite_path

    try:
        directory = os.path.dirname(sqlite_path(url))
    except ConfigurationError as exc:
        return str(exc)
    if not os.path.isdir(directory):
        return f"directory {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {directory} is not writable by this user"
    return None
