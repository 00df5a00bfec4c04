"""Operator views of an app: what the ``gopherq`` command shows, as plain data.

Each function takes an app and returns records or maps that the CLI and the
HTTP API (``gopherq.web``) only have to format. Nothing here changes state except through
the broker's admin methods, which the callers use directly.

Beside it, one module per resource the HTTP API also serves: ``admin_dead``
(dead letters), ``admin_queues`` (depths, pause, resume, purge) and
``admin_workers`` (workers from their heartbeats).

An admin operation the broker does not implement (see ``BrokerAdmin``) raises
``NotSupported``, which names the broker and the operation: the CLI shows it as
its one-line error.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

# Their former home: the dead letter views live in admin_dead.
from gopherq.admin_dead import DeadLetterInfo as DeadLetterInfo  # noqa: PLC0414
from gopherq.admin_dead import dead_letters as dead_letters  # noqa: PLC0414
from gopherq.admin_dead import task_name as task_name  # noqa: PLC0414
from gopherq.app import send_option_problems
from gopherq.errors import DecodeError, GopherQError, NotSupported, SerializationError
from gopherq.message import new_id
from gopherq.observability.workers import MISSED_BEATS
from gopherq.redaction import redact_text, redact_url
from gopherq.result import located, located_many
from gopherq.results.base import JobCursor, JobPage, JobRecord
from gopherq.routes import declared_queues
from gopherq.states import Priority, State

if TYPE_CHECKING:
    from gopherq.app import GopherQ
    from gopherq.brokers.base import Peeked
    from gopherq.events import Event
    from gopherq.result import AsyncResult
    from gopherq.task import Signature, TaskOptions


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A registered task and its main options."""

    name: str
    queue: str
    priority: str
    retries: int
    description: str
    """The first line of the task's docstring, or ''."""
    doc: str = ""
    """The whole docstring, indentation removed, or ''."""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Its other options (time limits, backoff, expiry...) as plain values: exception
    classes by qualified name."""


@dataclass(frozen=True, slots=True)
class Health:
    """Whether the broker answered a ping, and how fast."""

    broker: str
    """The broker URL with any password hidden."""
    ok: bool
    latency: float
    """Seconds the ping took (or took to fail)."""
    error: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeats:
    """Which workers sent a ``worker-heartbeat`` event lately."""

    checked: bool
    """False when it could not be told: events are off, or could not be read (``error``)."""
    window: float
    """Seconds looked back."""
    workers: tuple[str, ...] = ()
    """Names of the workers with a heartbeat within ``window``, newest first."""
    last: float | None = None
    """Seconds since the newest heartbeat of any worker (None: none within
    ``HEARTBEATS_LOOKBACK`` windows)."""
    error: str = ""

    @property
    def recent(self) -> bool:
        """Whether some worker sent a heartbeat within ``window``."""
        return bool(self.workers)


log = logging.getLogger(__name__)

HEARTBEATS_READ = 100
"""Newest heartbeat events that ``recent_heartbeats`` reads."""
HEARTBEATS_LOOKBACK = 20
"""Windows ``recent_heartbeats`` looks back for the newest heartbeat when none is
in its window: older heartbeats are not reported."""


def registered_tasks(app: GopherQ) -> list[TaskInfo]:
    """The app's tasks by name, with queue, priority name, retries and summary."""
    return [
        TaskInfo(
            name=task.name,
            queue=task.options.queue,
            priority=Priority(task.options.priority).name.lower(),
            retries=task.options.retries,
            description=first_line(task.fn.__doc__),
            doc=inspect.cleandoc(task.fn.__doc__ or ""),
            options=task_options(task.options),
        )
        for task in sorted(app.tasks.values(), key=lambda t: t.name)
    ]


_LISTED_APART = frozenset({"name", "queue", "priority", "retries"})


