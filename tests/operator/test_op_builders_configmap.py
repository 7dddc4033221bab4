"""The runtime ConfigMap: TTS_* settings loaded with envFrom."""

from __future__ import annotations

from builder_helpers import children, kind, spec_of


def test_runtime_settings_go_to_the_configmap_loaded_by_envfrom() -> None:
    spec = spec_of(model={"uri": "pvc://voices/en", "voices": {"amy": 3}, "precision": "fp32"})
    kids = children(spec)
    data = kind(kids, "ConfigMap")["data"]
    assert data["TTS_MODEL_PATH"] == "/models/en"
    assert data["TTS_PRECISION"] == "fp32" and data["TTS_VOICES"] == '{"amy": 3}'
    assert data["TTS_MAX_BATCH_SIZE"] == "8" and data["TTS_PORT"] == "8000"
    assert all(isinstance(v, str) for v in data.values())
    c = kind(kids, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"] == [{"configMapRef": {"name": "voice-runtime"}}]
