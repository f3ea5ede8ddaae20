#!/usr/bin/env bash
# Sets up Soft-RoCE (the kernel's rdma_rxe) on a network interface, so that a machine with
# no RDMA NIC can serve and use NVMe/RDMA; prints the RDMA device's name. Idempotent: run it
# again and it prints the device already there.
#
#   scripts/soft-roce.sh [NETDEV]      default: the interface of the default route
#
# Needs root, the rdma_rxe module (Debian/Ubuntu kernels have it) and iproute2's `rdma`
# tool. Then listen on the interface's address:
#   [[listener]]
#   transport = "rdma"
#   address = "<NETDEV's IPv4 address>"     # rxe does not route 127.0.0.1
# and connect from a host with `nvme connect -t rdma -a <address> -s 4420 -n <NQN>`.
set -euo pipefail

die() {
  echo "soft-roce: $*" >&2
  exit 1
}

netdev="${1:-}"
if [ -z "$netdev" ]; then
  netdev="$(ip -o route show default 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')"
  [ -n "$netdev" ] || die "no NETDEV given and no default route to take one from"
fi
[ -e "/sys/class/net/$netdev" ] || die "no network interface $netdev"
command -v rdma >/dev/null || die "the rdma tool (iproute2) is missing: apt-get install iproute2"
[ "$(id -u)" -eq 0 ] || die "needs root (modprobe, rdma link add)"

# The rxe driver computes its ICRC with crc32; some kernels have it as a module.
modprobe crc32_generic 2>/dev/null || true
modprobe rdma_rxe || die "cannot load rdma_rxe (is this kernel built with CONFIG_RDMA_RXE?)"
# The user-space verbs and RDMA CM devices (/dev/infiniband/uverbs*, rdma_cm).
modprobe ib_uverbs 2>/dev/null || true
modprobe rdma_ucm 2>/dev/null || true

existing() {
  rdma link show 2>/dev/null | awk -v nd="$netdev" '$0 ~ (" netdev " nd "( |$)") { sub("/.*", "", $2); print $2; exit }'
}
dev="$(existing)"
if [ -z "$dev" ]; then
  dev="rxe_$netdev"
  rdma link add "$dev" type rxe netdev "$netdev" ||
    die "rdma link add $dev type rxe netdev $netdev failed (dmesg says why)"
  for _ in $(seq 50); do
    [ -n "$(existing)" ] && break
    sleep 0.1
  done
  [ -n "$(existing)" ] || die "$dev did not appear"
fi
[ -e /dev/infiniband/rdma_cm ] || echo "soft-roce: warning: /dev/infiniband/rdma_cm is missing (modprobe rdma_ucm)" >&2
echo "$dev"
