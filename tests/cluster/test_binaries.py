"""binaries: hack/cluster-binaries.sh's KEY=VALUE output, parsed into the binaries' paths."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from tts_cluster.base import ClusterError
from tts_cluster.binaries import BINARIES_SCRIPT, Binaries

BIN = Path("/cache/k8s/v1.37.0/bin")
KEYS = {
    "ETCD": "etcd",
    "KUBE_APISERVER": "kube-apiserver",
    "KUBE_CONTROLLER_MANAGER": "kube-controller-manager",
    "KUBE_SCHEDULER": "kube-scheduler",
    "KUBECTL": "kubectl",
    "KUBELET": "kubelet",
    "KUBE_PROXY": "kube-proxy",
    "KWOK": "kwok",
    "KWOK_STAGES": "kwok-stages.yaml",
    "HELM": "helm",
    "CUSTOM_METRICS_ADAPTER": "custom-metrics-test-adapter",
    "COREDNS": "coredns",
    "STUB_GPU_DEVICE_PLUGIN": "stub-gpu-device-plugin",
    "PROMETHEUS": "prometheus",
    "KEDA_OPERATOR": "keda-operator",
    "KEDA_ADAPTER": "keda-adapter",
    "KEDA_CRDS": "keda-crds.yaml",
}


def _output(drop: str | None = None) -> str:
    lines = ["[cluster-binaries] all built", "K8S_VERSION=v1.37.0"]
    lines += [f"{key}={BIN / name}" for key, name in KEYS.items()]
    lines += ["KWOKCTL=/elsewhere/kwokctl", f"BIN_DIR={BIN}", "lower=case is ignored"]
    return "\n".join(line for line in lines if not (drop and line.startswith(f"{drop}=")))


def test_parses_every_path() -> None:
    binaries = Binaries.from_script_output(_output())
    assert binaries.k8s_version == "v1.37.0"
    assert binaries.bin_dir == BIN
    fields = {f.name for f in dataclasses.fields(Binaries)} - {"k8s_version", "bin_dir"}
    assert fields == {key.lower() for key in KEYS}
    for key, name in KEYS.items():
        assert getattr(binaries, key.lower()) == BIN / name, key


def test_order_does_not_matter() -> None:
    lines = _output().splitlines()
    assert Binaries.from_script_output("\n".join(reversed(lines))) == (
        Binaries.from_script_output(_output())
    )


@pytest.mark.parametrize(
    "key", ["K8S_VERSION", "KUBE_PROXY", "COREDNS", "PROMETHEUS", "KEDA_ADAPTER", "BIN_DIR"]
)
def test_a_missing_key_is_named(key: str) -> None:
    with pytest.raises(ClusterError, match=key) as raised:
        Binaries.from_script_output(_output(drop=key))
    assert str(BINARIES_SCRIPT) in str(raised.value)


def test_the_script_prints_every_key_the_parser_reads() -> None:
    heredoc = BINARIES_SCRIPT.read_text().rsplit("cat <<EOF\n", 1)[1].split("\nEOF", 1)[0]
    keys = re.findall(r"^([A-Z0-9_]+)=", heredoc, re.MULTILINE)
    assert len(keys) == len(heredoc.splitlines())
    binaries = Binaries.from_script_output("\n".join(f"{key}=/x/{key}" for key in keys))
    assert binaries.kube_proxy == Path("/x/KUBE_PROXY")
