"""Scenario 4: children deleted or edited by hand are put back (child watch events, no timer);
reconciling again changes nothing."""

from __future__ import annotations

import time
from typing import Any

from kubeapi import E2EKube, tts_body, wait_for
from operatorproc import OperatorProcess
from tts_operator.drift import APPLIED_HASH
from ttschildren import nudge_configmap, read_children, runtime_container

NAME = "steady"
SETTLE_SECONDS = 6
CONTAINER = "tts-runtime"


def test_deleted_service_is_recreated(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str
) -> None:
    kube.create_tts(namespace, tts_body(NAME))
    kube.wait_tts_ready(namespace, NAME, timeout=120)
    old_uid = kube.service(namespace, NAME)["metadata"]["uid"]

    kube.core.delete_namespaced_service(NAME, namespace)

    def recreated() -> dict[str, Any] | None:
        if not kube.exists(lambda: kube.service(namespace, NAME)):
            return None
        service = kube.service(namespace, NAME)
        return service if service["metadata"]["uid"] != old_uid else None

    service = wait_for("the Service to come back", recreated, 60)
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert service["metadata"]["ownerReferences"][0]["name"] == NAME


def test_hand_edited_deployment_is_restored(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str
) -> None:
    kube.create_tts(namespace, tts_body(NAME))
    kube.wait_tts_ready(namespace, NAME, timeout=120)
    image = runtime_container(kube.deployment(namespace, NAME))["image"]

    edited = kube.apps.patch_namespaced_deployment(
        NAME,
        namespace,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "tts-runtime", "image": "evil:1"}]}}
            }
        },
        field_manager="someone-by-hand",
    )
    assert runtime_container(kube.plain(edited))["image"] == "evil:1"

    wait_for(
        "the operator to restore the image",
        lambda: runtime_container(kube.deployment(namespace, NAME))["image"] == image,
        60,
    )
    # A hand-edited runtime setting comes back too.
    kube.core.patch_namespaced_config_map(
        f"{NAME}-runtime",
        namespace,
        {"data": {"TTS_MAX_BATCH_SIZE": "999"}},
        field_manager="someone-by-hand",
    )
    wait_for(
        "the ConfigMap's value to be restored",
        lambda: kube.configmap(namespace, f"{NAME}-runtime")["data"]["TTS_MAX_BATCH_SIZE"] == "8",
        60,
    )


def test_reconciling_again_changes_nothing(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str
) -> None:
    kube.create_tts(namespace, tts_body(NAME, {"replicas": 1}))
    kube.wait_tts_ready(namespace, NAME, timeout=120)

    def settled() -> dict[str, str] | None:
        """resourceVersions that stayed put for SETTLE_SECONDS (pods settle first)."""
        before = _versions(kube, namespace)
        time.sleep(SETTLE_SECONDS)
        return before if _versions(kube, namespace) == before else None

    before = wait_for("children to settle", settled, 60)
    applied = _applied_hash(kube, namespace)
    for _ in range(2):
        runs = running_operator.reconciles("child")
        # The operator's hash annotation on the ConfigMap, changed by hand: its event makes
        # the operator reconcile, and that pass writes the annotation back, nothing else.
        nudge_configmap(kube, namespace, NAME)
        _wait_child_pass(running_operator, runs)
        wait_for("the hash annotation back", lambda: _applied_hash(kube, namespace) == applied, 30)
    time.sleep(2)  # a pass still in flight would show now
    after = _versions(kube, namespace)
    del before["ConfigMap"], after["ConfigMap"]
    assert after == before


def _applied_hash(kube: E2EKube, namespace: str) -> str:
    annotations = kube.configmap(namespace, f"{NAME}-runtime")["metadata"]["annotations"]
    return str(annotations[APPLIED_HASH])


def _versions(kube: E2EKube, namespace: str) -> dict[str, str]:
    versions = {
        kind: child["metadata"]["resourceVersion"]
        for kind, child in read_children(kube, namespace, NAME).items()
    }
    versions["TTSService"] = kube.get_tts(namespace, NAME)["metadata"]["resourceVersion"]
    return versions


def _wait_child_pass(operator: OperatorProcess, runs: float) -> None:
    wait_for("a pass from the ConfigMap's event", lambda: operator.reconciles("child") > runs, 30)
