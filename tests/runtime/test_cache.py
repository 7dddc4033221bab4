"""The response cache: its key, the in-process LRU's byte bound, the Redis tier against a
real redis-server (up, down, slow), and real `tts-runtime serve` processes answering
hit/miss and sharing one Redis."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from raw_client import Served, serve, speech
from redis_server import RedisServer, redis_server
from tts_runtime.app import create_app
from tts_runtime.cache import (
    BREAKER_BASE_S,
    BREAKER_MAX_S,
    ENTRY_OVERHEAD_BYTES,
    REDIS_PREFIX,
    Breaker,
    MemoryLru,
    RedisTier,
    ResponseCache,
    build_cache,
    cache_key,
    model_digest,
)
from tts_runtime.engine import OnnxEngine
from tts_runtime.engine_types import SynthesisScales
from tts_runtime.errors import SettingsError
from tts_runtime.metrics import CacheMetrics
from tts_runtime.settings import RuntimeSettings, load_settings
from tts_runtime.testmodel import write_test_model
from tts_runtime.text import split_sentences

TIMEOUT_MS = 100
# What a call to a down or slow Redis may cost beyond the timeout on a busy 2-core machine
# (without the timeout, a slow Redis would cost its whole DEBUG SLEEP, 2 or 3 s).
SLACK_S = 0.5

KEY_FIELDS: dict[str, Any] = {
    "model": "a" * 64,
    "precision": "fp32",
    "speaker_id": 0,
    "segments": ["Hello there.", "How are you?"],
    "scales": SynthesisScales(0.667, 1.0, 0.8),
    "response_format": "wav",
    "sample_rate": 22050,
}


def metrics() -> CacheMetrics:
    return CacheMetrics(CollectorRegistry(), redis=True)


def sample(m: CacheMetrics, name: str, **labels: str) -> float:
    value = m.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the key -----------------------------------------------------------------------


def test_the_key_changes_with_everything_that_changes_the_bytes() -> None:
    base = cache_key(**KEY_FIELDS)
    assert base == cache_key(**KEY_FIELDS)
    changed = {
        "model": "b" * 64,
        "precision": "fp16",
        "speaker_id": 1,
        "segments": ["Hello there.", "How are you!"],
        "scales": SynthesisScales(0.667, 1.0 / 1.25, 0.8),
        "response_format": "mp3",
        "sample_rate": 16000,
        "scope": "team-b/other",
    }
    keys = {base}
    for field, value in changed.items():
        keys.add(cache_key(**{**KEY_FIELDS, field: value}))
    assert len(keys) == len(changed) + 1
    noise = dataclasses.replace(KEY_FIELDS["scales"], noise_scale=0.5)
    assert cache_key(**{**KEY_FIELDS, "scales": noise}) != base


@pytest.mark.usefixtures("clean_env")
def test_the_key_holds_the_scope_the_settings_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22: one Redis, many tenants. The operator sets TTS_CACHE_SCOPE to the
    TTSService's NAMESPACE/NAME; two scopes never share an entry, whatever else agrees."""
    monkeypatch.setenv("TTS_CACHE_MAX_BYTES", str(1 << 20))
    fields = {k: KEY_FIELDS[k] for k in ("segments", "scales")}

    def key_in(scope: str | None) -> str:
        if scope is None:
            monkeypatch.delenv("TTS_CACHE_SCOPE", raising=False)
        else:
            monkeypatch.setenv("TTS_CACHE_SCOPE", scope)
        cache = build_cache(load_settings(), "fp32", 22050, CollectorRegistry())
        assert cache is not None
        assert cache.scope == (scope or "")
        return cache.key(0, fields["segments"], fields["scales"], "wav")

    monkeypatch.setattr("tts_runtime.cache.model_digest", lambda path, precision: "a" * 64)
    team_a, team_b, shared = key_in("team-a/voice"), key_in("team-b/voice"), key_in(None)
    assert len({team_a, team_b, shared}) == 3
    assert key_in("team-a/voice") == team_a


def test_spacing_the_model_never_sees_shares_a_key_and_wording_does_not() -> None:
    def key(text: str) -> str:
        return cache_key(**{**KEY_FIELDS, "segments": split_sentences(text, 400)})

    assert key("Hello there. How are you?") == key("  Hello there.\n\n  How are you?  ")
    assert key("Hello there. How are you?") != key("Hello there, how are you?")
    # The split is part of the key: the same words cut otherwise are another input.
    assert cache_key(**{**KEY_FIELDS, "segments": ["Hello there. How are you?"]}) != key(
        "Hello there. How are you?"
    )


