"""Calls mypy must reject: each line marked ``# error`` must raise a type error."""

from __future__ import annotations

from gopherq import GopherQ, TaskContext

app = GopherQ("typing", broker="memory://")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
async def fetch(url: str) -> bytes:
    return url.encode()


@app.task(bind=True)
def bound(self: TaskContext, x: int) -> str:
    return str(x)


add.delay(1, "2")  # error
add.delay(1)  # error
add.delay(1, 2, 3)  # error
add.delay(1, z=2)  # error
add.s("a", 2)  # error
fetch.delay(42)  # error
wrong: str = add.delay(1, 2).get()  # error
also_wrong: int = fetch.delay("u").get()  # error
bound.delay("1")  # error
bound.delay(1, 2)  # error
bound_text: int = bound.apply((1,)).get()  # error
add.delay(1, 2).not_an_attribute  # error
