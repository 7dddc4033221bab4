#!/usr/bin/env python3
"""Control-plane scale figure: apply N TTSServices at once to the local cluster and measure
how the operator copes.

Prints the time until every TTSService reports Ready=True, the passes per TTSService (from
the operator's tts_operator_reconciles_total, by handler), the API writes per TTSService
(the operator's own, from its tts_operator_api_writes_total by verb and kind, plus any
patch of a TTSService itself, from the API server's apiserver_request_total: kopf's
bookkeeping in older versions, none now), and the operator
process's peak resident memory (VmHWM), each beside the issue's target. Then where the time
went: when the objects reached each stage on the way to Ready (from their own timestamps),
and the CPU seconds and peak memory of every process. Runs its own cluster
(stub GPU nodes, kwok pods), so the figure is the operator plus a real API server, controller
manager and scheduler; no container runs.

Usage: hack/scale_bench.py [--count 100] [--gpus-per-node 8] [--timeout 600]
(`make scale-bench SCALE_COUNT=1000` for the 1,000-TTSService run.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from kubeapi import E2EKube, condition, tts_body
from kubernetes import watch
from operatorproc import OperatorProcess
from prometheus_client.parser import text_string_to_metric_families
from tts_cluster import REPO_ROOT, LocalCluster, locate_binaries

NAMESPACE = "scale"
# Issue 12's targets for 1,000 TTSServices on the 2-CPU machine.
TARGET_READY_S = 120
TARGET_PASSES = 3
TARGET_WRITES = 8
TARGET_RSS_MIB = 256
# The operator's children: only the operator writes them by server-side apply.
CHILD_RESOURCES = (
    "configmaps",
    "deployments",
    "services",
    "poddisruptionbudgets",
    "horizontalpodautoscalers",
)


def vm_hwm_mib(pid: int) -> float:
    """Peak resident set size of a live process (kernel high-water mark)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


