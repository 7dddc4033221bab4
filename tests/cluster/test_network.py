"""network: the routes keep every pod, stub-pod and Service address on this machine, and the
guard table is valid nftables that drops forwarded pod traffic and refuses stray ClusterIPs."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from tts_cluster import network

Network = ipaddress.IPv4Network


def _net(cidr: str) -> Network:
    return ipaddress.IPv4Network(cidr)


def _route_table() -> list[tuple[Network, str]]:
    """What the kernel routes by once `up` ran: routes() plus the connected route the node
    bridge's address (NODE_IP/24, see ClusterNetwork.up) brings with it."""
    table: list[tuple[Network, str]] = []
    for route in network.routes():
        if route[0] == "blackhole":
            assert len(route) == 2, route
            table.append((_net(route[1]), "blackhole"))
        else:
            assert len(route) == 3 and route[1] == "dev", route
            table.append((_net(route[0]), f"dev {route[2]}"))
    connected = ipaddress.IPv4Interface(f"{network.NODE_IP}/24").network
    table.append((connected, f"dev {network.NODE_BRIDGE}"))
    return table


def _lookup(table: list[tuple[Network, str]], address: int) -> str | None:
    """Longest-prefix match, as the kernel does; None: the default route (off the machine)."""
    best: tuple[int, str] | None = None
    for net, target in table:
        inside = address & int(net.netmask) == int(net.network_address)
        if inside and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, target)
    return None if best is None else best[1]


def _addresses(cidr: str) -> Iterator[int]:
    net = _net(cidr)
    start = int(net.network_address)
    return iter(range(start, start + net.num_addresses))


def test_addresses_are_consistent() -> None:
    service, pods = _net(network.SERVICE_CIDR), _net(network.POD_CIDR)
    node_subnet, stubs = _net(network.NODE_SUBNET), _net(network.STUB_POD_CIDR)
    node_ip = ipaddress.IPv4Address(network.NODE_IP)
    assert node_ip in node_subnet
    assert node_ip != node_subnet.network_address
    assert node_subnet.subnet_of(pods) and stubs.subnet_of(pods)
    assert not stubs.overlaps(node_subnet)
    assert not service.overlaps(pods)
    # up() gives the node bridge NODE_IP/24: its connected route must be exactly the subnet.
    assert ipaddress.IPv4Interface(f"{network.NODE_IP}/24").network == node_subnet
    api, dns = (ipaddress.IPv4Address(a) for a in (network.API_SERVICE_IP, network.DNS_SERVICE_IP))
    assert api in service and dns in service and api != dns
    # The API server hands the `kubernetes` Service the first address of the range.
    assert api == service.network_address + 1


def test_every_service_address_routes_to_the_service_bridge() -> None:
    table = _route_table()
    wrong = [
        str(ipaddress.IPv4Address(a))
        for a in _addresses(network.SERVICE_CIDR)
        if _lookup(table, a) != f"dev {network.SERVICE_BRIDGE}"
    ]
    assert not wrong, f"{len(wrong)} Service addresses escape, e.g. {wrong[:5]}"


def test_every_pod_address_stays_on_the_node_bridge_or_dies_in_the_blackhole() -> None:
    table = _route_table()
    node_subnet = _net(network.NODE_SUBNET)
    wrong: list[str] = []
    for address in _addresses(network.POD_CIDR):
        want = (
            f"dev {network.NODE_BRIDGE}"
            if ipaddress.IPv4Address(address) in node_subnet
            else "blackhole"
        )
        if _lookup(table, address) != want:
            wrong.append(str(ipaddress.IPv4Address(address)))
    assert not wrong, f"{len(wrong)} pod addresses misrouted, e.g. {wrong[:5]}"


def test_every_stub_pod_address_dies_in_the_blackhole() -> None:
    table = _route_table()
    wrong = [a for a in _addresses(network.STUB_POD_CIDR) if _lookup(table, a) != "blackhole"]
    assert not wrong, f"{len(wrong)} kwok stub pod addresses are not blackholed"


def test_no_route_is_a_default_route() -> None:
    for net, _ in _route_table():
        assert net.prefixlen >= 8, net


def _rules(chain: str) -> list[str]:
    text = network.guard_ruleset()
    body = text.split(f"chain {chain} {{", 1)[1].split("}", 1)[0]
    return [line.strip() for line in body.strip().splitlines()]


def test_guard_table_drops_pod_traffic_forwarded_past_the_node_bridge() -> None:
    assert network.guard_ruleset().startswith(f"table inet {network.GUARD_TABLE} {{")
    rules = _rules("forward")
    assert rules[0].startswith("type filter hook forward")
    bridge = network.NODE_BRIDGE
    assert f'iifname "{bridge}" oifname != "{bridge}" drop' in rules
    assert f'oifname "{bridge}" iifname != "{bridge}" drop' in rules


def test_guard_table_rejects_unrewritten_service_addresses_on_output() -> None:
    rules = _rules("output")
    assert rules[0].startswith("type filter hook output priority filter")
    assert f"ip daddr {network.SERVICE_CIDR} reject" in rules


def _nft_check(ruleset: str) -> subprocess.CompletedProcess[str]:
    nft = shutil.which("nft")
    if nft is None:
        pytest.skip("nft is not installed")
    result = subprocess.run(
        [nft, "-c", "-f", "-"], input=ruleset, capture_output=True, text=True, check=False
    )
    refused = ("Operation not permitted", "Permission denied")
    if result.returncode != 0 and any(word in result.stderr for word in refused):
        pytest.skip(f"nft -c needs privileges here: {result.stderr.strip()}")
    return result


def test_guard_ruleset_is_valid_nftables() -> None:
    result = _nft_check(network.guard_ruleset())
    assert result.returncode == 0, result.stderr


def test_nft_check_rejects_a_broken_ruleset() -> None:
    """The check above can fail: nft -c does refuse a bad ruleset."""
    broken = network.guard_ruleset().replace(" reject\n", " rejekt\n")
    assert broken != network.guard_ruleset()
    result = _nft_check(broken)
    assert result.returncode != 0
