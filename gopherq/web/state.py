"""What every request of one server reaches: the app and the server's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from gopherq.app import GopherQ
from gopherq.web.sender import Sender

if TYPE_CHECKING:
    from gopherq.web.auth import Caller


@dataclass(slots=True)
class ServerState:
    """One server's shared state, kept on the ASGI app as ``app.state.gopherq``."""

    app: GopherQ
    auth: bool = True
    """False only with ``--no-auth`` (loopback): every caller is an anonymous admin."""
    sender: Sender = field(init=False)
    """Sends jobs for async routes, concurrent requests' jobs in one broker call."""

    def __post_init__(self) -> None:
        self.sender = Sender(self.app)

    def authenticate(self, token: str) -> Caller | None:
        """The caller a bearer token names, or None if it is not a valid key."""
        return None


def server_state(request: Request) -> ServerState:
    """The ``ServerState`` of the server that received ``request``."""
    state: ServerState = request.app.state.gopherq
    return state


def current_app(request: Request) -> GopherQ:
    """The gopherq app the server serves."""
    return server_state(request).app


# The dependencies are coroutines although they do not await: FastAPI runs a plain
# function dependency in its thread pool, a hop that costs more than most routes'
# own work (docs/http-api.md, Performance).


async def _state_dependency(request: Request) -> ServerState:
    return server_state(request)


async def _app_dependency(request: Request) -> GopherQ:
    return current_app(request)


AppDep = Annotated[GopherQ, Depends(_app_dependency)]
"""A route parameter of this type receives the gopherq app."""
StateDep = Annotated[ServerState, Depends(_state_dependency)]
"""A route parameter of this type receives the ``ServerState``."""
