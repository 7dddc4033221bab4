"""Stub GPUs through the kubelet's own device manager: the real node advertises two
nvidia.com/gpu devices from the stub device plugin; of three one-GPU pods two run, each with
its own device id in NVIDIA_VISIBLE_DEVICES, and the third stays Pending while the
TTSService says InsufficientGPU."""

from __future__ import annotations

from typing import Any

import pytest
import realnode
from kubeapi import E2EKube, condition, tts_body, wait_for
from tts_cluster import GPU_RESOURCE, LocalCluster
from tts_cluster.node import NODE_NAME, RealNode
from ttschildren import instance_selector

pytestmark = pytest.mark.realnode

NAME = "gpus"


def _gpu_pods_on_the_node(kube: E2EKube) -> list[str]:
    pods = kube.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE_NAME}")
    return [
        p.metadata.name
        for p in pods.items
        if p.status.phase in ("Pending", "Running")
        and any(GPU_RESOURCE in ((c.resources.limits or {}) if c.resources else {})
                for c in p.spec.containers)
    ]  # fmt: skip


def test_two_gpus_run_two_pods_and_the_third_waits(
    cluster: LocalCluster,
    kube: E2EKube,
    real_node: RealNode,
    in_cluster_operator: str,
    voice_namespace: str,
) -> None:
    ns = voice_namespace
    node = kube.plain(kube.core.read_node(NODE_NAME))
    assert node["status"]["allocatable"][GPU_RESOURCE] == str(real_node.gpus) == "2"
    # Earlier scenarios' namespaces are deleted without waiting: let their GPUs come back.
    wait_for("no GPU pods left on the real node", lambda: not _gpu_pods_on_the_node(kube), 120)

    kube.create_tts(ns, tts_body(NAME, realnode.spec(replicas=3)))

    def degraded() -> dict[str, Any] | None:
        cond = condition(kube.get_tts(ns, NAME), "Degraded") or {}
        return cond if cond.get("reason") == "InsufficientGPU" else None

    cond = wait_for("InsufficientGPU", degraded, 180)
    assert GPU_RESOURCE in cond["message"]

    def two_running() -> list[dict[str, Any]] | None:
        pods = kube.pods(ns, instance_selector(NAME))
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        pending = [p for p in pods if p["status"].get("phase") == "Pending"]
        return running if len(running) == 2 and len(pending) == 1 else None

    running = wait_for("two pods Running and one Pending", two_running, 180)
    devices = set()
    for pod in running:
        out = realnode.exec_in(
            cluster, ns, pod["metadata"]["name"], "printenv", "NVIDIA_VISIBLE_DEVICES"
        ).stdout.strip()
        assert out.startswith("stub-gpu-"), out
        devices.add(out)
    assert len(devices) == 2  # each pod its own device
