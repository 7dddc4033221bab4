"""The cluster's binaries, built from Go modules by hack/cluster-binaries.sh and cached."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tts_cluster.base import REPO_ROOT, ClusterError

BINARIES_SCRIPT = REPO_ROOT / "hack" / "cluster-binaries.sh"


@dataclass(frozen=True)
class Binaries:
    """Paths printed by hack/cluster-binaries.sh."""

    k8s_version: str
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    kwok_stages: Path
    helm: Path
    custom_metrics_adapter: Path
    kubelet: Path
    kube_proxy: Path
    coredns: Path
    stub_gpu_device_plugin: Path
    prometheus: Path
    keda_operator: Path
    keda_adapter: Path
    keda_crds: Path
    bin_dir: Path

    @classmethod
    def from_script_output(cls, text: str) -> Binaries:
        values = dict(
            line.split("=", 1) for line in text.splitlines() if "=" in line and line[0].isupper()
        )
        try:
            return cls(
                k8s_version=values["K8S_VERSION"],
                etcd=Path(values["ETCD"]),
                kube_apiserver=Path(values["KUBE_APISERVER"]),
                kube_controller_manager=Path(values["KUBE_CONTROLLER_MANAGER"]),
                kube_scheduler=Path(values["KUBE_SCHEDULER"]),
                kubectl=Path(values["KUBECTL"]),
                kwok=Path(values["KWOK"]),
                kwok_stages=Path(values["KWOK_STAGES"]),
                helm=Path(values["HELM"]),
                custom_metrics_adapter=Path(values["CUSTOM_METRICS_ADAPTER"]),
                kubelet=Path(values["KUBELET"]),
                kube_proxy=Path(values["KUBE_PROXY"]),
                coredns=Path(values["COREDNS"]),
                stub_gpu_device_plugin=Path(values["STUB_GPU_DEVICE_PLUGIN"]),
                prometheus=Path(values["PROMETHEUS"]),
                keda_operator=Path(values["KEDA_OPERATOR"]),
                keda_adapter=Path(values["KEDA_ADAPTER"]),
                keda_crds=Path(values["KEDA_CRDS"]),
                bin_dir=Path(values["BIN_DIR"]),
            )
        except KeyError as missing:
            raise ClusterError(f"{BINARIES_SCRIPT} did not print {missing}") from None


def locate_binaries(build: bool = False) -> Binaries:
    """The cached binaries; without `build`, raise ClusterError naming what is missing."""
    args = [str(BINARIES_SCRIPT)] + ([] if build else ["--check"])
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise ClusterError(detail[0])
    return Binaries.from_script_output(result.stdout)
