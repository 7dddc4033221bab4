"""The restricted security context, for real: the runtime container runs as a non-root user
with a read-only root filesystem and no capabilities, and still serves speech (so it writes
nothing outside its mounted folders)."""

from __future__ import annotations

import pytest
import realnode
from ttschildren import instance_selector

pytestmark = pytest.mark.realnode

NAME = "locked"


def test_the_runtime_runs_restricted_and_serves(stage: realnode.Stage) -> None:
    cluster, kube, images, ns = stage.cluster, stage.kube, stage.images, stage.namespace
    url = realnode.serve(kube, ns, images.runtime.name, NAME, 1, runtime=realnode.CPU_ONLY)
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

    records = realnode.call_service(cluster, ns, "client", url, 3, "Nothing to write home about.")
    assert [r["status"] for r in records] == [200, 200, 200], records