def task_options(options: TaskOptions) -> dict[str, Any]:
    """A task's options but name, queue, priority and retries, as plain values."""
    out: dict[str, Any] = {}
    for option in dataclasses.fields(options):
        if option.name in _LISTED_APART:
            continue
        value = getattr(options, option.name)
        if isinstance(value, tuple):
            value = [f"{kind.__module__}.{kind.__qualname__}" for kind in value]
        out[option.name] = value
    return out


def similar_tasks(app: GopherQ, name: str) -> list[str]:
    """Registered names ``name`` may mean: those ending in ``.name``, else close spellings."""
    suffixed = sorted(n for n in app.tasks if n.endswith("." + name))
    return suffixed or difflib.get_close_matches(name, app.tasks, n=3)


@dataclass(frozen=True, slots=True)
class Submission:
    """A task to send by name, as ``gopherq submit`` and ``POST /jobs`` take it."""

    task: str
    args: list[Any] = dataclasses.field(default_factory=list)
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Send options of ``apply_async``: queue, priority, countdown, eta, expires,
    retries, key, key_ttl, headers (those not given left out)."""


@dataclass(frozen=True, slots=True)
class Submitted:
    """What one send did."""

    id: str
    """The job's id: the new one, or the holder's when its idempotency key was held."""
    task: str
    queue: str
    new: bool
    """False when the idempotency key was held by another job (live, or finished within
    its ``key_ttl``): nothing was sent."""


def unregistered(app: GopherQ, name: str) -> str | None:
    """Why ``name`` is not a task of ``app``, naming close ones; None if it is one."""
    if name in app.tasks:
        return None
    similar = similar_tasks(app, name)
    hint = f"; did you mean {' or '.join(map(repr, similar))}?" if similar else ""
    return f"no task {name!r} is registered in app {app.name}{hint}"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A submission checked, and the signature that sends it under an id of its own."""

    signature: Signature[Any]
    """``app.signature`` of the submission, with ``task_id`` set to ``id``."""
    id: str
    """The id the job gets if it is sent (not if its idempotency key is held)."""
    queue: str
    """The queue it goes to."""
    problems: list[tuple[str, str]]
    """What a send would refuse, as (field, problem); empty when it can be sent."""

    @property
    def task(self) -> str:
        """The task's name."""
        return self.signature.task.name


def prepare(app: GopherQ, submission: Submission, *, registered: bool = True) -> Prepared:
    """``submission``'s signature under a new id, checked as a send would check it:
    ``problems`` lists ``task`` (not registered here, when ``registered``), ``args``
    or ``kwargs`` (not fitting the task's signature, or not encodable), or a send
    option's name. Nothing is sent; ``submit_many`` (or ``ServerState.sender``)
    sends the signatures of those without problems."""
    id = new_id()
    options = {**submission.options, "task_id": id}
    signature = app.signature(submission.task, submission.args, submission.kwargs, **options)
    queue = task_queue(app, submission.task, submission.options.get("queue"))
    problems = _problems(app, submission, signature, registered)
    return Prepared(signature, id, queue, problems)


def _problems(
    app: GopherQ, submission: Submission, signature: Signature[Any], registered: bool
) -> list[tuple[str, str]]:
    if registered and (problem := unregistered(app, submission.task)):
        return [("task", problem)]
    options = send_option_problems(submission.options, app.settings.max_eta)
    if options:
        return list(options.items())
    try:
        app.envelope(signature)
    except TypeError as exc:  # the arguments do not fit the signature
        text = str(exc)
        return [("kwargs" if _about_keywords(text) else "args", text)]
    except SerializationError as exc:
        text = str(exc)
        part = next((p for p in ("kwargs", "headers") if p in text), "args")
        return [(part, text)]
    except ValueError as exc:
        return [("options", str(exc))]
    return []


def _about_keywords(error: str) -> bool:
    """Whether a ``Signature.bind`` error is about keyword arguments."""
    return "keyword" in error or "multiple values" in error


