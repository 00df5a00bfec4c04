"""Settings: one typed object, merged from three sources in one order.

1. the defaults below;
2. keyword arguments given to ``GopherQ(...)`` in code;
3. ``GOPHERQ_<NAME>`` environment variables (``GOPHERQ_BROKER_URL``,
   ``GOPHERQ_EAGER=1``, ...), so that an operator can point a deployed app
   elsewhere without touching its code, as ``CELERY_BROKER_URL`` does.

An unknown name in code raises ``ConfigurationError`` with the closest known
name. An unknown ``GOPHERQ_*`` variable is ignored with a warning (once per
process, with the closest name): other tools may use the prefix too.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import logging
import os
import types
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gopherq.celery_names import SETTING_HINTS, did_you_mean, unknown
from gopherq.errors import ConfigurationError
from gopherq.redaction import redact_url
from gopherq.routes import Routes

logger = logging.getLogger("gopherq.settings")

ENV_PREFIX = "GOPHERQ_"
# Environment variables that are not settings (read by the CLI and tests).
_ENV_NOT_SETTINGS = frozenset({"GOPHERQ_APP", "GOPHERQ_REQUIRE_SERVICES"})
# Settings that hold URLs, which may carry passwords: redacted in repr.
_URL_SETTINGS = frozenset({"broker_url", "result_backend", "events"})
LOG_FORMATS = ("console", "json")
"""The values of ``log_format``."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting gopherq reads, with its default."""

    broker_url: str | None = None
    """Broker URL; ``None`` means ``gopherq.db`` beside the module that creates the app
    (``memory://`` when eager). A relative SQLite path is from the current directory."""
    result_backend: str | None = None
    """Result backend URL; ``None`` means the broker's own store."""
    eager: bool = False
    """Run tasks inline at ``.delay()`` (tests, scripts), still through the codec."""
    default_queue: str = "default"
    max_message_size: int = 1024 * 1024
    """Largest encoded message in bytes; larger ones raise ``PayloadTooLarge``."""
    max_eta: float = 365 * 86400.0
    """Furthest ahead, in seconds, a task may be sent to run (``eta``, ``countdown``);
    further raises ``ValueError`` at send time."""
    result_expires: float = 86400.0
    """Seconds a finished job record is kept."""
    lease_seconds: float = 30.0
    """How long a delivery is leased; renewed while its task runs."""
    max_deliveries: int = 5
    """Deliveries of one attempt (its worker died each time) before ``WORKER_LOST``."""
    prefetch: int = 16
    """Most messages a worker process reserves at once when tasks are short."""
    priority_aging: float | Mapping[str, float] | None = None
    """Seconds of waiting worth one priority level, so that bulk work keeps moving under a
    flood of critical work: for every queue (a number), or per queue (``{"bulk": 60}``;
    queues not named keep strict priority). None: strict priority. A number or JSON in
    the environment (see docs/flow-control.md)."""
    concurrency: int | None = None
    """Worker processes; ``None`` means the CPU count."""
    shutdown_timeout: float = 30.0
    """Seconds running tasks get to finish after SIGTERM."""
    connect_timeout: float = 30.0
    """Seconds a starting worker keeps trying a broker (or result store) that is down
    before it exits 1; errors that trying again cannot fix end it at once."""
    cancel_grace: float = 10.0
    """Seconds a running task gets to stop after a cancel before its process is killed."""
    max_tasks_per_child: int | None = None
    """Recycle a worker process after this many tasks."""
    max_memory_per_child: int | None = None
    """Recycle a worker process once its RSS passes this many KiB."""
    dead_letter_ttl: float = 7 * 86400.0
    """Seconds a dead letter is kept."""
    events: str | bool | None = "broker"
    """Event backend URL. ``"broker"`` (or ``True``): the broker's own store (memory,
    SQLite, Redis; off for a broker without an event backend). ``False``, ``None``,
    ``""`` or ``"off"``: no events."""
    events_max_age: float = 86400.0
    """Seconds an event is kept."""
    events_max_count: int = 100_000
    """Most events kept; the oldest go first."""
    worker_heartbeat: float = 5.0
    """Seconds between a worker's ``worker-heartbeat`` events."""
    beat_lease_seconds: float = 10.0
    """The leading beat's lease: another beat takes over within this after it dies."""
    signing_keys: Mapping[str, Any] | None = dataclasses.field(default=None, repr=False)
    """Message signing (off when empty): key id to secret (str or bytes, at least 16
    bytes) for HMAC-SHA256; every key verifies. JSON in the environment."""
    signing_key: str | None = None
    """The id of the key in ``signing_keys`` that signs; optional with only one key."""
    beat_schedule: Mapping[str, Mapping[str, Any]] | None = None
    """Periodic entries by name, such as ``{"nightly": {"task": "shop.report", "cron":
    "0 3 * * *"}}`` (see docs/beat.md); JSON in the environment."""
    task_routes: Mapping[str, Any] | None = None
    """Default queue (and priority) of tasks by name or glob pattern, first match wins:
    ``{"shop.mail.*": {"queue": "mail"}}`` (see ``gopherq.routes``); JSON in the
    environment."""

    tracing: bool = True
    """OpenTelemetry spans for sending and running tasks, with the trace context carried
    in the message headers (see docs/observability.md). They cost nothing to speak of
    until a TracerProvider is set (the OpenTelemetry SDK)."""
    log_format: str = "console"
    """How ``gopherq worker`` and ``gopherq beat`` log: ``console`` (text lines) or
    ``json`` (one object per line, with the running task's fields)."""
    audit_retention: float = 90 * 86400.0
    """Seconds an entry of the HTTP API's audit log is kept (see docs/http-api.md)."""
    audit_max_count: int | None = 1_000_000
    """Most audit entries kept; the oldest go first. None: no limit but the age."""
    api_rate: str | None = "10000/s"
    """Jobs per key the HTTP API accepts (``POST /jobs``, ``/jobs:batch``), as ``N/s``,
    ``N/m``, ``N/h`` or ``N/d``, bursting up to N, unless the key sets its own;
    ``none``: no limit."""

    def __post_init__(self) -> None:
        Routes(self.task_routes)  # raises ConfigurationError on a bad route
        aging_periods(self.priority_aging, ())  # raises ConfigurationError on a bad one
        if self.log_format not in LOG_FORMATS:
            raise ConfigurationError(
                f"setting 'log_format' must be one of {', '.join(LOG_FORMATS)}, "
                f"not {self.log_format!r}"
            )

    def __repr__(self) -> str:
        # Not the generated repr: URLs may carry passwords, and fields marked
        # repr=False (secrets) are left out.
        shown = []
        for spec in dataclasses.fields(self):
            if not spec.repr:
                continue
            value = getattr(self, spec.name)
            if spec.name in _URL_SETTINGS and isinstance(value, str):
                value = redact_url(value)
            shown.append(f"{spec.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Merge defaults, ``overrides`` (from code) and ``GOPHERQ_*`` variables."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        for name, value in overrides.items():
            _check_known(name, names, source="setting")
            _check_type(name, value, names[name])
        values = dict(overrides)
        env = os.environ if environ is None else environ
        for var, raw in env.items():
            if not var.startswith(ENV_PREFIX) or var in _ENV_NOT_SETTINGS:
                continue
            name = var.removeprefix(ENV_PREFIX).lower()
            if name.startswith("test_"):
                continue  # GOPHERQ_TEST_* locate services for the test suite
            if name not in names:
                _warn_unknown(var, name, names)
                continue
            values[name] = _parse(raw, names[name], var)
        return cls(**values)


def merged(settings: Settings, values: Mapping[str, Any]) -> Settings:
    """``settings`` with ``values`` given in code over them; ``GOPHERQ_*`` variables
    still win, as they do over ``GopherQ(...)``'s keywords."""
    given = {
        spec.name: getattr(settings, spec.name)
        for spec in dataclasses.fields(settings)
        if getattr(settings, spec.name) != spec.default
    }
    return Settings.load({**given, **values})


def settings_from_object(
    source: Any, *, namespace: str | None = None, silent: bool = False
) -> dict[str, Any]:
    """The settings an object holds, for ``GopherQ.config_from_object``.

    ``source`` is a mapping, a module, a class or any object, or the dotted name
    of one (``"proj.celeryconfig"``, ``"proj.settings:Config"``). Names are read
    in either case (``BROKER_URL`` is ``broker_url``); with ``namespace``
    (``"CELERY"``) only names starting ``CELERY_`` are read, without the prefix.
    Every key of a mapping, and every name under a namespace, must be a setting.
    An object's other attributes (imports, helper constants) are passed over,
    unless their name is a setting's misspelled or Celery's: those raise
    ``ConfigurationError`` with the name to use. With ``silent``, a dotted name that
    cannot be imported holds no settings.
    """
    if isinstance(source, str):
        try:
            source = _import_object(source)
        except ConfigurationError:
            if silent:
                return {}
            raise
    strict = isinstance(source, Mapping) or namespace is not None
    if isinstance(source, Mapping):
        items = list(source.items())
    else:
        public = ((name, getattr(source, name)) for name in dir(source) if not name.startswith("_"))
        items = [
            (name, value)
            for name, value in public
            if not isinstance(value, (type, types.ModuleType)) and not callable(value)
        ]
    prefix = f"{namespace.upper()}_" if namespace else ""
    names = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in items:
        if not isinstance(key, str) or not key.upper().startswith(prefix):
            continue
        name = key[len(prefix) :].lower()
        if name in names:
            values[name] = value
        elif not prefix and name.startswith("celery_"):
            raise ConfigurationError(
                f"setting {key!r}: pass namespace='CELERY' to read names prefixed CELERY_"
            )
        elif strict or name in SETTING_HINTS or difflib.get_close_matches(name, names, n=1):
            _check_known(name, names, source="setting")
    return values


def _import_object(dotted: str) -> Any:
    """The module ``a.b``, or the attribute ``a.b:attr`` (or ``a.b.attr``) of one."""
    module_name, _, attr = dotted.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        parent, _, last = module_name.rpartition(".")
        if attr or not parent or exc.name != module_name:
            raise ConfigurationError(f"cannot import settings from {dotted!r}: {exc}") from None
        module, attr = importlib.import_module(parent), last
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(f"cannot import settings from {dotted!r}: no {attr!r}") from None


def aging_periods(
    setting: float | Mapping[str, float] | None, queues: Iterable[str]
) -> dict[str, float]:
    """The aging period of each of ``queues`` that ages under ``priority_aging``
    (``setting``); ``ConfigurationError`` for a value that is not a positive number
    of seconds, or a mapping of queue names to such numbers."""
    expected = "a number of seconds above 0, or a mapping of queue names to one"
    if setting is None:
        return {}
    if isinstance(setting, Mapping):
        periods = dict(setting)
        for queue, period in periods.items():
            if not isinstance(queue, str) or not _is_period(period):
                raise ConfigurationError(
                    f"setting 'priority_aging': queue {queue!r} has {period!r}, "
                    "not a number of seconds above 0"
                )
        return {q: float(periods[q]) for q in queues if q in periods}
    if not _is_period(setting):
        raise ConfigurationError(f"setting 'priority_aging' is {setting!r}, not {expected}")
    return dict.fromkeys(queues, float(setting))


def _is_period(value: object) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf")
    )


