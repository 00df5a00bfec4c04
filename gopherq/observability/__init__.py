"""Observability: Prometheus metrics of the worker (prefork-correct), traces, logs.

Each module is imported only where its feature is switched on, so that a worker
without metrics or tracing pays nothing for them.
"""
