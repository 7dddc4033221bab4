"""A real node beside the stub ones: containerd, the kubelet, kube-proxy and a CNI bridge.

Pods bound to it run real containers from the project's images (imported into containerd:
nothing is pulled), get addresses on the node bridge (network.NODE_SUBNET), and reach
Services through kube-proxy's nftables rules. Its `nvidia.com/gpu` capacity comes from the
kubelet's own device manager, fed by the stub device plugin (hack/stub-gpu-device-plugin).

What this machine needs, found the hard way (docs/e2e.md):
- cgroup v1: the kubelet runs with `failCgroupV1: false` and the cgroupfs driver.
- No CAP_SYS_RESOURCE: containerd must not raise a sandbox's oom_score_adj
  (`restrict_oom_score_adj`), or every sandbox fails in runc with "can't get final child's PID".
- kube-proxy's iptables mode finds xtables targets missing; its nftables mode works.
- The kubelet refuses a loopback node IP: the node's IP is the bridge gateway.
containerd 1.6 lacks the RuntimeConfig RPC; kubelet 1.37 falls back to its own cgroup driver
setting (1.38 will not: the Kubernetes version is pinned with that in mind).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tts_cluster import network
from tts_cluster.base import LOOPBACK, REPO_ROOT, ClusterError, free_port, wait_until
from tts_cluster.images import Image
from tts_cluster.processes import Component, signal_group
from tts_cluster.stubgpus import GPU_RESOURCE

if TYPE_CHECKING:
    from tts_cluster.controlplane import LocalCluster

NODE_NAME = "real-node"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CRI_NAMESPACE = "k8s.io"
# containerd keeps its images here across clusters, so an imported image is imported once.
CONTAINERD_ROOT = REPO_ROOT / ".cache" / "containerd"
# Beside stub nodes (the e2e session), only pods that tolerate this taint land here; the demo's
# cluster has the real node alone and leaves it off.
REAL_NODE_TAINT = {"key": "tts-operator.io/real-node", "value": "true", "effect": "NoSchedule"}
REAL_NODE_LABEL = ("tts-operator.io/node", "real")
# The kubelet serves its device-plugin registration socket here whatever its --root-dir.
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
TABLES_BEFORE = "nft-tables-before.json"
# cgroup v1 with the cgroupfs driver: the kubelet's pods live under kubepods.
POD_CGROUP_ROOTS = (Path("/sys/fs/cgroup/pids/kubepods"),)
HOST_PACKAGES = ("containerd", "runc", "nft", "ip")


def missing_host_tools() -> list[str]:
    """The host programs a real node needs that are not on PATH (the skip reason)."""
    missing = [tool for tool in HOST_PACKAGES if shutil.which(tool) is None]
    if not (CNI_BIN_DIR / "bridge").exists():
        missing.append(f"{CNI_BIN_DIR}/bridge (containernetworking-plugins)")
    return missing


@dataclass
class NodePorts:
    kubelet: int = field(default_factory=free_port)
    kubelet_healthz: int = field(default_factory=free_port)
    proxy_healthz: int = field(default_factory=free_port)
    proxy_metrics: int = field(default_factory=free_port)


def containerd_config(workdir: Path, pause_image: str) -> str:
    """containerd 1.6's config (version 2): CRI with runc, cgroupfs, our CNI, local pause."""
    return f"""version = 2
root = "{CONTAINERD_ROOT}"
state = "{workdir / "containerd-state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{workdir / "containerd.sock"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # No CAP_SYS_RESOURCE in this sandbox: never raise oom_score_adj.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{workdir / "cni"}"
    max_conf_num = 1
"""


def cni_config(workdir: Path) -> dict[str, Any]:
    """The bridge network: pods on NODE_SUBNET behind the node bridge, no masquerade."""
    return {
        "cniVersion": "1.0.0",
        "name": "tts-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.NODE_BRIDGE,
                "isGateway": True,
                # Masquerading would dress pod traffic up as this host's: off, so the guard
                # table in network.py can see (and drop) anything that tries to leave.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [
                        [
                            {
                                "subnet": network.NODE_SUBNET,
                                "rangeStart": network.NODE_SUBNET.replace("0/24", "10"),
                                "gateway": network.NODE_IP,
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(workdir / "cni-ipam"),
                },
            },
        ],
    }


def kubelet_config(
    workdir: Path, ports: NodePorts, ca_file: Path, socket: Path, *, tainted: bool
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.NODE_IP,
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": LOOPBACK,
        "healthzPort": ports.kubelet_healthz,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "clusterDNS": [network.DNS_SERVICE_IP],
        "clusterDomain": "cluster.local",
        # Pods get the cluster DNS and nothing of this host's resolvers.
        "resolvConf": str(workdir / "resolv.conf"),
        "registerWithTaints": [REAL_NODE_TAINT] if tainted else [],
        # The images cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%"},
        "maxPods": 40,
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
        "syncFrequency": "5s",
        "nodeStatusReportFrequency": "10s",
    }


