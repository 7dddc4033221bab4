"""Scenario 1: a minimal TTSService becomes a GPU Deployment, Service, HPA, PDB and ConfigMap,
its pods run on stub GPU nodes, and its status and printer columns say so."""

from __future__ import annotations

from typing import Any

from kubeapi import E2EKube, condition, ready_pods, tts_body, wait_for
from operatorproc import OperatorProcess
from tts_cluster import GPU_RESOURCE
from ttschildren import instance_selector, owner_uids, read_children, runtime_container

NAME = "voice"


def test_crd_is_installed_by_server_side_apply(kube: E2EKube, crds: None) -> None:
    crd = kube.wait_crd_established("ttsservices.ttsoperator.io")
    applied = [
        m
        for m in crd["metadata"]["managedFields"]
        if m["manager"] == "tts-e2e" and m["operation"] == "Apply"
    ]
    assert applied, crd["metadata"]["managedFields"]
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert {"Ready", "Replicas", "Endpoint", "Age"} <= set(columns)
    assert "tts" in crd["spec"]["names"]["shortNames"]


def test_minimal_ttsservice_becomes_a_ready_gpu_service(
    cluster: Any, kube: E2EKube, running_operator: OperatorProcess, namespace: str
) -> None:
    spec = {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2}}
    created = kube.create_tts(namespace, tts_body(NAME, spec))
    uid = created["metadata"]["uid"]

    tts = kube.wait_tts_ready(namespace, NAME, timeout=120)
    children = read_children(kube, namespace, NAME)
    assert set(children) == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "HorizontalPodAutoscaler",
    }
    for kind, child in children.items():
        assert owner_uids(child) == [uid], kind
        ref = child["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref.get("controller")) == ("TTSService", NAME, True)

    container = runtime_container(children["Deployment"])
    assert container["resources"]["limits"][GPU_RESOURCE] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "startupProbe" in container
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    pod_spec = children["Deployment"]["spec"]["template"]["spec"]
    seccomp = (pod_spec.get("securityContext") or {}).get("seccompProfile") or security.get(
        "seccompProfile"
    )
    assert seccomp == {"type": "RuntimeDefault"}
    assert any(t.get("key") == GPU_RESOURCE for t in pod_spec["tolerations"])

    service = children["Service"]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["sessionAffinity"] == "ClientIP"
    assert service["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 300

    hpa = children["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == NAME
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 2)
    metric = hpa["metrics"][0]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "tts_queue_latency_seconds"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "150m"}
    assert children["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1

    # The pods really went through the scheduler onto stub GPU nodes, and kwok made them Ready.
    pods = ready_pods(kube.pods(namespace, instance_selector(NAME)))
    assert pods
    for pod in pods:
        node = kube.plain(kube.core.read_node(pod["spec"]["nodeName"]))
        assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"

    status = tts["status"]
    assert status["observedGeneration"] == tts["metadata"]["generation"]
    assert status["readyReplicas"] >= 1
    assert status["endpoint"] == f"http://{NAME}.{namespace}.svc.cluster.local:8000"
    ready = condition(tts, "Ready") or {}
    assert ready.get("lastTransitionTime")

    table = cluster.kubectl("get", "tts", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "READY", "REPLICAS", "ENDPOINT"]
    assert "AGE" in table[0]
    row = table[1].split()
    assert row[0] == NAME and row[1] == "True"
    assert status["endpoint"] in row


def test_status_tracks_ready_replicas(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str
) -> None:
    kube.create_tts(namespace, tts_body(NAME, {"replicas": 2}))

    def two_ready() -> dict[str, Any] | None:
        tts = kube.get_tts(namespace, NAME)
        return tts if (tts.get("status") or {}).get("readyReplicas") == 2 else None

    tts = wait_for("readyReplicas=2", two_ready, 120)
    assert tts["status"]["replicas"] == 2
    assert kube.deployment(namespace, NAME)["spec"]["replicas"] == 2
    assert not kube.exists(lambda: kube.hpa(namespace, NAME))
