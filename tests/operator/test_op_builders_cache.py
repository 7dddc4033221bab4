"""spec.cache: the runtime's TTS_CACHE_* settings, and the Redis URL as a Secret file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from builder_helpers import IMAGE, children, container, kind, pod, spec_of
from pydantic import ValidationError
from tts_operator.builders.cache import FALLBACK_MAX_BYTES
from tts_operator.models import TTSServiceSpec
from tts_operator.policy import Policy, check
from tts_runtime.settings import RuntimeSettings

MI = 1 << 20
REDIS = {"urlSecretRef": {"name": "tts-redis", "key": "url"}}
URL_FILE = "/var/run/secrets/ttsoperator.io/cache-redis/url"


def cache_data(spec: TTSServiceSpec) -> dict[str, str]:
    data: dict[str, str] = kind(children(spec), "ConfigMap")["data"]
    return {k: v for k, v in data.items() if k.startswith("TTS_CACHE_")}


def volume_names(spec: TTSServiceSpec) -> set[str]:
    return {v["name"] for v in pod(spec)["volumes"]}


def test_the_cache_is_off_unless_enabled() -> None:
    for spec in (spec_of(), spec_of(cache={"enabled": False, "maxBytes": "1Gi", "redis": REDIS})):
        assert cache_data(spec) == {}
        assert "cache-redis" not in volume_names(spec)


@pytest.mark.parametrize(
    ("runtime", "cache", "max_bytes"),
    [
        ({}, {}, 2048 * MI // 8),  # the default memory request, 2Gi
        ({"resources": {"requests": {"memory": "1.5Gi"}}}, {}, 1536 * MI // 8),
        ({"resources": {"requests": {"memory": 1_000_000_000}}}, {}, 125_000_000),
        ({"resources": {"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}}}, {}, 512 * MI),
        ({"resources": {"requests": {"cpu": "1"}, "limits": {}}}, {}, FALLBACK_MAX_BYTES),
        ({}, {"maxBytes": "256Mi"}, 256 * MI),
        ({}, {"maxBytes": 1000}, 1000),
        ({}, {"maxBytes": 0, "redis": REDIS}, 0),
    ],
)
def test_the_in_process_share_is_an_eighth_of_the_memory_request_unless_set(
    runtime: dict[str, Any], cache: dict[str, Any], max_bytes: int
) -> None:
    spec = spec_of(runtime=runtime, cache={"enabled": True, **cache})
    data = cache_data(spec)
    assert data["TTS_CACHE_MAX_BYTES"] == str(max_bytes)
    assert data["TTS_CACHE_MAX_ENTRY_BYTES"] == str(4 * MI)


def test_redis_comes_from_a_secret_file_never_from_the_environment() -> None:
    spec = spec_of(
        cache={
            "enabled": True,
            "maxEntryBytes": "1Mi",
            "redis": {**REDIS, "timeoutMs": 50, "ttlSeconds": 3600},
        }
    )
    assert cache_data(spec) == {
        "TTS_CACHE_MAX_BYTES": str(256 * MI),
        "TTS_CACHE_MAX_ENTRY_BYTES": str(MI),
        "TTS_CACHE_SCOPE": "speech/voice",
        "TTS_CACHE_REDIS_URL_FILE": URL_FILE,
        "TTS_CACHE_REDIS_TIMEOUT_MS": "50",
        "TTS_CACHE_REDIS_TTL_S": "3600",
    }
    [volume] = [v for v in pod(spec)["volumes"] if v["name"] == "cache-redis"]
    assert volume["secret"] == {
        "secretName": "tts-redis",
        "items": [{"key": "url", "path": "url"}],
        "defaultMode": 0o440,
    }
    c = container(spec)
    [mount] = [m for m in c["volumeMounts"] if m["name"] == "cache-redis"]
    assert mount == {
        "name": "cache-redis",
        "mountPath": "/var/run/secrets/ttsoperator.io/cache-redis",
        "readOnly": True,
    }
    assert "subPath" not in mount
    assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in c["env"])


def test_redis_and_api_keys_are_two_secret_volumes_side_by_side() -> None:
    spec = spec_of(
        cache={"enabled": True, "redis": REDIS},
        auth={"apiKeysSecretRef": {"name": "tts-keys", "key": "keys"}},
    )
    assert {"cache-redis", "api-keys"} <= volume_names(spec)
    mounts = [m["name"] for m in container(spec)["volumeMounts"]]
    assert len(mounts) == len(set(mounts))


def test_changing_the_cache_rolls_the_pods() -> None:
    def config_hash(cache: dict[str, Any]) -> str:
        deployment = kind(children(spec_of(cache=cache)), "Deployment")
        annotations: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
        return annotations["ttsoperator.io/config-hash"]

    hashes = {
        config_hash({}),
        config_hash({"enabled": True}),
        config_hash({"enabled": True, "maxBytes": "1Gi"}),
    }
    assert len(hashes) == 3


@pytest.mark.parametrize("max_bytes", ["-1Gi", "1.5Gi", "100m", "1e9", -1, 1 << 41])
def test_byte_sizes_are_whole_non_negative_amounts(max_bytes: object) -> None:
    with pytest.raises(ValidationError):
        spec_of(cache={"enabled": True, "maxBytes": max_bytes})


def test_the_runtime_accepts_every_setting_the_operator_writes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The ConfigMap's TTS_CACHE_* as the runtime reads them (the URL file mounted here)."""
    url_file = tmp_path / "url"
    url_file.write_text("redis://:pw@redis.cache.svc:6379/0\n")
    spec = spec_of(cache={"enabled": True, "maxBytes": "128Mi", "redis": REDIS})
    for name, value in cache_data(spec).items():
        monkeypatch.setenv(name, str(url_file) if value == URL_FILE else value)
    settings = RuntimeSettings(model_path=Path("/models"))
    assert settings.cache_enabled and settings.cache_max_bytes == 128 * MI
    assert settings.cache_redis_timeout_ms == 100 and settings.cache_redis_ttl_s == 86_400
    assert settings.redis_url() == "redis://:pw@redis.cache.svc:6379/0"


def test_the_redis_secret_must_be_one_the_policy_allows() -> None:
    spec = spec_of(cache={"enabled": True, "redis": REDIS})
    [refused] = check(spec, Policy(), IMAGE)
    assert refused.field == "spec.cache.redis.urlSecretRef"
    assert refused.allowed_by == "policy.allowedSecretNames"
    assert check(spec, Policy(allowed_secret_names=["tts-*"]), IMAGE) == []


def test_the_cache_is_scoped_to_the_service_unless_it_opts_in_to_sharing() -> None:
    """Issue 22: two TTSServices of one model on one Redis shared audio, and X-TTS-Cache told
    either's callers what the other's had asked. The key now holds NAMESPACE/NAME."""
    on = {"enabled": True, "redis": REDIS}
    assert cache_data(spec_of(cache=on))["TTS_CACHE_SCOPE"] == "speech/voice"
    from tts_operator.builders import build_children

    other = build_children("other", "team-b", spec_of(cache=on), IMAGE)
    assert kind(other, "ConfigMap")["data"]["TTS_CACHE_SCOPE"] == "team-b/other"
    shared = spec_of(cache={**on, "shareAcrossServices": True})
    assert cache_data(shared)["TTS_CACHE_SCOPE"] == ""
    # The runtime reads it as a setting, and a spec cannot set it through the env.
    assert "cache_scope" in RuntimeSettings.model_fields
    env = {"runtime": {"env": [{"name": "TTS_CACHE_SCOPE", "value": ""}]}}
    assert check(spec_of(cache=on, **env), Policy(), IMAGE)
