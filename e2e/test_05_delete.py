"""Scenario 5: deleting a TTSService removes every child through the garbage collector; no
finalizer holds the deletion, so it completes with the operator stopped too."""

from __future__ import annotations

from kubeapi import E2EKube, tts_body, wait_for
from operatorproc import OperatorProcess
from ttschildren import instance_selector, labelled_children, read_children

NAME = "doomed"


def test_delete_removes_every_child(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str
) -> None:
    spec = {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2}}
    kube.create_tts(namespace, tts_body(NAME, spec))
    kube.wait_tts_ready(namespace, NAME, timeout=120)
    assert len(read_children(kube, namespace, NAME)) == 5
    assert kube.pods(namespace, instance_selector(NAME))

    kube.delete_tts(namespace, NAME)

    wait_deleted_with_children(kube, namespace)
    wait_for("the pods to be gone", lambda: not kube.pods(namespace, instance_selector(NAME)), 90)
    # Gone, not just relabelled: the agreed names are free again.
    assert not kube.exists(lambda: kube.deployment(namespace, NAME))
    assert not kube.exists(lambda: kube.configmap(namespace, f"{NAME}-runtime"))


def test_delete_completes_with_the_operator_stopped(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str
) -> None:
    kube.create_tts(namespace, tts_body(NAME))
    kube.wait_tts_ready(namespace, NAME, timeout=120)
    # kopf adds its finalizer only when a handler needs one (timer, daemon, on.delete).
    assert not kube.get_tts(namespace, NAME)["metadata"].get("finalizers")

    running_operator.stop()
    try:
        kube.delete_tts(namespace, NAME)
        wait_deleted_with_children(kube, namespace)
    finally:
        running_operator.start()


def wait_deleted_with_children(kube: E2EKube, namespace: str) -> None:
    wait_for("the TTSService to be gone", lambda: not kube.tts_exists(namespace, NAME), 60)
    wait_for(
        "every labelled child to be collected",
        lambda: not any(labelled_children(kube, namespace, NAME).values()),
        90,
    )
