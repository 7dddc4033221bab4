"""On the real node: the chart's operator (from its image) serves a TTSService whose pods run
the runtime image with a real Piper voice from a PersistentVolumeClaim, and a client pod gets
audio through the Service's DNS name that a speech recognizer reads back as the text sent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import realnode
from kubeapi import E2EKube, condition, tts_body, wait_for
from tts_cluster import REPO_ROOT, LocalCluster
from tts_cluster.deploy import client_pod, speak_from_pod
from ttschildren import instance_selector

pytestmark = pytest.mark.realnode

NAME = "joe"
TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back into the forest."
SPEECH_TOOL = REPO_ROOT / "tests" / "runtime" / "speech.py"


def _ready_tts(kube: E2EKube, namespace: str) -> dict[str, Any] | None:
    tts = kube.get_tts(namespace, NAME)
    return tts if (condition(tts, "Ready") or {}).get("status") == "True" else None


def test_the_voice_answers_through_the_service_dns_name(
    stage: realnode.Stage, tmp_path: Path
) -> None:
    cluster, kube, images, ns = stage.cluster, stage.kube, stage.images, stage.namespace
    kube.create_tts(ns, tts_body(NAME, realnode.spec(replicas=1)))
    kube.create_pod(ns, client_pod("client", images.runtime.name))

    tts = wait_for(
        "the TTSService Ready through its pods' real probes", lambda: _ready_tts(kube, ns), 300
    )
    pods = kube.pods(ns, instance_selector(NAME))
    assert len(pods) == 1 and pods[0]["spec"]["nodeName"] == "real-node"
    runtime = pods[0]["status"]["containerStatuses"][0]
    assert runtime["ready"] and runtime["image"].startswith("localhost/tts-runtime")
    endpoint = tts["status"]["endpoint"]
    assert endpoint.startswith(f"http://{NAME}.{ns}.svc.cluster.local")
    listed = cluster.kubectl("get", "tts", "-n", ns).stdout
    assert re.search(rf"^{NAME}\s+True\s+1\s+{re.escape(endpoint)}", listed, re.M), listed

    wait_for(
        "the client pod Running",
        lambda: (
            kube.plain(kube.core.read_namespaced_pod("client", ns))["status"].get("phase")
            == "Running"
        ),
        120,
    )
    wav = speak_from_pod(cluster, ns, "client", f"{endpoint}/v1/audio/speech", TEXT)
    assert wav[:4] == b"RIFF" and len(wav) > 44

    audio, text = tmp_path / "speech.wav", tmp_path / "speech.txt"
    audio.write_bytes(wav)
    text.write_text(TEXT)
    heard = subprocess.run(
        [sys.executable, str(SPEECH_TOOL), str(audio), str(text)],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    error_rate = float(re.search(r"word error rate: ([0-9.]+)", heard).group(1))  # type: ignore[union-attr]
    assert error_rate <= 0.2, heard


def test_the_chart_runs_two_operator_replicas_and_one_acts(
    cluster: LocalCluster, kube: E2EKube, in_cluster_operator: str, namespace: str
) -> None:
    pods = [
        p
        for p in kube.pods(in_cluster_operator, "app.kubernetes.io/name=tts-operator")
        if not p["metadata"].get("deletionTimestamp")
    ]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == "real-node"
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] and status["image"].startswith("localhost/tts-operator")

    # A TTSService only this test makes: the replica that reconciles it logs its name.
    probe = "leader-probe"
    kube.create_tts(namespace, tts_body(probe, realnode.spec(replicas=0)))
    wait_for(
        f"{probe} reconciled",
        lambda: (kube.get_tts(namespace, probe).get("status") or {}).get("conditions"),
        120,
    )
    logs: dict[str, str] = {}

    def acting() -> list[str]:
        for pod in pods:
            name = pod["metadata"]["name"]
            logs[name] = cluster.kubectl("logs", "-n", in_cluster_operator, name).stdout
        return [name for name, log in logs.items() if probe in log]

    acted = wait_for(f"a replica's log to name {probe}", acting, 60)
    assert len(acted) == 1, {name: log[-2000:] for name, log in logs.items()}
