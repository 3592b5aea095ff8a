"""What an operator's Prometheus scrapes from ``/metrics`` (the text exposition format).

The instruments are process-wide, as the client library keeps them. With several worker
processes (``FILMLESS_WORKERS`` > 1) each writes its samples to files under
``PROMETHEUS_MULTIPROC_DIR``, which ``filmless serve`` sets to ``DATA_DIR/metrics`` and
empties at start, and a scrape of any worker sums them all.

Labels never carry a UID, a patient or a path: a route is its template
(``/dicom-web/studies/{study}``), so the number of series stays bounded.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

REQUESTS = Counter(
    "filmless_http_requests", "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)  # fmt: skip
LATENCY = Histogram(
    "filmless_http_request_duration_seconds", "Time from a request's arrival to its last byte",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)  # fmt: skip
BYTES_OUT = Counter("filmless_http_response_bytes", "Bytes of response bodies sent", ["route"])
BYTES_IN = Counter("filmless_http_request_bytes", "Bytes of request bodies received", ["route"])
INSTANCES_STORED = Counter(
    "filmless_instances_stored", "Instances stored (new, not identical duplicates)", ["protocol"]
)
INSTANCES_REFUSED = Counter(
    "filmless_instances_refused", "Instances refused, by failure reason (PS3.4 status, hex)", ["reason"]
)
DEPENDENCY_ERRORS = Counter(
    "filmless_dependency_errors", "Failures of the database or the object store", ["dependency"]
)
POOL_CONNECTIONS = Gauge(
    "filmless_database_pool_connections", "Database connections of the pool, by state", ["state"],
    multiprocess_mode="livesum",
)  # fmt: skip
SWEEP_REMOVED = Counter("filmless_sweep_removed", "What the sweep removed, by kind", ["kind"])
SHARE_ACCESSES = Counter(
    "filmless_share_accesses", "Share accesses by recipients, by outcome (HTTP status)", ["outcome"]
)
AUDIT_BATCHES = Counter("filmless_audit_batches", "Batches of read events written to the audit trail")
AUDIT_UNWRITABLE = Counter(
    "filmless_audit_unwritable",
    "Read events the audit trail refused (logged, by transaction)",
    ["transaction"],
)

MEDIA_TYPE = CONTENT_TYPE_LATEST


def exposition() -> bytes:
    """Every metric, of every worker process when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))
    return bytes(generate_latest())


def process_exited(pid: int) -> None:
    """Forget a worker's live gauges when it exits (multi-process mode only)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