def kube_proxy_config(kubeconfig: Path, ports: NodePorts) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",  # iptables mode finds xtables targets missing on this kernel
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": network.POD_CIDR,
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": f"{LOOPBACK}:{ports.proxy_healthz}",
        "metricsBindAddress": f"{LOOPBACK}:{ports.proxy_metrics}",
        "nodePortAddresses": [f"{network.NODE_IP}/32"],
        # Leave the host's conntrack sysctls alone (no permission, and no need).
        "conntrack": {"maxPerCore": 0, "min": 0},
    }


class RealNode:
    """containerd + kubelet + kube-proxy + the stub GPU device plugin, as child processes."""

    def __init__(self, cluster: LocalCluster, gpus: int = 2, *, tainted: bool = True) -> None:
        self.cluster = cluster
        self.gpus = gpus
        self.tainted = tainted
        self.workdir = cluster.workdir / "node"
        self.ports = NodePorts()
        self.components: dict[str, Component] = {}
        self.socket = self.workdir / "containerd.sock"
        self.kubelet_root = self.workdir / "kubelet"

    # -- lifecycle

    def start(self, images: list[Image], pause_image: str) -> None:
        missing = missing_host_tools()
        if missing:
            raise ClusterError(f"the real node needs: {', '.join(missing)}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        CONTAINERD_ROOT.mkdir(parents=True, exist_ok=True)
        # The kubelet (through iptables-nft) and kube-proxy make nftables tables of their
        # own; teardown removes the ones that were not here before.
        (self.workdir / TABLES_BEFORE).write_text(json.dumps(nft_tables()))
        self._write_configs(pause_image)
        self._define_components()
        try:
            self._start("containerd")
            wait_until("containerd", self._containerd_ready, 30)
            self.import_images(images)
            self._start("kubelet")
            self._start("kube-proxy")
            self._start("stub-gpu-device-plugin")
            wait_until(f"node {NODE_NAME} Ready with GPUs", self._ready, 120, interval=0.5)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the pods' containers, then the node's processes, and undo their mounts."""
        if self.components.get("kubelet") and self.components["kubelet"].running:
            self._drain(timeout=30)
        for name in ("stub-gpu-device-plugin", "kube-proxy", "kubelet"):
            if name in self.components:
                self.components[name].stop()
        self._remove_containers()
        if "containerd" in self.components:
            self.components["containerd"].stop()
        clean_up_node(self.workdir)

    # -- images

    def import_images(self, images: list[Image]) -> None:
        """Hand OCI archives to containerd's CRI namespace, each build once."""
        present = set(self.ctr("images", "ls", "-q").stdout.split())
        record = CONTAINERD_ROOT / "imported.json"
        imported: dict[str, str] = json.loads(record.read_text()) if record.exists() else {}
        for image in images:
            if image.name in present and imported.get(image.name) == image.build_id:
                continue
            self.ctr("images", "import", str(image.archive), timeout=600)
            imported[image.name] = image.build_id
            record.write_text(json.dumps(imported, indent=2))

    def ctr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ctr", f"--address={self.socket}", f"--namespace={CRI_NAMESPACE}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    # -- components

    def _write_configs(self, pause_image: str) -> None:
        w = self.workdir
        (w / "cni").mkdir(exist_ok=True)
        (w / "containerd.toml").write_text(containerd_config(w, pause_image))
        (w / "cni" / "10-tts-node.conflist").write_text(json.dumps(cni_config(w), indent=2))
        (w / "resolv.conf").write_text("")
        kubelet = kubelet_config(
            w, self.ports, self.cluster.pki.path("ca.crt"), self.socket, tainted=self.tainted
        )
        (w / "kubelet.yaml").write_text(json.dumps(kubelet, indent=2))
        proxy = kube_proxy_config(self.cluster.kubeconfig, self.ports)
        (w / "kube-proxy.yaml").write_text(json.dumps(proxy, indent=2))

    def _define_components(self) -> None:
        b, w = self.cluster.binaries, self.workdir
        label = "=".join(REAL_NODE_LABEL)
        specs: dict[str, list[str]] = {
            "containerd": ["containerd", f"--config={w / 'containerd.toml'}"],
            "kubelet": [
                str(b.kubelet),
                f"--config={w / 'kubelet.yaml'}",
                f"--kubeconfig={self.cluster.kubeconfig}",
                f"--root-dir={self.kubelet_root}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={network.NODE_IP}",
                f"--node-labels={label},nvidia.com/gpu.present=true,type=real",
                f"--cert-dir={w / 'kubelet-pki'}",
            ],
            "kube-proxy": [str(b.kube_proxy), f"--config={w / 'kube-proxy.yaml'}"],
            "stub-gpu-device-plugin": [
                str(b.stub_gpu_device_plugin),
                f"--devices={self.gpus}",
                f"--device-plugin-dir={DEVICE_PLUGIN_DIR}",
            ],
        }
        logs = self.cluster.workdir / "logs"
        self.components = {
            name: Component(name, argv, logs / f"{name}.log", detach=self.cluster.detach)
            for name, argv in specs.items()
        }
        self.cluster.components.update(self.components)

    def _start(self, name: str) -> None:
        component = self.components[name]
        component.start()
        time.sleep(0.1)
        if not component.running:
            raise ClusterError(f"{name} exited at once:\n{component.log_tail()}")

    def _containerd_ready(self) -> bool:
        if not self.components["containerd"].running:
            raise ClusterError(f"containerd exited:\n{self.components['containerd'].log_tail()}")
        return self.socket.exists() and self.ctr("version").returncode == 0

    def _ready(self) -> bool:
        for name in ("kubelet", "kube-proxy", "stub-gpu-device-plugin"):
            if not self.components[name].running:
                raise ClusterError(f"{name} exited:\n{self.components[name].log_tail()}")
        result = self.cluster.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        status = json.loads(result.stdout).get("status", {})
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        return ready and status.get("allocatable", {}).get(GPU_RESOURCE) == str(self.gpus)

    # -- teardown

    def _drain(self, timeout: float) -> None:
        """Delete the node's pods so the kubelet stops them (and their networks) itself."""
        self.cluster.kubectl(
            "delete", "pods", "--all-namespaces", f"--field-selector=spec.nodeName={NODE_NAME}",
            "--grace-period=1", "--wait=false", check=False,
        )  # fmt: skip
        with contextlib.suppress(ClusterError):
            wait_until("the real node's containers to stop", self._no_tasks, timeout, 0.5)

    def _no_tasks(self) -> bool:
        return not self.ctr("tasks", "ls", "-q").stdout.split()

    def _remove_containers(self) -> None:
        """What the kubelet did not stop: kill each task and delete its container."""
        if not (self.components.get("containerd") and self.components["containerd"].running):
            return
        with contextlib.suppress(ClusterError):
            for task in self.ctr("tasks", "ls", "-q").stdout.split():
                subprocess.run(
                    ["ctr", f"--address={self.socket}", f"--namespace={CRI_NAMESPACE}",
                     "tasks", "kill", "-s", "SIGKILL", task],
                    capture_output=True, check=False,
                )  # fmt: skip
            time.sleep(0.5)
            for task in self.ctr("tasks", "ls", "-q").stdout.split():
                self.ctr("tasks", "delete", "-f", task)
            for container in self.ctr("containers", "ls", "-q").stdout.split():
                self.ctr("containers", "delete", container)


def clean_up_node(workdir: Path) -> None:
    """What outlives the node's processes: the pods' processes (a detached cluster is stopped
    without a drain), containerd's shims (they are reparented), the pods' network namespaces,
    the mounts the kubelet and containerd made, and the nftables tables they added."""
    for pid in _pids_in_cgroups(POD_CGROUP_ROOTS):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    marker = str(workdir / "containerd.sock").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and marker in cmdline:
            signal_group(int(entry.name), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
    for netns in Path("/run/netns").glob("cni-*"):  # only this node's CNI makes these
        subprocess.run(["ip", "netns", "delete", netns.name], capture_output=True, check=False)
    roots = (str(workdir), str(CONTAINERD_ROOT))
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(roots)), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    before_file = workdir / TABLES_BEFORE
    if before_file.exists():
        before = {tuple(table) for table in json.loads(before_file.read_text())}
        for family, name in nft_tables():
            if (family, name) not in before:
                subprocess.run(["nft", "delete", "table", family, name], capture_output=True)
        before_file.unlink()


def _pids_in_cgroups(roots: tuple[Path, ...]) -> set[int]:
    pids: set[int] = set()
    for root in roots:
        for procs in root.rglob("cgroup.procs") if root.exists() else ():
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in procs.read_text().split())
    return pids


def nft_tables() -> list[tuple[str, str]]:
    """(family, name) of every nftables table on the host."""
    result = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    return [
        (words[1], words[2])
        for words in (line.split() for line in result.stdout.splitlines())
        if len(words) == 3 and words[0] == "table"
    ]
