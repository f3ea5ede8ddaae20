#!/bin/bash
# Runs inside the QEMU guest for scripts/nvme-bench.sh: one emulated NVMe controller, exported
# to the guest kernel's host three ways, taking turns every round, with the same fio jobs:
#   vfio   nvmf-target driving the controller itself through VFIO (backend nvme, pci)
#   pass   nvmf-target sending NVMe commands through io_uring passthrough on /dev/ngXn1
#          while the kernel's nvme driver keeps the controller (backend nvme, path)
#   nvmet  the kernel's nvmet exporting the controller's block device (bdev backend;
#          Debian's 6.1 kernel has no nvmet passthru)
# over NVMe/TCP (or NVMe/RDMA on Soft-RoCE) on 10.0.2.15. Prints one BENCH line per run
# (scripts/vm/bench-lib.sh).
set -euo pipefail
ROUNDS="${NVMF_GUEST_BENCH_ROUNDS:-3}"
SECS="${NVMF_GUEST_BENCH_SECS:-10}"
CASES="${NVMF_GUEST_BENCH_CASES:-randread:4k:1 randread:4k:32 randwrite:4k:32 read:128k:16 write:128k:16}"
TR="${NVMF_GUEST_BENCH_TRANSPORT:-tcp}"
TARGETS="${NVMF_GUEST_BENCH_TARGETS:-vfio pass nvmet}"
NQN=nqn.2026-01.io.nvmf-target:nvmebench
NQN2=nqn.2026-01.io.nvmet:nvmebench
ADDR=10.0.2.15
CFG=/tmp/bench.toml
# shellcheck source=scripts/vm/bench-lib.sh
. /test/bench-lib.sh

[ "$TR" = rdma ] && bash /test/soft-roce.sh eth0 >/dev/null
modprobe nvme
modprobe vfio-pci
modprobe "nvme-$TR"
modprobe nvmet
modprobe "nvmet-$TR"

PCI=""
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/class")" = 0x010802 ] && PCI="$(basename "$d")"
done
[ -n "$PCI" ] || {
  echo "no NVMe controller in the guest"
  exit 1
}

kernel_disk() { # the namespace disk the kernel's nvme driver made for $PCI
  local d=""
  for _ in $(seq 100); do
    d="$(ls "/sys/bus/pci/devices/$PCI/nvme/"nvme*/ 2>/dev/null | grep -E '^nvme[0-9]+n1$' | head -n 1 || true)"
    [ -n "$d" ] && [ -b "/dev/$d" ] && break
    sleep 0.1
  done
  echo "$d"
}

TPID=""
ours_up() { # vfio|pass
  local ns
  if [ "$1" = vfio ]; then
    bash /test/nvme-setup.sh bind "$PCI" >/dev/null
    ns="pci = \"$PCI\""
  else
    ns="path = \"/dev/ng$(kernel_disk | sed 's/^nvme//')\""
  fi
  cat >"$CFG" <<CFG
[target]
cores = [${NVMF_GUEST_BENCH_CORE:-0}]
idle = "${NVMF_GUEST_BENCH_IDLE:-sleep}"
[[listener]]
transport = "$TR"
address = "$ADDR"
port = 4420
[[subsystem]]
nqn = "$NQN"
allow_any_host = true
[[subsystem.namespace]]
backend = "nvme"
$ns
CFG
  /test/nvmf-target --config "$CFG" --log-level warn >/tmp/bench-target.log 2>&1 &
  TPID=$!
  sleep 2
  kill -0 "$TPID" || {
    cat /tmp/bench-target.log
    exit 1
  }
}

ours_down() { # vfio|pass
  kill -TERM "$TPID"
  wait "$TPID" || true
  if [ "$1" = vfio ]; then
    bash /test/nvme-setup.sh unbind "$PCI" >/dev/null
    [ -n "$(kernel_disk)" ]
  fi
}

CFS=/sys/kernel/config/nvmet
nvmet_up() {
  mkdir -p "$CFS/ports/1" "$CFS/subsystems/$NQN2/namespaces/1"
  echo "$TR" >"$CFS/ports/1/addr_trtype"
  echo ipv4 >"$CFS/ports/1/addr_adrfam"
  echo "$ADDR" >"$CFS/ports/1/addr_traddr"
  echo 4421 >"$CFS/ports/1/addr_trsvcid"
  echo 1 >"$CFS/subsystems/$NQN2/attr_allow_any_host"
  echo "/dev/$(kernel_disk)" >"$CFS/subsystems/$NQN2/namespaces/1/device_path"
  echo 1 >"$CFS/subsystems/$NQN2/namespaces/1/enable"
  ln -s "$CFS/subsystems/$NQN2" "$CFS/ports/1/subsystems/$NQN2"
}

nvmet_down() {
  rm "$CFS/ports/1/subsystems/$NQN2"
  echo 0 >"$CFS/subsystems/$NQN2/namespaces/1/enable"
  rmdir "$CFS/subsystems/$NQN2/namespaces/1" "$CFS/subsystems/$NQN2" "$CFS/ports/1"
}

echo "controller $PCI, kernel disk /dev/$(kernel_disk), transport $TR"
for r in $(seq "$ROUNDS"); do
  # A different target first each round.
  set -- $TARGETS
  for _ in $(seq $(((r - 1) % $#))); do set -- "${@:2}" "$1"; done
  for tgt in "$@"; do
    case "$tgt" in
    vfio | pass)
      ours_up "$tgt"
      for c in $CASES; do bench_case "$tgt" "$c" "$TR" "$ADDR" 4420 "$NQN" "$TPID"; done
      ours_down "$tgt"
      ;;
    nvmet)
      nvmet_up
      for c in $CASES; do bench_case nvmet "$c" "$TR" "$ADDR" 4421 "$NQN2"; done
      nvmet_down
      ;;
    esac
  done
done
echo "BENCH-DONE"
