"""A minimal server-sent events reader for the tests (the SSE wire format: lines
``field: value``, a blank line ends a message, lines starting with ``:`` are comments).

Imports nothing but the standard library: the end-to-end client script uses it too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Message:
    """One SSE message: its ``id`` (None if it set none), its ``data`` (None without)."""

    id: str | None
    data: str | None
    comments: list[str]

    @property
    def event(self) -> dict[str, Any]:
        """The data as JSON."""
        assert self.data is not None
        decoded: dict[str, Any] = json.loads(self.data)
        return decoded


def messages(lines: Iterable[str]) -> Iterator[Message]:
    """The messages of a stream, given its lines (without line ends)."""
    id: str | None = None
    data: list[str] = []
    comments: list[str] = []
    fields = False
    for line in lines:
        if not line:
            if fields or comments:
                yield Message(id, "\n".join(data) if data else None, comments)
            id, data, comments, fields = None, [], [], False
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        fields = True
        if name == "id":
            id = value
        elif name == "data":
            data.append(value)
