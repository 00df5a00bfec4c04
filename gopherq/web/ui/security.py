"""The dashboard's response headers and the Origin check of its forms."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class SecurityHeaders:
    """Adds ``HEADERS`` to every response outside ``exclude`` (the API, whose
    interactive docs load their own scripts)."""

    def __init__(self, app: ASGIApp, exclude: str) -> None:
        self.app = app
        self.exclude = exclude.rstrip("/") + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _inner_path(scope).startswith(self.exclude):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


def _inner_path(scope: Scope) -> str:
    """The path inside the app (without the mount point when mounted in another app)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def same_origin(request: Request) -> bool:
    """Whether a form post came from a page of this server.

    Browsers send ``Origin`` with every POST; ``Referer`` stands in where a
    privacy setting removes it. A request with neither (not a browser) is left to
    the CSRF token alone. Host and port are compared, not the scheme: behind a
    proxy that ends TLS the page is https while the server sees http.
    """
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return True
    if origin == "null":
        return False
    own = request.headers.get("host", request.url.netloc)
    return urlsplit(origin).netloc.lower() == own.lower()
