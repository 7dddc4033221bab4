"""The response cache's runtime settings: spec.cache -> TTS_CACHE_* (docs/runtime.md,
"Response cache"). The Redis URL reaches the pod as a Secret file (builders.secrets)."""

from __future__ import annotations

from kubernetes.utils.quantity import parse_quantity

from tts_operator.builders.secrets import cache_redis_url_file
from tts_operator.models import TTSServiceSpec

MI = 1 << 20
# Unset spec.cache.maxBytes: this share of the container's memory request (else limit).
MEMORY_SHARE = 8
# ... and with neither set.
FALLBACK_MAX_BYTES = 64 * MI


def byte_count(quantity: int | str) -> int:
    """A Kubernetes quantity of bytes as whole bytes (1.5Gi -> 1610612736)."""
    return int(parse_quantity(quantity))  # type: ignore[no-untyped-call]


def cache_max_bytes(spec: TTSServiceSpec) -> int:
    """Bytes each pod keeps in its in-process cache: spec.cache.maxBytes, else an eighth of
    the container's memory request (else limit), else FALLBACK_MAX_BYTES."""
    if spec.cache.max_bytes is not None:
        return byte_count(spec.cache.max_bytes)
    resources = spec.runtime.resources
    memory = resources.requests.memory
    if memory is None:
        memory = resources.limits.memory
    if memory is None:
        return FALLBACK_MAX_BYTES
    return byte_count(memory) // MEMORY_SHARE


def cache_scope(spec: TTSServiceSpec, name: str, namespace: str) -> str:
    """TTS_CACHE_SCOPE, part of every cache key: the TTSService's NAMESPACE/NAME, so services
    sharing a Redis never serve (nor reveal through X-TTS-Cache) each other's audio; empty
    when spec.cache.shareAcrossServices opts in to sharing."""
    return "" if spec.cache.share_across_services else f"{namespace}/{name}"


def cache_env(spec: TTSServiceSpec, name: str, namespace: str) -> dict[str, str]:
    """The TTS_CACHE_* variables of the TTSService NAMESPACE/NAME; none when the cache is off
    (the runtime's default)."""
    cache = spec.cache
    if not cache.enabled:
        return {}
    env = {
        "TTS_CACHE_MAX_BYTES": str(cache_max_bytes(spec)),
        "TTS_CACHE_MAX_ENTRY_BYTES": str(byte_count(cache.max_entry_bytes)),
        "TTS_CACHE_SCOPE": cache_scope(spec, name, namespace),
    }
    url_file = cache_redis_url_file(spec)
    if cache.redis is not None and url_file is not None:
        env["TTS_CACHE_REDIS_URL_FILE"] = url_file.path
        env["TTS_CACHE_REDIS_TIMEOUT_MS"] = str(cache.redis.timeout_ms)
        env["TTS_CACHE_REDIS_TTL_S"] = str(cache.redis.ttl_seconds)
    return env