class ReadyWatch(threading.Thread):
    """When each TTSService first reports Ready=True (seconds since `start`), from one watch
    started before the apply: listing 1,000 objects every second would load the API server
    being measured."""

    def __init__(self, kube: E2EKube, count: int, start: float, timeout: float) -> None:
        super().__init__(daemon=True)
        self.kube, self.count, self.start_at, self.timeout = kube, count, start, timeout
        self.ready_at: dict[str, float] = {}
        self.error: Exception | None = None

    def run(self) -> None:
        stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
        try:
            while len(self.ready_at) < self.count:
                left = self.timeout - (time.monotonic() - self.start_at)
                if left <= 0:
                    return
                for event in stream.stream(
                    self.kube.custom.list_namespaced_custom_object,
                    "ttsoperator.io", "v1alpha1", NAMESPACE, "ttsservices",
                    timeout_seconds=max(1, int(min(left, 60))),
                ):  # fmt: skip
                    self._saw(event["object"])
                    if len(self.ready_at) == self.count:
                        stream.stop()
        except Exception as err:  # reported by times()
            self.error = err

    def _saw(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if name not in self.ready_at and (condition(obj, "Ready") or {}).get("status") == "True":
            self.ready_at[name] = time.monotonic() - self.start_at

    def times(self) -> list[float]:
        self.join(self.timeout + 60)
        if self.error is not None:
            raise RuntimeError(f"the Ready watch failed: {self.error}") from self.error
        if len(self.ready_at) < self.count:
            raise RuntimeError(
                f"only {len(self.ready_at)}/{self.count} Ready after {self.timeout:.0f}s"
            )
        return sorted(self.ready_at.values())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_process(cluster: LocalCluster, operator_pid: int) -> dict[str, float]:
    """CPU seconds so far of each control-plane process, the operator, and this script's
    finished children (kubectl)."""
    out = {name: cpu_seconds(pid) for name, pid in cluster.component_pids().items()}
    out["tts-operator"] = cpu_seconds(operator_pid)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["kubectl"] = children.ru_utime + children.ru_stime
    own = resource.getrusage(resource.RUSAGE_SELF)
    out["this script"] = own.ru_utime + own.ru_stime
    return out


def by_label(operator: OperatorProcess, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """A counter of the operator's, by the values of `labels`."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                key = tuple(sample.labels.get(label, "") for label in labels)
                out[key] = out.get(key, 0.0) + sample.value
    return out


def apiserver_requests(cluster: LocalCluster) -> dict[tuple[str, str, str], float]:
    """Every request the API server counted (apiserver_request_total), by verb, resource and
    subresource, from all clients: where the control plane's work goes."""
    code, body = cluster.api_get("/metrics", timeout=30)
    if code != 200:
        raise RuntimeError(f"the API server's /metrics answered {code}")
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                labels = sample.labels
                key = (labels.get("verb", ""), labels.get("resource", ""),
                       labels.get("subresource", ""))  # fmt: skip
                out[key] = out.get(key, 0.0) + sample.value
    return out


def operator_writes(requests: dict[tuple[str, str, str], float]) -> dict[str, float]:
    """The writes of the operator among the API server's requests: patches of TTSServices
    themselves (kopf's bookkeeping annotations in older versions; none expected now), the
    operator's status patches, and the server-side applies and deletes of its children."""
    out = {"kopf": 0.0, "status": 0.0, "children": 0.0}
    for (verb, plural, sub), value in requests.items():
        if plural == "ttsservices" and verb == "PATCH":
            out["status" if sub == "status" else "kopf"] += value
        elif plural in CHILD_RESOURCES and not sub and verb in ("APPLY", "DELETE"):
            out["children"] += value
    return out


def _stamp(value: str | None) -> float | None:
    """An RFC 3339 timestamp of the API server's (whole seconds) as a Unix time."""
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _transition(obj: dict[str, Any], type_: str, reason: str | None = None) -> float | None:
    found = condition(obj, type_) or {}
    if found.get("status") != "True" or (reason and found.get("reason") != reason):
        return None
    return _stamp(found.get("lastUpdateTime") or found.get("lastTransitionTime"))


def stage_times(kube: E2EKube, started: float) -> dict[str, list[float]]:
    """When each object reached each stage of the way to Ready, in seconds after the apply
    started, read from the objects' own timestamps (whole seconds): which stage the time
    goes to."""
    listed = {
        "tts": kube.custom.list_namespaced_custom_object(
            "ttsoperator.io", "v1alpha1", NAMESPACE, "ttsservices"
        )["items"],
        "deployments": kube.plain(kube.apps.list_namespaced_deployment(NAMESPACE))["items"],
        "pods": kube.plain(kube.core.list_namespaced_pod(NAMESPACE))["items"],
    }

    def created(obj: dict[str, Any]) -> float | None:
        return _stamp(obj["metadata"].get("creationTimestamp"))

    stages = {
        "TTSService created": [created(o) for o in listed["tts"]],
        "Deployment created": [created(o) for o in listed["deployments"]],
        "pod created": [created(o) for o in listed["pods"]],
        "pod scheduled": [_transition(o, "PodScheduled") for o in listed["pods"]],
        "pod Ready": [_transition(o, "Ready") for o in listed["pods"]],
        "Deployment rolled out": [
            _transition(o, "Progressing", "NewReplicaSetAvailable") for o in listed["deployments"]
        ],
        "TTSService Ready": [_transition(o, "Ready") for o in listed["tts"]],
    }
    return {
        stage: sorted(t - started for t in times if t is not None)
        for stage, times in stages.items()
    }


def diff(after: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def run(count: int, gpus_per_node: int, timeout: float) -> dict[str, Any]:
    binaries = locate_binaries()
    workdir = Path(tempfile.mkdtemp(prefix="tts-scale-", dir=REPO_ROOT / ".cache"))
    cluster = LocalCluster(binaries, workdir / "cluster")
    nodes = [f"gpu-node-{i + 1}" for i in range(math.ceil(count / gpus_per_node))]
    cluster.start(gpu_nodes=nodes, gpus_per_node=gpus_per_node)
    operator: OperatorProcess | None = None
    try:
        for path in sorted((REPO_ROOT / "crds").glob("*.yaml")):
            cluster.kubectl("apply", "--server-side", "-f", str(path))
        kube = E2EKube(cluster.kubeconfig)
        kube.wait_crd_established("ttsservices.ttsoperator.io")
        kube.create_namespace(NAMESPACE)
        operator = OperatorProcess(
            cluster.kubeconfig,
            workdir / "operator.log",
            extra_env={"TTS_OPERATOR_LOG_LEVEL": "info"},
        )
        operator.start()
        assert operator.component is not None and operator.component.pid is not None
        pid = operator.component.pid
        idle_mib = vm_hwm_mib(pid)

        items = []
        for i in range(count):
            body = tts_body(f"voice-{i:04d}", {"replicas": 1})
            body["metadata"]["namespace"] = NAMESPACE
            items.append(body)
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        passes_before = by_label(operator, "tts_operator_reconciles_total", "handler")
        writes_before = by_label(operator, "tts_operator_api_writes_total", "verb", "kind")
        requests_before = apiserver_requests(cluster)
        cpu_before = cpu_by_process(cluster, pid)
        start, started_at = time.monotonic(), time.time()
        watcher = ReadyWatch(kube, count, start, timeout)
        watcher.start()
        cluster.kubectl("apply", "--server-side", "-f", "-", stdin=manifest, timeout=600)
        applied = time.monotonic() - start

        ready_times = watcher.times()
        elapsed = ready_times[-1]
        cpu = diff(cpu_by_process(cluster, pid), cpu_before)
        peaks = {name: vm_hwm_mib(p) for name, p in cluster.component_pids().items()}
        peak_mib = vm_hwm_mib(pid)
        passes = diff(by_label(operator, "tts_operator_reconciles_total", "handler"), passes_before)
        writes = diff(
            by_label(operator, "tts_operator_api_writes_total", "verb", "kind"), writes_before
        )
        requests = diff(apiserver_requests(cluster), requests_before)
        server = operator_writes(requests)
        stages = stage_times(kube, started_at)
        return {
            "stages": stages,
            "requests": requests,
            "cpu": cpu,
            "component_peak_mib": peaks,
            "count": count,
            "nodes": len(nodes),
            "apply_s": applied,
            "all_ready_s": elapsed,
            "half_ready_s": ready_times[(count - 1) // 2],
            "passes": {k[0]: v for k, v in passes.items()},
            "writes": {f"{k[0]} {k[1]}": v for k, v in writes.items()},
            "kopf_writes": server.get("kopf", 0.0),
            "server_operator_writes": server.get("status", 0.0) + server.get("children", 0.0),
            "operator_idle_rss_mib": idle_mib,
            "operator_peak_rss_mib": peak_mib,
            "k8s": binaries.k8s_version,
        }
    finally:
        if operator is not None:
            operator.stop()
        cluster.stop()


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    r = run(args.count, args.gpus_per_node, args.timeout)
    n = r["count"]
    passes = sum(r["passes"].values())
    own_writes = sum(r["writes"].values())
    writes = own_writes + r["kopf_writes"]
    cpus = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"## {n} TTSServices applied at once")
    print(
        f"machine: {platform.machine()}, {cpus} CPUs (load average {load} at the end); "
        f"Kubernetes {r['k8s']} (local, kwok); stub GPU nodes: {r['nodes']}"
    )
    print()
    print("| measure | value | target (1,000) | met |")
    print("|---|---|---|---|")
    print(f"| kubectl apply ({n} objects, server-side) | {r['apply_s']:.1f} s | | |")
    print(f"| half Ready | {r['half_ready_s']:.1f} s | | |")
    print(
        f"| all Ready=True | {r['all_ready_s']:.1f} s | <= {TARGET_READY_S} s "
        f"| {verdict(r['all_ready_s'] <= TARGET_READY_S)} |"
    )
    print(
        f"| reconciles (passes) per TTSService | {passes / n:.2f} | <= {TARGET_PASSES} "
        f"| {verdict(passes / n <= TARGET_PASSES)} |"
    )
    print(
        f"| API writes per TTSService | {writes / n:.2f} | <= {TARGET_WRITES} "
        f"| {verdict(writes / n <= TARGET_WRITES)} |"
    )
    print(f"| operator RSS before the burst | {r['operator_idle_rss_mib']:.0f} MiB | | |")
    print(
        f"| operator peak RSS (VmHWM) | {r['operator_peak_rss_mib']:.0f} MiB "
        f"| <= {TARGET_RSS_MIB} MiB | {verdict(r['operator_peak_rss_mib'] <= TARGET_RSS_MIB)} |"
    )
    print()
    print("passes by handler (per TTSService):")
    for handler, value in sorted(r["passes"].items()):
        print(f"- {handler}: {value:.0f} ({value / n:.2f})")
    print("API writes by verb and kind (per TTSService):")
    for what, value in sorted(r["writes"].items()):
        print(f"- operator {what}: {value:.0f} ({value / n:.2f})")
    kopf = r["kopf_writes"]
    print(f"- PATCH of a TTSService itself (none expected): {kopf:.0f} ({kopf / n:.2f})")
    print(
        f"cross-check: the API server counted {r['server_operator_writes']:.0f} operator writes "
        f"(applies/deletes of children, status patches); its counter says {own_writes:.0f}"
    )
    print()
    print("when each stage was reached, seconds after the apply started (objects' timestamps):")
    print()
    print("| stage | objects | first | half | all |")
    print("|---|---|---|---|---|")
    for stage, times in r["stages"].items():
        if times:
            half = times[(len(times) - 1) // 2]
            print(f"| {stage} | {len(times)} | {times[0]:.0f} | {half:.0f} | {times[-1]:.0f} |")
    print()
    print("API server requests from all clients, by verb and resource (per TTSService):")
    print()
    print("| verb | resource | requests | per TTSService |")
    print("|---|---|---|---|")
    ranked = sorted(r["requests"].items(), key=lambda kv: -kv[1])
    for (verb, plural, sub), value in ranked:
        if value / n >= 0.05:
            what = f"{plural}/{sub}" if sub else plural
            print(f"| {verb} | {what} | {value:.0f} | {value / n:.2f} |")
    every = sum(r["requests"].values())
    print(f"| all | | {every:.0f} | {every / n:.2f} |")
    print()
    window = f"{r['all_ready_s']:.0f} s on {cpus} CPUs"
    print(f"CPU seconds used from the apply until all Ready ({window}), and peak memory:")
    peaks = {**r["component_peak_mib"], "tts-operator": r["operator_peak_rss_mib"]}
    for name, seconds in sorted(r["cpu"].items(), key=lambda kv: -kv[1]):
        peak = f", peak RSS {peaks[name]:.0f} MiB" if name in peaks else ""
        print(f"- {name}: {seconds:.1f} s{peak}")
    print(f"- all: {sum(r['cpu'].values()):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
