"""The kind provider (E2E_PROVIDER=kind): the same tests on a kind cluster, for Docker hosts.

Both images are built from the repository's Dockerfiles and loaded with `kind load`; GPU
nodes are faked by advertising nvidia.com/gpu through each node's status subresource (the
documented way to advertise an extended resource), plus the GPU labels and taint. Runtime
pods really run there (CPU fallback with a generated test voice), so a request through the
Service returns audio. Without docker, kind or a reachable Docker engine every test skips
with that reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from kubeapi import wait_for
from tts_cluster import GPU_RESOURCE, REPO_ROOT, ClusterError

CLUSTER_NAME = "tts-e2e"
RUNTIME_IMAGE = "ghcr.io/tts-operator/tts-runtime:0.1.0"
OPERATOR_IMAGE = "ghcr.io/tts-operator/tts-operator:0.1.0"
IMAGES = {RUNTIME_IMAGE: "Dockerfile.runtime", OPERATOR_IMAGE: "Dockerfile.operator"}
MODEL_HOST_DIR = "/var/lib/tts-e2e/voice"
# The rollout scenario switches to this tag: the same runtime image, loaded under a second name.
ROLLOUT_IMAGE = "ghcr.io/tts-operator/tts-runtime:0.1.1-e2e"
# What every test TTSService starts from on kind: the generated voice, the loaded image, CPU.
KIND_BASE_SPEC = {
    "model": {"uri": f"file://{MODEL_HOST_DIR}", "precision": "fp32"},
    "runtime": {"image": RUNTIME_IMAGE, "imagePullPolicy": "Never", "device": "cpu"},
}


def kind_prerequisites() -> str | None:
    """Why the kind provider cannot run here, or None when it can."""
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"E2E_PROVIDER=kind needs `{tool}` on PATH (not found)"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return (
            f"E2E_PROVIDER=kind needs a Docker engine: `docker info` failed ({info.stderr.strip()})"
        )
    for dockerfile in IMAGES.values():
        if not (REPO_ROOT / dockerfile).exists():
            return f"E2E_PROVIDER=kind builds the images from {dockerfile}, which is missing"
    return None


class KindCluster:
    """A kind cluster with fake GPUs; offers the LocalCluster methods the tests use."""

    def __init__(self, workdir: Path, name: str = CLUSTER_NAME) -> None:
        self.workdir = workdir
        self.name = name
        self.kubeconfig = workdir / "kubeconfig"

    # -- lifecycle

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._run("kind", "delete", "cluster", "--name", self.name, check=False)
        self._run(
            "kind", "create", "cluster", "--name", self.name,
            f"--kubeconfig={self.kubeconfig}", "--wait=180s",
        )  # fmt: skip
        for image, dockerfile in IMAGES.items():
            self._run(
                "docker", "build", "-f", str(REPO_ROOT / dockerfile), "-t", image, str(REPO_ROOT)
            )
            self._run("kind", "load", "docker-image", image, "--name", self.name)
        self._run("docker", "tag", RUNTIME_IMAGE, ROLLOUT_IMAGE)
        self._run("kind", "load", "docker-image", ROLLOUT_IMAGE, "--name", self.name)
        self._install_test_voice()
        for node in self.node_names():
            self._fake_gpus(node, 2)

    def stop(self) -> None:
        self._run("kind", "delete", "cluster", "--name", self.name, check=False)

    def node_names(self) -> list[str]:
        out = self.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").stdout
        return out.split()

    def restart(self, name: str) -> None:
        """Stop a control-plane container; the kubelet starts its static pod again."""
        if name != "kube-apiserver":
            raise ClusterError(f"restarting {name} is not supported on kind")
        node = f"{self.name}-control-plane"
        self._run(
            "docker", "exec", node, "sh", "-c",
            "crictl stop $(crictl ps --name kube-apiserver -q)",
        )  # fmt: skip
        wait_for(
            "kube-apiserver back",
            lambda: self.kubectl("get", "--raw=/readyz", check=False).returncode == 0,
            180,
        )

    # -- the methods the tests share with LocalCluster

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self._run(
            "kubectl",
            f"--kubeconfig={self.kubeconfig}",
            *args,
            stdin=stdin,
            check=check,
            timeout=timeout,
        )

    def apply(self, *objects: dict[str, Any]) -> None:
        manifest = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.kubectl(
            "apply",
            "--server-side",
            "--field-manager=tts-e2e",
            "-f",
            "-",
            stdin=json.dumps(manifest),
        )

    def add_gpu_node(self, name: str, gpus: int = 2) -> None:
        raise ClusterError("kind cannot add nodes on the fly (E2E_PROVIDER=local can)")

    def _fake_gpus(self, node: str, gpus: int) -> None:
        """Label and taint a kind node like a GPU node and advertise `gpus` nvidia.com/gpu
        through its status subresource (the kubelet keeps extended resources it does not
        manage)."""
        self.kubectl(
            "label", "node", node, "--overwrite",
            "nvidia.com/gpu.present=true", "nvidia.com/gpu.product=NVIDIA-A10G",
        )  # fmt: skip
        self.kubectl("taint", "node", node, f"{GPU_RESOURCE}=present:NoSchedule", "--overwrite")
        path = f"/status/capacity/{GPU_RESOURCE.replace('/', '~1')}"
        patch = json.dumps([{"op": "add", "path": path, "value": str(gpus)}])
        self.kubectl("patch", "node", node, "--subresource=status", "--type=json", "-p", patch)

    def delete_node(self, name: str) -> None:
        raise ClusterError("deleting nodes is not supported on kind")

    def metrics_api_available(self) -> bool:
        return False  # no custom-metrics adapter is installed on kind

    def write_pod_metric(self, namespace: str, pod: str, metric: str, value: str) -> None:
        raise ClusterError("the custom-metrics test adapter runs only with E2E_PROVIDER=local")

    # -- the runtime's test voice, on every node for file:// model URIs

    def _install_test_voice(self) -> None:
        from tts_runtime.testmodel import write_test_model

        voice_dir = self.workdir / "voice"
        voice_dir.mkdir(parents=True, exist_ok=True)
        write_test_model(voice_dir)
        nodes = self._run("kind", "get", "nodes", "--name", self.name).stdout.split()
        for node in nodes:
            self._run("docker", "exec", node, "mkdir", "-p", MODEL_HOST_DIR)
            self._run("docker", "cp", f"{voice_dir}/.", f"{node}:{MODEL_HOST_DIR}")

    # -- internals

    def _run(
        self, *argv: str, stdin: str | None = None, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"{' '.join(argv[:4])} failed after {time.monotonic() - started:.0f}s: "
                f"{result.stderr.strip()[-2000:]}"
            )
        return result
