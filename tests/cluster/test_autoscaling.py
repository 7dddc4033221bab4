"""autoscaling / scaling_timeline: the local Prometheus's scrape config, KEDA's external
metrics registration, and the timeline's queries and plot (no cluster needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from tts_cluster.autoscaling import (
    KEDA_POLLING_INTERVAL_S,
    KEDA_RATE_WINDOW,
    SCRAPE_INTERVAL_S,
    external_metrics_api,
    prometheus_config,
)
from tts_cluster.scaling_timeline import Sample, Timeline, by_pod, plot
from tts_operator.builders.scaledobject import queue_latency_query


class _Pki:
    def path(self, name: str) -> Path:
        return Path("/pki") / name


class _Cluster:
    server = "https://10.244.0.1:6443"
    pki = _Pki()


def _relabel(config: dict[str, Any], labels: dict[str, str]) -> dict[str, str] | None:
    """Apply the scrape job's relabel rules the way Prometheus does (keep / replace)."""
    out = dict(labels)
    for rule in config["scrape_configs"][0]["relabel_configs"]:
        value = rule.get("separator", ";").join(out.get(s, "") for s in rule["source_labels"])
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if rule.get("action") == "keep":
            if not match:
                return None
        elif match:
            out[rule["target_label"]] = match.expand(rule.get("replacement", r"\1"))
    return out


POD = {
    "__meta_kubernetes_pod_node_name": "real-node",
    "__meta_kubernetes_pod_phase": "Running",
    "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by": "tts-operator",
    "__meta_kubernetes_pod_label_app_kubernetes_io_instance": "voice",
    "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
    "__meta_kubernetes_pod_annotation_prometheus_io_port": "8000",
    "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
    "__meta_kubernetes_pod_ip": "10.244.0.7",
    "__meta_kubernetes_pod_name": "voice-abc",
    "__meta_kubernetes_namespace": "speech",
    "__address__": "10.244.0.7",
}


def test_runtime_pods_on_the_real_node_are_scraped_with_the_monitor_labels() -> None:
    config = prometheus_config(_Cluster(), "real-node")  # type: ignore[arg-type]
    target = _relabel(config, POD)
    assert target is not None
    assert target["__address__"] == "10.244.0.7:8000"
    assert target["__metrics_path__"] == "/metrics"
    assert (target["tts_service"], target["pod"], target["namespace"]) == (
        "voice", "voice-abc", "speech"
    )  # fmt: skip
    [sd] = config["scrape_configs"][0]["kubernetes_sd_configs"]
    assert sd["role"] == "pod" and sd["api_server"] == _Cluster.server


@pytest.mark.parametrize(
    "change",
    [
        {"__meta_kubernetes_pod_node_name": "gpu-node-1"},  # a stub pod: its address leads nowhere
        {"__meta_kubernetes_pod_phase": "Pending"},
        {"__meta_kubernetes_pod_label_app_kubernetes_io_managed_by": "someone-else"},
        {"__meta_kubernetes_pod_annotation_prometheus_io_scrape": "false"},
    ],
)
def test_other_pods_are_not_scraped(change: dict[str, str]) -> None:
    config = prometheus_config(_Cluster(), "real-node")  # type: ignore[arg-type]
    assert _relabel(config, POD | change) is None


def test_the_rate_window_covers_four_scrapes_and_polls() -> None:
    window_s = int(KEDA_RATE_WINDOW.removesuffix("s"))
    assert window_s >= 4 * SCRAPE_INTERVAL_S and window_s >= 4 * KEDA_POLLING_INTERVAL_S


def test_external_metrics_are_served_by_the_keda_adapter_on_loopback() -> None:
    service, api = external_metrics_api(12345)
    assert service["spec"] == {
        "type": "ExternalName",
        "externalName": "localhost",
        "ports": [{"name": "https", "port": 12345}],
    }
    assert api["metadata"]["name"] == "v1beta1.external.metrics.k8s.io"
    assert api["spec"]["service"]["name"] == service["metadata"]["name"]


def test_by_pod_splits_the_trigger_query_and_refuses_anything_else() -> None:
    trigger = queue_latency_query("speech", "voice", "20s")
    split = by_pod(trigger)
    assert split.count("sum by (pod) (rate(") == 2
    assert split.replace("sum by (pod) (rate(", "sum(rate(") == trigger
    with pytest.raises(ValueError, match="not the queue-latency query"):
        by_pod("up")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    timeline = Timeline("speech", "voice", 0.1, events={"load on": 2.0, "load off": 6.0})
    for t in range(10):
        busy = 2 <= t <= 6
        timeline.samples.append(
            Sample(
                t=float(t),
                replicas=3 if busy else 1,
                ready=2 if busy else 1,
                requests_per_s=5.0 if busy else 0.0,
                queue_latency_s={"voice-a": 0.4 if busy else 0.0, "voice-b": 0.2},
                service_latency_s=0.3 if busy else 0.0,
            )
        )
    assert timeline.first(lambda s: s.replicas >= 3) == 2.0
    path = tmp_path / "plot.png"
    plot(timeline, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    timeline.save(tmp_path / "t.json")
    assert '"load on": 2.0' in (tmp_path / "t.json").read_text()
