"""A Secret key a spec refers to (models.SecretKeyRef), as a file in the pod: one secret
volume per reference, mounted read-only as a directory (never with subPath, so an updated
Secret reaches running pods), its path handed to the program by a `*_FILE` setting or flag.
The operator's policy decides beforehand which Secrets a spec may name
(policy.allowedSecretNames)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from tts_operator.kinds import Manifest
from tts_operator.models import SecretKeyRef, TTSServiceSpec

SECRETS_ROOT = "/var/run/secrets/ttsoperator.io"
# Readable by the file's owner (root) and the pod's fsGroup (the runtime's user), no one else.
SECRET_FILE_MODE = 0o440
# The runtime's API keys (spec.auth.apiKeysSecretRef, TTS_API_KEYS_FILE).
API_KEYS_VOLUME = "api-keys"
API_KEYS_FILE = "keys"
# The response cache's Redis URL (spec.cache.redis.urlSecretRef, TTS_CACHE_REDIS_URL_FILE).
CACHE_REDIS_VOLUME = "cache-redis"
CACHE_REDIS_FILE = "url"


@dataclass(frozen=True)
class SecretFile:
    """One Secret key as a file: the pod's volume, a container's mount, the file's path."""

    volume: Manifest
    mount: Manifest
    path: str


def secret_file(volume: str, ref: SecretKeyRef, file_name: str) -> SecretFile:
    """`ref`'s key as SECRETS_ROOT/VOLUME/FILE_NAME through a secret volume named `volume`."""
    directory = posixpath.join(SECRETS_ROOT, volume)
    return SecretFile(
        volume={
            "name": volume,
            "secret": {
                "secretName": ref.name,
                "items": [{"key": ref.key, "path": file_name}],
                "defaultMode": SECRET_FILE_MODE,
            },
        },
        mount={"name": volume, "mountPath": directory, "readOnly": True},
        path=posixpath.join(directory, file_name),
    )


def api_keys_file(spec: TTSServiceSpec) -> SecretFile | None:
    """The runtime's API key file (spec.auth.apiKeysSecretRef); None when no key is needed."""
    ref = spec.auth.api_keys_secret_ref
    return secret_file(API_KEYS_VOLUME, ref, API_KEYS_FILE) if ref else None


def cache_redis_url_file(spec: TTSServiceSpec) -> SecretFile | None:
    """The response cache's Redis URL file (spec.cache.redis.urlSecretRef); None when the
    cache is off or has no Redis."""
    cache = spec.cache
    if not cache.enabled or cache.redis is None:
        return None
    return secret_file(CACHE_REDIS_VOLUME, cache.redis.url_secret_ref, CACHE_REDIS_FILE)


def runtime_secret_files(spec: TTSServiceSpec) -> list[SecretFile]:
    """Every Secret file the runtime container reads (its volumes and mounts)."""
    files = (api_keys_file(spec), cache_redis_url_file(spec))
    return [f for f in files if f is not None]
