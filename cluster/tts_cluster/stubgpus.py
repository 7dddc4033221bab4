"""Stub GPU nodes: Node objects that kwok keeps Ready, with nvidia.com/gpu capacity.

They let the scheduler, the GPU accounting and the scale tests run at any size without a
kubelet; their pods never run a container. The real node (node.py) gets its GPUs from the
kubelet's own device manager instead (the stub device plugin).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tts_cluster.base import wait_until

if TYPE_CHECKING:
    from tts_cluster.controlplane import LocalCluster

GPU_RESOURCE = "nvidia.com/gpu"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def add_gpu_node(cluster: LocalCluster, name: str, gpus: int = 2) -> None:
    """A kwok-managed Node that looks like a GPU node to the scheduler."""
    resources = {"cpu": "32", "memory": "128Gi", "pods": "110", GPU_RESOURCE: str(gpus)}
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "g5.2xlarge",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": "NVIDIA-A10G",
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.memory": "23028",
                "type": "kwok",
            },
        },
        "spec": {"taints": [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]},
    }
    cluster.apply(node)
    # Capacity lives in status, which create ignores: set it through the status
    # subresource, as a device plugin's kubelet would report it.
    status = {"status": {"capacity": resources, "allocatable": resources}}
    cluster.kubectl(
        "patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
    wait_until(f"node {name} Ready", lambda: node_ready(cluster, name), 60)


def node_ready(cluster: LocalCluster, name: str) -> bool:
    out = cluster.kubectl("get", "node", name, "-o", "json").stdout
    node = json.loads(out)
    conditions = node.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    allocatable = node.get("status", {}).get("allocatable", {})
    return ready and GPU_RESOURCE in allocatable


def delete_node(cluster: LocalCluster, name: str) -> None:
    cluster.kubectl("delete", "node", name, "--ignore-not-found", "--wait=false")
