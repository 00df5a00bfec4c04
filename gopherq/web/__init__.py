"""The HTTP API: ``gopherq serve`` and ``app.asgi()`` (the ``web`` extra).

An ASGI application (FastAPI) over the same admin layer as the ``gopherq``
command (``gopherq.admin`` and the broker's admin methods): the CLI and the API
are two faces of one set of operations.

=======================  =====================================================
module                   holds
=======================  =====================================================
``application``          ``create_app``: routers, error handlers, limits
``state``                ``ServerState``: what every request reaches
``problems``             RFC 9457 problem details: ``Problem`` and handlers
``auth``                 ``Caller``, ``require(role)``: keys and roles
``auditing``             ``AuditMiddleware``: every mutating call to the audit log
``limits``               ``enforce_send_rate``: each key's send rate (429)
``inputs``               ``InputLimits``: body size, JSON only, nesting depth
``probes``               ``Probes``: what ``/ready`` and ``/metrics`` ask
``docs``                 ``/api/docs``: Swagger UI served without a CDN
``sender``               ``Sender``: async sends, concurrent ones in one batch
``routes.*``             one router per resource under ``/api/v1``
``server``               ``serve``: uvicorn, what ``gopherq serve`` runs
``ui``                   the web dashboard at ``/`` (Jinja2 pages, sessions)
=======================  =====================================================

Importing this package needs the ``web`` extra (``pip install 'gopherq[web]'``).
"""

from __future__ import annotations

from gopherq.web.application import create_app
from gopherq.web.routing import API_PREFIX

__all__ = ["API_PREFIX", "create_app"]
