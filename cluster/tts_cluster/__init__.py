"""The local Kubernetes cluster that `make test` and `make demo` run on.

One module per part: binaries (built from Go modules), pki, network (routes that keep every
packet on this machine), controlplane (etcd, API server, controllers, kwok), stubgpus (kwok
GPU nodes), metrics_adapter, node (a real containerd + kubelet + kube-proxy node), dns
(CoreDNS) and images (the project's images, built without a daemon). e2e/, hack/ and the demo
import it; see docs/e2e.md.
"""

from tts_cluster.base import LOOPBACK, REPO_ROOT, ClusterError, free_port, wait_until
from tts_cluster.binaries import Binaries, locate_binaries
from tts_cluster.controlplane import LocalCluster
from tts_cluster.processes import Component, child_pids
from tts_cluster.stubgpus import GPU_RESOURCE

__all__ = [
    "GPU_RESOURCE",
    "LOOPBACK",
    "REPO_ROOT",
    "Binaries",
    "ClusterError",
    "Component",
    "LocalCluster",
    "child_pids",
    "free_port",
    "locate_binaries",
    "wait_until",
]
