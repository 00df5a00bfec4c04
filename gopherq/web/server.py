"""``serve``: run the HTTP API under uvicorn; what ``gopherq serve`` runs."""

from __future__ import annotations

import ipaddress

from gopherq.app import GopherQ
from gopherq.errors import ConfigurationError


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    app: GopherQ,
    host: str = "127.0.0.1",
    port: int = 5555,
    *,
    auth: bool = True,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve ``app``'s HTTP API until interrupted.

    ``auth=False`` is refused unless ``host`` is a loopback address. ``access_log``
    logs a line per request (uvicorn's): off by default, as it costs about a third
    of a small request's time in the server.
    """
    if not auth and not is_loopback(host):
        raise ConfigurationError(
            f"--no-auth serves everyone as admin: only allowed on a loopback host, not {host!r}"
        )
    import uvicorn

    from gopherq.web.application import create_app

    uvicorn.run(
        create_app(app, auth=auth),
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        proxy_headers=False,
        server_header=False,
    )
