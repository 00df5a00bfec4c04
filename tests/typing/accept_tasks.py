"""Code that must type-check: checked by tests/test_typing.py with mypy --strict."""

from __future__ import annotations

from gopherq import (
    AsyncResult,
    AsyncTask,
    EagerResult,
    GopherQ,
    State,
    Task,
    TaskContext,
    TaskFailed,
    current_task,
)

app = GopherQ("typing", broker="memory://")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(retries=3, priority="high")
def greet(name: str, *, punctuation: str = "!") -> str:
    context = current_task()
    if context.retries_left and not name:
        raise context.retry(countdown=1)
    return f"hello {name}{punctuation}"


@app.task
async def fetch(url: str) -> bytes:
    return url.encode()


@app.task(bind=True, max_retries=3)
def bound(self: TaskContext, x: int) -> str:
    if self.attempt == 0:
        raise self.retry(countdown=1)
    return f"{self.id}: {x}"


@app.task(bind=True, queue="io")
async def bound_fetch(self: TaskContext, url: str, *, tries: int = 1) -> bytes:
    return url.encode() * tries


def celery_names() -> None:
    result = add.delay(1, 2)
    status: State = result.status
    value: int | TaskFailed | None = result.result
    trace: str | None = result.traceback
    revoked: bool = result.revoke(terminate=True)
    waited: int = result.wait(timeout=1)
    maybe: int | TaskFailed = result.wait(timeout=1, propagate=False)
    eager: EagerResult[int] = add.apply((1, 2), retries=1)
    eager_value: int = eager.get()
    bound_text: str = bound.delay(1).get()
    bound_task: Task[[int], str] = bound
    fetched: bytes = bound_fetch.delay("u", tries=2).get()
    async_bound: AsyncTask[[str], bytes] = bound_fetch
    print(status, value, trace, revoked, waited, maybe, eager_value, bound_text, bound_task)
    print(fetched, async_bound)


def check() -> None:
    direct: int = add(1, 2)
    sum_result: AsyncResult[int] = add.delay(1, 2)
    total: int = sum_result.get(timeout=1)
    greeting: str = greet.delay("ann", punctuation="?").get()
    body: bytes = fetch.delay("http://x").get()
    sig = add.s(3, 4)
    results = app.send_many([sig, add.s(5, 6)])
    task: Task[[int, int], int] = add
    async_task: AsyncTask[[str], bytes] = fetch
    print(direct, total, greeting, body, results, task, async_task)
