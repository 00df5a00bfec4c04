"""The app of the rate-limit end-to-end tests; copied into each test's directory as
``tasks.py`` over the common one, which stays beside it as ``app_module.py`` for its
``note`` (JSON lines ``[time, pid, event, *details]`` in ``events.log``)."""

from __future__ import annotations

from pathlib import Path

from app_module import note

from gopherq import GopherQ, RateLimited, current_task

app = GopherQ("e2e-rates")


@app.task(rate_limit="20/s")
def limited(i: int) -> None:
    note("limited", i, current_task().attempt)


@app.task(rate_limit="15/s", rate_limit_per_key="10/s", fair_key="tenant")
def shared(i: int, tenant: str) -> None:
    note("shared", i, tenant)


@app.task(rate_limit="1/m")
def throttled(i: int) -> None:
    note("throttled", i)


@app.task
def free(i: int) -> None:
    note("free", i)


@app.task(retries=0)
def partner(i: int) -> str:
    """Answers 429 the first time for each ``i``, as a partner's API might."""
    marker = Path(__file__).with_name(f"partner-{i}")
    if not marker.exists():
        marker.touch()
        note("partner-429", i)
        raise RateLimited(retry_after=0.5)
    note("partner", i, current_task().attempt)
    return f"done {i}"
