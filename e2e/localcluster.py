"""A local Kubernetes control plane from the binaries hack/cluster-binaries.sh builds.

etcd, kube-apiserver (aggregation layer on), kube-controller-manager, kube-scheduler, kwok
and the custom-metrics test adapter, all bound to 127.0.0.1 on free ports, run as child
processes of the caller. Stub GPU nodes are plain Node objects that kwok manages: they
advertise nvidia.com/gpu, carry the GPU taint, and kwok turns pods bound to them Running and
Ready (no container runs).

Why not kwokctl's binary runtime: it can run these binaries, but it cannot restart a single
component (scenario 9 restarts only the API server), its kube-apiserver has no
--requestheader-client-ca-file (an aggregated API server such as the metrics adapter then sees
every proxied request as anonymous), and its processes are daemons, not children we can prove
gone. This supervisor is small and owns every process it starts.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BINARIES_SCRIPT = REPO_ROOT / "hack" / "cluster-binaries.sh"
LOOPBACK = "127.0.0.1"
GPU_RESOURCE = "nvidia.com/gpu"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
ADAPTER_SERVICE = "custom-metrics-test-adapter"
HPA_SYNC_PERIOD = "2s"
CONTROLLERS = (
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "horizontal-pod-autoscaler-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "disruption-controller",
)


class ClusterError(RuntimeError):
    """The local cluster could not be built, started or reached."""


# ---------------------------------------------------------------- binaries


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


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the test process dies abruptly."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Component:
    """One control-plane process with its argv and log file."""

    name: str
    argv: list[str]
    log_path: Path
    detach: bool = False
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n==== start {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=None if self.detach else _die_with_parent,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def wait_until(what: str, check: Any, timeout: float, interval: float = 0.2) -> Any:
    """Poll `check()` until it returns something truthy; ClusterError after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as error:  # the thing polled is not up yet
            last_error = error
        time.sleep(interval)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what} ({last_error})")


# ---------------------------------------------------------------- PKI


