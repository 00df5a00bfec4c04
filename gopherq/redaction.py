"""Text safe to print and log: secrets redacted, control characters escaped.

``redact_url`` masks the password of a URL's user part and the value of every
query parameter that names a secret (``password``, ``ssl_password``, ``token``,
``secret``, ...), so that broker and backend URLs can appear in reprs, errors,
logs and command output. It works on the text itself and never raises, so that
it can redact the very URL that failed to parse. ``redact_text`` applies it to
every URL found inside a longer text (a library's error message).

``printable`` escapes control characters, so that names and messages that came
from the broker cannot rewrite a terminal: every human-readable output of the
``gopherq`` command, and the worker's own log lines, go through it.
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


def error_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message with its URLs redacted; its type's name
    when it has none. Fit for a log line or a probe's answer."""
    return redact_text(str(exc).partition("\n")[0]) or type(exc).__name__


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


# What must not reach a terminal raw: C0 and C1 control characters and DEL (escape
# sequences, carriage returns, bells), line separators, and the bidirectional
# controls that reorder what is shown. Queue and task names, errors and event text
# come from whoever can write to the broker.
_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def printable(text: str) -> str:
    """``text`` with control characters escaped as ``\\x1b`` or ``\\u202e``: one line,
    safe for a terminal. Every human-readable output goes through it; JSON does not."""
    return _UNSAFE.sub(_escape, text)


def printable_lines(text: str) -> str:
    """Like ``printable``, but line breaks stay (a traceback)."""
    return "\n".join(printable(line) for line in text.split("\n"))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
