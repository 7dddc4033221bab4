"""A runtime pod killed under load: the Deployment replaces it, the Service stops routing to
it, and only the requests in flight on it can fail."""

from __future__ import annotations

import time

import pytest
import realnode
from kubeapi import wait_for
from kubernetes import client
from ttschildren import instance_selector

pytestmark = pytest.mark.realnode

NAME = "victim"
THREADS = 3


def test_a_killed_pod_costs_at_most_its_in_flight_requests(stage: realnode.Stage) -> None:
    cluster, kube, images, ns = stage.cluster, stage.kube, stage.images, stage.namespace
    url = realnode.serve(
        kube, ns, images.runtime.name, NAME, 2, runtime=realnode.CPU_ONLY, service=realnode.SPREAD
    )
    victim = kube.pods(ns, instance_selector(NAME))[0]["metadata"]["name"]

    load = realnode.Load(cluster, ns, "client", url, threads=THREADS)
    time.sleep(5)  # let the stream run before the kill
    cluster.kubectl("delete", "pod", "-n", ns, victim, "--grace-period=0", "--force")

    def replaced() -> bool:
        pods = [
            p for p in kube.pods(ns, instance_selector(NAME))
            if not p["metadata"].get("deletionTimestamp")
        ]  # fmt: skip
        names = {p["metadata"]["name"] for p in pods}
        ready = all((p["status"].get("containerStatuses") or [{}])[0].get("ready") for p in pods)
        return victim not in names and len(pods) == 2 and ready

    def unrouted() -> bool:
        # What kube-proxy routes to: the Service's EndpointSlices' ready endpoints (a
        # terminating pod stays listed, not ready).
        slices = kube.plain(
            client.DiscoveryV1Api(kube.api_client).list_namespaced_endpoint_slice(
                ns, label_selector=f"kubernetes.io/service-name={NAME}"
            )
        )["items"]
        endpoints = [e for s in slices for e in s.get("endpoints") or []]
        ready = [e for e in endpoints if (e.get("conditions") or {}).get("ready")]
        return victim not in {(e.get("targetRef") or {}).get("name") for e in ready}

    wait_for("the Service to stop routing to the killed pod", unrouted, 60, every=0.2)
    # The client pod shares this kernel's monotonic clock: its timestamps compare with ours.
    # kube-proxy applies the change on its next sync (at most a second or so later).
    settled = time.monotonic() + 2.0
    wait_for("the killed pod replaced by a Ready one", replaced, 300, every=1)
    records = load.stop()

    counts = realnode.summary(records)
    failed = [r for r in records if r["status"] != 200]
    # Refused: routed to the dead pod before kube-proxy dropped it, never accepted by anyone.
    refused = [r for r in failed if realnode.refused(r)]
    in_flight = [r for r in failed if r not in refused]
    print(
        f"pod killed under load: {counts}; in flight on it and lost: {len(in_flight)}; "
        f"refused before the Service dropped it: {len(refused)}"
    )
    assert counts.get("200", 0) >= 10, counts
    # One client thread holds at most one request in flight: no more can have been lost.
    assert len(in_flight) <= THREADS, in_flight
    assert all(r["start"] < settled for r in failed), failed
    after = [r for r in records if r["start"] > settled]
    assert after and all(r["status"] == 200 for r in after)
