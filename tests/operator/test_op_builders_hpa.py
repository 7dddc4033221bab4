"""The HPA builder: the queue-latency Pods metric and scaling behaviour."""

from __future__ import annotations

import pytest
from builder_helpers import IMAGE, children, kind, spec_of
from tts_operator.builders import build_children
from tts_operator.builders.hpa import latency_quantity
from tts_operator.models import TTSServiceSpec


def test_hpa_scales_on_the_queue_latency_pods_metric() -> None:
    kids = children(spec_of(autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 6}))
    hpa = kind(kids, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "voice",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    [metric] = spec["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "tts_queue_latency_seconds"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "150m"}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert not kids.unwanted or all(r.kind != "HorizontalPodAutoscaler" for r in kids.unwanted)


def test_hpa_behavior_policies(full_spec: TTSServiceSpec) -> None:
    hpa = kind(build_children("amy", "tts", full_spec, IMAGE), "HorizontalPodAutoscaler")
    up = hpa["spec"]["behavior"]["scaleUp"]
    assert up["selectPolicy"] == "Max"
    assert up["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 60}]


@pytest.mark.parametrize(("ms", "quantity"), [(150, "150m"), (1, "1m"), (2500, "2500m")])
def test_latency_quantity(ms: int, quantity: str) -> None:
    assert latency_quantity(ms) == quantity
