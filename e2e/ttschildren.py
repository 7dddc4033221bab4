"""What a TTSService owns, read back from the API server."""

from __future__ import annotations

import time
from typing import Any

from kubeapi import E2EKube
from tts_operator.drift import APPLIED_HASH

COMPONENT_LABELS = {
    "app.kubernetes.io/name": "tts-runtime",
    "app.kubernetes.io/managed-by": "tts-operator",
}


def instance_selector(name: str) -> str:
    return f"app.kubernetes.io/name=tts-runtime,app.kubernetes.io/instance={name}"


def read_children(kube: E2EKube, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    """Deployment, Service, PDB and ConfigMap by their agreed names; HPA when it exists."""
    children = {
        "Deployment": kube.deployment(namespace, name),
        "Service": kube.service(namespace, name),
        "PodDisruptionBudget": kube.pdb(namespace, name),
        "ConfigMap": kube.configmap(namespace, f"{name}-runtime"),
    }
    if kube.exists(lambda: kube.hpa(namespace, name)):
        children["HorizontalPodAutoscaler"] = kube.hpa(namespace, name)
    return children


def labelled_children(kube: E2EKube, namespace: str, name: str) -> dict[str, list[str]]:
    """Every child carrying this instance's labels, by kind (duplicates show up here)."""
    selector = instance_selector(name)
    lists = {
        "Deployment": kube.apps.list_namespaced_deployment(namespace, label_selector=selector),
        "Service": kube.core.list_namespaced_service(namespace, label_selector=selector),
        "ConfigMap": kube.core.list_namespaced_config_map(namespace, label_selector=selector),
        "PodDisruptionBudget": kube.policy.list_namespaced_pod_disruption_budget(
            namespace, label_selector=selector
        ),
        "HorizontalPodAutoscaler": (
            kube.autoscaling.list_namespaced_horizontal_pod_autoscaler(
                namespace, label_selector=selector
            )
        ),
    }
    return {kind: [item.metadata.name for item in found.items] for kind, found in lists.items()}


def owner_uids(obj: dict[str, Any]) -> list[str]:
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or []]


def runtime_container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The pod template's first (and only) container: the runtime."""
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def nudge_configmap(kube: E2EKube, namespace: str, name: str) -> str:
    """Change the operator's applied-hash annotation on the runtime ConfigMap by hand: a
    child MODIFIED event that no longer matches what the operator applies, so it reconciles
    the owner once more, and that pass's one write puts the annotation back (an annotation
    of someone else's would change nothing of the operator's: no pass; no controller reacts
    to a ConfigMap's annotations, unlike a Deployment's, whose generation would bump).
    Returns the ConfigMap's resourceVersion after the hand edit."""
    patched = kube.core.patch_namespaced_config_map(
        f"{name}-runtime",
        namespace,
        {"metadata": {"annotations": {APPLIED_HASH: f"nudge-{time.monotonic_ns()}"}}},
        field_manager="someone-by-hand",
    )
    return str(kube.plain(patched)["metadata"]["resourceVersion"])
