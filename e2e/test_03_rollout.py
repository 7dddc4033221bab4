"""Scenario 3: a spec change (batching knobs and image) rolls the pods through a new
ReplicaSet, and the status follows the new generation."""

from __future__ import annotations

from typing import Any

from kindcluster import ROLLOUT_IMAGE as NEW_IMAGE
from kubeapi import E2EKube, condition, tts_body, wait_for
from operatorproc import OperatorProcess
from ttschildren import instance_selector, runtime_container

NAME = "rolling"


def _active_replicasets(kube: E2EKube, namespace: str) -> list[dict[str, Any]]:
    sets = kube.replicasets(namespace, instance_selector(NAME))
    return [r for r in sets if (r["spec"].get("replicas") or 0) > 0]


def test_spec_change_rolls_out_a_new_replicaset(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str
) -> None:
    kube.create_tts(namespace, tts_body(NAME, {"replicas": 2}))
    first = kube.wait_tts_ready(namespace, NAME, timeout=120)
    old_sets = wait_for(
        "one active ReplicaSet", lambda: _active_replicasets(kube, namespace) or None, 30
    )
    assert len(old_sets) == 1
    old_rs = old_sets[0]["metadata"]["name"]

    patched = kube.patch_tts(
        namespace,
        NAME,
        {
            "spec": {
                "runtime": {
                    "image": NEW_IMAGE,
                    "batching": {"maxBatchSize": 16, "maxQueueDelayMs": 25},
                }
            }
        },
    )
    generation = patched["metadata"]["generation"]
    assert generation > first["metadata"]["generation"]

    def rolled() -> list[dict[str, Any]] | None:
        sets = _active_replicasets(kube, namespace)
        new = [
            r
            for r in sets
            if r["metadata"]["name"] != old_rs
            and runtime_container(r)["image"] == NEW_IMAGE
            and (r["status"].get("readyReplicas") or 0) == 2
        ]
        return new if new and len(sets) == 1 else None

    new_sets = wait_for("the new ReplicaSet to own both ready pods", rolled, 120)
    assert new_sets[0]["metadata"]["name"] != old_rs
    old = next(
        r
        for r in kube.replicasets(namespace, instance_selector(NAME))
        if r["metadata"]["name"] == old_rs
    )
    assert old["spec"]["replicas"] == 0

    config = kube.configmap(namespace, f"{NAME}-runtime")["data"]
    assert config["TTS_MAX_BATCH_SIZE"] == "16"
    assert config["TTS_MAX_QUEUE_DELAY_MS"] == "25"

    def caught_up() -> dict[str, Any] | None:
        tts = kube.get_tts(namespace, NAME)
        status = tts.get("status") or {}
        ok = (
            status.get("observedGeneration") == generation
            and status.get("updatedReplicas") == 2
            and (condition(tts, "Ready") or {}).get("status") == "True"
        )
        return tts if ok else None

    wait_for(f"status at generation {generation}, 2 updated and Ready", caught_up, 60)
    pods = kube.pods(namespace, instance_selector(NAME))
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert {runtime_container({"spec": {"template": p}})["image"] for p in live} == {NEW_IMAGE}
