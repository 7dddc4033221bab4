"""Scenario 9: the API server restarts under a running operator; the operator recovers (same
process) and keeps reconciling: new TTSServices come up, drift is repaired."""

from __future__ import annotations

import time
from typing import Any

from kubeapi import E2EKube, tts_body, wait_for
from operatorproc import OperatorProcess

OUTAGE_SECONDS = 5


def test_operator_survives_an_api_server_restart(
    cluster: Any, kube: E2EKube, running_operator: OperatorProcess, namespace: str
) -> None:
    kube.create_tts(namespace, tts_body("before", {"replicas": 1}))
    kube.wait_tts_ready(namespace, "before", timeout=120)
    pid = running_operator.component.pid if running_operator.component else None

    if hasattr(cluster, "stop_component"):
        cluster.stop_component("kube-apiserver")
        time.sleep(OUTAGE_SECONDS)  # an outage, not a blip: watches break, requests fail
        cluster.start_component("kube-apiserver")
    else:
        cluster.restart("kube-apiserver")

    assert running_operator.running
    kube.create_tts(namespace, tts_body("after", {"replicas": 1}))
    kube.wait_tts_ready(namespace, "after", timeout=120)

    old_uid = kube.service(namespace, "before")["metadata"]["uid"]
    kube.core.delete_namespaced_service("before", namespace)
    wait_for(
        "the Service of the TTSService created before the restart to come back",
        lambda: (
            kube.exists(lambda: kube.service(namespace, "before"))
            and kube.service(namespace, "before")["metadata"]["uid"] != old_uid
        ),
        60,
    )
    assert running_operator.component is not None
    assert running_operator.component.pid == pid, "the operator process was replaced"
