"""The cluster DNS: CoreDNS (built from its Go module) on the node's address, behind kube-dns.

It runs as a host process, like the rest of the control plane, listening on NODE_IP:53; the
`kube-dns` Service (network.DNS_SERVICE_IP, the kubelet's clusterDNS) has no selector and one
EndpointSlice pointing there, so pods resolve `NAME.NAMESPACE.svc.cluster.local` through
kube-proxy like anywhere else. There is no `forward`: a name outside the cluster gets an
error, never a query sent off this machine.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tts_cluster import network
from tts_cluster.base import LOOPBACK, free_port
from tts_cluster.processes import Component

if TYPE_CHECKING:
    from tts_cluster.controlplane import LocalCluster

CLUSTER_DOMAIN = "cluster.local"


def corefile(kubeconfig: Path, health_port: int, ready_port: int) -> str:
    return (
        f".:53 {{\n"
        f"    bind {network.NODE_IP}\n"
        "    errors\n"
        f"    health {LOOPBACK}:{health_port}\n"
        f"    ready {LOOPBACK}:{ready_port}\n"
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
        f"        kubeconfig {kubeconfig}\n"
        "        pods insecure\n"
        "        fallthrough in-addr.arpa ip6.arpa\n"
        "        ttl 5\n"
        "    }\n"
        "    cache 5\n"
        "    loadbalance\n"
        "}\n"
    )


def service_objects() -> list[dict[str, Any]]:
    """kube-dns at the kubelet's clusterDNS address, with CoreDNS's host address as endpoint."""
    ports = [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    ]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system"},
        "spec": {"clusterIP": network.DNS_SERVICE_IP, "ports": ports},
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kube-dns-coredns",
            "namespace": "kube-system",
            "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": "tts-cluster",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [network.NODE_IP], "conditions": {"ready": True}}],
        "ports": ports,
    }
    return [service, endpoints]


class ClusterDns:
    """Writes the Corefile, defines the CoreDNS component and publishes kube-dns."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.health_port = free_port()
        self.ready_port = free_port()

    def start(self) -> None:
        path = self.cluster.workdir / "Corefile"
        path.write_text(corefile(self.cluster.kubeconfig, self.health_port, self.ready_port))
        component = Component(
            "coredns",
            [str(self.cluster.binaries.coredns), "-conf", str(path)],
            self.cluster.workdir / "logs" / "coredns.log",
            detach=self.cluster.detach,
        )
        self.cluster.components["coredns"] = component
        component.start()
        self.cluster.apply(*service_objects())

    def ready(self) -> bool:
        url = f"http://{LOOPBACK}:{self.ready_port}/ready"
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
