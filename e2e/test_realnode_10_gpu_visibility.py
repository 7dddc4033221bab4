"""GPUs only by request (issue 22, item 1), on the real node's containerd: the runtime image's
base carries NVIDIA_VISIBLE_DEVICES=all, as nvidia/cuda does, so a pod asking for no GPU
would see every GPU on a node whose container runtime is NVIDIA's. A count-0 TTSService's
pod says `void`; a one-GPU pod gets exactly the stub device the device plugin allocated."""

from __future__ import annotations

from typing import Any

import pytest
import realnode
from kubeapi import E2EKube, tts_body, wait_for
from tts_cluster import LocalCluster
from tts_cluster.node import RealNode
from ttschildren import instance_selector

pytestmark = pytest.mark.realnode


def _running_pod(kube: E2EKube, ns: str, name: str) -> str:
    def running() -> str | None:
        pods = kube.pods(ns, instance_selector(name))
        ready = [p for p in pods if p["status"].get("phase") == "Running"]
        return ready[0]["metadata"]["name"] if ready else None

    return wait_for(f"a Running pod of {name}", running, 240)


def test_a_pod_sees_only_the_gpus_it_asked_for(
    cluster: LocalCluster,
    kube: E2EKube,
    real_node: RealNode,
    in_cluster_operator: str,
    voice_namespace: str,
) -> None:
    ns = voice_namespace
    cpu: dict[str, Any] = realnode.spec(replicas=1, runtime={"gpu": {"count": 0}})
    kube.create_tts(ns, tts_body("no-gpu", cpu))
    kube.create_tts(ns, tts_body("one-gpu", realnode.spec(replicas=1)))

    pod = _running_pod(kube, ns, "no-gpu")
    env = realnode.exec_in(cluster, ns, pod, "printenv", "NVIDIA_VISIBLE_DEVICES")
    assert env.stdout.strip() == "void", env

    pod = _running_pod(kube, ns, "one-gpu")
    env = realnode.exec_in(cluster, ns, pod, "printenv", "NVIDIA_VISIBLE_DEVICES")
    device = env.stdout.strip()
    assert device.startswith("stub-gpu-") and "," not in device, env
