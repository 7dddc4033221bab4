"""The local control plane: etcd, kube-apiserver, controller manager, scheduler, kwok and the
custom-metrics test adapter, run as child processes of the caller.

The API server listens on the node bridge's address (network.NODE_IP), not on loopback: real
pods reach it there through the `kubernetes` Service, and so do we. Everything else binds to
127.0.0.1. Stub GPU nodes are plain Node objects that kwok manages (stubgpus.py); the real node
(node.py) is a containerd, kubelet and kube-proxy beside them.

Why not kwokctl's binary runtime: it can run these binaries, but it cannot restart a single
component (scenario 9 restarts only the API server), its kube-apiserver has no
--requestheader-client-ca-file (an aggregated API server such as the metrics adapter then sees
every proxied request as anonymous), and its processes are daemons, not children we can prove
gone. This supervisor is small and owns every process it starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tts_cluster import metrics_adapter, network, stubgpus
from tts_cluster.autoscaling import Autoscalers
from tts_cluster.base import LOOPBACK, ClusterError, free_port, wait_until
from tts_cluster.binaries import Binaries
from tts_cluster.dns import ClusterDns
from tts_cluster.images import Images
from tts_cluster.node import NODE_NAME, RealNode, clean_up_node
from tts_cluster.pki import Pki, b64
from tts_cluster.processes import Component, is_process_of, signal_group

HPA_SYNC_PERIOD = "2s"
# Go's garbage collector for the control plane's processes: they share two CPUs with
# everything they test, and memory is plentiful, so they collect at 4x the live heap instead
# of 2x. The 1,000-TTSService bench measured 12 % less API server CPU (docs/benchmarks.md).
# A GOGC in the caller's environment wins.
CONTROL_PLANE_GOGC = "400"
CONTROLLERS = (
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "horizontal-pod-autoscaler-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    # Services get EndpointSlices only, which kube-proxy and CoreDNS read. The legacy
    # Endpoints controller (the v1 Endpoints API is deprecated since v1.33) would write a
    # second copy of every Service's endpoints: a tenth of the control plane's CPU in the
    # 1,000-TTSService bench (docs/benchmarks.md).
    "endpointslice-controller",
    "disruption-controller",
    # Real pods: projected service-account volumes need the kube-root-ca.crt ConfigMap,
    # and a PVC needs binding to its PersistentVolume.
    "root-ca-certificate-publisher-controller",
    "persistentvolume-binder-controller",
)


@dataclass
class Ports:
    etcd_client: int = field(default_factory=free_port)
    etcd_peer: int = field(default_factory=free_port)
    apiserver: int = field(default_factory=free_port)
    adapter: int = field(default_factory=free_port)
    adapter_write: int = field(default_factory=free_port)
    kwok: int = field(default_factory=free_port)


class LocalCluster:
    """Start, inspect and stop the local control plane; every process is a child of ours.

    With `detach=True` (the hack/cluster.py CLI) the processes outlive the caller and a
    state file lets `LocalCluster.stop_from_state` end them later.
    """

    def __init__(self, binaries: Binaries, workdir: Path, *, detach: bool = False) -> None:
        self.binaries = binaries
        self.workdir = workdir
        self.detach = detach
        self.ports = Ports()
        self.pki = Pki(workdir / "pki")
        self.network = network.ClusterNetwork(network.RECORD)
        self.kubeconfig = workdir / "kubeconfig"
        self.components: dict[str, Component] = {}
        self.node: RealNode | None = None
        self.dns: ClusterDns | None = None
        self.autoscalers: Autoscalers | None = None
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle

    def start(self, gpu_nodes: Sequence[str] = ("gpu-node-1",), gpus_per_node: int = 2) -> None:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        self.network.up()  # before any component starts: see network.py
        try:
            self.pki.create()
            self._write_kubeconfig()
            self._define_components()
            self._start("etcd")
            wait_until("etcd health", self._etcd_healthy, 60)
            self._start("kube-apiserver")
            self.wait_apiserver_ready(120)
            for name in ("kube-controller-manager", "kube-scheduler", "kwok", "metrics-adapter"):
                self._start(name)
            metrics_adapter.register(self)
            for node in gpu_nodes:
                stubgpus.add_gpu_node(self, node, gpus_per_node)
            wait_until(
                "the default ServiceAccount",
                lambda: (
                    self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0
                ),
                60,
            )
        except BaseException:
            self.stop()
            raise
        if self.detach:
            self.network.claim(self.components["etcd"].pid or 0)
        self._write_state()

    def add_real_node(self, images: Images, gpus: int = 2, *, tainted: bool = True) -> RealNode:
        """Start CoreDNS, a real node that runs `images`, and the autoscaling chain that
        watches its pods: Prometheus and KEDA (see node.py, dns.py, autoscaling.py)."""
        self.dns = ClusterDns(self)
        self.dns.start()
        self.node = RealNode(self, gpus, tainted=tainted)
        self.node.start(images.all, images.pause.name)
        self.autoscalers = Autoscalers(self)
        self.autoscalers.start(NODE_NAME)
        wait_until("CoreDNS ready", self.dns.ready, 60)
        self.autoscalers.wait_ready()
        if self.detach:
            self._write_state()
        return self.node

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()  # its pods first, while the API server still answers
        # Reverse order: clients first, etcd last, so nothing logs a flood of dial errors.
        for component in reversed(list(self.components.values())):
            component.stop()
        self.network.down()

    def component_pids(self) -> dict[str, int]:
        """The pid of each running control-plane process, by component name."""
        return {
            name: c.pid for name, c in self.components.items() if c.pid is not None and c.running
        }

    def pids(self) -> list[int]:
        return list(self.component_pids().values())

    def restart(self, name: str) -> None:
        """Stop one component and start it again on the same ports and data."""
        component = self.components[name]
        component.stop()
        component.start()
        if name == "kube-apiserver":
            self.wait_apiserver_ready(120)

    def stop_component(self, name: str) -> None:
        self.components[name].stop()

    def start_component(self, name: str) -> None:
        self.components[name].start()
        if name == "kube-apiserver":
            self.wait_apiserver_ready(120)

    @property
    def server(self) -> str:
        return f"https://{network.NODE_IP}:{self.ports.apiserver}"

    @property
    def adapter_write_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.adapter_write}/write-metrics"

    # -- components

    def _define_components(self) -> None:
        b, p, w, pki = self.binaries, self.ports, self.workdir, self.pki
        kubeconfig = str(self.kubeconfig)
        specs: dict[str, list[str]] = {
            "etcd": [
                str(b.etcd),
                "--name=etcd0",
                f"--data-dir={w / 'etcd'}",
                f"--listen-client-urls=http://{LOOPBACK}:{p.etcd_client}",
                f"--advertise-client-urls=http://{LOOPBACK}:{p.etcd_client}",
                f"--listen-peer-urls=http://{LOOPBACK}:{p.etcd_peer}",
                f"--initial-advertise-peer-urls=http://{LOOPBACK}:{p.etcd_peer}",
                f"--initial-cluster=etcd0=http://{LOOPBACK}:{p.etcd_peer}",
                "--unsafe-no-fsync=true",  # test data: durability buys nothing, fsync costs seconds
                "--log-level=warn",
            ],
            "kube-apiserver": [
                str(b.kube_apiserver),
                f"--etcd-servers=http://{LOOPBACK}:{p.etcd_client}",
                f"--bind-address={network.NODE_IP}",
                f"--advertise-address={network.NODE_IP}",
                f"--secure-port={p.apiserver}",
                f"--tls-cert-file={pki.path('apiserver.crt')}",
                f"--tls-private-key-file={pki.path('apiserver.key')}",
                f"--client-ca-file={pki.path('ca.crt')}",
                f"--service-account-key-file={pki.path('sa.pub')}",
                f"--service-account-signing-key-file={pki.path('sa.key')}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={network.SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # It taints every new Node not-ready until the node lifecycle controller sees
                # a kubelet heartbeat; stub nodes have no kubelet and that controller is off.
                "--disable-admission-plugins=TaintNodesByCondition",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                f"--cert-dir={w / 'apiserver-certs'}",
                # Aggregation layer: the front-proxy identity aggregated API servers trust.
                f"--requestheader-client-ca-file={pki.path('front-proxy-ca.crt')}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.path('front-proxy-client.crt')}",
                f"--proxy-client-key-file={pki.path('front-proxy-client.key')}",
                # kubectl logs/exec on the real node: the kubelet trusts our CA's clients.
                f"--kubelet-client-certificate={pki.path('admin.crt')}",
                f"--kubelet-client-key={pki.path('admin.key')}",
                "--kubelet-preferred-address-types=InternalIP",
            ],
            "kube-controller-manager": [
                str(b.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={pki.path('sa.key')}",
                f"--root-ca-file={pki.path('ca.crt')}",
                f"--horizontal-pod-autoscaler-sync-period={HPA_SYNC_PERIOD}",
                "--horizontal-pod-autoscaler-downscale-stabilization=10s",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ],
            "kube-scheduler": [
                str(b.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
            "kwok": [
                str(b.kwok),
                f"--kubeconfig={kubeconfig}",
                f"--config={b.kwok_stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={stubgpus.KWOK_NODE_ANNOTATION}=fake",
                f"--cidr={network.STUB_POD_CIDR}",
                f"--node-ip={LOOPBACK}",
                f"--server-address={LOOPBACK}:{p.kwok}",
            ],
            "metrics-adapter": [
                str(b.custom_metrics_adapter),
                f"--secure-port={p.adapter}",
                f"--bind-address={LOOPBACK}",
                f"--cert-dir={w / 'adapter-certs'}",
                f"--lister-kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--write-address={LOOPBACK}:{p.adapter_write}",
            ],
        }
        logs = w / "logs"
        go_env = {"GOGC": CONTROL_PLANE_GOGC, **os.environ}
        self.components = {
            name: Component(name, argv, logs / f"{name}.log", detach=self.detach, env=go_env)
            for name, argv in specs.items()
        }

    def _start(self, name: str) -> None:
        component = self.components[name]
        component.start()
        time.sleep(0.05)
        if not component.running:
            raise ClusterError(f"{name} exited at once:\n{component.log_tail()}")

    # -- health

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            context = ssl.create_default_context(cafile=str(self.pki.path("ca.crt")))
            context.load_cert_chain(self.pki.path("admin.crt"), self.pki.path("admin.key"))
            self._ssl = context
        return self._ssl

    def _etcd_healthy(self) -> bool:
        if not self.components["etcd"].running:
            raise ClusterError(f"etcd exited:\n{self.components['etcd'].log_tail()}")
        url = f"http://{LOOPBACK}:{self.ports.etcd_client}/health"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(json.load(response).get("health") == "true")

    def api_get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        request = urllib.request.Request(self.server + path)
        try:
            with urllib.request.urlopen(
                request, timeout=timeout, context=self._ssl_context()
            ) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())

    def wait_apiserver_ready(self, timeout: float) -> None:
        def ready() -> bool:
            apiserver = self.components["kube-apiserver"]
            if not apiserver.running:
                raise ClusterError(f"kube-apiserver exited:\n{apiserver.log_tail()}")
            return self.api_get("/readyz")[0] == 200

        wait_until("kube-apiserver /readyz", ready, timeout)

    # -- kubeconfig and kubectl

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tts-e2e",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self.pki.path("ca.crt")),
                    },
                }
            ],
            "users": [
                {
                    "name": "tts-e2e-admin",
                    "user": {
                        "client-certificate-data": b64(self.pki.path("admin.crt")),
                        "client-key-data": b64(self.pki.path("admin.key")),
                    },
                }
            ],
            "contexts": [
                {"name": "tts-e2e", "context": {"cluster": "tts-e2e", "user": "tts-e2e-admin"}}
            ],
            "current-context": "tts-e2e",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, *objects: dict[str, Any]) -> None:
        """Server-side apply of plain dicts (JSON is YAML)."""
        manifest = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.kubectl(
            "apply", "--server-side", "--field-manager=tts-e2e", "-f", "-",
            stdin=json.dumps(manifest),
        )  # fmt: skip

    # -- stub GPU nodes and the metrics adapter (kept here for the tests' convenience)

    def add_gpu_node(self, name: str, gpus: int = 2) -> None:
        stubgpus.add_gpu_node(self, name, gpus)

    def delete_node(self, name: str) -> None:
        stubgpus.delete_node(self, name)

    def metrics_api_available(self) -> bool:
        return metrics_adapter.available(self)

    def write_pod_metric(self, namespace: str, pod: str, metric: str, value: str) -> None:
        metrics_adapter.write_pod_metric(self, namespace, pod, metric, value)

    # -- state for the detached CLI

    def _write_state(self) -> None:
        state = {
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "adapter_write_url": self.adapter_write_url,
            "prometheus_url": self.autoscalers.prometheus_url if self.autoscalers else None,
            "processes": {
                name: {"pid": c.pid, "exe": c.argv[0]}
                for name, c in self.components.items()
                if c.pid is not None
            },
        }
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))

    @staticmethod
    def stop_from_state(workdir: Path, timeout: float = 15.0) -> list[str]:
        """End the processes a detached `start` recorded; returns the names it stopped."""
        state_file = workdir / "state.json"
        if not state_file.exists():
            return []
        processes: dict[str, dict[str, Any]] = json.loads(state_file.read_text())["processes"]
        stopped = []
        for name, info in reversed(list(processes.items())):
            pid = int(info["pid"])
            if is_process_of(pid, str(info["exe"])):
                signal_group(pid, signal.SIGTERM)
                stopped.append(name)
        deadline = time.monotonic() + timeout
        for info in processes.values():
            pid = int(info["pid"])
            while is_process_of(pid, str(info["exe"])) and time.monotonic() < deadline:
                time.sleep(0.1)
            if is_process_of(pid, str(info["exe"])):
                signal_group(pid, signal.SIGKILL)
        state_file.unlink()
        clean_up_node(workdir / "node")
        network.ClusterNetwork(network.RECORD).down()
        return stopped
