"""custom.metrics.k8s.io from the custom-metrics test adapter, for the HPA scenarios."""

from __future__ import annotations

import json
import urllib.request
from typing import TYPE_CHECKING, Any

from tts_cluster.base import ClusterError

if TYPE_CHECKING:
    from tts_cluster.controlplane import LocalCluster

ADAPTER_SERVICE = "custom-metrics-test-adapter"


def loopback_api(
    service: str, namespace: str, port: int, group: str, versions: dict[str, int]
) -> list[dict[str, Any]]:
    """An aggregated API (`group`, each version with its priority) served on localhost:PORT.

    A loopback server is what no ClusterIP can reach: the APIServices point at an
    ExternalName Service, which the aggregator resolves to localhost:PORT itself.
    """
    external_name = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service, "namespace": namespace},
        "spec": {
            "type": "ExternalName",
            "externalName": "localhost",
            "ports": [{"name": "https", "port": port}],
        },
    }
    api_services = [
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": f"{version}.{group}"},
            "spec": {
                "group": group,
                "version": version,
                "service": {"name": service, "namespace": namespace, "port": port},
                "insecureSkipTLSVerify": True,  # a self-signed cert, one loopback hop away
                "groupPriorityMinimum": 100,
                "versionPriority": priority,
            },
        }
        for version, priority in versions.items()
    ]
    return [external_name, *api_services]


def register(cluster: LocalCluster) -> None:
    """Serve custom.metrics.k8s.io from the test adapter through the aggregation layer."""
    cluster.apply(
        *loopback_api(
            ADAPTER_SERVICE,
            "kube-system",
            cluster.ports.adapter,
            "custom.metrics.k8s.io",
            {"v1beta2": 200, "v1beta1": 100},
        )
    )


def available(cluster: LocalCluster, api_service: str = "v1beta2.custom.metrics.k8s.io") -> bool:
    """Whether the APIService reports Available (raises while it does not exist)."""
    out = cluster.kubectl("get", "apiservice", api_service, "-o", "json")
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
