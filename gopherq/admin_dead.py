"""Dead letters as operators handle them: list by queue and reason, look one up,
retry, purge, and replay with new arguments.

What ``gopherq dead ...`` and the HTTP API's ``/dead`` routes both call. The
broker lists dead letters by queue, newest first (``Broker.dead_letters``), and
by reason (``Broker.dead_letters_for``: on SQLite and Redis all of them, elsewhere
among the ``SCAN_LIMIT`` newest of the queue, if one is given).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gopherq.brokers.base import DEAD_SCAN_LIMIT, DeadLetter
from gopherq.errors import DecodeError, GopherQError
from gopherq.states import State

if TYPE_CHECKING:
    from gopherq.app import GopherQ
    from gopherq.serializer import Codec

SCAN_LIMIT = DEAD_SCAN_LIMIT
"""Newest dead letters a reason filter looks through at most (on SQLite and Redis: all)."""


class NotDead(GopherQError):
    """The id names no dead letter (gone, requeued, or never one)."""


class NotReplayable(GopherQError):
    """A dead letter whose body does not decode: its task and options are unknown."""


class BadArguments(GopherQError):
    """Replay arguments that the registered task's signature does not accept."""


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """A dead letter as operators see it."""

    id: str
    queue: str
    task: str | None
    """The task name read from the body; None when the body does not decode."""
    reason: str
    error: str
    attempts: int
    """Executions so far, as in the job record (the broker's ``attempt`` + 1)."""
    died: float


@dataclass(frozen=True, slots=True)
class DeadLetterDetail:
    """One dead letter with what its body holds, when it decodes."""

    info: DeadLetterInfo
    priority: int
    args: list[Any] | None
    """The positional arguments, or None when the body does not decode."""
    kwargs: dict[str, Any] | None
    headers: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Replayed:
    """A dead letter sent again as a new job."""

    id: str
    """The new job's id."""
    replaced: str
    """The dead letter's id; it is removed once the new job is enqueued."""
    removed: bool
    """False if the dead letter was gone by then (retried or purged meanwhile)."""


def task_name(codec: Codec, body: bytes) -> str | None:
    """The task name in an encoded message, or None if it cannot be read.

    Lenient on purpose: a message dead-lettered for a bad field still shows
    its task name.
    """
    name = codec.peek_field(body, "task")
    return name if isinstance(name, str) else None


def info(app: GopherQ, letter: DeadLetter) -> DeadLetterInfo:
    """A broker's dead letter as operators see it (task name read from the body)."""
    return DeadLetterInfo(
        id=letter.id,
        queue=letter.queue,
        task=task_name(app.codec, letter.body),
        reason=letter.reason,
        error=letter.error,
        attempts=letter.attempt + 1,
        died=letter.died,
    )


def dead_letters(
    app: GopherQ,
    queue: str | None = None,
    reason: str | None = None,
    *,
    offset: int = 0,
    limit: int = 100,
) -> list[DeadLetterInfo]:
    """Dead letters, newest first, of ``queue`` and ``reason`` (None: any)."""
    if reason is None:
        letters = app.broker.dead_letters(queue, offset, limit)
    else:
        letters = app.broker.dead_letters_for(reason, queue, offset, limit)
    return [info(app, letter) for letter in letters]


def find(app: GopherQ, id: str) -> DeadLetter:
    """The dead letter ``id``; ``NotDead`` if there is none."""
    letter = app.broker.dead_letter(id)
    if letter is None:
        raise NotDead(f"no dead letter {id!r}")
    return letter


def detail(app: GopherQ, id: str) -> DeadLetterDetail:
    """The dead letter ``id`` with its arguments and headers; ``NotDead`` if none."""
    letter = find(app, id)
    try:
        message = app.codec.decode(letter.body)
    except DecodeError:
        return DeadLetterDetail(info(app, letter), letter.priority, None, None, None)
    return DeadLetterDetail(
        info(app, letter), letter.priority, message.args, message.kwargs, message.headers
    )


def matching_ids(app: GopherQ, queue: str | None, reason: str) -> list[str]:
    """Ids of the dead letters of ``queue`` with ``reason``, among the newest
    ``SCAN_LIMIT``."""
    return [letter.id for letter in app.broker.dead_letters_for(reason, queue, 0, SCAN_LIMIT)]


def retry(
    app: GopherQ,
    ids: Sequence[str] | None = None,
    *,
    queue: str | None = None,
    reason: str | None = None,
) -> int:
    """Requeue dead letters with attempt 0: ``ids``, else all of ``queue`` and ``reason``
    (None: any). Returns how many; one whose idempotency key a live message holds
    stays dead and is not counted."""
    if ids is None and reason is not None:
        ids = matching_ids(app, queue, reason)
        if not ids:
            return 0
    return app.broker.requeue_dead(None if ids is None else list(ids), queue)


def purge(
    app: GopherQ,
    ids: Sequence[str] | None = None,
    *,
    queue: str | None = None,
    reason: str | None = None,
) -> int:
    """Delete dead letters: ``ids``, else all of ``queue`` and ``reason`` (None: any).
    Returns how many. Ids that are not dead letters are left alone."""
    if ids is None and reason is None:
        return app.broker.purge_dead(queue)
    chosen = matching_ids(app, queue, reason or "") if ids is None else dict.fromkeys(ids)
    deleted = 0
    for id in chosen:
        # Checked one by one: an id that is not (or no longer) dead is not deleted.
        if app.broker.locate(id) is State.DEAD and app.broker.delete(id):
            deleted += 1
    return deleted


def replay(
    app: GopherQ,
    id: str,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> Replayed:
    """Send dead letter ``id`` again as a new job (a new id, attempt 0), to its queue
    with its priority, retries, time limit and headers, and ``args``/``kwargs`` in
    place of its own where given. The dead letter is deleted once the new job is
    enqueued; if sending fails, it stays.

    ``NotDead`` for an unknown id, ``NotReplayable`` for a body that does not decode,
    ``BadArguments`` for arguments a task registered here does not take, and
    ``PayloadTooLarge`` (or ``SerializationError``) for arguments that do not fit a
    message.
    """
    letter = find(app, id)
    try:
        message = app.codec.decode(letter.body)
    except DecodeError as exc:
        raise NotReplayable(f"dead letter {id!r} does not decode: {exc}") from None
    options: dict[str, Any] = {"queue": letter.queue, "priority": letter.priority}
    for name in ("retries", "timeout"):
        if getattr(message, name) is not None:
            options[name] = getattr(message, name)
    if message.headers:
        options["headers"] = message.headers
    new_args = list(message.args if args is None else args)
    new_kwargs = dict(message.kwargs if kwargs is None else kwargs)
    task = app.tasks.get(message.task)
    if task is not None:
        try:
            task.check_arguments(new_args, new_kwargs)
        except TypeError as exc:
            raise BadArguments(f"{message.task}: {exc}") from None
    sent = app.send_task(message.task, new_args, new_kwargs, **options)
    return Replayed(sent.id, id, app.broker.delete(id))
