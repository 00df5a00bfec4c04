"""Running tasks: the prefork ``Worker`` (supervisor) and the ``Consumer`` each process runs.

``Worker(app).run()`` is what ``gopherq worker`` calls; ``Consumer`` runs
in-process too (a thread in tests).
"""

from __future__ import annotations

from gopherq.worker.consumer import Consumer, Exit
from gopherq.worker.supervisor import Worker

__all__ = ["Consumer", "Exit", "Worker"]
