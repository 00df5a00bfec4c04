"""A middleware typed with public imports only: checked by tests/test_typing.py with
mypy --strict. Every hook is overridden with its full signature."""

from __future__ import annotations

from collections.abc import Sequence

from gopherq import (
    DeadReason,
    GopherQ,
    Message,
    Middleware,
    Outcome,
    Progress,
    State,
    TaskContext,
    WorkerInfo,
    WorkerStats,
)


class Audit(Middleware):
    """Records what it sees, touching each argument's typed attributes."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def before_enqueue(self, app: GopherQ, messages: Sequence[Message]) -> None:
        self.lines.extend(f"{app.name} sends {m.task} to {m.queue}" for m in messages)

    def after_enqueue(self, app: GopherQ, messages: Sequence[Message], ids: Sequence[str]) -> None:
        self.lines.extend(f"{m.task} is {id_}" for m, id_ in zip(messages, ids, strict=True))

    def before_execute(self, app: GopherQ, message: Message, context: TaskContext) -> None:
        self.lines.append(f"{message.id} attempt {context.attempt}")

    def after_execute(
        self,
        app: GopherQ,
        message: Message,
        context: TaskContext,
        outcome: Outcome,
        runtime: float,
    ) -> None:
        state: State | None = outcome.record.state if outcome.record else None
        self.lines.append(f"{message.task} {outcome.action} {state} in {runtime:.3f}s")

    def on_retry(self, app: GopherQ, message: Message, outcome: Outcome) -> None:
        delay: float = outcome.countdown
        self.lines.append(f"{message.id} again in {delay}s: {outcome.error}")

    def on_dead(self, app: GopherQ, message: Message, outcome: Outcome) -> None:
        reason: DeadReason | None = outcome.reason
        self.lines.append(f"{message.id} dead: {reason}")

    def on_cancel(self, app: GopherQ, message: Message, was: State, attempt: int) -> None:
        self.lines.append(f"{message.id} cancelled while {was.value} (attempt {attempt})")

    def on_progress(self, app: GopherQ, context: TaskContext, progress: Progress) -> None:
        self.lines.append(f"{context.id}: {progress}")

    def on_lost(self, app: GopherQ, message: Message, worker: str, error: str) -> None:
        self.lines.append(f"{message.id} lost on {worker}: {error}")

    def worker_start(self, app: GopherQ, worker: WorkerInfo) -> None:
        self.lines.append(f"{worker.name} up: {worker.concurrency} on {', '.join(worker.queues)}")

    def worker_heartbeat(self, app: GopherQ, worker: WorkerInfo, stats: WorkerStats) -> None:
        load: float = stats.load[0]
        self.lines.append(f"{worker.name}: {stats.active} running, {stats.processed}, {load}")

    def worker_stop(self, app: GopherQ, worker: WorkerInfo) -> None:
        self.lines.append(f"{worker.hostname}:{worker.pid} down")


app = GopherQ("typing", broker="memory://", middleware=[Audit()])
app.add_middleware(Audit())