def test_the_model_digest_covers_the_model_its_config_and_an_fp16_copy(tmp_path: Path) -> None:
    model_dir = write_test_model(tmp_path / "voice", size="small")
    first = model_digest(model_dir, "fp32")
    assert first == model_digest(model_dir / "model.onnx", "fp32")
    config = model_dir / "model.onnx.json"
    config.write_text(config.read_text() + " ")
    after_config = model_digest(model_dir, "fp32")
    assert after_config != first
    (model_dir / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes() + b"\0")
    after_model = model_digest(model_dir, "fp32")
    assert after_model not in (first, after_config)
    (model_dir / "model.fp16.onnx").write_bytes(b"fp16 weights")
    assert model_digest(model_dir, "fp32") == after_model  # fp32 never reads the fp16 file
    assert model_digest(model_dir, "fp16") != after_model


# -- the in-process LRU ------------------------------------------------------------


def test_the_lru_stays_within_its_bytes_and_evicts_the_least_recently_used() -> None:
    m = metrics()
    entry = 1000 + ENTRY_OVERHEAD_BYTES
    lru = MemoryLru(3 * entry, m)
    for key in "abc":
        assert lru.put(key, bytes(1000))
    assert lru.bytes == 3 * entry and len(lru) == 3
    assert lru.get("a") is not None  # a is now the most recently used
    assert lru.put("d", bytes(1000))
    assert "b" not in lru and all(k in lru for k in "acd")
    assert lru.bytes == 3 * entry
    assert lru.put("e", bytes(2000))  # needs the room of two entries: c and a go
    assert [k for k in "acde" if k in lru] == ["d", "e"]
    assert lru.bytes == (1000 + ENTRY_OVERHEAD_BYTES) + (2000 + ENTRY_OVERHEAD_BYTES)
    assert sample(m, "tts_cache_evictions_total") == 3
    assert sample(m, "tts_cache_bytes") == lru.bytes
    assert sample(m, "tts_cache_entries") == 2


def test_an_entry_larger_than_the_whole_lru_is_refused_and_evicts_nothing() -> None:
    lru = MemoryLru(4096, metrics())
    assert lru.put("small", bytes(100))
    assert not lru.put("huge", bytes(4096))
    assert "small" in lru and "huge" not in lru


def test_replacing_an_entry_counts_its_bytes_once() -> None:
    lru = MemoryLru(1 << 20, metrics())
    lru.put("k", bytes(100))
    lru.put("k", bytes(300))
    assert lru.bytes == 300 + ENTRY_OVERHEAD_BYTES and len(lru) == 1


def test_the_cache_keeps_no_response_above_the_entry_limit_in_either_tier() -> None:
    cache = ResponseCache(
        model="m",
        precision="fp32",
        sample_rate=22050,
        metrics=metrics(),
        max_bytes=1 << 20,
        max_entry_bytes=1000,
    )
    cache.put("big", bytes(1001))
    cache.put("ok", bytes(1000))
    assert cache.memory is not None
    assert "big" not in cache.memory and "ok" in cache.memory


def test_the_breaker_opens_for_longer_while_failures_continue_and_closes_on_success() -> None:
    clock = FakeClock()
    breaker = Breaker(clock)
    assert breaker.allows()
    opened = []
    for _ in range(8):
        breaker.failed()
        assert not breaker.allows()
        opened.append(breaker.open_for_s)
        clock.now += breaker.open_for_s
        assert breaker.allows()
    assert opened[:3] == [BREAKER_BASE_S, 2 * BREAKER_BASE_S, 4 * BREAKER_BASE_S]
    assert max(opened) == BREAKER_MAX_S
    breaker.succeeded()
    breaker.failed()
    assert breaker.open_for_s == BREAKER_BASE_S
    for _ in range(2000):  # hours of a dead Redis: the wait stays bounded
        breaker.failed()
    assert breaker.open_for_s == BREAKER_MAX_S


# -- settings ----------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TTS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TTS_MODEL_PATH", "/models")


@pytest.mark.usefixtures("clean_env")
def test_the_cache_is_off_unless_asked_for() -> None:
    settings = load_settings()
    assert settings.cache_max_bytes == 0 and not settings.cache_enabled
    assert settings.redis_url() is None
    assert build_cache(settings, "fp32", 22050, CollectorRegistry()) is None


