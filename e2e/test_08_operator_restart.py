"""Scenario 8: the operator killed mid-reconcile converges after a restart with no duplicate
children; with two operator replicas only one acts (kopf peering by priority)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeapi import E2EKube, tts_body, wait_for
from operatorproc import OperatorProcess
from ttschildren import instance_selector, labelled_children

KINDS = {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler"}


def test_killed_mid_reconcile_converges_without_duplicates(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str
) -> None:
    name = "interrupted"
    spec = {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2}}
    kube.create_tts(namespace, tts_body(name, spec))
    # SIGKILL as soon as the first child exists: the pass that creates the rest is cut short.
    wait_for(
        "the first child",
        lambda: any(labelled_children(kube, namespace, name).values()),
        60,
        every=0.05,
    )
    running_operator.kill()
    partial = labelled_children(kube, namespace, name)

    running_operator.start()
    kube.wait_tts_ready(namespace, name, timeout=120)

    children = labelled_children(kube, namespace, name)
    assert set(children) == KINDS
    for kind, names in children.items():
        expected = [f"{name}-runtime"] if kind == "ConfigMap" else [name]
        assert names == expected, (kind, names, "before restart:", partial)
    active = [
        r
        for r in kube.replicasets(namespace, instance_selector(name))
        if (r["spec"].get("replicas") or 0) > 0
    ]
    assert len(active) == 1


@pytest.fixture
def second_operator(
    cluster: Any, running_operator: OperatorProcess, workdir: Path
) -> Iterator[OperatorProcess]:
    """A second replica sharing the peering object, with a higher priority."""
    second = OperatorProcess(
        Path(cluster.kubeconfig),
        workdir / "logs" / f"operator-2-{time.monotonic_ns()}.log",
        name="operator-2",
        priority=10,
    )
    mark = running_operator.log_size()
    second.start()
    running_operator.wait_log("Pausing operations in favour of", timeout=60, after=mark)
    yield second
    second.stop()
    # SIGTERM removes it from the peering object, so the first replica resumes at once.
    running_operator.wait_log("Resuming operations", timeout=60, after=mark)


def test_two_replicas_only_one_acts(
    kube: E2EKube,
    running_operator: OperatorProcess,
    second_operator: OperatorProcess,
    namespace: str,
) -> None:
    time.sleep(2)  # let a pass that was already running when it paused finish
    first_runs = running_operator.reconciles()
    second_runs = second_operator.reconciles()

    kube.create_tts(namespace, tts_body("shared", {"replicas": 1}))
    kube.wait_tts_ready(namespace, "shared", timeout=120)
    time.sleep(2)

    assert second_operator.reconciles() > second_runs
    assert running_operator.reconciles() == first_runs
    assert all(len(names) <= 1 for names in labelled_children(kube, namespace, "shared").values())