@dataclass(frozen=True)
class Pki:
    """Certificates for the API server, its admin client and the aggregation front proxy."""

    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    def create(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise ClusterError("openssl is needed to create the local cluster's certificates")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ca(openssl, "ca", "tts-e2e-ca")
        self._ca(openssl, "front-proxy-ca", "tts-e2e-front-proxy-ca")
        self._cert(
            openssl,
            "apiserver",
            "ca",
            "/CN=kube-apiserver",
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc\n",
        )
        self._cert(
            openssl,
            "admin",
            "ca",
            "/O=system:masters/CN=tts-e2e-admin",
            "extendedKeyUsage=clientAuth\n",
        )
        self._cert(
            openssl,
            "front-proxy-client",
            "front-proxy-ca",
            "/CN=front-proxy-client",
            "extendedKeyUsage=clientAuth\n",
        )
        self._run(openssl, "genrsa", "-out", "sa.key", "2048")
        self._run(openssl, "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def _run(self, *argv: str) -> None:
        result = subprocess.run(argv, cwd=self.dir, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ClusterError(f"{' '.join(argv[:3])} failed: {result.stderr.strip()}")

    def _ca(self, openssl: str, name: str, cn: str) -> None:
        self._run(
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={cn}",
        )  # fmt: skip

    def _cert(self, openssl: str, name: str, ca: str, subject: str, extensions: str) -> None:
        (self.dir / f"{name}.ext").write_text(extensions)
        self._run(
            openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
            "-keyout", f"{name}.key", "-out", f"{name}.csr",
        )  # fmt: skip
        self._run(
            openssl, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt",
            "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", "30",
            "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        )  # fmt: skip


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


# ---------------------------------------------------------------- cluster


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
        self.kubeconfig = workdir / "kubeconfig"
        self.components: dict[str, Component] = {}
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle

    def start(self, gpu_nodes: Sequence[str] = ("gpu-node-1",), gpus_per_node: int = 2) -> None:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        self.pki.create()
        self._write_kubeconfig()
        self._define_components()
        try:
            self._start("etcd")
            wait_until("etcd health", self._etcd_healthy, 60)
            self._start("kube-apiserver")
            self.wait_apiserver_ready(120)
            for name in ("kube-controller-manager", "kube-scheduler", "kwok", "metrics-adapter"):
                self._start(name)
            self._register_metrics_api()
            for node in gpu_nodes:
                self.add_gpu_node(node, gpus_per_node)
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
        self._write_state()

    def stop(self) -> None:
        # Reverse order: clients first, etcd last, so nothing logs a flood of dial errors.
        for component in reversed(list(self.components.values())):
            component.stop()

    def pids(self) -> list[int]:
        return [c.pid for c in self.components.values() if c.pid is not None and c.running]

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
        return f"https://{LOOPBACK}:{self.ports.apiserver}"

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
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={p.apiserver}",
                f"--tls-cert-file={pki.path('apiserver.crt')}",
                f"--tls-private-key-file={pki.path('apiserver.key')}",
                f"--client-ca-file={pki.path('ca.crt')}",
                f"--service-account-key-file={pki.path('sa.pub')}",
                f"--service-account-signing-key-file={pki.path('sa.key')}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # The "kubernetes" Service cannot point at a loopback address: don't maintain it.
                "--endpoint-reconciler-type=none",
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
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--cidr=10.244.0.1/16",
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
        self.components = {
            name: Component(name, argv, logs / f"{name}.log", detach=self.detach)
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
                        "certificate-authority-data": _b64(self.pki.path("ca.crt")),
                    },
                }
            ],
            "users": [
                {
                    "name": "tts-e2e-admin",
                    "user": {
                        "client-certificate-data": _b64(self.pki.path("admin.crt")),
                        "client-key-data": _b64(self.pki.path("admin.key")),
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

    # -- stub GPU nodes and metrics

    def add_gpu_node(self, name: str, gpus: int = 2) -> None:
        """A kwok-managed Node that looks like a GPU node to the scheduler."""
        resources = {"cpu": "32", "memory": "128Gi", "pods": "110", GPU_RESOURCE: str(gpus)}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "g5.2xlarge",
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": "NVIDIA-A10G",
                    "nvidia.com/gpu.count": str(gpus),
                    "nvidia.com/gpu.memory": "23028",
                    "type": "kwok",
                },
            },
            "spec": {"taints": [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]},
        }
        self.apply(node)
        # Capacity lives in status, which create ignores: set it through the status
        # subresource, as a device plugin's kubelet would report it.
        status = {"status": {"capacity": resources, "allocatable": resources}}
        self.kubectl(
            "patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(status)
        )
        wait_until(f"node {name} Ready", lambda: self._node_ready(name), 60)

    def _node_ready(self, name: str) -> bool:
        out = self.kubectl("get", "node", name, "-o", "json").stdout
        node = json.loads(out)
        conditions = node.get("status", {}).get("conditions", [])
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        allocatable = node.get("status", {}).get("allocatable", {})
        return ready and GPU_RESOURCE in allocatable

    def delete_node(self, name: str) -> None:
        self.kubectl("delete", "node", name, "--ignore-not-found", "--wait=false")

    def _register_metrics_api(self) -> None:
        """Serve custom.metrics.k8s.io from the test adapter through the aggregation layer.

        No kube-proxy runs here, so a ClusterIP would be unreachable: the APIService points
        at an ExternalName Service, which the aggregator resolves to localhost:PORT itself.
        """
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": ADAPTER_SERVICE, "namespace": "kube-system"},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": self.ports.adapter}],
            },
        }
        api_services = [
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": f"{version}.custom.metrics.k8s.io"},
                "spec": {
                    "group": "custom.metrics.k8s.io",
                    "version": version,
                    "service": {
                        "name": ADAPTER_SERVICE,
                        "namespace": "kube-system",
                        "port": self.ports.adapter,
                    },
                    "insecureSkipTLSVerify": True,  # the adapter serves a self-signed cert
                    "groupPriorityMinimum": 100,
                    "versionPriority": priority,
                },
            }
            for version, priority in (("v1beta2", 200), ("v1beta1", 100))
        ]
        self.apply(service, *api_services)

    def metrics_api_available(self) -> bool:
        out = self.kubectl("get", "apiservice", "v1beta2.custom.metrics.k8s.io", "-o", "json")
        conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

    def write_pod_metric(self, namespace: str, pod: str, metric: str, value: str) -> None:
        """Set one pod's custom metric in the test adapter (a resource.Quantity string)."""
        url = f"{self.adapter_write_url}/namespaces/{namespace}/pods/{pod}/{metric}"
        request = urllib.request.Request(
            url,
            data=json.dumps(value).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            if response.status >= 300:
                raise ClusterError(f"writing {metric} for {pod} failed: HTTP {response.status}")

    # -- state for the detached CLI

    def _write_state(self) -> None:
        state = {
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "adapter_write_url": self.adapter_write_url,
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
            if _is_process_of(pid, str(info["exe"])):
                _signal_group(pid, signal.SIGTERM)
                stopped.append(name)
        deadline = time.monotonic() + timeout
        for info in processes.values():
            pid = int(info["pid"])
            while _is_process_of(pid, str(info["exe"])) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _is_process_of(pid, str(info["exe"])):
                _signal_group(pid, signal.SIGKILL)
        state_file.unlink()
        return stopped


def _is_process_of(pid: int, exe: str) -> bool:
    """True when `pid` is alive and runs `exe` (a reused pid is left alone)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    is_zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return cmdline == exe and not is_zombie


def child_pids(pid: int) -> Iterator[int]:
    """Every live descendant of `pid` (from /proc), for the no-leftover-processes check."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        yield child
        stack.extend(children.get(child, []))