def submitted(prepared: Sequence[Prepared], results: Sequence[AsyncResult[Any]]) -> list[Submitted]:
    """What each send did, from the results of sending the signatures of ``prepared``
    (in order): one whose idempotency key a live job held has that job's id (``new``
    false)."""
    return [
        Submitted(result.id, p.task, p.queue, result.id == p.id)
        for p, result in zip(prepared, results, strict=True)
    ]


def submit_many(app: GopherQ, prepared: Sequence[Prepared]) -> list[Submitted]:
    """Send the signatures of ``prepared`` in one broker call (``send_many``); what
    each did. Raises ``ValueError`` if one has problems, and as ``send_many`` does."""
    refused = next((p for p in prepared if p.problems), None)
    if refused is not None:
        raise ValueError(f"cannot send {refused.task!r}: {refused.problems[0][1]}")
    return submitted(prepared, app.send_many([p.signature for p in prepared]))


def cancel_outcome(was: State | None) -> str:
    """What a cancel did to a job the broker found ``was`` (None: not found):
    ``cancelled`` (it will not run), ``stopping`` (running: its worker stops it) or
    ``not-found`` (finished, dead-lettered or unknown)."""
    if was is None:
        return "not-found"
    return "stopping" if was is State.STARTED else "cancelled"


def task_queue(app: GopherQ, name: str, queue: str | None) -> str:
    """The queue a task sent by ``name`` goes to: ``queue``, else the task's own (for a
    task not registered here, its route's, as ``send_task`` sends it, else the default)."""
    if queue:
        return queue
    task = app.tasks.get(name)
    if task is not None:
        return task.options.queue
    routed: str | None = app.routes.match(name).get("queue")
    return routed or app.settings.default_queue


def job_status(app: GopherQ, id: str) -> dict[str, Any]:
    """What is known of task ``id``: its job record with the result decoded.

    The state is ``AsyncResult.state``'s (``result.job_state``): without a record
    (not run yet, or results ignored) it comes from the broker, an unknown id is
    ``PENDING``, and a STARTED record whose worker died shows where the broker
    holds the message now.
    """
    return find_job(app, id) or {"id": id, "state": State.PENDING.value}


def find_job(app: GopherQ, id: str, *, arguments: bool = False) -> dict[str, Any] | None:
    """``job_status`` of a job something knows of: None when there is no record of
    ``id`` and the broker holds no message of it (``job_status`` would say PENDING).

    With ``arguments``, also what its message holds where the broker still has it
    (queued, scheduled, running or dead-lettered; one ``Broker.peek``): ``args`` and
    ``kwargs``, and for a job with no record yet its ``task``, ``queue`` and
    ``created``. A job that succeeded is not looked up (its message is gone).
    """
    record = app.backend.get(id)
    held = None
    if arguments and (record is None or record.state is not State.SUCCEEDED):
        held = app.broker.peek(id, None if record is None else record.queue)
    where = None
    if record is None:
        where = held.state if held is not None else located(app, id)
        if where is None:  # it may have finished in between (see ``job_state``)
            record = app.backend.get(id)
    if record is not None:
        info = record_info(app, current(app, record))
    elif where is not None:
        info = {"id": id, "state": where.value}
    else:
        return None
    if held is not None:
        info.update({k: v for k, v in message_info(app, held).items() if k not in info})
    return info


def message_info(app: GopherQ, held: Peeked) -> dict[str, Any]:
    """What a message the broker holds says of its job: ``task``, ``queue``, ``args``,
    ``kwargs`` and ``created``; only its queue when its body does not decode."""
    try:
        message = app.codec.decode(held.body)
    except DecodeError:
        return {"queue": held.queue}
    return {
        "task": message.task,
        "queue": held.queue,
        "args": message.args,
        "kwargs": message.kwargs,
        "created": message.created,
    }


