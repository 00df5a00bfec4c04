"""API keys (admin): list, create (the secret is shown once), revoke."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, Field

from gopherq.access.keys import AccessError, ApiKey, FieldError
from gopherq.access.roles import Role
from gopherq.web.auth import require
from gopherq.web.problems import MEDIA_TYPE, Problem, ProblemDetails, invalid, not_found
from gopherq.web.routing import api_router
from gopherq.web.state import StateDep

router = api_router(tags=["keys"], dependencies=[require(Role.ADMIN)])

RoleName = Literal["viewer", "submitter", "operator", "admin"]
KeyName = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
]


class KeyInfo(BaseModel):
    """A key as listed: never its secret."""

    id: str = Field(description="The key id: the part of the secret after gq_.")
    name: str
    role: RoleName
    created: float = Field(description="Unix time.")
    expires: float | None = Field(description="Unix time it stops working; null: never.")
    revoked: float | None = Field(description="Unix time it was revoked; null: it was not.")
    active: bool = Field(description="Neither revoked nor expired.")
    tasks: list[str] | None = Field(description="The only tasks it may send; null: any.")
    queues: list[str] | None = Field(description="The only queues it may send to; null: any.")
    rate: str | None = Field(description="Its send rate (100/s); null: the server's.")


class KeyCreate(BaseModel):
    """A key to create."""

    name: str = Field(min_length=1, max_length=64, description="Unique; never reused.")
    role: RoleName
    expires: str | None = Field(
        None, max_length=64, description="From now: 90d, 12h, or seconds; null: never."
    )
    tasks: list[Annotated[str, Field(max_length=200)]] | None = Field(None, max_length=1000)
    queues: list[Annotated[str, Field(max_length=200)]] | None = Field(None, max_length=1000)
    rate: str | None = Field(None, max_length=32, description="100/s, 6000/m; none: no limit.")


class KeyCreated(BaseModel):
    """A new key and its secret: shown this once, it cannot be read again."""

    key: KeyInfo
    secret: str = Field(description="Send as Authorization: Bearer SECRET.")


def key_info(key: ApiKey, now: float) -> KeyInfo:
    """The listing of ``key`` at ``now``."""
    data: dict[str, Any] = key.to_map()
    return KeyInfo(**data, active=key.active(now))


@router.get("/keys", name="keys.list", summary="List API keys", response_model=list[KeyInfo])
def list_keys(state: StateDep) -> list[KeyInfo]:
    access = state.app.access
    now = access.clock()
    return [key_info(key, now) for key in access.list_keys()]


@router.post(
    "/keys",
    name="keys.create",
    summary="Create an API key",
    status_code=201,
    response_model=KeyCreated,
    responses={
        409: {"model": ProblemDetails, "content": {MEDIA_TYPE: {}}, "description": "Name taken"}
    },
)
def create_key(body: KeyCreate, state: StateDep) -> KeyCreated:
    access = state.app.access
    try:
        key, secret = access.create(
            body.name,
            body.role,
            expires=body.expires,
            tasks=body.tasks,
            queues=body.queues,
            rate=body.rate,
        )
    except FieldError as exc:
        raise invalid(f"body.{exc.field}", exc.detail) from None
    except AccessError as exc:
        raise Problem(409, "key-exists", "Key exists", str(exc)) from None
    return KeyCreated(key=key_info(key, access.clock()), secret=secret)


@router.post(
    "/keys/{name}/revoke",
    name="keys.revoke",
    summary="Revoke an API key at once",
    response_model=KeyInfo,
)
def revoke_key(name: KeyName, state: StateDep) -> KeyInfo:
    access = state.app.access
    try:
        key = access.revoke(name)
    except AccessError:
        raise not_found("key", name) from None
    state.forget_key(key.id)
    return key_info(key, access.clock())
