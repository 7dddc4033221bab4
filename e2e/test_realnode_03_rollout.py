"""Zero-loss rolling update on the real node: a steady stream of requests through the Service
while a spec change rolls every pod; every request a server accepted must succeed (readiness,
the preStop sleep and the runtime's drain do their part). Connections refused outright were
never accepted: they are counted and reported apart, and must stay rare."""

from __future__ import annotations

import time

import pytest
import realnode
from kubeapi import wait_for
from ttschildren import instance_selector

pytestmark = pytest.mark.realnode

NAME = "rolling"


def test_a_rollout_under_load_loses_no_request(stage: realnode.Stage) -> None:
    cluster, kube, images, ns = stage.cluster, stage.kube, stage.images, stage.namespace
    url = realnode.serve(
        kube, ns, images.runtime.name, NAME, 2, runtime=realnode.CPU_ONLY, service=realnode.SPREAD
    )
    before = {p["metadata"]["name"] for p in kube.pods(ns, instance_selector(NAME))}

    load = realnode.Load(cluster, ns, "client", url, threads=2)
    time.sleep(5)  # let the stream run before the change
    kube.patch_tts(ns, NAME, {"spec": {"runtime": {"logLevel": "warning"}}})

    def rolled() -> bool:
        pods = kube.pods(ns, instance_selector(NAME))
        names = {p["metadata"]["name"] for p in pods}
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return (
            not (names & before)
            and len(live) == 2
            and all((p["status"].get("containerStatuses") or [{}])[0].get("ready") for p in live)
        )

    wait_for("every pod replaced and Ready", rolled, 300, every=1)
    realnode.wait_serving(kube, ns, NAME, 2)
    records = load.stop()

    counts = realnode.summary(records)
    served_by = {r.get("pod") for r in records if r["status"] == 200}
    refused = [r for r in records if realnode.refused(r)]
    lost = [r for r in records if r["status"] != 200 and not realnode.refused(r)]
    print(
        f"rollout under load: {counts}, answered by {len(served_by)} pods; "
        f"accepted and lost: {len(lost)}; refused (never accepted): {len(refused)}"
    )
    assert counts.get("200", 0) >= 10, counts
    # Every request a server accepted succeeded: no 503 from a draining pod, no reset.
    assert not lost, lost
    # Refusals are counted apart (CI saw 6 within 7 ms in two of four runs, while kube-proxy
    # rewrote the Service's rules); they must stay a brief exception, not a window.
    assert len(refused) <= len(records) // 10, refused
    assert served_by & before and served_by - before  # old pods, then new ones, served
