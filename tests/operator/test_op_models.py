"""The TTSService models: defaults, ranges and the cross-field (CEL-mirrored) rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from tts_operator.models import TTSServiceSpec

URI = {"uri": "pvc://voices/en"}


def test_defaults_fit_a_single_gpu_voice() -> None:
    spec = TTSServiceSpec.model_validate({"model": URI})
    assert spec.model.precision == "fp16"
    assert spec.runtime.gpu.count == 1
    assert spec.runtime.gpu.resource_name == "nvidia.com/gpu"
    assert spec.autoscaling.enabled is False
    assert spec.autoscaling.target_queue_latency_ms == 150
    assert spec.autoscaling.metric_name == "tts_queue_latency_seconds"
    assert spec.autoscaling.scale_down.stabilization_window_seconds == 300
    assert spec.autoscaling.scale_up.stabilization_window_seconds == 0
    assert spec.service.session_affinity == "ClientIP"
    assert spec.service.session_affinity_timeout_seconds == 300
    assert (spec.rollout.max_surge, spec.rollout.max_unavailable) == (1, 0)
    assert spec.replicas is None and spec.effective_replicas == 1


def test_camel_case_aliases_round_trip() -> None:
    spec = TTSServiceSpec.model_validate(
        {"model": URI, "runtime": {"batching": {"maxBatchSize": 4}}}
    )
    assert spec.runtime.batching.max_batch_size == 4
    dumped = spec.model_dump(by_alias=True)
    assert dumped["runtime"]["batching"]["maxBatchSize"] == 4


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"replicas": 2, "autoscaling": {"enabled": True}},
            "replicas and autoscaling.enabled are mutually exclusive",
        ),
        (
            {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}},
            "minReplicas must be <= autoscaling.maxReplicas",
        ),
        (
            {"runtime": {"env": [{"name": "A", "value": "1", "valueFrom": {"x": {}}}]}},
            "set value or valueFrom, not both",
        ),
    ],
)
def test_cross_field_rules_reject(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TTSServiceSpec.model_validate({"model": URI, **spec})


def test_replicas_allowed_when_autoscaling_off() -> None:
    spec = TTSServiceSpec.model_validate({"model": URI, "replicas": 3})
    assert spec.effective_replicas == 3


@pytest.mark.parametrize(
    "uri",
    ["pvc://claim", "pvc://claim/a/b", "https://h/x.onnx", "http://h:8080/x.onnx", "file:///d/x"],
)
def test_supported_uris(uri: str) -> None:
    assert TTSServiceSpec.model_validate({"model": {"uri": uri}}).model.uri == uri


@pytest.mark.parametrize("uri", ["s3://b/x", "pvc://", "pvc://Bad_Claim/x", "file://rel", "x"])
def test_unsupported_uris(uri: str) -> None:
    with pytest.raises(ValidationError):
        TTSServiceSpec.model_validate({"model": {"uri": uri}})


@pytest.mark.parametrize(
    ("value", "ok"), [(1, True), ("25%", True), ("100%", True), (-1, False), ("1x", False)]
)
def test_int_or_percent(value: object, ok: bool) -> None:
    data = {"model": URI, "disruption": {"maxUnavailable": value}}
    if ok:
        TTSServiceSpec.model_validate(data)
    else:
        with pytest.raises(ValidationError):
            TTSServiceSpec.model_validate(data)


@pytest.mark.parametrize(("seconds", "ok"), [(0, True), (300, True), (-1, False), (301, False)])
def test_pre_stop_sleep_range(seconds: int, ok: bool) -> None:
    doc = {"model": URI, "runtime": {"preStopSleepSeconds": seconds}}
    if ok:
        assert TTSServiceSpec.model_validate(doc).runtime.pre_stop_sleep_seconds == seconds
    else:
        with pytest.raises(ValidationError, match="preStopSleepSeconds"):
            TTSServiceSpec.model_validate(doc)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        TTSServiceSpec.model_validate({"model": URI, "replica": 2})


# ---------------------------------------------------------------- model digests

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.mark.parametrize("field", ["sha256", "configSha256"])
def test_model_digests_are_64_hex_digits(field: str) -> None:
    https = {"uri": "https://models.example.com/v/en.onnx"}
    for good in (SHA, SHA.upper()):
        spec = TTSServiceSpec.model_validate({"model": {**https, field: good}})
        assert good in (spec.model.sha256, spec.model.config_sha256)
    for bad in (SHA[:-1], SHA + "0", "g" * 64, f"sha256:{SHA}", ""):
        with pytest.raises(ValidationError, match=field):
            TTSServiceSpec.model_validate({"model": {**https, field: bad}})


@pytest.mark.parametrize("uri", ["pvc://voices/en", "file:///srv/voices"])
@pytest.mark.parametrize("field", ["sha256", "configSha256"])
def test_model_digests_apply_to_downloads_only(uri: str, field: str) -> None:
    """Nothing verifies a mounted model: a digest there would promise what is not checked."""
    with pytest.raises(ValidationError, match="apply to http\\(s\\) URIs only"):
        TTSServiceSpec.model_validate({"model": {"uri": uri, field: SHA}})
    assert TTSServiceSpec.model_validate({"model": {"uri": uri}}).model.sha256 is None


def test_model_digest_rules_reach_the_crd() -> None:
    from tts_operator.crdgen import crd

    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    model = schema["properties"]["spec"]["properties"]["model"]
    assert model["properties"]["sha256"]["pattern"] == "^[0-9a-fA-F]{64}$"
    assert model["properties"]["configSha256"]["pattern"] == "^[0-9a-fA-F]{64}$"
    [rule] = model["x-kubernetes-validations"]
    assert "self.uri.startsWith('https://')" in rule["rule"]
    assert "has(self.sha256)" in rule["rule"] and "has(self.configSha256)" in rule["rule"]
