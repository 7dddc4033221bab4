"""Model over HTTP on the real node: the init container downloads the voice from an HTTP
server pod in the cluster (through its Service's DNS name) and the pod serves it; a wrong URL
leaves the pod not Ready and the TTSService Degraded with a reason a person can act on."""

from __future__ import annotations

from typing import Any

import pytest
import realnode
from kubeapi import condition, tts_body, wait_for
from tts_cluster.deploy import REAL_NODE_TOLERATION, VOICE
from ttschildren import instance_selector

pytestmark = pytest.mark.realnode

SERVER = "voice-server"


def _voice_server(image: str) -> list[dict[str, Any]]:
    """python3 -m http.server over the voice claim, and a Service in front of it."""
    labels = {"app": SERVER}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": SERVER, "labels": labels},
        "spec": {
            "nodeSelector": {"type": "real"},
            "tolerations": [REAL_NODE_TOLERATION],
            "containers": [
                {
                    "name": "http",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-m", "http.server", "8080", "--directory", "/voices"],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    "volumeMounts": [{"name": "voices", "mountPath": "/voices", "readOnly": True}],
                }
            ],
            "volumes": [
                {
                    "name": "voices",
                    "persistentVolumeClaim": {"claimName": realnode.CLAIM, "readOnly": True},
                }
            ],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVER},
        "spec": {"selector": labels, "ports": [{"port": 8080}]},
    }
    return [pod, service]


def test_the_init_container_fetches_the_voice_and_a_wrong_url_degrades(
    stage: realnode.Stage,
) -> None:
    cluster, kube, images, ns = stage.cluster, stage.kube, stage.images, stage.namespace
    pod, service = _voice_server(images.runtime.name)
    kube.create_pod(ns, pod)
    kube.core.create_namespaced_service(ns, service)
    base = f"http://{SERVER}.{ns}.svc.cluster.local:8080"

    good = realnode.spec(
        replicas=1, runtime={"gpu": {"count": 0}}, model={"uri": f"{base}/{VOICE}/model.onnx"}
    )
    kube.create_tts(ns, tts_body("fetched", good))
    bad = realnode.spec(
        replicas=1, runtime={"gpu": {"count": 0}}, model={"uri": f"{base}/nowhere/model.onnx"}
    )
    kube.create_tts(ns, tts_body("lost", bad))

    tts = realnode.wait_serving(kube, ns, "fetched", 1)
    fetched = kube.pods(ns, instance_selector("fetched"))[0]
    init = fetched["status"]["initContainerStatuses"][0]
    assert init["name"] == "model-fetch" and init["state"]["terminated"]["exitCode"] == 0
    realnode.start_clients(kube, ns, images.runtime.name, "client")
    records = realnode.call_service(cluster, ns, "client", realnode.speech_url(tts), 1, "Hi.")
    assert records[0]["status"] == 200, records

    def degraded() -> dict[str, Any] | None:
        cond = condition(kube.get_tts(ns, "lost"), "Degraded") or {}
        return cond if cond.get("reason") == "ModelDownloadFailed" else None

    cond = wait_for("the wrong URL reported", degraded, 180)
    assert cond["status"] == "True"
    assert "404" in cond["message"], cond  # what went wrong, not only where to look
    lost = kube.pods(ns, instance_selector("lost"))
    assert lost and not any(
        (p["status"].get("containerStatuses") or [{}])[0].get("ready") for p in lost
    )
    assert (condition(kube.get_tts(ns, "lost"), "Ready") or {}).get("status") == "False"
