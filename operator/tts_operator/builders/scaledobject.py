"""KEDA ScaledObject NAME (keda.sh/v1alpha1): scale the Deployment on queue latency, read
from Prometheus with the same rate-based query the HPA mode's metrics adapter runs."""

from __future__ import annotations

from dataclasses import dataclass

from tts_operator.builders.common import metadata
from tts_operator.builders.hpa import behavior
from tts_operator.kinds import DEPLOYMENT, SCALEDOBJECT, Manifest
from tts_operator.models import TTSServiceSpec


@dataclass(frozen=True)
class PrometheusSource:
    """Where KEDA reads the signal (operator settings, never the spec)."""

    address: str = "http://prometheus-operated.monitoring.svc:9090"
    rate_window: str = "1m"
    polling_interval: int = 15


def queue_latency_query(namespace: str, name: str, window: str) -> str:
    """Mean queue wait of one TTSService's requests over `window`, in seconds.

    Rates, not the raw counters: the value falls back to 0 when load stops (and 0/0 is kept
    at 0 by clamp_min), so the autoscaler can scale down again. The labels are the ones the
    chart's PodMonitor/ServiceMonitor relabelling gives every runtime series.
    """
    matchers = f'namespace="{namespace}",tts_service="{name}"'
    return (
        f"sum(rate(tts_queue_wait_seconds_sum{{{matchers}}}[{window}]))"
        f" / clamp_min(sum(rate(tts_queue_wait_seconds_count{{{matchers}}}[{window}])), 1e-9)"
    )


def seconds(milliseconds: int) -> str:
    """Milliseconds as KEDA's threshold string in seconds: 150 -> "0.15"."""
    return f"{milliseconds / 1000:g}"


def build_scaledobject(
    name: str, namespace: str, spec: TTSServiceSpec, source: PrometheusSource
) -> Manifest:
    auto = spec.autoscaling
    return {
        **SCALEDOBJECT.header(),
        "metadata": metadata(name, namespace),
        "spec": {
            # The Deployment, as in hpa mode: the operator never writes its replicas.
            "scaleTargetRef": {**DEPLOYMENT.header(), "name": name},
            "minReplicaCount": auto.min_replicas,
            "maxReplicaCount": auto.max_replicas,
            "pollingInterval": source.polling_interval,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(auto)}},
            "triggers": [
                {
                    "type": "prometheus",
                    # Value: the HPA KEDA makes compares the service-wide mean wait with the
                    # target (desired = ceil(replicas * value / target)), like the per-pod
                    # AverageValue target of hpa mode.
                    "metricType": "Value",
                    "metadata": {
                        "serverAddress": source.address,
                        "query": queue_latency_query(namespace, name, source.rate_window),
                        "threshold": seconds(auto.target_queue_latency_ms),
                        # No series yet (pods just started, nothing scraped): 0, not an error.
                        "ignoreNullValues": "true",
                    },
                }
            ],
        },
    }
