"""Rate limits as operators handle them: ``app.rate_limits`` and ``gopherq rate-limit``.

A rate set here is kept in the broker (``Broker.set_rate_limit``) and replaces the
task's declared ``rate_limit`` on every worker within a second (each worker process
reads the table at most once every ``REFRESH_EVERY`` seconds); ``clear`` gives the
declared one back (none if the task declares none). Either way the messages already
put back to wait for a slot of the old rate are released (``Broker.rate_release``)
once every worker reads the new one, so they do not keep waiting for old slots:
``set`` and ``clear`` return after that, about a second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gopherq.limits import REFRESH_EVERY, Rate, limit_key, parse_rate

if TYPE_CHECKING:
    from gopherq.app import GopherQ

RELEASE_AFTER = REFRESH_EVERY + 0.1
"""Seconds between storing a new rate and releasing the old rate's waiting messages."""


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """The rate limits of one task."""

    task: str
    rate: str | None
    """The rate in force: the one set at run time, else the declared one."""
    burst: int
    source: str
    """``set`` (at run time), ``declared`` (``@app.task(rate_limit=...)``) or ``none``."""
    declared: str | None = None
    per_key: str | None = None
    """The declared ``rate_limit_per_key``."""
    held_until: float | None = None
    """Unix seconds until which repeated ``RateLimited`` raises hold the task."""

    def to_map(self) -> dict[str, object]:
        """As JSON shows it."""
        return {
            "task": self.task,
            "rate": self.rate,
            "burst": self.burst,
            "source": self.source,
            "declared": self.declared,
            "per_key": self.per_key,
            "held_until": self.held_until,
        }


class RateLimits:
    """The rate limits of ``app``'s tasks, declared and set at run time."""

    def __init__(self, app: GopherQ) -> None:
        self._app = app

    def set(self, task: str, rate: str, *, burst: int | None = None) -> Rate:
        """Limit ``task`` to ``rate`` (``"50/s"``, ``/m``, ``/h``, ``/d``), ``burst`` at once (1).

        Raises ``NotRegistered`` for a task the app does not know and
        ``ConfigurationError`` for a bad rate or burst, changing nothing.
        """
        self._app.get_task(task)
        parsed = parse_rate(rate, burst)
        self._app.broker.set_rate_limit(task, str(parsed), parsed.burst)
        self._release(task)
        return parsed

    def clear(self, task: str) -> None:
        """Remove the rate set at run time: the declared one (if any) applies again."""
        if task not in self._app.tasks and task not in self._app.broker.rate_limits():
            self._app.get_task(task)  # raises NotRegistered
        self._app.broker.set_rate_limit(task, None)
        self._release(task)

    def list(self) -> list[RateLimitInfo]:
        """Every task with a rate limit (declared or set) or a hold, by name."""
        table = self._app.broker.rate_limits()
        infos: list[RateLimitInfo] = []
        for name in sorted(table.keys() | self._declared()):
            setting = table.get(name)
            task = self._app.tasks.get(name)
            declared = task.options.rate_limit if task else None
            per_key = task.options.rate_limit_per_key if task else None
            if setting is not None and setting.rate is not None:
                rate, burst, source = setting.rate, setting.burst, "set"
            elif declared is not None:
                rate, burst, source = str(declared), declared.burst, "declared"
            else:
                rate, burst, source = None, per_key.burst if per_key else 1, "none"
            held = setting.hold_until if setting else None
            if held is not None and held <= time.time():
                held = None  # over
            if source == "none" and per_key is None and held is None:
                continue
            infos.append(
                RateLimitInfo(
                    name,
                    rate,
                    burst,
                    source,
                    str(declared) if declared else None,
                    str(per_key) if per_key else None,
                    held,
                )
            )
        return infos

    def _declared(self) -> frozenset[str]:
        return frozenset(
            name
            for name, task in self._app.tasks.items()
            if task.options.rate_limit or task.options.rate_limit_per_key
        )

    def _release(self, task: str) -> None:
        """Once every worker reads the new rate, free the messages waiting for old slots."""
        time.sleep(RELEASE_AFTER)
        self._app.broker.rate_release(limit_key(task))
