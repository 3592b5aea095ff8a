"""Logs and Prometheus metrics, used by every layer."""
