"""Operator Prometheus metrics: reconciles, errors and duration by handler; API writes;
retries of failed passes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

import kopf
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

REGISTRY = CollectorRegistry()
RECONCILES = Counter(
    "tts_operator_reconciles_total",
    "Reconciliations by handler and result (ok, retry, permanent, error).",
    ["handler", "result"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "tts_operator_reconcile_errors_total",
    "Failed reconciliations by handler and error type.",
    ["handler", "error"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "tts_operator_reconcile_duration_seconds",
    "Time one reconciliation took, by handler.",
    ["handler"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
API_WRITES = Counter(
    "tts_operator_api_writes_total",
    "Write requests the operator's reconciles sent to the API server, by verb (apply, patch, "
    "delete, create) and kind (TTSService/status for status).",
    ["verb", "kind"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "tts_operator_pass_retries_total",
    "Failed event-triggered passes put off for a retry with backoff, by pass (full, status).",
    ["pass"],
    registry=REGISTRY,
)


@contextmanager
def observed(handler: str) -> Iterator[None]:
    """Count and time one handler run; errors are counted, then re-raised."""
    start = time.perf_counter()
    try:
        yield
    except kopf.TemporaryError:
        RECONCILES.labels(handler, "retry").inc()
        ERRORS.labels(handler, "TemporaryError").inc()
        raise
    except kopf.PermanentError:
        RECONCILES.labels(handler, "permanent").inc()
        ERRORS.labels(handler, "PermanentError").inc()
        raise
    except Exception as err:
        RECONCILES.labels(handler, "error").inc()
        ERRORS.labels(handler, type(err).__name__).inc()
        raise
    else:
        RECONCILES.labels(handler, "ok").inc()
    finally:
        DURATION.labels(handler).observe(time.perf_counter() - start)


def serve(port: int, addr: str) -> WSGIServer | None:
    """Expose /metrics on its own address and port (port 0: off); returns the server."""
    if not port:
        return None
    server, _ = start_http_server(port, addr=addr, registry=REGISTRY)
    return server
