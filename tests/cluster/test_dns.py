"""dns: CoreDNS answers cluster names on the node's address and never forwards a query off
this machine; kube-dns sits at the kubelet's clusterDNS address with CoreDNS behind it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tts_cluster import dns, network

KUBECONFIG = Path("/w/cluster/kubeconfig")


def _corefile() -> str:
    return dns.corefile(KUBECONFIG, 18081, 18181)


def test_corefile_never_forwards() -> None:
    text = _corefile()
    assert not re.search(r"^\s*(forward|proxy)\b", text, re.MULTILINE), text


def test_corefile_binds_the_node_ip_and_reads_the_cluster_kubeconfig() -> None:
    lines = [line.strip() for line in _corefile().splitlines()]
    assert lines[0] == ".:53 {"
    assert f"bind {network.NODE_IP}" in lines
    assert f"kubeconfig {KUBECONFIG}" in lines
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in lines
    assert "health 127.0.0.1:18081" in lines
    assert "ready 127.0.0.1:18181" in lines


def test_corefile_braces_balance() -> None:
    depth = 0
    for char in _corefile():
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    assert depth == 0


def _objects() -> tuple[dict[str, Any], dict[str, Any]]:
    service, endpoints = dns.service_objects()
    assert (service["kind"], endpoints["kind"]) == ("Service", "EndpointSlice")
    return service, endpoints


def test_kube_dns_service_is_at_the_clusterdns_address_without_selector() -> None:
    service, _ = _objects()
    assert service["metadata"] == {"name": "kube-dns", "namespace": "kube-system"}
    assert service["spec"]["clusterIP"] == network.DNS_SERVICE_IP
    # No selector: its one EndpointSlice is written by hand and nothing may replace it.
    assert "selector" not in service["spec"]
    ports = {(p["name"], p["port"], p["protocol"]) for p in service["spec"]["ports"]}
    assert ports == {("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")}


def test_kube_dns_endpoint_slice_points_at_coredns_on_the_node_ip() -> None:
    service, endpoints = _objects()
    meta = endpoints["metadata"]
    assert meta["namespace"] == service["metadata"]["namespace"]
    assert meta["labels"]["kubernetes.io/service-name"] == service["metadata"]["name"]
    # The endpointslice controller leaves alone slices another manager owns.
    assert meta["labels"]["endpointslice.kubernetes.io/managed-by"] != (
        "endpointslice-controller.k8s.io"
    )
    assert endpoints["apiVersion"] == "discovery.k8s.io/v1"
    assert endpoints["addressType"] == "IPv4"
    assert endpoints["endpoints"] == [
        {"addresses": [network.NODE_IP], "conditions": {"ready": True}}
    ]
    # kube-proxy pairs slice ports with Service ports by name.
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    for port in endpoints["ports"]:
        assert by_name[port["name"]]["protocol"] == port["protocol"]
        assert by_name[port["name"]]["port"] == port["port"]
