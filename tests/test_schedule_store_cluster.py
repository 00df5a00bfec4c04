"""The schedule store contract on a real 3-master Redis Cluster of this module's own
(the cluster and broker fixtures of test_redis_cluster).

Every key of a store carries the hash tag ``{beat}``: its scripts and pipelines
touch one slot. Skipped without ``redis-server``; fails instead in CI.
"""

from __future__ import annotations

import pytest
import test_schedule_store
from test_redis_cluster import cluster, make_broker
from test_schedule_store import stores

for _name in dir(test_schedule_store):
    if _name.startswith("test_"):
        globals()[_name] = getattr(test_schedule_store, _name)

__all__ = ["cluster", "make_broker", "stores"]  # fixtures, resolved in this module
pytestmark = pytest.mark.timeout(60)
