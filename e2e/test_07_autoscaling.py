"""Scenario 7: queue-latency autoscaling end to end.

The custom-metrics test adapter serves custom.metrics.k8s.io through the aggregation layer;
the test plays Prometheus + prometheus-adapter by writing each pod's tts_queue_latency_seconds.
The real HPA controller (sync every 2 s here) scales the Deployment up when the latency is
above the 150 ms target and back down below it; the operator leaves the replica count alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_provider import PROVIDER
from kubeapi import E2EKube, tts_body, wait_for
from operatorproc import OperatorProcess
from ttschildren import instance_selector, nudge_configmap

NAME = "elastic"
METRIC = "tts_queue_latency_seconds"

pytestmark = pytest.mark.skipif(
    PROVIDER != "local", reason="needs the custom-metrics test adapter (E2E_PROVIDER=local)"
)


class LatencyFeed:
    """Writes one latency value for every current pod, once a second, like a scrape loop."""

    def __init__(self, cluster: Any, kube: E2EKube, namespace: str) -> None:
        self.cluster, self.kube, self.namespace = cluster, kube, namespace
        self.value = "0"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.errors: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for pod in self.kube.pods(self.namespace, instance_selector(NAME)):
                    name = pod["metadata"]["name"]
                    self.cluster.write_pod_metric(self.namespace, name, METRIC, self.value)
            except Exception as error:  # keep feeding; the test reports the last errors
                self.errors = [*self.errors[-4:], repr(error)]
            self._stop.wait(1.0)


@pytest.fixture
def feed(cluster: Any, kube: E2EKube, namespace: str) -> Iterator[LatencyFeed]:
    wait_for("the custom metrics APIService Available", cluster.metrics_api_available, 60)
    latency = LatencyFeed(cluster, kube, namespace)
    latency.start()
    yield latency
    latency.stop()


def _status(kube: E2EKube, namespace: str) -> dict[str, Any]:
    """The TTSService's status (replica counts the operator copies from the Deployment)."""
    return dict(kube.get_tts(namespace, NAME).get("status") or {})


def _replicas(kube: E2EKube, namespace: str) -> int:
    return int(kube.deployment(namespace, NAME)["spec"]["replicas"])


def test_hpa_scales_on_queue_latency_and_the_operator_leaves_it(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str, feed: LatencyFeed
) -> None:
    spec = {
        "autoscaling": {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 3,
            "targetQueueLatencyMs": 150,
            "scaleUp": {"stabilizationWindowSeconds": 0},
            "scaleDown": {"stabilizationWindowSeconds": 5},
        }
    }
    kube.create_tts(namespace, tts_body(NAME, spec))
    kube.wait_tts_ready(namespace, NAME, timeout=120)
    assert _replicas(kube, namespace) == 1
    hpa = kube.hpa(namespace, NAME)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 5

    # 600 ms against a 150 ms target: the HPA wants 4 pods, capped at maxReplicas.
    feed.value = "600m"

    def scaled_up() -> int | None:
        current = kube.hpa(namespace, NAME).get("status") or {}
        n = _replicas(kube, namespace)
        return n if n == 3 and current.get("desiredReplicas") == 3 else None

    wait_for(f"scale-up to 3 (feed errors: {feed.errors})", scaled_up, 90)
    hpa = kube.hpa(namespace, NAME)
    observed = hpa["status"]["currentMetrics"][0]["pods"]
    assert observed["metric"]["name"] == METRIC
    assert observed["current"]["averageValue"] == "600m"

    # The operator's passes must not put spec.replicas back: make one happen for sure.
    runs = running_operator.reconciles("child")
    nudge_configmap(kube, namespace, NAME)
    wait_for(
        "an operator pass after the scale-up",
        lambda: running_operator.reconciles("child") > runs,
        30,
    )
    assert _replicas(kube, namespace) == 3
    wait_for("3 ready pods", lambda: _status(kube, namespace).get("readyReplicas") == 3, 60)

    # 20 ms: far below target; after the 5 s stabilisation window it goes back to 1.
    feed.value = "20m"
    wait_for(
        f"scale-down to 1 (feed errors: {feed.errors})",
        lambda: _replicas(kube, namespace) == 1,
        90,
    )
    wait_for(
        "status to follow the scale-down",
        lambda: _status(kube, namespace).get("replicas") == 1,
        60,
    )
    assert kube.get_tts(namespace, NAME)["status"]["readyReplicas"] == 1
