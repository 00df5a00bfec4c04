"""``gopherq.once``: narrow at-least-once to effectively-once around a side effect.

A task may run more than once: its worker died after the side effect and before
the ack, or its lease ran out. ``once`` keeps a done-marker in the result store::

    @app.task(retries=5)
    def charge(order_id: int) -> None:
        with gopherq.once(f"charge:{order_id}", ttl=7 * 86400) as needed:
            if needed:
                payments.charge(order_id)
        send_receipt(order_id)  # outside: runs on every attempt

``needed`` is False when an earlier attempt finished the block (its marker is
set and younger than ``ttl``): the block's body should then skip the side
effect (a ``with`` statement cannot skip its own body, hence the flag). When
``needed`` is True and the block ends normally the marker is set, for ``ttl``
seconds; when it raises, nothing is written and the next attempt runs it again.

The window that remains: a crash after the side effect and before the marker
is written (one write to the result store) runs the side effect again on the
next attempt. Make the side effect idempotent at its destination where that
matters (a payment provider's idempotency key); see docs/tasks.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from gopherq.context import current_task
from gopherq.errors import TaskError

if TYPE_CHECKING:
    from gopherq.app import GopherQ
    from gopherq.results.base import ResultBackend

DEFAULT_TTL = 7 * 86400.0
"""Seconds a done-marker lives unless ``ttl`` says otherwise: longer than the
retries and redeliveries it guards against."""
MAX_KEY = 1024
"""Longest key, in characters."""


@contextmanager
def once(key: str, *, ttl: float = DEFAULT_TTL, app: GopherQ | None = None) -> Iterator[bool]:
    """Run a block at most once per ``key`` (within ``ttl`` seconds): see the module
    docstring. Yields True if the block must run, False if an earlier run finished it.

    Inside a task the running app's result store keeps the marker; elsewhere pass
    ``app``. Raises ``ValueError`` for an empty or overlong key or a ``ttl`` that
    is not a positive number, and ``TaskError`` outside a task without ``app``.
    """
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise ValueError(f"once() needs a key of 1 to {MAX_KEY} characters, not {key!r:.80}")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise ValueError(f"once() needs a ttl of positive, finite seconds, not {ttl!r}")
    backend = _backend(app)
    if backend.marked(key):
        yield False
        return
    yield True
    backend.mark(key, ttl)


def _backend(app: GopherQ | None) -> ResultBackend:
    if app is not None:
        return app.backend
    try:
        return current_task().result_backend
    except TaskError:
        raise TaskError("once() outside a running task needs app=") from None
