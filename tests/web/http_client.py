"""A client of the HTTP API that knows nothing of gopherq: plain httpx, as a service
in another language would be. Run as a script, isolated (``python -I``)::

    python -I http_client.py BASE_URL TASK ARGS_JSON [SUBMIT_KEY [READ_KEY]]

It submits ``TASK`` with ``ARGS_JSON`` (a JSON array), waits for the result and
prints ``{"id": ..., "state": ..., "result": ...}`` as one JSON line. With keys,
it submits with ``Authorization: Bearer SUBMIT_KEY`` and reads the result with
``READ_KEY`` (default: the same key).
"""

from __future__ import annotations

import json
import sys

import httpx


def bearer(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


def main(
    base: str, task: str, args: str, submit_key: str | None = None, read_key: str | None = None
) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        created = client.post(
            "/api/v1/jobs",
            json={"task": task, "args": json.loads(args)},
            headers=bearer(submit_key),
        )
        if created.status_code != 201:
            sys.exit(f"submit: {created.status_code} {created.text}")
        id = created.json()["id"]
        answer = client.get(
            f"/api/v1/jobs/{id}/result",
            params={"wait": 10},
            headers=bearer(read_key or submit_key),
        )
        if answer.status_code != 200:
            sys.exit(f"result: {answer.status_code} {answer.text}")
        body = answer.json()
    assert "gopherq" not in sys.modules, "the client must not import gopherq"
    print(json.dumps({"id": id, "state": body["state"], "result": body.get("result")}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
