"""The real autoscaling chain on the local cluster: Prometheus scrapes the runtime pods on the
real node, and KEDA (operator + metrics API server) turns a PromQL query into the external
metric the HPA controller scales on.

All three are host processes built from their Go modules (hack/cluster-binaries.sh), like the
rest of the control plane, and listen on 127.0.0.1 only. Prometheus reaches the pods on the
node bridge; KEDA's adapter is an aggregated API server behind an
ExternalName Service, like the custom-metrics test adapter (metrics_adapter.py). KEDA's
operator and adapter talk gRPC with mutual TLS, with a certificate from the cluster's CA.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tts_cluster import metrics_adapter
from tts_cluster.base import LOOPBACK, ClusterError, free_port, wait_until
from tts_cluster.processes import Component

if TYPE_CHECKING:
    from tts_cluster.controlplane import LocalCluster

KEDA_NAMESPACE = "keda"
KEDA_ADAPTER_SERVICE = "keda-metrics-apiserver"
# Seconds between scrapes: short, so a test sees load within a few seconds. The rate window
# of the queries must cover at least 4 of them (KEDA_RATE_WINDOW).
SCRAPE_INTERVAL_S = 2
KEDA_RATE_WINDOW = "20s"
KEDA_POLLING_INTERVAL_S = 2


def prometheus_config(cluster: LocalCluster, node_name: str) -> dict[str, Any]:
    """Scrape every runtime pod on the real node the way the chart's PodMonitor does: the
    pod's prometheus.io/* annotations, and the labels tts_service, pod and namespace."""
    pki = cluster.pki
    meta = "__meta_kubernetes_pod_"
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "scrape_timeout": "2s"},
        "scrape_configs": [
            {
                "job_name": "tts-runtime",
                "kubernetes_sd_configs": [
                    {
                        "role": "pod",
                        "api_server": cluster.server,
                        "tls_config": {
                            "ca_file": str(pki.path("ca.crt")),
                            "cert_file": str(pki.path("admin.crt")),
                            "key_file": str(pki.path("admin.key")),
                        },
                    }
                ],
                "relabel_configs": [
                    # Only pods of the real node: stub pods' addresses lead nowhere.
                    {"source_labels": [f"{meta}node_name"], "regex": node_name, "action": "keep"},
                    {"source_labels": [f"{meta}phase"], "regex": "Running", "action": "keep"},
                    {
                        "source_labels": [f"{meta}label_app_kubernetes_io_managed_by"],
                        "regex": "tts-operator",
                        "action": "keep",
                    },
                    {
                        "source_labels": [f"{meta}annotation_prometheus_io_scrape"],
                        "regex": "true",
                        "action": "keep",
                    },
                    {
                        "source_labels": [f"{meta}ip", f"{meta}annotation_prometheus_io_port"],
                        "separator": ":",
                        "target_label": "__address__",
                    },
                    {
                        "source_labels": [f"{meta}annotation_prometheus_io_path"],
                        "regex": "(.+)",
                        "target_label": "__metrics_path__",
                    },
                    {
                        "source_labels": [f"{meta}label_app_kubernetes_io_instance"],
                        "target_label": "tts_service",
                    },
                    {"source_labels": [f"{meta}name"], "target_label": "pod"},
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                ],
            }
        ],
    }


