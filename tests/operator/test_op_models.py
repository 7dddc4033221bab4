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
    with pytest.raises(ValidationError, match=r"apply to downloaded \(http\(s\)://, hf://\)"):
        TTSServiceSpec.model_validate({"model": {"uri": uri, field: SHA}})
    assert TTSServiceSpec.model_validate({"model": {"uri": uri}}).model.sha256 is None


def test_model_digest_rules_reach_the_crd() -> None:
    from tts_operator.crdgen import crd

    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    model = schema["properties"]["spec"]["properties"]["model"]
    assert model["properties"]["sha256"]["pattern"] == "^[0-9a-fA-F]{64}$"
    assert model["properties"]["configSha256"]["pattern"] == "^[0-9a-fA-F]{64}$"
    rule, token = model["x-kubernetes-validations"]
    assert "self.uri.startsWith('https://')" in rule["rule"]
    assert "self.uri.startsWith('hf://')" in rule["rule"]
    assert "has(self.sha256)" in rule["rule"] and "has(self.configSha256)" in rule["rule"]
    assert token["rule"] == "!has(self.tokenSecretRef) || self.uri.startsWith('hf://')"


# ---------------------------------------------------------------- hf:// URIs, Secret references

REF = {"name": "voices-hf", "key": "token"}


@pytest.mark.parametrize(
    "uri",
    [
        "hf://rhasspy/piper-voices/en/en_US/joe/medium/en_US-joe-medium.onnx",
        "hf://rhasspy/piper-voices@v1.0.0/en/voice.onnx",
        "hf://Org_1/repo.name-2@0123456789abcdef0123456789abcdef01234567/v.onnx",
    ],
)
def test_hf_uris_are_accepted_with_digests_and_a_token(uri: str) -> None:
    model = {"uri": uri, "sha256": SHA, "configSha256": SHA, "tokenSecretRef": REF}
    spec = TTSServiceSpec.model_validate({"model": model})
    assert spec.model.token_secret_ref is not None
    assert (spec.model.token_secret_ref.name, spec.model.token_secret_ref.key) == (
        "voices-hf",
        "token",
    )


@pytest.mark.parametrize(
    "uri",
    [
        "hf://rhasspy/piper-voices",  # no file
        "hf://rhasspy/piper-voices/",
        "hf://rhasspy/piper-voices/../../api/whoami",
        "hf://rhasspy/piper-voices/en/./v.onnx",
        "hf://rhasspy/piper-voices/en//v.onnx",
        "hf://rhasspy/piper-voices@/v.onnx",
        "hf://rhasspy/piper-voices@../v.onnx",
        "hf://rhasspy/piper-voices/v.onnx?download=true",
        "hf://rhasspy/piper-voices/v.onnx#x",
        "hf:///piper-voices/v.onnx",
    ],
)
def test_malformed_hf_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValidationError, match="uri"):
        TTSServiceSpec.model_validate({"model": {"uri": uri}})


def test_the_crd_and_the_fetch_agree_on_hf_uris() -> None:
    """The CRD's pattern (the API server) and the fetch's parser (the pod) are one
    expression: every URI one accepts, the other parses."""
    import re

    from tts_operator.models import MODEL_URI_PATTERN
    from tts_runtime.fetch import HfUri

    for uri in ("hf://o/r/v.onnx", "hf://o/r@main/a/...b/.c/v.onnx", "hf://o/r/..x"):
        assert re.fullmatch(MODEL_URI_PATTERN, uri)
        HfUri.parse(uri)
    for uri in ("hf://o/r/./v.onnx", "hf://o/r/a/.."):
        assert not re.fullmatch(MODEL_URI_PATTERN, uri)
        with pytest.raises(ValueError):
            HfUri.parse(uri)


@pytest.mark.parametrize(
    "uri", ["pvc://voices/en", "https://models.example.com/v.onnx", "file:///srv/voices"]
)
def test_a_token_applies_to_hf_uris_only(uri: str) -> None:
    with pytest.raises(ValidationError, match="tokenSecretRef applies to hf:// URIs only"):
        TTSServiceSpec.model_validate({"model": {"uri": uri, "tokenSecretRef": REF}})


def test_api_keys_come_from_a_secret_reference() -> None:
    spec = TTSServiceSpec.model_validate(
        {"model": URI, "auth": {"apiKeysSecretRef": {"name": "tts-keys", "key": "keys.txt"}}}
    )
    ref = spec.auth.api_keys_secret_ref
    assert ref is not None and (ref.name, ref.key) == ("tts-keys", "keys.txt")
    assert TTSServiceSpec.model_validate({"model": URI}).auth.api_keys_secret_ref is None


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ({"name": "Keys", "key": "k"}, "name"),  # not a DNS-1123 name
        ({"name": "keys-", "key": "k"}, "name"),
        ({"name": "", "key": "k"}, "name"),
        ({"name": "keys", "key": ""}, "key"),
        ({"name": "keys", "key": ".."}, "key"),  # a file name the kubelet refuses
        ({"name": "keys", "key": "..data"}, "key"),
        ({"name": "keys", "key": "a/b"}, "key"),
        ({"name": "keys"}, "key"),
        ({"name": "keys", "key": "k", "namespace": "other"}, "namespace"),  # own namespace only
    ],
)
def test_a_secret_reference_is_a_name_and_a_key(ref: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        TTSServiceSpec.model_validate({"model": URI, "auth": {"apiKeysSecretRef": ref}})
