"""Observability: Prometheus metrics, the broker exporter, tracing and log formatting."""
