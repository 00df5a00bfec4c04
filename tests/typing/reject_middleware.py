"""Middleware mypy must reject: each line marked ``# error`` must raise a type error."""

from __future__ import annotations

from gopherq import GopherQ, Message, Middleware, Outcome, TaskContext, WorkerInfo


class Wrong(Middleware):
    def after_execute(  # error
        self, app: GopherQ, message: Message, outcome: Outcome, runtime: float
    ) -> None:
        """The signature the middleware docstring once showed: no ``context``."""

    def on_retry(self, app: GopherQ, message: Message, outcome: str) -> None:  # error
        """An outcome is an ``Outcome``, not its text."""

    def before_execute(self, app: GopherQ, message: Message, context: TaskContext) -> None:
        context.attempt.upper()  # error

    def worker_start(self, app: GopherQ, worker: WorkerInfo) -> None:
        worker.concurrency = 2  # error
