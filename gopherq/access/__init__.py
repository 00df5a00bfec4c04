"""Who may use the HTTP API, and what they did: API keys, roles, the audit log.

=================  ==========================================================
module             holds
=================  ==========================================================
``roles``          ``Role``: viewer < submitter < operator < admin
=================  ==========================================================

Nothing here imports a web framework: the ``gopherq keys`` and ``gopherq
audit`` commands use it without the ``web`` extra.
"""

from __future__ import annotations

from gopherq.access.roles import Role

__all__ = ["Role"]
