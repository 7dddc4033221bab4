"""Scenario 2: more replicas than free GPUs leaves pods Pending/Unschedulable, the TTSService
says Degraded/InsufficientGPU naming the resource, and a new GPU node heals it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_provider import PROVIDER
from kubeapi import E2EKube, condition, tts_body, wait_for
from operatorproc import OperatorProcess
from tts_cluster import GPU_RESOURCE
from ttschildren import instance_selector

NAME = "scarce"

pytestmark = pytest.mark.skipif(
    PROVIDER != "local", reason="adds stub GPU nodes on the fly (E2E_PROVIDER=local)"
)


@pytest.fixture
def gpu_pool(cluster: Any, kube: E2EKube, namespace: str) -> Iterator[tuple[str, list[str]]]:
    """A node pool only this test schedules onto (a label its TTSService selects), so GPUs
    held by other tests' pods do not change the arithmetic. Yields (label value, nodes)."""
    pool = namespace[-20:]
    nodes: list[str] = []
    yield pool, nodes
    # Pods first (while kwok still manages their nodes), then the nodes.
    if kube.tts_exists(namespace, NAME):
        kube.delete_tts(namespace, NAME)
    wait_for(
        "the pool's pods to go",
        lambda: not kube.pods(namespace, instance_selector(NAME)),
        60,
    )
    for node in nodes:
        cluster.delete_node(node)


def _add_pool_node(cluster: Any, pool: str, nodes: list[str]) -> None:
    name = f"pool-{pool}-{len(nodes) + 1}"
    cluster.add_gpu_node(name, gpus=1)
    cluster.kubectl("label", "node", name, f"tts-e2e/pool={pool}", "--overwrite")
    nodes.append(name)


def test_missing_gpus_degrade_then_a_new_node_heals(
    cluster: Any,
    kube: E2EKube,
    running_operator: OperatorProcess,
    namespace: str,
    gpu_pool: tuple[str, list[str]],
) -> None:
    pool, nodes = gpu_pool
    _add_pool_node(cluster, pool, nodes)  # one GPU for two single-GPU replicas
    spec = {"replicas": 2, "scheduling": {"nodeSelector": {"tts-e2e/pool": pool}}}
    kube.create_tts(namespace, tts_body(NAME, spec))

    def unschedulable_pods() -> list[dict[str, Any]] | None:
        pending = [
            p
            for p in kube.pods(namespace, instance_selector(NAME))
            if (condition(p, "PodScheduled") or {}).get("reason") == "Unschedulable"
        ]
        return pending or None

    pending = wait_for("a pod Pending as Unschedulable", unschedulable_pods, 60)
    assert len(pending) == 1
    assert pending[0]["status"]["phase"] == "Pending"
    assert (
        f"Insufficient {GPU_RESOURCE}" in (condition(pending[0], "PodScheduled") or {})["message"]
    )

    degraded = kube.wait_tts_condition(namespace, NAME, "Degraded", "True", timeout=60)
    cond = condition(degraded, "Degraded") or {}
    assert cond["reason"] == "InsufficientGPU"
    assert GPU_RESOURCE in cond["message"]
    assert degraded["status"].get("readyReplicas", 0) <= 1

    _add_pool_node(cluster, pool, nodes)

    def healed() -> dict[str, Any] | None:
        tts = kube.get_tts(namespace, NAME)
        ok = (
            (tts.get("status") or {}).get("readyReplicas") == 2
            and (condition(tts, "Degraded") or {}).get("status") == "False"
            and (condition(tts, "Ready") or {}).get("status") == "True"
        )
        return tts if ok else None

    tts = wait_for("readyReplicas=2, Degraded=False, Ready=True", healed, 90)
    assert tts["status"]["observedGeneration"] == tts["metadata"]["generation"]
    scheduled = {p["spec"]["nodeName"] for p in kube.pods(namespace, instance_selector(NAME))}
    assert scheduled == set(nodes)
