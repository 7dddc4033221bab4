"""The local control plane itself: version, stub GPU nodes, scheduling, metrics API, teardown."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from e2e_provider import PROVIDER
from kubeapi import E2EKube, condition, wait_for
from tts_cluster import GPU_RESOURCE, Binaries, LocalCluster, child_pids

local_only = pytest.mark.skipif(
    PROVIDER != "local", reason="checks the Go-module-built control plane (E2E_PROVIDER=local)"
)


def _gpu_pod(name: str, tolerate: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": "registry.example/none:0",
                "resources": {"limits": {GPU_RESOURCE: "1"}},
            }
        ]
    }
    if tolerate:
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


@local_only
def test_api_server_reports_its_real_version(cluster: LocalCluster) -> None:
    status, body = cluster.api_get("/version")
    assert status == 200
    version = json.loads(body)
    assert version["gitVersion"] == cluster.binaries.k8s_version
    assert version["major"] == "1"
    assert cluster.binaries.k8s_version.startswith(f"v1.{version['minor']}.")


def test_stub_gpu_nodes_are_ready_tainted_and_advertise_gpus(kube: E2EKube) -> None:
    listed = kube.core.list_node(label_selector="nvidia.com/gpu.present,type=kwok").items
    nodes = [kube.plain(n) for n in listed]
    assert nodes
    for node in nodes:
        assert (condition(node, "Ready") or {}).get("status") == "True", node["metadata"]["name"]
        assert int(node["status"]["allocatable"][GPU_RESOURCE]) >= 1
        assert int(node["status"]["capacity"][GPU_RESOURCE]) >= 1
        taints = node["spec"].get("taints") or []
        assert {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"} in taints


def test_gpu_pod_is_scheduled_onto_a_stub_node_and_becomes_ready(
    kube: E2EKube, namespace: str
) -> None:
    kube.create_pod(namespace, _gpu_pod("gpu-pod", tolerate=True))
    kube.create_pod(namespace, _gpu_pod("no-toleration", tolerate=False))

    def ready() -> dict[str, Any] | None:
        pod = kube.plain(kube.core.read_namespaced_pod("gpu-pod", namespace))
        ok = (
            pod["status"].get("phase") == "Running"
            and (condition(pod, "Ready") or {}).get("status") == "True"
        )
        return pod if ok else None

    pod = wait_for("gpu-pod Running and Ready", ready, 60)
    node = kube.plain(kube.core.read_node(pod["spec"]["nodeName"]))
    assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"

    # The GPU taint keeps pods that do not tolerate it off the GPU nodes.
    def unschedulable() -> dict[str, Any] | None:
        other = kube.plain(kube.core.read_namespaced_pod("no-toleration", namespace))
        cond = condition(other, "PodScheduled") or {}
        return cond if cond.get("reason") == "Unschedulable" else None

    cond = wait_for("no-toleration Unschedulable", unschedulable, 60)
    assert "untolerated taint" in cond["message"]


@local_only
def test_custom_metrics_api_serves_what_the_test_writes(
    cluster: LocalCluster, kube: E2EKube, namespace: str
) -> None:
    wait_for("custom.metrics.k8s.io APIService Available", cluster.metrics_api_available, 60)
    kube.create_pod(namespace, _gpu_pod("metered", tolerate=True))
    cluster.write_pod_metric(namespace, "metered", "tts_queue_latency_seconds", "250m")

    path = (
        f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/pods/metered/"
        "tts_queue_latency_seconds"
    )

    def read() -> dict[str, Any] | None:
        status, body = cluster.api_get(path)
        return json.loads(body) if status == 200 else None

    value = wait_for("the metric through the aggregation layer", read, 30)
    assert value["kind"] == "MetricValueList"
    assert value["items"][0]["describedObject"]["name"] == "metered"
    assert value["items"][0]["value"] == "250m"


@local_only
def test_teardown_leaves_no_processes(binaries: Binaries, tmp_path: Path) -> None:
    """A second, node-less cluster: start it, stop it, and look for anything left behind."""
    second = LocalCluster(binaries, tmp_path / "second")
    second.start(gpu_nodes=())
    pids = second.pids()
    assert len(pids) == len(second.components) == 6
    assert set(pids) <= set(child_pids(os.getpid()))

    second.stop()

    leftovers = set(pids) & set(child_pids(os.getpid()))
    assert not leftovers
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True
