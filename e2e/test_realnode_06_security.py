"""The restricted security context, for real: the runtime container runs as a non-root user
with a read-only root filesystem and no capabilities, and still serves speech (so it writes
nothing outside its mounted folders)."""

from __future__ import annotations

import pytest
import realnode
from kubeapi import Kube, tts_body
from tts_cluster import LocalCluster
from tts_cluster.images import Images
from ttschildren import instance_selector

pytestmark = pytest.mark.realnode

NAME = "locked"


def test_the_runtime_runs_restricted_and_serves(
    cluster: LocalCluster,
    kube: Kube,
    images: Images,
    in_cluster_operator: str,
    voice_namespace: str,
) -> None:
    ns = voice_namespace
    kube.create_tts(ns, tts_body(NAME, realnode.spec(replicas=1, runtime={"gpu": {"count": 0}})))
    tts = realnode.wait_serving(kube, ns, NAME, 1)
    pod = kube.pods(ns, instance_selector(NAME))[0]
    name = pod["metadata"]["name"]
    context = pod["spec"]["containers"][0]["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    def in_pod(*argv: str) -> str:
        result = realnode.exec_in(cluster, ns, name, *argv)
        return result.stdout + result.stderr

    assert in_pod("id", "-u").strip() == "10001"
    status = dict(
        line.split(":\t", 1)
        for line in in_pod("cat", "/proc/1/status").splitlines()
        if ":\t" in line
    )
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    attempt = in_pod("python3", "-c", "open('/opt/tts/written-by-test', 'w')")
    assert "Read-only file system" in attempt, attempt

    realnode.start_clients(kube, ns, images.runtime.name, "client")
    url = realnode.speech_url(tts)
    records = realnode.call_service(cluster, ns, "client", url, 3, "Nothing to write home about.")
    assert [r["status"] for r in records] == [200, 200, 200], records
