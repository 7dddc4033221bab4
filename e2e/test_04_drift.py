"""Scenario 4: children deleted or edited by hand are put back; reconciling again (the resync
timer, every 5 s here) changes nothing."""

from __future__ import annotations

import time
from typing import Any

from kubeapi import Kube, tts_body, wait_for
from operatorproc import RESYNC_SECONDS, OperatorProcess
from ttschildren import read_children, runtime_container

NAME = "steady"
CONTAINER = "tts-runtime"


def test_deleted_service_is_recreated(
    kube: Kube, running_operator: OperatorProcess, namespace: str
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
    kube: Kube, running_operator: OperatorProcess, namespace: str
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
    kube: Kube, running_operator: OperatorProcess, namespace: str
) -> None:
    kube.create_tts(namespace, tts_body(NAME, {"replicas": 1}))
    kube.wait_tts_ready(namespace, NAME, timeout=120)

    def settled() -> dict[str, str] | None:
        """resourceVersions that stayed put over one resync period (pods settle first)."""
        before = _versions(kube, namespace)
        time.sleep(RESYNC_SECONDS + 1)
        return before if _versions(kube, namespace) == before else None

    before = wait_for("children to settle", settled, 60)
    runs = running_operator.reconciles("resync")
    # The timer reconciles this TTSService every RESYNC_SECONDS: this spans two full passes.
    time.sleep(2 * RESYNC_SECONDS + 1)
    assert running_operator.reconciles("resync") >= runs + 2
    assert _versions(kube, namespace) == before


def _versions(kube: Kube, namespace: str) -> dict[str, str]:
    versions = {
        kind: child["metadata"]["resourceVersion"]
        for kind, child in read_children(kube, namespace, NAME).items()
    }
    versions["TTSService"] = kube.get_tts(namespace, NAME)["metadata"]["resourceVersion"]
    return versions
