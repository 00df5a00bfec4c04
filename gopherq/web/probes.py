"""What ``/ready`` and ``/metrics`` ask, built once per server.

``/ready`` is unauthenticated and polled by orchestrators, so its answers are
reused for ``PING_EVERY`` seconds (as the exporter's are): probes never load
the broker or the result store, however often they come.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gopherq import admin
from gopherq.observability.exporter import registry_for
from gopherq.observability.server import BrokerCheck

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gopherq.app import GopherQ


class _ResultStore:
    """The result store as something ``BrokerCheck`` can ping."""

    def __init__(self, app: GopherQ) -> None:
        self.app = app

    def ping(self) -> None:
        health = admin.check_result_store(self.app)
        if not health.ok:
            raise ConnectionError(health.error or "the result store does not answer")


class _Broker:
    """The app's broker, opened on the first ping rather than when the server starts."""

    def __init__(self, app: GopherQ) -> None:
        self.app = app

    def ping(self) -> None:
        self.app.broker.ping()


class Probes:
    """The readiness checks and the metrics registry of one server."""

    def __init__(self, app: GopherQ) -> None:
        self.checks = {
            "broker": BrokerCheck(_Broker(app)),
            "results": BrokerCheck(_ResultStore(app)),
        }
        self._app = app
        self._registry: CollectorRegistry | None = None

    def failing(self) -> list[str]:
        """The names of the checks that fail (``broker``, ``results``); empty when ready."""
        return [name for name, check in self.checks.items() if check() is not None]

    @property
    def registry(self) -> CollectorRegistry:
        """The registry ``gopherq exporter`` serves, for this app (made on first use)."""
        if self._registry is None:
            self._registry = registry_for(self._app)
        return self._registry
