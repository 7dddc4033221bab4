"""Scenario 10 (issue 11): a TTSService named like someone else's object takes nothing over.

A user who may only manage TTSServices (impersonated: a Role granting `ttsservices` and
nothing else) creates TTSService `payments` beside an existing Service `payments`. The
operator refuses the whole reconcile: Degraded/ChildConflict naming the Service, a Warning
event, the Service byte for byte as it was (no ownerReference), no child of ours at all; and
deleting the TTSService leaves the Service alone. A ConfigMap at `<name>-runtime` is refused
the same way, and once it is gone the next (retried) pass builds the children and the
condition clears.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubeapi import E2EKube, condition, tts_body, wait_for
from kubernetes.client import ApiException
from operatorproc import OperatorProcess
from ttschildren import labelled_children, owner_uids

NAME = "payments"
# Longer than the garbage collector takes to collect a dependent of a deleted owner (the
# session waited until it tracks TTSServices), and than a few of the operator's retries
# (TTS_OPERATOR_RETRY_SECONDS=2 in e2e).
SETTLE_SECONDS = 6


def wait_conflict(kube: E2EKube, namespace: str, name: str) -> dict[str, Any]:
    def conflicted() -> dict[str, Any] | None:
        tts = kube.get_tts(namespace, name)
        cond = condition(tts, "Degraded") or {}
        return (
            tts if (cond.get("status"), cond.get("reason")) == ("True", "ChildConflict") else None
        )

    return wait_for(f"TTSService {name} Degraded/ChildConflict", conflicted, 60)


def wait_warning(kube: E2EKube, namespace: str, name: str, names: str) -> dict[str, Any]:
    """The Warning event on TTSService `name` whose message names `names` (e.g. Service/x)."""

    def posted() -> dict[str, Any] | None:
        for event in kube.events(namespace):
            involved = event.get("involvedObject") or {}
            if (
                involved.get("kind") == "TTSService"
                and involved.get("name") == name
                and event.get("type") == "Warning"
                and event.get("reason") == "ChildConflict"
                and names in (event.get("message") or "")
            ):
                return event
        return None

    return wait_for(f"a Warning ChildConflict event naming {names}", posted, 30)


def wait_retries(operator: OperatorProcess, passes: int = 2) -> None:
    """The operator retried the refused pass (a retry must not write either)."""
    runs = operator.reconciles("retry")
    wait_for(f"{passes} more retries", lambda: operator.reconciles("retry") >= runs + passes, 30)


def test_tts_named_like_a_service_does_not_take_it_over(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str, tts_user: E2EKube
) -> None:
    victim = kube.plain(
        kube.core.create_namespaced_service(
            namespace,
            {
                "metadata": {
                    "name": NAME,
                    "labels": {"app": "payments"},
                    "annotations": {"payments.example.com/team": "payments"},
                },
                "spec": {
                    "selector": {"app": "payments"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                },
            },
        )
    )

    # The user's TTSService (retried until the RoleBinding reaches the authorizer's cache).
    tts = wait_for(
        "the TTSService created as the user",
        lambda: tts_user.create_tts(namespace, tts_body(NAME)),
        30,
    )
    with pytest.raises(ApiException) as denied:  # the user has no rights on the Service
        tts_user.core.read_namespaced_service(NAME, namespace)
    assert denied.value.status == 403

    tts = wait_conflict(kube, namespace, NAME)
    degraded = condition(tts, "Degraded") or {}
    assert "Service/payments (no controller)" in degraded["message"]
    assert "Rename the TTSService, or delete or rename the other object" in degraded["message"]
    ready = condition(tts, "Ready") or {}
    assert (ready["status"], ready["reason"]) == ("False", "ChildConflict")
    assert "endpoint" not in tts["status"]  # the Service at that name is not ours
    wait_warning(kube, namespace, NAME, "Service/payments")
    wait_retries(running_operator)

    service = kube.service(namespace, NAME)
    assert service["spec"]["selector"] == {"app": "payments"}
    assert service["spec"]["type"] == "ClusterIP"
    assert service["metadata"]["annotations"] == {"payments.example.com/team": "payments"}
    assert not service["metadata"].get("ownerReferences")
    assert service == victim  # byte for byte: same resourceVersion, managedFields, spec
    # The whole pass was refused: not even the Deployment or ConfigMap exists.
    assert not any(labelled_children(kube, namespace, NAME).values())

    tts_user.delete_tts(namespace, NAME)
    kube.wait_gone("the TTSService", lambda: kube.get_tts(namespace, NAME), 60)
    time.sleep(SETTLE_SECONDS)  # the garbage collector would have acted by now
    assert kube.service(namespace, NAME) == victim


def test_tts_named_like_a_configmap_waits_until_it_is_gone(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str
) -> None:
    name = "ledger"
    victim = kube.plain(
        kube.core.create_namespaced_config_map(
            namespace,
            {
                "metadata": {"name": f"{name}-runtime", "annotations": {"team": "ledger"}},
                "data": {"DATABASE": "ledger-db"},
            },
        )
    )
    kube.create_tts(namespace, tts_body(name))
    tts = wait_conflict(kube, namespace, name)
    assert (
        f"ConfigMap/{name}-runtime (no controller)"
        in ((condition(tts, "Degraded") or {})["message"])
    )
    wait_warning(kube, namespace, name, f"ConfigMap/{name}-runtime")
    wait_retries(running_operator)
    assert kube.configmap(namespace, f"{name}-runtime") == victim
    assert not any(labelled_children(kube, namespace, name).values())

    # Its owner removes it: the next retry builds the children and the condition clears.
    kube.core.delete_namespaced_config_map(f"{name}-runtime", namespace)
    uid = tts["metadata"]["uid"]
    wait_for(
        "the operator's own ConfigMap",
        lambda: owner_uids(kube.configmap(namespace, f"{name}-runtime")) == [uid],
        60,
    )
    kube.wait_tts_condition(namespace, name, "Degraded", "False", timeout=120)
    assert "DATABASE" not in kube.configmap(namespace, f"{name}-runtime")["data"]
