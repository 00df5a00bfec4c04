"""Secrets kept out of what gopherq prints and logs: one function for URLs.

``redact_url`` masks the password of a URL's user part and the value of every
query parameter that names a secret (``password``, ``ssl_password``, ``token``,
``secret``, ...), so that broker and backend URLs can appear in reprs, errors,
logs and command output. It works on the text itself and never raises, so that
it can redact the very URL that failed to parse. ``redact_text`` applies it to
every URL found inside a longer text (a library's error message).
"""

from __future__ import annotations

import re

MASK = "***"

# Query parameter names holding a secret: any name containing one of these.
_SECRET_PARTS = ("pass", "pwd", "secret", "token", "auth", "credential", "apikey", "api_key")
_SECRET_NAMES = frozenset({"key", "access_key", "private_key"})
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``url`` with its password and secret query values replaced by ``***``.

    ``redis://user:pw@host/0?password=pw2&db=1`` becomes
    ``redis://user:***@host/0?password=***&db=1``. Safe to log or print; any
    text is accepted (a malformed URL is redacted as far as it can be read).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # The user part ends at the last '@' before the query (a password with an
    # unescaped '/' or '#' still counts as one), the authority at the next '/?#'.
    user_end = rest.partition("?")[0].rfind("@") + 1
    ends = (rest.find(c, user_end) for c in "/?#")
    end = min((i for i in ends if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.partition(':')[0]}:{MASK}@{host}"
    path, question, query = tail.partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        query = "&".join(_redact_param(param) for param in query.split("&")) + hash_ + fragment
    return f"{scheme}{sep}{authority}{path}{question}{query}"


def redact_text(text: str) -> str:
    """``text`` with every ``scheme://...`` URL in it passed through ``redact_url``."""
    if "://" not in text:
        return text
    return _URL.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    url = match.group()
    bare = url.rstrip(".,:;)]}")  # punctuation of the sentence around the URL
    return redact_url(bare) + url[len(bare) :]


def _redact_param(param: str) -> str:
    name, eq, value = param.partition("=")
    if eq and value and _is_secret(name):
        return f"{name}={MASK}"
    return param


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_NAMES or any(part in lowered for part in _SECRET_PARTS)


class UrlRepr:
    """Mixin for brokers and backends: ``repr`` shows the class and the redacted ``url``."""

    __slots__ = ()
    url: str

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact_url(self.url)}>"
