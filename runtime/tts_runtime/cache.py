"""The response cache: whole speech responses, keyed by everything that makes their bytes.

Two tiers, both optional:

- an in-process LRU bounded in bytes (TTS_CACHE_MAX_BYTES; 0: off), and
- a Redis shared by every replica (TTS_CACHE_REDIS_URL_FILE / TTS_CACHE_REDIS_URL).

Responses larger than TTS_CACHE_MAX_ENTRY_BYTES are kept in neither.

The key (`cache_key`) is a SHA-256 over the model's files (`model_digest`: the .onnx, its
.onnx.json and, for fp16, a pre-converted .fp16.onnx), the precision, the speaker id, the
input as the model gets it (its sentence segments, whitespace around them dropped), the
synthesis scales (speed included), the response format and the sample rate: a new model or
voice config never serves old audio, and two inputs that differ only in spacing share one
entry. It also holds the cache's scope (TTS_CACHE_SCOPE: the operator sets the TTSService's
NAMESPACE/NAME unless its spec.cache.shareAcrossServices), so two services on one Redis never
answer each other's requests, and X-TTS-Cache: hit tells a caller only what callers of the
same service asked before. Streamed responses are not cached (docs/runtime.md, "Response cache").

A Redis that is down or slow never fails a request and never delays one by more than
TTS_CACHE_REDIS_TIMEOUT_MS: every call is bounded by that timeout, a failure is counted in
tts_cache_redis_errors_total{reason} and opens a circuit breaker (1 s, doubling to 30 s)
during which Redis is not asked at all (tts_cache_redis_bypassed_total,
tts_cache_redis_up 0); the request is then served from the model. Writes to Redis run in
the background, after the response is on its way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tts_runtime.engine_types import SynthesisScales
from tts_runtime.metrics import CacheMetrics
from tts_runtime.settings import RuntimeSettings
from tts_runtime.voice import resolve_model_files

log = logging.getLogger(__name__)

# Bumped whenever what a key's bytes mean changes (encoding, key layout).
KEY_VERSION = 2
REDIS_PREFIX = f"tts-cache:v{KEY_VERSION}:"
# What one in-memory entry costs beyond its body: the key string, the dict node and the
# bytes object's header; counted so that many tiny entries cannot exceed the bound.
ENTRY_OVERHEAD_BYTES = 256
BREAKER_BASE_S = 1.0
BREAKER_MAX_S = 30.0
HIT, MISS = "hit", "miss"
CACHE_HEADER = "X-TTS-Cache"

Clock = Callable[[], float]


def model_digest(model_path: Path, precision: str) -> str:
    """SHA-256 over the files that decide what the model says: the .onnx, its .onnx.json,
    and for fp16 the pre-converted .fp16.onnx beside it when there is one."""
    model_file, config_file = resolve_model_files(model_path)
    files = [model_file, config_file]
    fp16 = model_file.with_name(model_file.name.removesuffix(".onnx") + ".fp16.onnx")
    if precision == "fp16" and fp16.is_file():
        files.append(fp16)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as data:
            while chunk := data.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def cache_key(
    *,
    model: str,
    precision: str,
    speaker_id: int,
    segments: Sequence[str],
    scales: SynthesisScales,
    response_format: str,
    sample_rate: int,
    scope: str = "",
) -> str:
    """The key of one whole response: hex SHA-256 of everything that changes its bytes.
    `model` is `model_digest`; `segments` the input as split for the model; `scope`
    (TTS_CACHE_SCOPE, the operator's NAMESPACE/NAME) keeps one service's entries from
    another's in a shared Redis ("" only where the spec opts in to sharing)."""
    fields = [
        KEY_VERSION,
        scope,
        model,
        precision,
        speaker_id,
        list(segments),
        [scales.noise_scale, scales.length_scale, scales.noise_w],
        response_format,
        sample_rate,
    ]
    blob = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class MemoryLru:
    """Bodies by key, least recently used evicted first, at most `max_bytes` held (each
    entry counted as its body + ENTRY_OVERHEAD_BYTES). Event-loop only, no locking."""

    def __init__(self, max_bytes: int, metrics: CacheMetrics) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._metrics = metrics

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> bytes | None:
        body = self._entries.get(key)
        if body is not None:
            self._entries.move_to_end(key)
        return body

    def put(self, key: str, body: bytes) -> bool:
        """Keep `body`, evicting the least recently used; False when it alone is larger
        than the bound (then nothing is evicted for it)."""
        size = len(body) + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old) + ENTRY_OVERHEAD_BYTES
        self._entries[key] = body
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted) + ENTRY_OVERHEAD_BYTES
            self._metrics.evictions.inc()
        self._metrics.bytes.set(self.bytes)
        self._metrics.entries.set(len(self._entries))
        return True


