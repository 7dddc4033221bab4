#!/usr/bin/env python3
"""Start or stop the local control plane (etcd, kube-apiserver, controller manager,
scheduler, kwok, custom-metrics test adapter) with stub GPU nodes, for people and scripts.

    hack/cluster.py up [--workdir DIR] [--gpu-nodes N] [--gpus-per-node N] [--real-node]
    hack/cluster.py down [--workdir DIR]

`up` prints KUBECONFIG=... and leaves the processes running (detached); `down` ends them.
The e2e tests do not use this CLI: their session fixture runs the same LocalCluster as
child processes of pytest. See docs/e2e.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tts_cluster import REPO_ROOT, ClusterError, LocalCluster, locate_binaries
from tts_cluster.images import locate_images

DEFAULT_WORKDIR = REPO_ROOT / ".cache" / "cluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--gpu-nodes", type=int, default=2, help="stub GPU nodes to create")
    parser.add_argument("--gpus-per-node", type=int, default=2)
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="also run a real node (containerd, kubelet, kube-proxy) and CoreDNS",
    )
    args = parser.parse_args(argv)
    workdir: Path = args.workdir.resolve()

    try:
        if args.command == "down":
            stopped = LocalCluster.stop_from_state(workdir)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
            return 0
        if (workdir / "state.json").exists():
            LocalCluster.stop_from_state(workdir)
        cluster = LocalCluster(locate_binaries(build=True), workdir, detach=True)
        nodes = [f"gpu-node-{i + 1}" for i in range(args.gpu_nodes)]
        cluster.start(gpu_nodes=nodes, gpus_per_node=args.gpus_per_node)
        if args.real_node:
            try:
                cluster.add_real_node(locate_images(build=True))
            except BaseException:
                cluster.stop()
                raise
    except ClusterError as error:
        print(f"cluster {args.command} failed: {error}", file=sys.stderr)
        return 1
    print(f"KUBECONFIG={cluster.kubeconfig}")
    print(f"CUSTOM_METRICS_WRITE_URL={cluster.adapter_write_url}")
    print(f"LOGS={workdir / 'logs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
