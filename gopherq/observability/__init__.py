"""Observability: Prometheus metrics of the worker (prefork-correct), the broker
exporter, traces and logs that join up.

Each module stands alone and is reached through the middleware hooks or the
process set-up, so that the hot path pays nothing for what is not in use.
"""
