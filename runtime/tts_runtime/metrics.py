"""The runtime's Prometheus metrics (names fixed in the design, prefix tts_).

Each app owns its own registry so tests can build several apps in one process.
The HPA signal is the per-pod average queue wait over a short window, computed
from tts_queue_wait_seconds (see docs/runtime.md and `average_queue_wait`).
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from tts_runtime.errors import UnspeakableReason

# tts_auth_failures_total's reasons (tts_runtime.auth).
AUTH_FAILURE_REASONS = ("missing", "invalid")
# Queue waits the HPA cares about sit between 1 ms and a few seconds.
QUEUE_WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
RTF_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)

# cancelled: the client disconnected, or stopped reading for TTS_WRITE_TIMEOUT_S, before
# the request's last byte; its segments not yet started were dropped.
REQUEST_STATUSES = (
    "ok",
    "bad_request",
    "queue_full",
    "timeout",
    "draining",
    "error",
    "cancelled",
)


class RuntimeMetrics:
    """All tts_* series of one runtime process."""

    def __init__(self, max_batch_size: int = 8, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tts_requests",
            "Speech requests by outcome (ok, bad_request, queue_full, timeout, draining, error, "
            "cancelled).",
            ["status"],
            registry=r,
        )
        for status in REQUEST_STATUSES:  # export zeros so rate() works from the first scrape
            self.requests.labels(status=status)
        self.queue_wait = Histogram(
            "tts_queue_wait_seconds",
            "Time a segment waited in the batch queue before its batch started.",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "tts_queue_depth", "Segments waiting in the batch queue.", registry=r
        )
        self.batch_size = Histogram(
            "tts_batch_size",
            "Segments per inference batch.",
            buckets=tuple(float(n) for n in _batch_buckets(max_batch_size)),
            registry=r,
        )
        self.inference = Histogram(
            "tts_inference_seconds",
            "Wall time of one inference batch in the worker thread.",
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.padding_ratio = Histogram(
            "tts_padding_ratio",
            "Share of a batch's phoneme slots that are padding (0 = no waste).",
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.audio_seconds = Counter(
            "tts_audio_seconds", "Seconds of audio synthesized.", registry=r
        )
        self.real_time_factor = Histogram(
            "tts_real_time_factor",
            "Inference seconds per second of audio, per batch (below 1 is faster than real time).",
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.model = Info("tts_model", "The served model and how it runs.", registry=r)
        self.auth_failures = Counter(
            "tts_auth_failures",
            "Requests refused with 401 for want of a valid API key (TTS_API_KEYS_FILE), by "
            "reason: missing (no Bearer Authorization header), invalid (a wrong key).",
            ["reason"],
            registry=r,
        )
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason=reason)
        self.unspeakable_inputs = Counter(
            "tts_unspeakable_inputs",
            "Requests answered 400 unspeakable_input because the text front end could not "
            "take their text, by reason: refused (a pattern known to crash espeak-ng), "
            "crashed (the phonemizer worker died on it and was replaced), timed_out (it hung "
            "and was replaced), failed (it raised an error).",
            ["reason"],
            registry=r,
        )
        for reason in get_args(UnspeakableReason):
            self.unspeakable_inputs.labels(reason=reason)

    def set_model(self, model: str, provider: str, precision: str) -> None:
        self.model.info({"model": model, "provider": provider, "precision": precision})

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_LATEST


def _batch_buckets(max_batch_size: int) -> list[int]:
    sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    return sorted({n for n in sizes if n < max_batch_size} | {max_batch_size})


def average_queue_wait(
    sum_before: float, count_before: float, sum_after: float, count_after: float
) -> float:
    """The HPA signal between two scrapes, as the documented PromQL computes it:
    rate(sum) / clamp_min(rate(count), 1e-9). Idle (no new segments) gives 0, never NaN."""
    return (sum_after - sum_before) / max(count_after - count_before, 1e-9)


CONNECTION_CLOSE_REASONS = (
    "over_limit",
    "evicted",
    "probes_only",
    "header_timeout",
    "body_timeout",
)


class ConnectionMetrics:
    """tts_connections*: the listener's connection limit and request deadlines at work
    (tts_runtime.connections), on the app's registry."""

    def __init__(self, registry: CollectorRegistry, max_connections: int) -> None:
        self.open = Gauge("tts_connections", "Client connections open now.", registry=registry)
        self.limit = Gauge(
            "tts_connections_max",
            "Connection limit (TTS_MAX_CONNECTIONS, as fitted under the open-file limit).",
            registry=registry,
        )
        self.limit.set(max_connections)
        self.closed = Counter(
            "tts_connections_closed",
            "Connections the server closed to protect itself, by reason: over_limit, "
            "evicted (idle, to make room), probes_only (503 beyond the limit), "
            "header_timeout, body_timeout.",
            ["reason"],
            registry=registry,
        )
        for reason in CONNECTION_CLOSE_REASONS:
            self.closed.labels(reason=reason)


CACHE_TIERS = ("memory", "redis")
# timeout: no answer within TTS_CACHE_REDIS_TIMEOUT_MS; connection: refused, reset, auth;
# error: any other error Redis answered with (OOM, READONLY ...).
CACHE_REDIS_ERROR_REASONS = ("timeout", "connection", "error")


class CacheMetrics:
    """tts_cache_*: the response cache (tts_runtime.cache), on the app's registry; only
    registered when the cache is on."""

    def __init__(self, registry: CollectorRegistry, redis: bool) -> None:
        self.registry = registry
        self.hits = Counter(
            "tts_cache_hits",
            "Speech responses served from the cache, by tier (memory, redis).",
            ["tier"],
            registry=registry,
        )
        for tier in CACHE_TIERS if redis else CACHE_TIERS[:1]:
            self.hits.labels(tier=tier)
        self.misses = Counter(
            "tts_cache_misses",
            "Speech requests the cache could not answer (each went on to the model), "
            "streams included: they are never looked up.",
            registry=registry,
        )
        self.bytes = Gauge(
            "tts_cache_bytes",
            "Bytes the in-process cache holds (bodies plus a fixed overhead per entry).",
            registry=registry,
        )
        self.entries = Gauge(
            "tts_cache_entries", "Responses the in-process cache holds.", registry=registry
        )
        self.evictions = Counter(
            "tts_cache_evictions",
            "Responses dropped from the in-process cache to stay within TTS_CACHE_MAX_BYTES.",
            registry=registry,
        )
        # Redis's series only when there is a Redis (else made, but not exported).
        shared = registry if redis else None
        self.redis_errors = Counter(
            "tts_cache_redis_errors",
            "Redis calls that failed, by reason: timeout, connection, error; the request "
            "was served from the model.",
            ["reason"],
            registry=shared,
        )
        self.redis_bypassed = Counter(
            "tts_cache_redis_bypassed",
            "Redis lookups and writes skipped while Redis was marked down (after a failure, "
            "for 1 s doubling to 30 s).",
            registry=shared,
        )
        self.redis_up = Gauge(
            "tts_cache_redis_up",
            "1 while Redis is used, 0 while it is marked down after a failure.",
            registry=shared,
        )
        for reason in CACHE_REDIS_ERROR_REASONS:
            self.redis_errors.labels(reason=reason)
