"""ClientIP session affinity for real: through kube-proxy on the real node, each client pod
sticks to one runtime pod; with affinity None the same traffic spreads. The runtime names
the pod that answered in X-TTS-Pod."""

from __future__ import annotations

import pytest
import realnode
from kubeapi import wait_for
from ttschildren import instance_selector

pytestmark = pytest.mark.realnode

NAME = "sticky"
REQUESTS = 20


def test_client_ip_affinity_sticks_and_none_spreads(stage: realnode.Stage) -> None:
    cluster, kube, images, ns = stage.cluster, stage.kube, stage.images, stage.namespace
    url = realnode.serve(
        kube, ns, images.runtime.name, NAME, 3, ("client-a", "client-b"), runtime=realnode.CPU_ONLY
    )
    pods = {p["metadata"]["name"] for p in kube.pods(ns, instance_selector(NAME))}
    assert kube.service(ns, NAME)["spec"]["sessionAffinity"] == "ClientIP"

    answered: dict[str, set[str]] = {}
    for client in ("client-a", "client-b"):
        records = realnode.call_service(cluster, ns, client, url, REQUESTS, "Hello there.")
        assert [r["status"] for r in records] == [200] * REQUESTS, records
        answered[client] = {r["pod"] for r in records}
        assert len(answered[client]) == 1, answered  # every request on one pod
        assert answered[client] <= pods

    kube.patch_tts(ns, NAME, {"spec": {"service": {"sessionAffinity": "None"}}})
    wait_for(
        "the Service's affinity off",
        lambda: kube.service(ns, NAME)["spec"]["sessionAffinity"] == "None",
        60,
    )

    # kube-proxy drops the affinity sets on its next sync: retry until traffic spreads.
    def spread() -> set[str] | None:
        records = realnode.call_service(cluster, ns, "client-a", url, REQUESTS, "Hello there.")
        assert all(r["status"] == 200 for r in records), records
        seen = {r["pod"] for r in records}
        return seen if len(seen) >= 2 else None

    seen = wait_for("requests spread over the pods", spread, 120, every=1)
    assert seen <= pods