class Breaker:
    """Open after a failure for BREAKER_BASE_S, doubling with each failure in a row up to
    BREAKER_MAX_S; closed again by the first success. While open, Redis is not asked."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.failures = 0
        self._open_until = 0.0

    def allows(self) -> bool:
        return self._clock() >= self._open_until

    @property
    def open_for_s(self) -> float:
        return min(BREAKER_MAX_S, BREAKER_BASE_S * float(2 ** min(max(self.failures - 1, 0), 16)))

    def failed(self) -> None:
        self.failures += 1
        self._open_until = self._clock() + self.open_for_s

    def succeeded(self) -> None:
        self.failures = 0
        self._open_until = 0.0


class RedisTier:
    """GET and SET on a shared Redis, each bounded by `timeout_s`, behind a Breaker."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        ttl_s: int,
        metrics: CacheMetrics,
        clock: Clock = time.monotonic,
    ) -> None:
        self._url = url
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._metrics = metrics
        self.breaker = Breaker(clock)
        self._client: redis.asyncio.Redis | None = None
        self._writes: set[asyncio.Task[None]] = set()
        metrics.redis_up.set(1)

    def _redis(self) -> redis.asyncio.Redis:
        # Made on first use, on the loop that serves (the client binds to it).
        if self._client is None:
            self._client = redis.asyncio.Redis.from_url(
                self._url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                # No retries: a failure opens the breaker instead of costing more time.
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
                client_name="tts-runtime",
            )
        return self._client

    async def get(self, key: str) -> bytes | None:
        if not self._usable():
            return None
        value = await self._call("get", self._redis().get(REDIS_PREFIX + key))
        return value if isinstance(value, bytes) else None

    def put(self, key: str, body: bytes) -> None:
        """Store in the background (the response does not wait for it)."""
        if not self._usable():
            return
        task = asyncio.get_running_loop().create_task(self._set(key, body))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _set(self, key: str, body: bytes) -> None:
        await self._call("set", self._redis().set(REDIS_PREFIX + key, body, ex=self.ttl_s))

    def _usable(self) -> bool:
        if self.breaker.allows():
            return True
        self._metrics.redis_bypassed.inc()
        return False

    async def _call(self, what: str, command: object) -> object:
        """`command` (a redis-py coroutine) within the timeout; None when it failed."""
        assert asyncio.iscoroutine(command)
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await command
        except (TimeoutError, redis.exceptions.TimeoutError) as exc:
            self._failed("timeout", what, exc)
            return None
        except redis.exceptions.ConnectionError as exc:
            self._failed("connection", what, exc)
            return None
        except (redis.exceptions.RedisError, OSError) as exc:
            self._failed("error", what, exc)
            return None
        if self.breaker.failures:
            log.info("cache: Redis answers again; using it")
        self.breaker.succeeded()
        self._metrics.redis_up.set(1)
        return result

    def _failed(self, reason: str, what: str, exc: BaseException) -> None:
        self._metrics.redis_errors.labels(reason=reason).inc()
        first = self.breaker.failures == 0
        self.breaker.failed()
        self._metrics.redis_up.set(0)
        if first:  # the URL may hold a password: never logged, nor is str(client)
            log.warning(
                "cache: Redis %s failed (%s: %s); serving from the model, not asking Redis "
                "for %g s",
                what,
                reason,
                type(exc).__name__ if reason == "timeout" else exc,
                self.breaker.open_for_s,
            )

    async def close(self) -> None:
        for task in list(self._writes):
            task.cancel()
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=self.timeout_s)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class ResponseCache:
    """The two tiers together: memory first, then Redis (a Redis hit is kept in memory
    too). Counts hits by tier and misses; a response is offered to both tiers once made."""

    def __init__(
        self,
        *,
        model: str,
        precision: str,
        sample_rate: int,
        metrics: CacheMetrics,
        max_bytes: int,
        max_entry_bytes: int,
        redis: RedisTier | None = None,
        scope: str = "",
    ) -> None:
        self.scope = scope
        self.model = model
        self.precision = precision
        self.sample_rate = sample_rate
        self.metrics = metrics
        self.max_entry_bytes = max_entry_bytes
        self.memory = MemoryLru(max_bytes, metrics) if max_bytes > 0 else None
        self.redis = redis

    def key(
        self,
        speaker_id: int,
        segments: Sequence[str],
        scales: SynthesisScales,
        response_format: str,
    ) -> str:
        return cache_key(
            model=self.model,
            precision=self.precision,
            speaker_id=speaker_id,
            segments=segments,
            scales=scales,
            response_format=response_format,
            sample_rate=self.sample_rate,
            scope=self.scope,
        )

    async def get(self, key: str) -> bytes | None:
        """The cached body, counted as a hit of its tier; None, counted as a miss."""
        if self.memory is not None:
            body = self.memory.get(key)
            if body is not None:
                self.metrics.hits.labels(tier="memory").inc()
                return body
        if self.redis is not None:
            body = await self.redis.get(key)
            if body is not None:
                self.metrics.hits.labels(tier="redis").inc()
                if self.memory is not None:
                    self.memory.put(key, body)
                return body
        self.missed()
        return None

    def missed(self) -> None:
        """A request the cache does not answer (a stream, which is never looked up)."""
        self.metrics.misses.inc()

    def put(self, key: str, body: bytes) -> None:
        """Offer a response to both tiers; one larger than max_entry_bytes is not kept."""
        if len(body) > self.max_entry_bytes:
            return
        if self.memory is not None:
            self.memory.put(key, body)
        if self.redis is not None:
            self.redis.put(key, body)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()


