"""The local cluster's addresses, and the rules that keep every packet for them on this machine.

A packet to an address that no local interface holds follows the default route and leaves
the machine, where something else may answer. kwok's stub pods get IPs no interface holds,
and a ClusterIP is only an address until kube-proxy rewrites it. So before any component
starts, `ClusterNetwork.up` makes sure that:

- the Service range routes to a bridge with no ports (`tts-svc0`): kube-proxy's nftables
  rules can rewrite a ClusterIP that has endpoints, reject one that has none, and anything
  else dies on that bridge. (A blackhole route would fail the lookup before kube-proxy's
  rules ever see the packet; the kernel here has no `dummy` link type.)
- the pod range is a blackhole, except the real node's subnet on its own bridge
  (`tts-node0`, whose gateway address is the node's IP and the API server's address);
- forwarding is on (a pod reaching a ClusterIP is routed by this host), but an nftables
  table drops anything forwarded from the pod bridge to any other interface: no pod packet
  goes out of the machine either. The CNI bridge plugin runs with ipMasq off. The same table
  refuses, at once, a packet from this host to a Service address kube-proxy did not rewrite.

`down` removes exactly what `up` added (it records that in a JSON file) and puts the two
sysctls back as it found them.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tts_cluster.base import ClusterError

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
# The real node's pods; the rest of POD_CIDR is a blackhole (kwok hands out STUB_POD_CIDR).
NODE_SUBNET = "10.244.0.0/24"
NODE_IP = "10.244.0.1"  # the node bridge's address: the kubelet, the API server, CoreDNS
STUB_POD_CIDR = "10.244.128.0/17"
API_SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service, first address of the range
DNS_SERVICE_IP = "10.96.0.10"
NODE_BRIDGE = "tts-node0"
SERVICE_BRIDGE = "tts-svc0"
GUARD_TABLE = "tts-cluster-guard"
# One local cluster per machine holds these names and addresses; the record says which.
RECORD = Path("/run/tts-cluster/network.json")
SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    # Pod -> ClusterIP -> pod on the same bridge: the reply must pass conntrack to be
    # un-NATed, so bridged packets go through the IP hooks.
    "net/bridge/bridge-nf-call-iptables": "1",
}


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _nft(script: str) -> None:
    result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"nft failed: {result.stderr.strip()}\n{script}")


def guard_ruleset() -> str:
    """Pods talk to each other and to this host, never past it; and a Service address that
    kube-proxy did not rewrite is refused here. The output chain runs after kube-proxy's DNAT
    (priority filter > dstnat). Once kube-proxy knows the Service CIDR, its own pre-DNAT rule
    drops unallocated ClusterIPs first (silently, still in this host's output hook)."""
    return (
        f"table inet {GUARD_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        f'    iifname "{NODE_BRIDGE}" oifname != "{NODE_BRIDGE}" drop\n'
        f'    oifname "{NODE_BRIDGE}" iifname != "{NODE_BRIDGE}" drop\n'
        "  }\n"
        "  chain output {\n"
        "    type filter hook output priority filter; policy accept;\n"
        f"    ip daddr {SERVICE_CIDR} reject\n"
        "  }\n"
        "}\n"
    )


def routes() -> list[list[str]]:
    """The `ip route add` arguments `up` needs, in order (a unit test checks the cover)."""
    return [
        [SERVICE_CIDR, "dev", SERVICE_BRIDGE],
        ["blackhole", POD_CIDR],
    ]


# Clusters of this process sharing the network (the teardown test starts a second one).
_users_in_this_process = 0


@dataclass
class ClusterNetwork:
    """Bridges, routes, a forward guard and two sysctls; `record` remembers what was added."""

    record: Path

    def up(self) -> None:
        if os.geteuid() != 0:
            raise ClusterError(
                "the local cluster needs root to route its pod and Service ranges to local "
                "devices (CAP_NET_ADMIN); run make test / make demo as root, as CI does"
            )
        global _users_in_this_process
        owner = self._owner()
        if owner == os.getpid() and _users_in_this_process > 0:
            _users_in_this_process += 1
            return
        if owner is not None and owner != os.getpid() and Path(f"/proc/{owner}").exists():
            raise ClusterError(
                f"another local cluster (process {owner}) holds {NODE_BRIDGE} and the pod "
                "and Service routes: stop it first (make demo-down or make cluster-down)"
            )
        self.down()  # a crashed run's leftovers, if any
        added: dict[str, list[object]] = {
            "owner": [os.getpid()],
            "links": [],
            "routes": [],
            "tables": [],
            "sysctls": [],
        }
        try:
            for bridge, address in ((NODE_BRIDGE, f"{NODE_IP}/24"), (SERVICE_BRIDGE, None)):
                _ip("link", "add", bridge, "type", "bridge")
                added["links"].append(bridge)
                self._save(added)
                if address:
                    _ip("addr", "add", address, "dev", bridge)
                _ip("link", "set", bridge, "up")
            for route in routes():
                _ip("route", "add", *route)
                added["routes"].append(route)
                self._save(added)
            _nft(guard_ruleset())
            added["tables"].append(GUARD_TABLE)
            for key, value in SYSCTLS.items():
                path = Path("/proc/sys") / key
                previous = path.read_text().strip()
                if previous != value:
                    path.write_text(value)
                    added["sysctls"].append([key, previous])
            self._save(added)
        except BaseException:
            self.down()
            raise
        _users_in_this_process = 1

    def down(self) -> list[str]:
        """Undo what the record says was added; returns what it removed."""
        global _users_in_this_process
        if _users_in_this_process > 1:
            _users_in_this_process -= 1
            return []
        _users_in_this_process = 0
        if not self.record.exists():
            return []
        added = json.loads(self.record.read_text())
        removed: list[str] = []
        for key, previous in reversed(added.get("sysctls", [])):
            (Path("/proc/sys") / key).write_text(previous)
            removed.append(f"sysctl {key}={previous}")
        for table in added.get("tables", []):
            subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
            removed.append(f"nft table {table}")
        for route in reversed(added.get("routes", [])):
            _ip("route", "del", *route, check=False)
            removed.append(f"route {' '.join(route)}")
        for link in reversed(added.get("links", [])):
            _ip("link", "del", link, check=False)
            removed.append(f"link {link}")
        self.record.unlink()
        return removed

    def claim(self, pid: int) -> None:
        """Name the process whose life the network follows (a detached cluster's etcd)."""
        added = json.loads(self.record.read_text())
        added["owner"] = [pid]
        self._save(added)

    def _owner(self) -> int | None:
        try:
            return int(json.loads(self.record.read_text())["owner"][0])
        except (OSError, ValueError, KeyError, IndexError):
            return None

    def _save(self, added: dict[str, list[object]]) -> None:
        self.record.parent.mkdir(parents=True, exist_ok=True)
        self.record.write_text(json.dumps(added, indent=2))
