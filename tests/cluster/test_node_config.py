"""node: the containerd, CNI, kubelet and kube-proxy configs the real node runs with, and the
parsing of `nft list tables` its teardown relies on."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from tts_cluster import network, node

PORTS = node.NodePorts(
    kubelet=10250, kubelet_healthz=10248, proxy_healthz=10256, proxy_metrics=10249
)
PAUSE = "localhost/tts-pause:3.10"


def _cri(workdir: Path) -> dict[str, Any]:
    doc = tomllib.loads(node.containerd_config(workdir, PAUSE))
    assert doc["version"] == 2
    cri: dict[str, Any] = doc["plugins"]["io.containerd.grpc.v1.cri"]
    return cri


def test_containerd_config_is_toml_with_what_this_machine_needs(tmp_path: Path) -> None:
    doc = tomllib.loads(node.containerd_config(tmp_path, PAUSE))
    assert doc["root"] == str(node.CONTAINERD_ROOT)
    assert doc["state"] == str(tmp_path / "containerd-state")
    assert doc["grpc"]["address"] == str(tmp_path / "containerd.sock")
    cri = _cri(tmp_path)
    assert cri["sandbox_image"] == PAUSE
    assert cri["restrict_oom_score_adj"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert cri["containerd"]["default_runtime_name"] == "runc"
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is False
    # RealNode._write_configs puts the conflist in workdir/cni; CNI plugins in CNI_BIN_DIR.
    assert cri["cni"]["bin_dir"] == str(node.CNI_BIN_DIR)
    assert cri["cni"]["conf_dir"] == str(tmp_path / "cni")
    assert cri["cni"]["max_conf_num"] == 1


def test_containerd_config_takes_the_sandbox_image_it_is_given(tmp_path: Path) -> None:
    other = "localhost:5000/pause:other"
    cri = tomllib.loads(node.containerd_config(tmp_path, other))["plugins"]
    assert cri["io.containerd.grpc.v1.cri"]["sandbox_image"] == other


def test_cni_config_is_a_bridge_on_the_node_subnet_without_masquerade(tmp_path: Path) -> None:
    config = node.cni_config(tmp_path)
    json.dumps(config)  # it is written as JSON
    assert config["cniVersion"] == "1.0.0"
    (bridge,) = config["plugins"]
    assert bridge["type"] == "bridge"
    assert bridge["bridge"] == network.NODE_BRIDGE
    assert bridge["ipMasq"] is False
    assert bridge["isGateway"] is True
    ipam = bridge["ipam"]
    assert ipam["type"] == "host-local"
    assert ipam["dataDir"] == str(tmp_path / "cni-ipam")
    ((span,),) = ipam["ranges"]
    subnet = ipaddress.IPv4Network(span["subnet"])
    assert span["subnet"] == network.NODE_SUBNET
    assert span["gateway"] == network.NODE_IP
    start = ipaddress.IPv4Address(span["rangeStart"])
    # Pods get addresses inside the node subnet, past the gateway (the node's own IP).
    assert start in subnet and start > ipaddress.IPv4Address(network.NODE_IP)


def _kubelet(tmp_path: Path, *, tainted: bool) -> dict[str, Any]:
    return node.kubelet_config(
        tmp_path, PORTS, tmp_path / "ca.crt", tmp_path / "containerd.sock", tainted=tainted
    )


def test_kubelet_config_runs_on_cgroup_v1_with_cgroupfs(tmp_path: Path) -> None:
    config = _kubelet(tmp_path, tainted=True)
    assert config["kind"] == "KubeletConfiguration"
    assert config["apiVersion"] == "kubelet.config.k8s.io/v1beta1"
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["containerRuntimeEndpoint"] == f"unix://{tmp_path / 'containerd.sock'}"


def test_kubelet_config_addresses_and_dns(tmp_path: Path) -> None:
    config = _kubelet(tmp_path, tainted=False)
    assert config["address"] == network.NODE_IP
    assert config["port"] == PORTS.kubelet
    assert (config["healthzBindAddress"], config["healthzPort"]) == ("127.0.0.1", 10248)
    assert config["readOnlyPort"] == 0
    assert config["clusterDNS"] == [network.DNS_SERVICE_IP]
    assert config["clusterDomain"] == "cluster.local"
    assert config["resolvConf"] == str(tmp_path / "resolv.conf")
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authentication"]["x509"]["clientCAFile"] == str(tmp_path / "ca.crt")
    # The images cannot be pulled again: image GC must never fire.
    assert config["imageGCHighThresholdPercent"] == 100
    json.dumps(config)


def test_kubelet_registers_the_taint_only_when_tainted(tmp_path: Path) -> None:
    assert _kubelet(tmp_path, tainted=True)["registerWithTaints"] == [node.REAL_NODE_TAINT]
    assert _kubelet(tmp_path, tainted=False)["registerWithTaints"] == []
    assert node.REAL_NODE_TAINT["effect"] == "NoSchedule"


def test_kube_proxy_config_is_nftables_on_the_pod_range_bound_to_loopback() -> None:
    kubeconfig = Path("/w/kubeconfig")
    config = node.kube_proxy_config(kubeconfig, PORTS)
    assert config["kind"] == "KubeProxyConfiguration"
    assert config["mode"] == "nftables"
    assert config["clusterCIDR"] == network.POD_CIDR
    assert config["detectLocalMode"] == "ClusterCIDR"
    assert config["hostnameOverride"] == node.NODE_NAME
    assert config["clientConnection"]["kubeconfig"] == str(kubeconfig)
    assert config["healthzBindAddress"] == f"127.0.0.1:{PORTS.proxy_healthz}"
    assert config["metricsBindAddress"] == f"127.0.0.1:{PORTS.proxy_metrics}"
    assert config["nodePortAddresses"] == [f"{network.NODE_IP}/32"]
    assert config["conntrack"] == {"maxPerCore": 0, "min": 0}


def test_nft_tables_parses_nft_list_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    listing = (
        "table inet tts-cluster-guard\n"
        "table ip kube-proxy\n"
        "table ip6 filter\n"
        "\n"
        "# not a table\n"
        "table bridge\n"
    )
    calls: list[list[str]] = []

    def fake_run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, stdout=listing, stderr="")

    monkeypatch.setattr("tts_cluster.node.subprocess.run", fake_run)
    assert node.nft_tables() == [
        ("inet", "tts-cluster-guard"),
        ("ip", "kube-proxy"),
        ("ip6", "filter"),
    ]
    assert calls == [["nft", "list", "tables"]]


def test_nft_tables_is_empty_when_nft_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 1, stdout="", stderr="permission denied")

    monkeypatch.setattr("tts_cluster.node.subprocess.run", fake_run)
    assert node.nft_tables() == []


def test_missing_host_tools_names_each_missing_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        "tts_cluster.node.shutil.which", lambda tool: None if tool == "runc" else "/bin/x"
    )
    monkeypatch.setattr(node, "CNI_BIN_DIR", tmp_path)
    missing = node.missing_host_tools()
    assert missing[0] == "runc"
    assert len(missing) == 2 and str(tmp_path / "bridge") in missing[1]
    (tmp_path / "bridge").write_text("")
    monkeypatch.setattr("tts_cluster.node.shutil.which", lambda tool: "/bin/x")
    assert node.missing_host_tools() == []
