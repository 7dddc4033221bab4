#!/usr/bin/env bash
# The Debian packages the local cluster's real node and the image builds need, installed
# when missing (as root, like CI; without root it names the command to run and fails).
#
#   containerd, runc               the real node's container runtime
#   containernetworking-plugins    the CNI bridge and host-local IPAM (/usr/lib/cni)
#   nftables, iptables             kube-proxy's nftables mode, the network guard table;
#                                  the kubelet's iptables-nft canary chains
#   buildah, debootstrap           daemonless image builds on a local Debian base
#   gcc, openssl                   the static pause binary; the cluster's certificates
#   redis-server                   the real Redis the runtime's cache tests start on loopback
set -euo pipefail

PACKAGES=(containerd runc containernetworking-plugins nftables iptables buildah debootstrap gcc openssl
  redis-server)
# One file or command that shows each package is there.
declare -A PROBE=(
  [containerd]=/usr/bin/containerd [runc]=/usr/sbin/runc
  [containernetworking-plugins]=/usr/lib/cni/bridge [nftables]=/usr/sbin/nft
  [iptables]=/usr/sbin/iptables [buildah]=/usr/bin/buildah [debootstrap]=/usr/sbin/debootstrap
  [gcc]=/usr/bin/gcc [openssl]=/usr/bin/openssl [redis-server]=/usr/bin/redis-server
)

missing=()
for package in "${PACKAGES[@]}"; do
  [[ -e "${PROBE[$package]}" ]] || missing+=("$package")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "[host-packages] missing: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "[host-packages] installing ${missing[*]} (apt-get; output in .cache/host-packages.log)" >&2
mkdir -p .cache
{
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
} >.cache/host-packages.log 2>&1 || {
  tail -n 20 .cache/host-packages.log >&2
  exit 1
}
echo "[host-packages] done" >&2