def job_events(
    app: GopherQ, id: str, since: float | None = None, until: float | None = None
) -> list[Event] | None:
    """The retained events of job ``id``, oldest first; None when events are off or
    cannot be read now (logged): a job's own record does not depend on them.
    ``since``: when it was sent, ``until``: when it finished, where known (they bound
    the search of an event log without an index by job)."""
    if not app.events.enabled:
        return None
    try:
        return app.events.for_job(id, since=since, until=until)
    except GopherQError as exc:
        log.warning("could not read the events of job %s: %s", id, redact_text(str(exc)))
        return None


RetryOutcome = Literal["requeued", "not-found", "not-finished", "succeeded", "key-held", "no-body"]


def retry_job(app: GopherQ, id: str) -> RetryOutcome:
    """Run a finished job that did not succeed again, if its message is kept.

    A dead-lettered job (FAILED with no retries left, DEAD, EXPIRED) is requeued
    from its dead letter under the same id, attempts from 0 (``requeue_dead``):
    ``requeued``, or ``key-held`` when a live job holds its idempotency key. Other
    finished jobs (CANCELLED, or one whose dead letter was purged or expired) keep
    no arguments to send again: ``no-body``. A job not finished is
    ``not-finished``, one that succeeded ``succeeded``, an unknown id ``not-found``.
    """
    where = located(app, id)
    if where is State.DEAD:
        return "requeued" if app.broker.requeue_dead([id]) else "key-held"
    if where is not None:
        return "not-finished"
    record = app.backend.get(id)
    if record is None:
        return "not-found"
    if record.state is State.SUCCEEDED:
        return "succeeded"
    return "no-body" if record.state.finished else "not-finished"


DeleteOutcome = Literal["deleted", "not-found", "running"]


def delete_job(app: GopherQ, id: str) -> DeleteOutcome:
    """Forget job ``id``: its record, and its message where the broker still holds it
    waiting (queued, scheduled or dead-lettered): it will not run. A running job is
    left alone (``running``: cancel it first)."""
    where = located(app, id)
    if where is State.STARTED:
        return "running"
    message = app.broker.delete(id) if where is not None else False
    record = app.backend.delete(id)
    return "deleted" if message or record else "not-found"


def job_records(
    app: GopherQ,
    *,
    state: State | str | None = None,
    task: str | None = None,
    queue: str | None = None,
    limit: int = 100,
) -> list[JobRecord]:
    """``app.jobs(...)`` with each state as ``AsyncResult.state`` reports it (see
    ``job_page``)."""
    return job_page(app, state=state, task=task, queue=queue, limit=limit).records


def job_page(
    app: GopherQ,
    *,
    state: State | str | None = None,
    task: str | None = None,
    queue: str | None = None,
    since: float | None = None,
    until: float | None = None,
    after: JobCursor | None = None,
    limit: int = 100,
) -> JobPage:
    """``app.job_page(...)`` with each state as ``AsyncResult.state`` reports it.

    A record that the filter matched as STARTED but whose message is back in the
    queue (its worker died) is left out of a STARTED listing.
    """
    page = app.job_page(
        state=state, task=task, queue=queue, since=since, until=until, after=after, limit=limit
    )
    records = currents(app, page.records)
    if state is not None:
        wanted = State(state.upper()) if isinstance(state, str) else state
        records = [r for r in records if r.state is wanted]
    return JobPage(records, page.next)


def currents(app: GopherQ, records: Sequence[JobRecord]) -> list[JobRecord]:
    """``current`` of each record, the broker asked about every STARTED one at once."""
    started = [r for r in records if r.state is State.STARTED]
    ids = [r.id for r in started]
    where = dict(zip(ids, located_many(app, ids, [r.queue for r in started]), strict=True))
    return [_moved(r, where[r.id]) if r.state is State.STARTED else r for r in records]


def _moved(record: JobRecord, where: State | None) -> JobRecord:
    """A STARTED ``record`` as the broker's ``where`` says (None: as it is)."""
    return record if where in (None, record.state) else dataclasses.replace(record, state=where)


def current(app: GopherQ, record: JobRecord) -> JobRecord:
    """``record`` with its state as ``AsyncResult.state`` reports it: a STARTED record's
    state is where the broker holds its message, if it holds it (``job_state``'s rule)."""
    [found] = currents(app, [record])
    return found


