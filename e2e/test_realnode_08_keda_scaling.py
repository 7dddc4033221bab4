"""The real autoscaling chain, end to end: runtime pods on the real node export queue wait,
Prometheus scrapes them, KEDA's ScaledObject (made and owned by the operator, provider keda)
turns the rate-based query into the external metric, and the HPA controller scales the
Deployment: from 1 pod to at least 3 under load, every new pod taking traffic, and back to 1
when the load stops.

The timeline (load, per-pod queue latency from Prometheus, replicas) is written to
out/scale-timeline.json and, with TTS_SCALE_PLOT=PATH (`make scale-demo`), plotted as a PNG.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import realnode
from kubeapi import condition, tts_body, wait_for
from tts_cluster.autoscaling import KEDA_RATE_WINDOW, query
from tts_cluster.base import REPO_ROOT
from tts_cluster.scaling_timeline import Recorder, Timeline, plot
from ttschildren import instance_selector

pytestmark = pytest.mark.realnode

NAME = "keda-voice"
TARGET_MS = 100
MAX_REPLICAS = 4
# Enough clients that one pod's queue wait passes the target many times over.
LOAD_THREADS = 8
SCALE_DOWN_WINDOW_S = 20
AUTOSCALING: dict[str, Any] = {
    "enabled": True,
    "provider": "keda",
    "minReplicas": 1,
    "maxReplicas": MAX_REPLICAS,
    "targetQueueLatencyMs": TARGET_MS,
    "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_WINDOW_S},
}


def _scaledobject(stage: realnode.Stage) -> dict[str, Any]:
    obj: dict[str, Any] = stage.kube.custom.get_namespaced_custom_object(
        "keda.sh", "v1alpha1", stage.namespace, "scaledobjects", NAME
    )
    return obj


def _accepted(stage: realnode.Stage) -> dict[str, Any] | None:
    so = _scaledobject(stage)
    return so if (condition(so, "Ready") or {}).get("status") == "True" else None


def test_keda_scales_real_pods_up_under_load_and_back_down(stage: realnode.Stage) -> None:
    cluster, kube, ns = stage.cluster, stage.kube, stage.namespace
    assert cluster.autoscalers is not None, "the real node starts Prometheus and KEDA"
    kube.create_tts(
        ns,
        tts_body(NAME, realnode.spec(
            runtime=realnode.CPU_ONLY, service=realnode.SPREAD, autoscaling=AUTOSCALING
        )),
    )  # fmt: skip
    realnode.start_clients(kube, ns, stage.images.runtime.name, "client")
    tts = realnode.wait_serving(kube, ns, NAME, 1)
    url = realnode.speech_url(tts)

    # The operator's ScaledObject, as KEDA reads it: owned by the TTSService, aimed at the
    # Deployment, and accepted by KEDA (Ready, with the HPA it made).
    so = wait_for("KEDA to accept the ScaledObject", lambda: _accepted(stage), 120)
    [owner] = so["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("TTSService", NAME, True)
    assert so["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    hpa = kube.hpa(ns, f"keda-hpa-{NAME}")
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == SCALE_DOWN_WINDOW_S
    trigger_query = so["spec"]["triggers"][0]["metadata"]["query"]

    # With autoscaling on, the scale subresource is not the way to set replicas: the API
    # server refuses spec.replicas (the autoscaler owns the count), as documented.
    refused = cluster.kubectl("scale", "tts", NAME, "-n", ns, "--replicas=2", check=False)
    assert refused.returncode != 0 and "mutually exclusive" in refused.stderr, refused

    def replicas() -> tuple[int, int]:
        deployment = kube.deployment(ns, NAME)
        status = deployment.get("status") or {}
        return int(deployment["spec"].get("replicas") or 0), int(status.get("readyReplicas") or 0)

    timeline = Timeline(ns, NAME, TARGET_MS / 1000)
    recorder = Recorder(cluster.autoscalers.prometheus_url, timeline, trigger_query, replicas)
    recorder.start()
    time.sleep(6)  # a few idle samples first
    recorder.mark("load on")
    load = realnode.Load(cluster, ns, "client", url, threads=LOAD_THREADS)
    try:
        wait_for("at least 3 replicas wanted", lambda: replicas()[0] >= 3, 240, every=1)
        recorder.mark("3 replicas wanted")
        wait_for(
            "every wanted pod Ready",
            lambda: replicas()[1] >= 3 and replicas()[1] == replicas()[0],
            300,
            every=1,
        )
        recorder.mark("all wanted pods ready")
        ready_pods = {
            p["metadata"]["name"]
            for p in kube.pods(ns, instance_selector(NAME))
            if (condition(p, "Ready") or {}).get("status") == "True"
        }
        time.sleep(10)  # traffic reaches the new pods (no session affinity)
        _dashboard_queries_answer(cluster.autoscalers.prometheus_url, ns, trigger_query)
        time.sleep(10)
    finally:
        records = load.stop()  # every client finishes its request in flight
        recorder.mark("load off")
    wait_for("back to 1 replica", lambda: replicas() == (1, 1), 300, every=1)
    recorder.mark("back to 1")
    time.sleep(4)
    recorder.stop()

    _report(timeline, records, recorder.errors)
    served_by = {r.get("pod") for r in records if r["status"] == 200}
    assert realnode.summary(records).get("200", 0) >= 20, realnode.summary(records)
    assert ready_pods <= served_by, f"pods that took no traffic: {ready_pods - served_by}"
    # The recorded signal is the trigger's: above the target under load, 0 again at rest.
    peak = max(s.service_latency_s for s in timeline.samples)
    assert peak > TARGET_MS / 1000, f"queue latency peaked at {peak}s"
    assert timeline.samples[-1].service_latency_s == 0.0, timeline.samples[-1]


DASHBOARD = REPO_ROOT / "charts" / "tts-operator" / "dashboards" / "tts-operator.json"
# Series only kube-state-metrics exports (not part of this cluster): they must parse, and may
# return nothing.
NEEDS_KUBE_STATE_METRICS = "kube_horizontalpodautoscaler_"


def _dashboard_queries_answer(prometheus_url: str, namespace: str, trigger_query: str) -> None:
    """Every query of the chart's Grafana dashboard, with its variables set to this
    TTSService, parses and returns data from the real Prometheus under load; and its queue
    latency panel shows exactly the value KEDA's trigger reads at the same instant."""
    dashboard = json.loads(DASHBOARD.read_text())
    values = {"$namespace": namespace, "$tts_service": NAME, "$__rate_interval": KEDA_RATE_WINDOW}
    at = time.time()
    empty = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in values.items():
                expr = expr.replace(variable, value)
            result = query(prometheus_url, expr, at=at)  # raises when Prometheus refuses it
            if not result and NEEDS_KUBE_STATE_METRICS not in expr:
                empty.append(f"{panel['title']}: {expr}")
    assert not empty, f"dashboard queries without data under load: {empty}"
    [latency] = [
        t["expr"] for p in dashboard["panels"] for t in p["targets"]
        if p["title"].startswith("Queue latency") and "histogram_quantile" not in t["expr"]
    ]  # fmt: skip
    for variable, value in values.items():
        latency = latency.replace(variable, value)
    [panel_value] = query(prometheus_url, latency, at=at)
    [trigger_value] = query(prometheus_url, trigger_query, at=at)
    assert panel_value["value"] == trigger_value["value"], (panel_value, trigger_value)


def _report(timeline: Timeline, records: list[dict[str, Any]], errors: list[str]) -> None:
    out = REPO_ROOT / "out"
    timeline.save(out / "scale-timeline.json")
    plot_path = os.environ.get("TTS_SCALE_PLOT")
    if plot_path:
        plot(timeline, Path(plot_path))
    ev = timeline.events
    up = ev["3 replicas wanted"] - ev["load on"]
    ready = ev["all wanted pods ready"] - ev["load on"]
    down = ev["back to 1"] - ev["load off"]
    peak_replicas = max(s.replicas for s in timeline.samples)
    peak = max(s.service_latency_s for s in timeline.samples)
    print(
        f"\nKEDA scaling timeline ({len(timeline.samples)} samples, {len(errors)} missed): "
        f"load on -> 3 replicas wanted {up:.0f} s, -> all ready {ready:.0f} s; "
        f"peak {peak_replicas} replicas, peak queue latency {peak * 1000:.0f} ms "
        f"(target {TARGET_MS} ms); load off -> back to 1 replica {down:.0f} s; "
        f"requests {realnode.summary(records)}"
    )
