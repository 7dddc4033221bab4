"""The KEDA ScaledObject builder (autoscaling.provider keda): the Prometheus trigger on queue
latency, limits and behaviour from the spec, the address from the operator's settings."""

from __future__ import annotations

from typing import Any

import pytest
from builder_helpers import IMAGE, children, kind, spec_of
from tts_operator.builders import build_children
from tts_operator.builders.scaledobject import PrometheusSource, queue_latency_query, seconds
from tts_operator.settings import OperatorSettings

KEDA: dict[str, Any] = {"enabled": True, "provider": "keda", "minReplicas": 1, "maxReplicas": 4}
SOURCE = PrometheusSource("http://127.0.0.1:9091", "30s", 5)


def scaledobject(**autoscaling: Any) -> dict[str, Any]:
    kids = build_children(
        "voice", "speech", spec_of(autoscaling={**KEDA, **autoscaling}), IMAGE, None, SOURCE
    )
    return kind(kids, "ScaledObject")


def test_scaledobject_targets_the_deployment_with_the_spec_limits() -> None:
    so = scaledobject(minReplicas=2, maxReplicas=6)
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["metadata"]["name"] == "voice" and so["metadata"]["namespace"] == "speech"
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "voice",
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 6)
    assert spec["pollingInterval"] == 5


def test_trigger_is_the_rate_based_queue_latency_query_of_this_service() -> None:
    [trigger] = scaledobject(targetQueueLatencyMs=250)["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "Value"
    meta = trigger["metadata"]
    assert meta["serverAddress"] == "http://127.0.0.1:9091"
    assert meta["threshold"] == "0.25"
    query = meta["query"]
    assert query == queue_latency_query("speech", "voice", "30s")
    # Rates of the histogram's sum and count for exactly this TTSService: never the raw
    # counters (they only grow, so the autoscaler could never scale down).
    assert query.count('namespace="speech",tts_service="voice"') == 2
    assert "rate(tts_queue_wait_seconds_sum{" in query
    assert "rate(tts_queue_wait_seconds_count{" in query
    assert "[30s]" in query and "clamp_min(" in query


def test_scale_down_window_and_policies_become_the_hpa_behavior() -> None:
    so = scaledobject(
        scaleDown={"stabilizationWindowSeconds": 20},
        scaleUp={"policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}]},
    )
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 20
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 15}]


def test_one_autoscaler_per_provider_and_the_other_is_pruned() -> None:
    keda = children(spec_of(autoscaling=KEDA))
    assert [m["kind"] for m in keda.desired].count("HorizontalPodAutoscaler") == 0
    assert "HorizontalPodAutoscaler" in [r.kind for r in keda.unwanted]
    hpa = children(spec_of(autoscaling={**KEDA, "provider": "hpa"}))
    assert "ScaledObject" not in [m["kind"] for m in hpa.desired]
    assert "ScaledObject" in [r.kind for r in hpa.unwanted]
    off = children(spec_of())
    assert {"ScaledObject", "HorizontalPodAutoscaler"} <= {r.kind for r in off.unwanted}


def test_the_deployment_leaves_replicas_to_keda() -> None:
    deployment = kind(children(spec_of(autoscaling=KEDA)), "Deployment")
    assert "replicas" not in deployment["spec"]


def test_default_provider_is_hpa() -> None:
    kids = children(spec_of(autoscaling={"enabled": True}))
    assert kind(kids, "HorizontalPodAutoscaler")
    assert "ScaledObject" not in [m["kind"] for m in kids.desired]


@pytest.mark.parametrize(("ms", "text"), [(150, "0.15"), (1, "0.001"), (2000, "2")])
def test_threshold_in_seconds(ms: int, text: str) -> None:
    assert seconds(ms) == text


def test_operator_settings_feed_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_OPERATOR_KEDA_PROMETHEUS_ADDRESS", "http://prom.monitoring:9090")
    monkeypatch.setenv("TTS_OPERATOR_KEDA_RATE_WINDOW", "2m")
    monkeypatch.setenv("TTS_OPERATOR_KEDA_POLLING_INTERVAL", "10")
    assert OperatorSettings().prometheus_source == PrometheusSource(
        "http://prom.monitoring:9090", "2m", 10
    )


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("TTS_OPERATOR_KEDA_PROMETHEUS_ADDRESS", "prom:9090"),
        ("TTS_OPERATOR_KEDA_RATE_WINDOW", "1 minute"),
        ("TTS_OPERATOR_KEDA_POLLING_INTERVAL", "0"),
    ],
)
def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, env: str, value: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError, match=env.removeprefix("TTS_OPERATOR_").lower()):
        OperatorSettings()