def record_info(app: GopherQ, record: JobRecord) -> dict[str, Any]:
    """A job record as plain data: result and checkpoint decoded, error and progress as
    maps."""
    info = record.to_map()
    if record.result is not None:
        info["result"] = app.codec.unpack(record.result)
    if record.checkpoint is not None:
        info["checkpoint"] = app.codec.unpack(record.checkpoint)
    if record.error is not None:
        error = record.error
        info["error"] = {"type": error.type, "message": error.message, "traceback": error.traceback}
    if record.progress is not None:
        info["progress"] = record.progress._asdict()
    return info


def check_health(app: GopherQ) -> Health:
    """Ping the broker. Any failure, not only ``BrokerUnavailable``, means unhealthy."""
    start = time.perf_counter()
    try:
        app.broker.ping()
    except Exception as exc:  # a health check reports, it does not raise
        error = redact_text(str(exc))  # a library's message may quote the URL
        return Health(redact_url(app.broker_url), False, time.perf_counter() - start, error)
    return Health(redact_url(app.broker_url), True, time.perf_counter() - start)


RESULT_PROBE_ID = "gopherq-health-probe"
"""The id ``check_result_store`` looks up: no job has it, so the answer is always none."""


def check_result_store(app: GopherQ) -> Health:
    """Ask the result store for a job that does not exist: it answers, or it is down.
    ``Health.broker`` holds the result store's URL (with any password hidden)."""
    url = redact_url(app.settings.result_backend or app.broker_url)
    start = time.perf_counter()
    try:
        app.backend.get(RESULT_PROBE_ID)
    except Exception as exc:  # a health check reports, it does not raise
        return Health(url, False, time.perf_counter() - start, redact_text(str(exc)))
    return Health(url, True, time.perf_counter() - start)


def recent_heartbeats(app: GopherQ, window: float | None = None) -> Heartbeats:
    """The workers that sent a heartbeat in the last ``window`` seconds (by default
    ``MISSED_BEATS`` heartbeat intervals, the exporter's rule for a worker online),
    from the newest ``HEARTBEATS_READ`` events of that window: the events log is
    read no further back than the window (and, when it holds none, than
    ``HEARTBEATS_LOOKBACK`` windows for the newest heartbeat)."""
    window = MISSED_BEATS * app.settings.worker_heartbeat if window is None else window
    if not app.events.enabled:
        return Heartbeats(False, window, error="events are off: heartbeats are not recorded")
    now = time.time()
    try:
        beats = app.events.last(HEARTBEATS_READ, "worker-heartbeat", since=now - window)
        if not beats:  # when the newest was: looked for further back, once
            lookback = now - HEARTBEATS_LOOKBACK * window
            beats = app.events.last(1, "worker-heartbeat", since=lookback)
    except Exception as exc:  # a health check reports, it does not raise
        return Heartbeats(False, window, error=redact_text(str(exc)) or type(exc).__name__)
    names = [e.worker for e in reversed(beats) if e.worker and now - e.time <= window]
    last = max(now - beats[-1].time, 0.0) if beats else None
    return Heartbeats(True, window, tuple(dict.fromkeys(names)), last)


def first_line(text: str | None) -> str:
    """The first non-blank line of ``text``, stripped; '' if there is none."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def known_queues(app: GopherQ) -> list[str]:
    """Every queue the broker knows (with messages, or paused), plus the app's: the
    default queue and those its registered tasks are declared on (or routed to).

    Only the app's when the broker does not implement ``stats``."""
    try:
        known = set(app.broker.stats())
    except NotSupported:
        known = set()
    return sorted(known | set(declared_queues(app)))


def purge_all(app: GopherQ, queues: Sequence[str]) -> dict[str, int]:
    """Delete the ready and scheduled messages of ``queues``; how many, per queue."""
    return {name: app.broker.purge(name) for name in queues}