@pytest.mark.usefixtures("clean_env")
def test_the_redis_url_comes_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text("redis://:s3cret@redis.cache.svc:6380/2\n")
    monkeypatch.setenv("TTS_CACHE_REDIS_URL_FILE", str(url_file))
    settings = load_settings()
    assert settings.cache_enabled and settings.cache_max_bytes == 0
    assert settings.redis_url() == "redis://:s3cret@redis.cache.svc:6380/2"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    "url",
    [
        "http://:s3cret@redis:6379",
        "redis://:s3cret@",
        "redis://:s3cret@redis:port/0",
        "redis://:s3cret@redis:6379/zero",
        "s3cret",
    ],
)
@pytest.mark.usefixtures("clean_env")
def test_a_bad_redis_url_stops_the_process_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str
) -> None:
    monkeypatch.setenv("TTS_CACHE_REDIS_URL", url)
    with pytest.raises(SettingsError) as direct:
        load_settings()
    monkeypatch.delenv("TTS_CACHE_REDIS_URL")
    url_file = tmp_path / "url"
    url_file.write_text(url)
    monkeypatch.setenv("TTS_CACHE_REDIS_URL_FILE", str(url_file))
    with pytest.raises(SettingsError) as from_file:
        load_settings()
    assert "TTS_CACHE_REDIS_URL:" in str(direct.value)
    assert f"TTS_CACHE_REDIS_URL_FILE: Value error, the Redis URL in {url_file}" in str(
        from_file.value
    )
    for error in (direct.value, from_file.value):
        assert "s3cret" not in str(error)