def redis_location(url: str) -> str:
    """Where a Redis URL points, without its user and password (safe to log)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"


def build_cache(
    settings: RuntimeSettings,
    precision: str,
    sample_rate: int,
    registry: CollectorRegistry,
    clock: Clock = time.monotonic,
) -> ResponseCache | None:
    """The cache the settings ask for (None when off); its tts_cache_* series go on
    `registry`. `precision` is what the engine runs (fp16 may have fallen back to fp32)."""
    if not settings.cache_enabled:
        return None
    url = settings.redis_url()
    metrics = CacheMetrics(registry, redis=url is not None)
    tier = None
    where = "no Redis"
    if url is not None:
        tier = RedisTier(
            url,
            timeout_s=settings.cache_redis_timeout_ms / 1000,
            ttl_s=settings.cache_redis_ttl_s,
            metrics=metrics,
            clock=clock,
        )
        where = f"Redis at {redis_location(url)}"
    digest = model_digest(settings.model_path, precision)
    log.info(
        "response cache on: %d bytes in memory, %s (timeout %g ms); model digest %s, scope %s",
        settings.cache_max_bytes,
        where,
        settings.cache_redis_timeout_ms,
        digest[:12],
        settings.cache_scope or "(shared)",
    )
    return ResponseCache(
        model=digest,
        precision=precision,
        sample_rate=sample_rate,
        metrics=metrics,
        max_bytes=settings.cache_max_bytes,
        max_entry_bytes=settings.cache_max_entry_bytes,
        redis=tier,
        scope=settings.cache_scope,
    )
