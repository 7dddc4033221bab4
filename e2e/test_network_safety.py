"""Packets for cluster addresses never leave this machine (cluster/tts_cluster/network.py).

A ClusterIP with no endpoints and a stub pod's IP must both fail here, at once, with an
error from this host's own stack, never by a timeout (a timeout would mean the packet went
somewhere). An address in the Service range that no Service holds is dropped or refused in
this host's output hook."""

from __future__ import annotations

import errno
import socket
import subprocess
from typing import Any

import pytest
from e2e_provider import PROVIDER
from kubeapi import E2EKube, wait_for
from tts_cluster import GPU_RESOURCE, network
from tts_cluster.node import RealNode

pytestmark = pytest.mark.skipif(
    PROVIDER != "local", reason="checks the local cluster's routes (E2E_PROVIDER=local)"
)

# An error the local stack returns at once: blackhole (EINVAL), reject (ECONNREFUSED) or
# an unreachable route. A timeout is not among them.
LOCAL_FAILURES = {errno.EINVAL, errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH}


def _connect_error(address: str, port: int) -> int | str:
    """The errno of a TCP connect, or "timeout" (the packet went somewhere), or "connected"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        try:
            sock.connect((address, port))
        except TimeoutError:
            return "timeout"
        except OSError as error:
            return error.errno or str(error)
    return "connected"


def _route(address: str) -> str:
    result = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True)
    return (result.stdout + result.stderr).strip()


def test_cluster_ranges_route_to_local_devices(cluster: Any) -> None:
    assert f"dev {network.SERVICE_BRIDGE}" in _route("10.96.200.7")
    assert f"dev {network.NODE_BRIDGE}" in _route("10.244.0.77")
    for stub_ip in ("10.244.128.5", "10.244.1.1", "10.244.255.254"):
        assert "blackhole" in _route(stub_ip) or "Invalid argument" in _route(stub_ip)
    guard = subprocess.run(
        ["nft", "list", "table", "inet", network.GUARD_TABLE], capture_output=True, text=True
    )
    assert f'iifname "{network.NODE_BRIDGE}" oifname != "{network.NODE_BRIDGE}" drop' in (
        guard.stdout
    )


def test_a_stub_pod_ip_fails_locally_at_once(kube: E2EKube, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stub"},
        "spec": {
            "nodeSelector": {"type": "kwok"},
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists"}],
            "containers": [{"name": "main", "image": "registry.example/none:0"}],
        },
    }
    kube.create_pod(namespace, pod)
    ip = wait_for(
        "the stub pod's IP",
        lambda: kube.plain(kube.core.read_namespaced_pod("stub", namespace))["status"].get("podIP"),
        60,
    )
    assert ip.startswith("10.244.") and not ip.startswith("10.244.0.")
    assert _connect_error(ip, 8000) in LOCAL_FAILURES


def test_a_cluster_ip_without_endpoints_is_refused_locally(
    real_node: RealNode, kube: E2EKube, namespace: str
) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "nobody-home"},
        "spec": {"selector": {"app": "nobody"}, "ports": [{"port": 8000}]},
    }
    created = kube.core.create_namespaced_service(namespace, service)
    cluster_ip = created.spec.cluster_ip
    # kube-proxy syncs within a second or two; until then the packet dies on tts-svc0.
    wait_for(
        "kube-proxy to reject the endpoint-less ClusterIP",
        lambda: _connect_error(cluster_ip, 8000) == errno.ECONNREFUSED,
        30,
    )


def test_an_unallocated_cluster_ip_stays_on_this_host(real_node: RealNode) -> None:
    """Refused by the guard table, or, once kube-proxy knows the Service CIDR, dropped by its
    own "unallocated ClusterIPs" rule: both in this host's output hook, before any device."""
    outcome = _connect_error("10.96.250.250", 80)
    if outcome == "timeout":
        rules = subprocess.run(
            ["nft", "list", "table", "ip", "kube-proxy"], capture_output=True, text=True
        ).stdout
        assert "Drop traffic to unallocated ClusterIPs" in rules, rules
        assert network.SERVICE_CIDR in rules
    else:
        assert outcome in LOCAL_FAILURES
