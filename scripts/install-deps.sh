#!/usr/bin/env bash
# Installs what vlan-gateway's lab and tests need on Debian/Ubuntu (run as root). Idempotent: packages already
# present are skipped, so a prepared machine spends no time here.
#   kernel tier and lab: iptables (nft + legacy), ipset, iproute2, ping, conntrack, procps, curl, and nftables
#                        (`nft`: a test writes rules iptables-nft cannot read, as a foreign tool would), arping (the
#                        gateway announces a new gateway address with it, as the image does; without it a host that
#                        asked for the address too early waits its own ARP retry, about 1 s)
#   metrics tests:       prometheus (the server and promtool)
#   container tier:      docker.io (engine, started by the tests themselves), debootstrap, docker-compose
#   benchmarks:          iperf3
set -euo pipefail

packages=(iptables nftables ipset iproute2 iputils-ping iputils-arping conntrack procps curl ca-certificates prometheus docker.io debootstrap docker-compose iperf3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  echo "installing: ${missing[*]}"
  # On a machine with an init system, installing docker.io (or prometheus) would start the system's daemon now,
  # and dockerd writes a docker0 bridge and iptables rules in the machine's own namespace. The tests start their
  # own engine and server; keep the packages' services from starting while they install (Debian's policy-rc.d).
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's prometheus package starts a server on :9090 at install; the tests start their own on free ports.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then systemctl stop prometheus || true; fi
echo "dependencies ready"
