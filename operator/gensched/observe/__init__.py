"""Metrics the operator exports, and (later) Prometheus queries it reads."""
