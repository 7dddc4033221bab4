"""ConfigMap NAME-runtime: the runtime's TTS_* settings, loaded with envFrom."""

from __future__ import annotations

import json

from tts_operator.builders.cache import cache_env
from tts_operator.builders.common import configmap_name, metadata
from tts_operator.builders.model import ModelDelivery
from tts_operator.builders.secrets import api_keys_file
from tts_operator.kinds import CONFIGMAP, Manifest
from tts_operator.models import RUNTIME_PORT, TTSServiceSpec


def runtime_env(
    spec: TTSServiceSpec, delivery: ModelDelivery, name: str, namespace: str
) -> dict[str, str]:
    """The TTS_* variables the runtime reads (runtime/tts_runtime/settings.py) for the
    TTSService NAMESPACE/NAME."""
    batching = spec.runtime.batching
    env = {
        "TTS_MODEL_PATH": delivery.model_path,
        "TTS_MODEL_NAME": spec.model.name,
        "TTS_PRECISION": spec.model.precision,
        "TTS_DEVICE": spec.runtime.device,
        "TTS_MAX_BATCH_SIZE": str(batching.max_batch_size),
        "TTS_MAX_QUEUE_DELAY_MS": str(batching.max_queue_delay_ms),
        "TTS_MAX_QUEUE_SIZE": str(batching.max_queue_size),
        "TTS_REQUEST_TIMEOUT_S": str(batching.request_timeout_seconds),
        "TTS_MAX_INPUT_CHARS": str(spec.runtime.max_input_chars),
        "TTS_HOST": "0.0.0.0",
        "TTS_PORT": str(RUNTIME_PORT),
        "TTS_DRAIN_TIMEOUT_S": str(spec.runtime.drain_timeout_seconds),
        "TTS_LOG_LEVEL": spec.runtime.log_level,
    }
    if spec.model.voices:
        env["TTS_VOICES"] = json.dumps(spec.model.voices, sort_keys=True)
    keys = api_keys_file(spec)
    if keys:
        env["TTS_API_KEYS_FILE"] = keys.path
    env.update(cache_env(spec, name, namespace))
    return env


def build_configmap(
    name: str, namespace: str, spec: TTSServiceSpec, delivery: ModelDelivery
) -> Manifest:
    return {
        **CONFIGMAP.header(),
        "metadata": metadata(name, namespace, configmap_name(name)),
        "data": runtime_env(spec, delivery, name, namespace),
    }