class Autoscalers:
    """Prometheus, KEDA's operator and KEDA's metrics API server for one LocalCluster."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.prometheus_port = free_port()
        self.keda_grpc_port = free_port()
        self.adapter_port = free_port()

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOOPBACK}:{self.prometheus_port}"

    def start(self, node_name: str) -> None:
        cluster = self.cluster
        binaries, workdir = cluster.binaries, cluster.workdir
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(cluster, node_name), sort_keys=False))
        certs = self._keda_certs()
        cluster.kubectl("apply", "--server-side", "-f", str(binaries.keda_crds), timeout=120)
        cluster.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KEDA_NAMESPACE}}
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "WATCH_NAMESPACE": "",  # every namespace
            "POD_NAMESPACE": KEDA_NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
        }
        kubeconfig = str(cluster.kubeconfig)
        specs: dict[str, tuple[list[str], dict[str, str] | None]] = {
            "prometheus": (
                [
                    str(binaries.prometheus),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'prometheus'}",
                    "--storage.tsdb.retention.time=1d",
                    f"--web.listen-address={LOOPBACK}:{self.prometheus_port}",
                    "--log.level=warn",
                ],
                None,
            ),
            "keda-operator": (
                [
                    str(binaries.keda_operator),
                    "--leader-elect=false",
                    f"--metrics-bind-address={LOOPBACK}:{free_port()}",
                    f"--health-probe-bind-address={LOOPBACK}:{free_port()}",
                    f"--metrics-service-bind-address={LOOPBACK}:{self.keda_grpc_port}",
                    f"--cert-dir={certs}",
                    f"--ca-dir={certs}",
                    "--enable-cert-rotation=false",
                    "--enable-webhook-patching=false",
                    "--enable-apiservice-patching=false",
                    "--zap-log-level=info",
                ],
                env,
            ),
            "keda-adapter": (
                [
                    str(binaries.keda_adapter),
                    f"--secure-port={self.adapter_port}",
                    f"--bind-address={LOOPBACK}",
                    f"--cert-dir={certs}",
                    f"--tls-cert-file={certs / 'tls.crt'}",
                    f"--tls-private-key-file={certs / 'tls.key'}",
                    f"--port={free_port()}",  # its own /metrics, on loopback (patched build)
                    f"--metrics-service-address={LOOPBACK}:{self.keda_grpc_port}",
                    f"--lister-kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                ],
                env,
            ),
        }
        for name, (argv, component_env) in specs.items():
            component = Component(
                name, argv, workdir / "logs" / f"{name}.log", detach=cluster.detach,
                env=component_env,
            )  # fmt: skip
            cluster.components[name] = component
            component.start()
        cluster.apply(*external_metrics_api(self.adapter_port))

    def _keda_certs(self) -> Path:
        """tls.crt/tls.key (server and client, for 127.0.0.1) and ca.crt, the names KEDA
        reads from its --cert-dir."""
        pki = self.cluster.pki
        pki.issue(
            "keda",
            "/CN=keda",
            "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        certs = self.cluster.workdir / "keda-certs"
        certs.mkdir(exist_ok=True)
        for source, target in (
            ("keda.crt", "tls.crt"),
            ("keda.key", "tls.key"),
            ("ca.crt", "ca.crt"),
        ):
            (certs / target).write_bytes(pki.path(source).read_bytes())
        return certs

    # -- readiness and queries

    def prometheus_ready(self) -> bool:
        with urllib.request.urlopen(f"{self.prometheus_url}/-/ready", timeout=2) as response:
            return int(response.status) == 200

    def external_metrics_available(self) -> bool:
        return metrics_adapter.available(self.cluster, "v1beta1.external.metrics.k8s.io")

    def wait_ready(self, timeout: float = 120) -> None:
        for name in ("prometheus", "keda-operator", "keda-adapter"):
            if not self.cluster.components[name].running:
                raise ClusterError(f"{name} exited:\n{self.cluster.components[name].log_tail()}")
        wait_until("Prometheus ready", self.prometheus_ready, timeout)
        wait_until(
            "KEDA's external metrics API available", self.external_metrics_available, timeout
        )

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query: Prometheus's `result` list (each {metric, value: [t, "v"]})."""
        return query(self.prometheus_url, promql)


def query(
    prometheus_url: str, promql: str, at: float | None = None, timeout: float = 10
) -> list[dict[str, Any]]:
    """An instant query (at `at`, a Unix time, when given): Prometheus's `result` list."""
    params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise ClusterError(f"Prometheus refused {promql!r}: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def external_metrics_api(port: int) -> list[dict[str, Any]]:
    """external.metrics.k8s.io served by KEDA's adapter on loopback (as the custom-metrics
    test adapter serves custom.metrics.k8s.io)."""
    return metrics_adapter.loopback_api(
        KEDA_ADAPTER_SERVICE, KEDA_NAMESPACE, port, "external.metrics.k8s.io", {"v1beta1": 100}
    )
