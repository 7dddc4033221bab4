#!/usr/bin/env python3
"""Control-plane scale figure: apply N TTSServices at once to the local cluster and measure
how the operator copes.

Prints the time until every TTSService reports Ready=True, the operator's reconciles per
second while converging (from its tts_operator_reconciles_total counter), and the operator
process's peak resident memory (VmHWM). Runs its own cluster (stub GPU nodes, kwok pods), so
the figure is the operator plus a real API server, controller manager and scheduler; no
container runs. Usage: hack/scale_bench.py [--count 100] [--gpus-per-node 8]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from kubeapi import E2EKube, condition, tts_body
from operatorproc import OperatorProcess
from tts_cluster import REPO_ROOT, LocalCluster, locate_binaries

NAMESPACE = "scale"


def vm_hwm_mib(pid: int) -> float:
    """Peak resident set size of a live process (kernel high-water mark)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def ready_count(kube: E2EKube) -> int:
    items = kube.custom.list_namespaced_custom_object(
        "ttsoperator.io", "v1alpha1", NAMESPACE, "ttsservices"
    )["items"]
    return sum(1 for t in items if (condition(t, "Ready") or {}).get("status") == "True")


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
            body = tts_body(f"voice-{i:03d}", {"replicas": 1})
            body["metadata"]["namespace"] = NAMESPACE
            items.append(body)
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        runs_before = operator.reconciles()
        start = time.monotonic()
        cluster.kubectl("apply", "--server-side", "-f", "-", stdin=manifest, timeout=300)
        applied = time.monotonic() - start

        ready, samples = 0, []
        while ready < count:
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"only {ready}/{count} Ready after {timeout:.0f}s")
            time.sleep(0.5)
            ready = ready_count(kube)
            samples.append((round(time.monotonic() - start, 1), ready))
        elapsed = time.monotonic() - start
        reconciles = operator.reconciles() - runs_before
        return {
            "count": count,
            "nodes": len(nodes),
            "apply_s": applied,
            "all_ready_s": elapsed,
            "reconciles": reconciles,
            "reconciles_per_s": reconciles / elapsed,
            "operator_idle_rss_mib": idle_mib,
            "operator_peak_rss_mib": vm_hwm_mib(pid),
            "half_ready_s": next(t for t, n in samples if n >= count / 2),
            "k8s": binaries.k8s_version,
        }
    finally:
        if operator is not None:
            operator.stop()
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    result = run(args.count, args.gpus_per_node, args.timeout)
    cpus = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"## {result['count']} TTSServices applied at once")
    print(f"machine: {platform.machine()}, {cpus} CPUs; Kubernetes {result['k8s']} (local, kwok)")
    print(f"stub GPU nodes: {result['nodes']}")
    print("| measure | value |")
    print("|---|---|")
    print(f"| kubectl apply (100 objects, server-side) | {result['apply_s']:.1f} s |")
    print(f"| half Ready | {result['half_ready_s']:.1f} s |")
    print(f"| all Ready=True | {result['all_ready_s']:.1f} s |")
    print(f"| reconciles until all Ready | {result['reconciles']:.0f} |")
    print(f"| reconciles per second | {result['reconciles_per_s']:.1f} |")
    print(f"| operator RSS before the burst | {result['operator_idle_rss_mib']:.0f} MiB |")
    print(f"| operator peak RSS (VmHWM) | {result['operator_peak_rss_mib']:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
