"""Who may use the HTTP API, and what they did: API keys, roles, the audit log.

=================  ==========================================================
module             holds
=================  ==========================================================
``roles``          ``Role``: viewer < submitter < operator < admin
``keys``           ``ApiKey``: a key's record; secrets, their salted digests
``rate``           ``Rate`` (``100/s``) and ``TokenBuckets``: send rates
``audit``          ``AuditEntry``; ``AuditWriter``: appends off the request path
``store``          ``AccessStore`` contract, ``open_store`` beside the broker
``memory``         in-process store (``memory://`` brokers)
``sqlite``         tables in the broker's SQLite file
``redis``          keys under the broker's Redis prefix
``manager``        ``Access``: ``app.access``, what the CLI and the API call
=================  ==========================================================

Nothing here imports a web framework: the ``gopherq keys`` and ``gopherq
audit`` commands use it without the ``web`` extra.
"""

from __future__ import annotations

from gopherq.access.audit import AuditEntry
from gopherq.access.keys import AccessError, ApiKey
from gopherq.access.manager import Access
from gopherq.access.rate import Rate
from gopherq.access.roles import Role

__all__ = ["Access", "AccessError", "ApiKey", "AuditEntry", "Rate", "Role"]
