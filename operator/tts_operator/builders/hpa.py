"""HorizontalPodAutoscaler NAME (autoscaling/v2): scale on per-pod queue latency."""

from __future__ import annotations

from tts_operator.builders.common import metadata
from tts_operator.kinds import DEPLOYMENT, HPA, Manifest
from tts_operator.models import Autoscaling, ScalingRules, TTSServiceSpec


def latency_quantity(milliseconds: int) -> str:
    """Seconds as a Kubernetes quantity, exactly: 150 ms -> "150m" (0.150)."""
    return f"{milliseconds}m"


def _rules(rules: ScalingRules) -> Manifest:
    out: Manifest = {"stabilizationWindowSeconds": rules.stabilization_window_seconds}
    if rules.select_policy:
        out["selectPolicy"] = rules.select_policy
    if rules.policies:
        out["policies"] = [p.model_dump(by_alias=True) for p in rules.policies]
    return out


def behavior(auto: Autoscaling) -> Manifest:
    """The HPA `behavior` (also what KEDA passes on to the HPA it makes)."""
    return {"scaleUp": _rules(auto.scale_up), "scaleDown": _rules(auto.scale_down)}


def build_hpa(name: str, namespace: str, spec: TTSServiceSpec) -> Manifest:
    auto = spec.autoscaling
    return {
        **HPA.header(),
        "metadata": metadata(name, namespace),
        "spec": {
            "scaleTargetRef": {**DEPLOYMENT.header(), "name": name},
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": auto.metric_name},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": latency_quantity(auto.target_queue_latency_ms),
                        },
                    },
                }
            ],
            "behavior": behavior(auto),
        },
    }
