"""Code that must type-check: checked by tests/test_typing.py with mypy --strict."""

from __future__ import annotations

from gopherq import AsyncResult, AsyncTask, GopherQ, Task, current_task

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
