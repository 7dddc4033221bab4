"""custom.metrics.k8s.io from the custom-metrics test adapter, for the HPA scenarios."""

from __future__ import annotations

import json
import urllib.request
from typing import TYPE_CHECKING

from tts_cluster.base import ClusterError

if TYPE_CHECKING:
    from tts_cluster.controlplane import LocalCluster

ADAPTER_SERVICE = "custom-metrics-test-adapter"


def register(cluster: LocalCluster) -> None:
    """Serve custom.metrics.k8s.io from the test adapter through the aggregation layer.

    The adapter listens on loopback only, which no ClusterIP can reach: the APIService
    points at an ExternalName Service, which the aggregator resolves to localhost:PORT itself.
    """
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": ADAPTER_SERVICE, "namespace": "kube-system"},
        "spec": {
            "type": "ExternalName",
            "externalName": "localhost",
            "ports": [{"name": "https", "port": cluster.ports.adapter}],
        },
    }
    api_services = [
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": f"{version}.custom.metrics.k8s.io"},
            "spec": {
                "group": "custom.metrics.k8s.io",
                "version": version,
                "service": {
                    "name": ADAPTER_SERVICE,
                    "namespace": "kube-system",
                    "port": cluster.ports.adapter,
                },
                "insecureSkipTLSVerify": True,  # the adapter serves a self-signed cert
                "groupPriorityMinimum": 100,
                "versionPriority": priority,
            },
        }
        for version, priority in (("v1beta2", 200), ("v1beta1", 100))
    ]
    cluster.apply(service, *api_services)


def available(cluster: LocalCluster) -> bool:
    out = cluster.kubectl("get", "apiservice", "v1beta2.custom.metrics.k8s.io", "-o", "json")
    conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


def write_pod_metric(
    cluster: LocalCluster, namespace: str, pod: str, metric: str, value: str
) -> None:
    """Set one pod's custom metric in the test adapter (a resource.Quantity string)."""
    url = f"{cluster.adapter_write_url}/namespaces/{namespace}/pods/{pod}/{metric}"
    request = urllib.request.Request(
        url,
        data=json.dumps(value).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        if response.status >= 300:
            raise ClusterError(f"writing {metric} for {pod} failed: HTTP {response.status}")