@pytest.mark.usefixtures("clean_env")
def test_redis_url_settings_conflicts_and_missing_files_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TTS_CACHE_REDIS_URL_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match=r"cannot read the Redis URL file .*absent"):
        load_settings()
    (tmp_path / "url").write_text("redis://127.0.0.1:6379/0")
    monkeypatch.setenv("TTS_CACHE_REDIS_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("TTS_CACHE_REDIS_URL", "redis://127.0.0.1:6379/0")
    with pytest.raises(SettingsError, match="not both"):
        load_settings()
    monkeypatch.delenv("TTS_CACHE_REDIS_URL_FILE")
    monkeypatch.setenv("TTS_CACHE_MAX_BYTES", "-1")
    with pytest.raises(SettingsError, match="TTS_CACHE_MAX_BYTES"):
        load_settings()


# -- the Redis tier against a real redis-server ------------------------------------


@pytest.fixture
def redis_up(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


def tier(server: RedisServer, clock: FakeClock | None = None) -> tuple[RedisTier, CacheMetrics]:
    m = metrics()
    return RedisTier(
        server.url, timeout_s=TIMEOUT_MS / 1000, ttl_s=60, metrics=m, clock=clock or FakeClock()
    ), m


async def timed_get(redis_tier: RedisTier, key: str) -> tuple[bytes | None, float]:
    started = time.perf_counter()
    value = await redis_tier.get(key)
    return value, time.perf_counter() - started


def test_redis_keeps_a_response_for_its_ttl(redis_up: RedisServer) -> None:
    async def scenario() -> None:
        redis_tier, m = tier(redis_up)
        assert await redis_tier.get("k") is None
        redis_tier.put("k", b"RIFF audio")
        await asyncio.wait(list(redis_tier._writes), timeout=5)
        assert await redis_tier.get("k") == b"RIFF audio"
        await redis_tier.close()
        for reason in ("timeout", "connection", "error"):
            assert sample(m, "tts_cache_redis_errors_total", reason=reason) == 0
        assert sample(m, "tts_cache_redis_up") == 1

    asyncio.run(scenario())
    ttl = redis_up.client().ttl(REDIS_PREFIX + "k")
    assert 0 < int(ttl) <= 60


def test_a_redis_that_went_down_costs_one_timeout_then_nothing_until_it_is_back(
    redis_up: RedisServer,
) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        redis_tier, m = tier(redis_up, clock)
        redis_tier.put("k", b"audio")
        await asyncio.wait(list(redis_tier._writes), timeout=5)
        redis_up.stop()
        value, took = await timed_get(redis_tier, "k")
        assert value is None and took < TIMEOUT_MS / 1000 + SLACK_S
        assert sample(m, "tts_cache_redis_errors_total", reason="connection") == 1
        assert sample(m, "tts_cache_redis_up") == 0
        for _ in range(50):  # the breaker is open: Redis is not even asked
            value, took = await timed_get(redis_tier, "k")
            assert value is None and took < 0.01
        redis_tier.put("other", b"audio")
        assert not redis_tier._writes
        assert sample(m, "tts_cache_redis_bypassed_total") == 51
        assert sample(m, "tts_cache_redis_errors_total", reason="connection") == 1
        redis_up.start()  # empty again: no persistence
        clock.now += BREAKER_BASE_S
        assert await redis_tier.get("k") is None
        assert sample(m, "tts_cache_redis_up") == 1
        redis_tier.put("k", b"audio")
        await asyncio.wait(list(redis_tier._writes), timeout=5)
        assert await redis_tier.get("k") == b"audio"
        await redis_tier.close()

    asyncio.run(scenario())


def test_a_slow_redis_costs_at_most_the_timeout(redis_up: RedisServer) -> None:
    async def scenario() -> None:
        redis_tier, m = tier(redis_up)
        redis_tier.put("k", b"audio")
        await asyncio.wait(list(redis_tier._writes), timeout=5)
        assert await redis_tier.get("k") == b"audio"  # connected
        with redis_up.asleep(2):
            value, took = await timed_get(redis_tier, "k")
        assert value is None
        assert TIMEOUT_MS / 1000 * 0.9 <= took < TIMEOUT_MS / 1000 + SLACK_S
        assert sample(m, "tts_cache_redis_errors_total", reason="timeout") == 1
        await redis_tier.close()

    asyncio.run(scenario())


# -- real servers ------------------------------------------------------------------


def post(served: Served, text: str, **fields: Any) -> httpx.Response:
    response = httpx.post(f"{served.base}/v1/audio/speech", json=speech(text, **fields), timeout=60)
    assert response.status_code == 200, response.text
    return response


@contextlib.contextmanager
def serve_cached(model_dir: Path, tmp: Path, redis_url: str, **settings: str) -> Iterator[Served]:
    """A runtime with the cache on: `redis_url` a URL, or a file holding one (as the
    operator mounts it from a Secret)."""
    if redis_url.startswith("redis://"):
        settings["cache_redis_url"] = redis_url
    else:
        settings["cache_redis_url_file"] = redis_url
    settings.update(batch_calibration="false", cache_redis_timeout_ms=str(TIMEOUT_MS))
    with serve(model_dir, tmp, **cast(dict[str, Any], settings)) as served:
        yield served


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def two_replicas(
    small_model_dir: Path, shared_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Served, Served]]:
    """Two `tts-runtime serve` processes on one Redis, which they read from a file as the
    operator mounts it: `a` with an in-process cache too, `b` with Redis only."""
    tmp = tmp_path_factory.mktemp("replicas")
    url_file = tmp / "redis-url"
    url_file.write_text(shared_redis.url + "\n")
    with (
        serve_cached(small_model_dir, tmp, str(url_file), cache_max_bytes=str(64 << 20)) as a,
        serve_cached(small_model_dir, tmp, str(url_file)) as b,
    ):
        yield a, b


@pytest.mark.slow
def test_a_repeated_request_is_a_hit_with_the_same_bytes_and_no_synthesis(
    two_replicas: tuple[Served, Served],
) -> None:
    a, _ = two_replicas
    text = "The first cached sentence. And its second one."
    first = post(a, text)
    audio_after_first = a.metric("tts_audio_seconds_total")
    misses = a.metric("tts_cache_misses_total")
    second = post(a, "  The first cached sentence.   And its second one. ")  # same segments
    assert (first.headers["x-tts-cache"], second.headers["x-tts-cache"]) == ("miss", "hit")
    assert second.content == first.content
    assert second.headers["content-type"] == first.headers["content-type"] == "audio/wav"
    assert a.metric("tts_audio_seconds_total") == audio_after_first  # nothing synthesized
    assert a.metric("tts_cache_hits_total", tier="memory") >= 1
    assert a.metric("tts_cache_misses_total") == misses
    assert a.metric("tts_cache_bytes") >= len(first.content)
    assert a.metric("tts_requests_total", status="ok") >= 2
    other_speed = post(a, text, speed=1.5)
    other_format = post(a, text, response_format="pcm")
    assert other_speed.headers["x-tts-cache"] == other_format.headers["x-tts-cache"] == "miss"
    streamed = post(a, text, stream=True, response_format="pcm")
    assert streamed.headers["x-tts-cache"] == "miss"  # streams are never served from it


@pytest.mark.slow
def test_replicas_share_responses_through_redis(
    two_replicas: tuple[Served, Served], shared_redis: RedisServer
) -> None:
    a, b = two_replicas
    text = "A sentence only the first replica has made."
    keys = shared_redis.client()
    stored = len(keys.keys(REDIS_PREFIX + "*"))
    made = post(a, text)
    assert made.headers["x-tts-cache"] == "miss"
    deadline = time.monotonic() + 5  # a's write to Redis runs after its response
    while len(keys.keys(REDIS_PREFIX + "*")) == stored:
        assert time.monotonic() < deadline, "a never wrote its response to Redis"
        time.sleep(0.01)
    shared = post(b, text)
    assert shared.headers["x-tts-cache"] == "hit"
    assert shared.content == made.content
    assert b.metric("tts_cache_hits_total", tier="redis") >= 1
    assert b.metric("tts_audio_seconds_total") == 0  # b synthesized nothing for it
    assert b.metric("tts_cache_redis_up") == 1


@pytest.mark.slow
def test_another_service_on_the_same_redis_gets_no_hit(
    two_replicas: tuple[Served, Served],
    shared_redis: RedisServer,
    small_model_dir: Path,
    tmp_path: Path,
) -> None:
    """Issue 22: the same model and Redis under another scope (another TTSService) is a
    miss, so its callers learn nothing of what this service's callers asked."""
    a, _ = two_replicas
    text = "A sentence only one service has asked for."
    keys = shared_redis.client()
    stored = len(keys.keys(REDIS_PREFIX + "*"))
    assert post(a, text).headers["x-tts-cache"] == "miss"
    deadline = time.monotonic() + 5
    while len(keys.keys(REDIS_PREFIX + "*")) == stored:
        assert time.monotonic() < deadline, "a never wrote its response to Redis"
        time.sleep(0.01)
    with serve_cached(
        small_model_dir, tmp_path, shared_redis.url, cache_scope="team-b/other"
    ) as other:
        assert post(other, text).headers["x-tts-cache"] == "miss"
        assert other.metric("tts_cache_hits_total", tier="redis") == 0


@pytest.fixture
def replica_on_own_redis(
    small_model_dir: Path, tmp_path: Path
) -> Iterator[tuple[Served, RedisServer]]:
    (tmp_path / "redis").mkdir()
    with (
        redis_server(tmp_path / "redis") as server,
        serve_cached(small_model_dir, tmp_path, server.url) as served,
    ):
        yield served, server


def timed_post(served: Served, text: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = post(served, text)
    return response, time.perf_counter() - started


def synthesis_latency(served: Served) -> float:
    """The quickest of three syntheses (misses) of short sentences, Redis up."""
    return min(timed_post(served, f"Warm sentence number {n}.")[1] for n in range(3))


def assert_made_by_the_model_in_time(served: Served, text: str, synthesis_s: float) -> None:
    """200 from the model, later than a synthesis by at most the Redis timeout (+ slack)."""
    response, took = timed_post(served, text)
    assert response.headers["x-tts-cache"] == "miss"
    assert took < synthesis_s + TIMEOUT_MS / 1000 + SLACK_S


@pytest.mark.slow
def test_requests_are_served_from_the_model_while_redis_is_down(
    replica_on_own_redis: tuple[Served, RedisServer],
) -> None:
    served, server = replica_on_own_redis
    baseline = synthesis_latency(served)
    server.stop()
    for n in range(5):
        assert_made_by_the_model_in_time(served, f"Sentence {n} while Redis is down.", baseline)
    # One failure opens the breaker for a second; the requests meanwhile skip Redis.
    assert served.metric("tts_cache_redis_errors_total", reason="connection") >= 1
    assert served.metric("tts_cache_redis_bypassed_total") >= 1
    assert served.metric("tts_cache_redis_up") == 0
    assert served.metric("tts_requests_total", status="ok") == 8
    assert "serving from the model" in served.log_text()


@pytest.mark.slow
def test_a_slow_redis_delays_a_request_by_at_most_the_timeout(
    replica_on_own_redis: tuple[Served, RedisServer],
) -> None:
    served, server = replica_on_own_redis
    baseline = synthesis_latency(served)
    with server.asleep(3):
        assert_made_by_the_model_in_time(served, "Asked of a sleeping Redis.", baseline)
    assert served.metric("tts_cache_redis_errors_total", reason="timeout") >= 1


def test_without_cache_settings_there_is_no_header_and_no_cache_series(
    small_model_dir: Path,
) -> None:
    engine = OnnxEngine.load(small_model_dir, "fp32", "cpu")
    settings = RuntimeSettings(model_path=small_model_dir, batch_calibration=False)
    with TestClient(create_app(settings, engine)) as client:
        response = client.post("/v1/audio/speech", json=speech("Hello there."))
        assert response.status_code == 200
        assert "x-tts-cache" not in response.headers
        assert "tts_cache_" not in client.get("/metrics").text