def _check_known(name: str, names: Collection[str], *, source: str) -> None:
    if name not in names:
        raise unknown(source, name, names, SETTING_HINTS)


_warned: set[str] = set()  # unknown variables already warned about in this process


def _warn_unknown(var: str, name: str, names: Iterable[str]) -> None:
    if var in _warned:
        return
    _warned.add(var)
    logger.warning(
        "ignoring environment variable %s: no setting %r%s", var, name, did_you_mean(name, names)
    )


# The runtime types each kind in a setting's annotation admits.
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "None": (type(None),),
    "Mapping": (Mapping,),
}


def _check_type(name: str, value: Any, spec: dataclasses.Field[Any]) -> None:
    """Raise ``ConfigurationError`` when a value given in code has the wrong type."""
    kinds = [part.partition("[")[0] for part in str(spec.type).split(" | ")]
    if isinstance(value, bool):
        ok = "bool" in kinds  # not an int, although Python says it is
    else:
        ok = any(isinstance(value, _TYPES[kind]) for kind in kinds)
    if not ok:
        raise ConfigurationError(
            f"setting {name!r} must be {' or '.join(kinds)}, not {type(value).__name__}"
        )


def _parse(raw: str, spec: dataclasses.Field[Any], var: str) -> Any:
    kind = str(spec.type)
    if "None" in kind and raw == "":
        return None
    try:
        if kind.startswith("bool"):
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float | Mapping"):  # a number, else a JSON object
            try:
                return float(raw)
            except ValueError:
                value = json.loads(raw)
                if not isinstance(value, dict):
                    raise ValueError(raw) from None
                return value
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("Mapping"):
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError(raw)
            return value
    except ValueError:
        raise ConfigurationError(f"{var}={raw!r} is not a valid {kind}") from None
    return raw
