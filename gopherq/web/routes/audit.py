"""The audit log of mutating calls (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response
from pydantic import BaseModel, Field

from gopherq.access.manager import MAX_AUDIT_LIMIT, parse_since
from gopherq.access.roles import Role
from gopherq.web.auth import require
from gopherq.web.problems import invalid
from gopherq.web.responses import model_response
from gopherq.web.routing import api_router
from gopherq.web.state import StateDep

router = api_router(tags=["audit"], dependencies=[require(Role.ADMIN)])


class AuditRecord(BaseModel):
    """One mutating call."""

    time: float = Field(description="Unix time it was answered.")
    key: str | None = Field(description="The key's name; null without a valid key.")
    role: str | None
    action: str = Field(description="The route's name, such as jobs.create; - for none.")
    target: str = Field(description="The id or name acted on, or a summary of the body.")
    client: str = Field(description="The client's address.")
    status: int = Field(description="The HTTP status answered.")
    method: str
    path: str


class AuditPage(BaseModel):
    """Audit entries, newest first."""

    entries: list[AuditRecord]


@router.get("/audit", name="audit.list", summary="Read the audit log", response_model=AuditPage)
def read_audit(
    state: StateDep,
    since: Annotated[
        str | None,
        Query(max_length=64, description="1h, 7d (ago), Unix seconds or ISO 8601."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_LIMIT)] = 100,
) -> Response:
    access = state.app.access
    try:
        start = None if since is None else parse_since(since, access.clock())
    except ValueError as exc:
        raise invalid("query.since", str(exc)) from None
    entries = access.audit(start, limit)
    return model_response(AuditPage(entries=[AuditRecord(**e.to_map()) for e in entries]))
