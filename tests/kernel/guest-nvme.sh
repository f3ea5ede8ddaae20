#!/bin/bash
# Runs inside the QEMU guest (scripts/vm/run.sh) on a q35 machine with an emulated IOMMU and
# three emulated NVMe controllers (raw image files on the host). The first two (512 and
# 4096-byte blocks): scripts/nvme-setup.sh gives them to vfio-pci and nvmf-target
# (/test/nvmf-target) drives them with its user-space driver (backend = "nvme", pci). The
# third (serial NVMFTEST2, 512-byte blocks) stays with the kernel's nvme driver and the target
# sends it NVMe commands through io_uring passthrough on its namespace's character device
# (backend = "nvme", path = "/dev/ngXnY"). All three are exported over NVMe/TCP on 10.0.2.15,
# and the guest kernel's NVMe/TCP host runs the basic checks on each (identify, logs,
# features, write/read, compare, write-zeroes, dsm, flush, fio verify, ext4 and XFS). Then the
# host writes a marker, the target stops (a normal shutdown of the controllers), the devices
# go back to the kernel's nvme driver, which must read the markers; tests/kernel/run.sh finds
# them in the image files after the guest is gone.
# The last line is "kernel-host: N passed, N failed"; the exit status is 1 if any failed.
set -euo pipefail

export NVMF_GUEST_TRANSPORT=tcp NVMF_GUEST_TARGET_ADDR=10.0.2.15
export NVMF_GUEST_SUBSYSTEMS="nqn.2026-01.io.nvmf-target:nvme512=512 nqn.2026-01.io.nvmf-target:nvme4k=4096 nqn.2026-01.io.nvmf-target:nvmepass=512"
# shellcheck source=tests/kernel/lib-guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-guest.sh"

DPORT="$PORT"
# The same subsystems over NVMe/RDMA (Soft-RoCE on eth0) on this port.
RDMA_PORT=4421
CFG=/tmp/nvmf-nvme.toml
MARKER="nvmf-target-nvme-marker"

kernel_disk() { # PCI: the namespace disk the kernel's nvme driver made for it
  local d=""
  for _ in $(seq 100); do
    d="$(ls "/sys/bus/pci/devices/$1/nvme/"nvme*/ 2>/dev/null | grep -E '^nvme[0-9]+n1$' | head -n 1 || true)"
    [ -n "$d" ] && [ -b "/dev/$d" ] && break
    sleep 0.1
  done
  echo "$d"
}

# The emulated controllers for VFIO, by block size (512 first), while the kernel still has
# them; the one whose serial is NVMFTEST2 stays the kernel's (passthrough).
modprobe nvme
modprobe vfio-pci
: >/tmp/pass_pci
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/class")" = 0x010802 ] || continue
  p="$(basename "$d")"
  disk="$(kernel_disk "$p")"
  if [ "$(cat "$d"/nvme/nvme*/serial 2>/dev/null | tr -d ' ')" = NVMFTEST2 ]; then
    echo "$p" >/tmp/pass_pci
    continue
  fi
  echo "$(cat "/sys/block/$disk/queue/logical_block_size" 2>/dev/null || echo 0) $p"
done | sort -n | awk '{ print $2 }' >/tmp/pcis
mapfile -t PCIS </tmp/pcis
PASS_PCI="$(cat /tmp/pass_pci)"
PASS_DISK=""
[ -n "$PASS_PCI" ] && PASS_DISK="$(kernel_disk "$PASS_PCI")"
PASS_NG="/dev/ng${PASS_DISK#nvme}"

setup() {
  run bash /test/nvme-setup.sh status
  echo "controllers: ${PCIS[*]}"
  [ "${#PCIS[@]}" -eq 2 ]
  run bash /test/nvme-setup.sh bind "${PCIS[@]}"
  for p in "${PCIS[@]}"; do
    [ "$(basename "$(readlink "/sys/bus/pci/devices/$p/driver")")" = vfio-pci ]
  done
  ls -l /dev/vfio
  # DMA memory in huge pages (each controller's region takes some 40 MiB).
  run bash /test/nvme-setup.sh hugepages 64
}

# The third controller stays with the kernel: its namespace's character device is there.
passthru_device() {
  echo "passthrough controller: ${PASS_PCI:-none}, disk /dev/${PASS_DISK:-none}, $PASS_NG"
  [ -n "$PASS_DISK" ]
  [ -c "$PASS_NG" ]
  [ "$(basename "$(readlink "/sys/bus/pci/devices/$PASS_PCI/driver")")" = nvme ]
}

# A device in use by the kernel is not taken.
bind_refuses_a_mounted_disk() {
  local p="${PCIS[0]}" d out
  run bash /test/nvme-setup.sh unbind "$p"
  d="$(kernel_disk "$p")"
  echo "kernel disk: /dev/$d"
  run mkfs.ext4 -q -F "/dev/$d"
  run mount "/dev/$d" "$MNT"
  if out="$(bash /test/nvme-setup.sh bind "$p" 2>&1)"; then
    echo "$out"
    umount "$MNT"
    echo "bind took a disk with a mounted file system"
    return 1
  fi
  echo "$out"
  expect "in use" "$out"
  run umount "$MNT"
  run bash /test/nvme-setup.sh bind "$p"
}

write_config() {
  local i=0 entry nqn bs
  {
    printf '[target]\ncores = [0]\n# One vCPU: never spin.\nidle = "sleep"\ncontrol_socket = "/tmp/nvmf-target.sock"\n\n'
    printf '[[listener]]\ntransport = "tcp"\naddress = "%s"\nport = %s\n' "$TARGET" "$PORT"
    printf '\n[[listener]]\ntransport = "rdma"\naddress = "%s"\nport = %s\n' "$TARGET" "$RDMA_PORT"
    for entry in "${SUBSYSTEMS[@]}"; do
      nqn="${entry%=*}"
      bs="${entry##*=}"
      printf '\n[[subsystem]]\nnqn = "%s"\nallow_any_host = true\n' "$nqn"
      if [ "$i" -lt "${#PCIS[@]}" ]; then
        printf '[[subsystem.namespace]]\nbackend = "nvme"\npci = "%s"\n# (The device says %s.)\n' \
          "${PCIS[$i]}" "$bs"
      else
        printf '[[subsystem.namespace]]\nbackend = "nvme"\npath = "%s"\n# (The device says %s.)\n' \
          "$PASS_NG" "$bs"
      fi
      i=$((i + 1))
    done
  } >"$CFG"
  cat "$CFG"
  run "$BIN" check "$CFG"
}

device_log() { # what the driver said about each controller and the passthrough namespace
  grep -E "NVMe controller|passthrough" "$TLOG"
  [ "$(grep -c "NVMe controller .* I/O queue pairs" "$TLOG")" -eq 2 ]
  # QEMU's controller takes SGLs: the driver gives each command one data block descriptor.
  [ "$(grep -c "data pointers SGL" "$TLOG")" -eq 2 ]
  # Both controllers' DMA memory (queues, bounce and staged buffers) in huge pages.
  [ "$(grep -c "MiB of DMA memory in 2 MiB huge pages, mapped once" "$TLOG")" -eq 2 ]
  # The reactor sleeps (idle = "sleep"): each controller's I/O queue interrupts through
  # VFIO's MSI-X eventfd to wake it.
  [ "$(grep -c "interrupts on 1 queue(s) wake a sleeping reactor" "$TLOG")" -eq 2 ]
  grep -q "$PASS_NG: NVMe namespace 1 passthrough" "$TLOG"
}

rxe_up() {
  run bash /test/soft-roce.sh eth0
  run modprobe nvme-rdma
}

over_rdma() { # NQN BS: the kernel's NVMe/RDMA host on the same namespace: I/O verified
  local TRANSPORT=rdma blocks
  local CONNECT_OPTS=(-t rdma -a "$TARGET" -s "$RDMA_PORT")
  connect "$1"
  CTRL="$(ctrl_for "$1")"
  NS="$(ns_for "$CTRL")"
  echo "over RDMA: /dev/$CTRL ($(cat "/sys/class/nvme/$CTRL/transport")), /dev/$NS"
  io_write_read "$2"
  dd_verify 4 96
  fio_verify rdma "/dev/$NS" 16M --offset=192M --bsrange="$2"-128k
  disconnect "$1"
}

copied_bytes() { # NQN: bytes its device's driver copied through bounce buffers so far
  "$BIN" --config "$CFG" ctl namespaces --json |
    tr '{' '\n' | grep "\"subsystem\":\"$1\"" | sed -n 's/.*"dma_copied_bytes":\([0-9]*\).*/\1/p'
}

zero_copy() { # NQN TRANSPORT: 128 KiB writes and reads move no byte through bounce buffers
  local c0 c1 ns TRANSPORT="$2"
  run nvme connect -t "$2" -a "$TARGET" -s "$([ "$2" = rdma ] && echo "$RDMA_PORT" || echo "$PORT")" -n "$1"
  ns="$(ns_for "$(ctrl_for "$1")")"
  c0="$(copied_bytes "$1")"
  head -c 8388608 /dev/urandom >/tmp/zc.dat
  run dd if=/tmp/zc.dat of="/dev/$ns" bs=128k seek=256 oflag=direct status=none
  run dd if="/dev/$ns" of=/tmp/zc.back bs=128k skip=256 count=64 iflag=direct status=none
  run cmp /tmp/zc.dat /tmp/zc.back
  c1="$(copied_bytes "$1")"
  echo "bytes copied through bounce buffers: $c0 before, $c1 after 8 MiB written and read in 128 KiB I/O"
  "$BIN" --config "$CFG" ctl namespaces | grep -A1 "$1"
  disconnect "$1"
  [ -n "$c0" ] && [ "$c0" = "$c1" ]
}

irq_woken() { # NQN: the sleeping reactor was woken by its queue's completion interrupt
  local n
  n="$("$BIN" --config "$CFG" ctl namespaces --json |
    tr '{' '\n' | grep "\"subsystem\":\"$1\"" |
    sed -n 's/.*"interrupt_queues":1,"interrupt_waits":[0-9]*,"interrupt_wakes":\([0-9]*\).*/\1/p')"
  echo "$1: completion interrupts woke the reactor ${n:-?} times"
  [ -n "$n" ] && [ "$n" -gt 0 ]
}

write_marker() { # NQN: a marker at LBA 1000 through the target
  local ns
  connect "$1" >/dev/null
  ns="$(ns_for "$(ctrl_for "$1")")"
  printf '%s %s\n' "$MARKER" "$1" >/tmp/marker
  run dd if=/tmp/marker of="/dev/$ns" bs=4096 seek=125 count=1 conv=sync oflag=direct status=none
  run nvme flush "/dev/$ns" -n 1
  disconnect "$1"
}

stop_and_give_back() { # the target stops (controller shutdown), the kernel gets the devices
  stop_target
  grep -q "shutdown not complete" "$TLOG" && return 1
  run bash /test/nvme-setup.sh unbind "${PCIS[@]}"
  local p d found=0
  for p in "${PCIS[@]}"; do
    d="$(kernel_disk "$p")"
    echo "$p: kernel disk /dev/$d"
    if dd if="/dev/$d" bs=4096 skip=125 count=1 iflag=direct status=none | grep -q "$MARKER"; then
      found=$((found + 1))
    fi
  done
  # The passthrough namespace was the kernel's all along.
  if dd if="/dev/$PASS_DISK" bs=4096 skip=125 count=1 iflag=direct status=none |
    grep -q "$MARKER"; then
    found=$((found + 1))
  fi
  echo "markers read back by the kernel's driver: $found"
  [ "$found" -eq 3 ]
}

say "host $(cat /etc/nvme/hostnqn), NVMe over VFIO exported at $TARGET:$PORT"
check "nvme-setup.sh binds both controllers to vfio-pci" setup || {
  summary
  exit 1
}
check "nvme-setup.sh refuses a controller whose disk is mounted" bind_refuses_a_mounted_disk || true
check "the third controller stays the kernel's, its namespace's character device there" \
  passthru_device || true
check "Soft-RoCE on eth0 (the same subsystems over NVMe/RDMA)" rxe_up || true
check "target config" write_config || exit 1
check "target starts; the driver brings both controllers up, opens the passthrough namespace" \
  start_target || {
  cat "$TLOG"
  summary
  exit 1
}
check "the driver read each controller's identity and namespace; passthrough geometry" device_log || true
for entry in "${SUBSYSTEMS[@]}"; do
  basic "${entry%=*}" "${entry##*=}"
done
for entry in "${SUBSYSTEMS[@]}"; do
  check "${entry%=*} over NVMe/RDMA: write + read, dd, fio verify" \
    over_rdma "${entry%=*}" "${entry##*=}" || true
done
for t in tcp rdma; do
  for p in 0 1; do
    entry="${SUBSYSTEMS[$p]}"
    check "${entry%=*} over $t: 128 KiB writes and reads staged in DMA memory, no bounce copy" \
      zero_copy "${entry%=*}" "$t" || true
  done
done
for p in 0 1; do
  entry="${SUBSYSTEMS[$p]}"
  check "${entry%=*}: completion interrupts (MSI-X through VFIO) woke the sleeping reactor" \
    irq_woken "${entry%=*}" || true
done
for entry in "${SUBSYSTEMS[@]}"; do
  check "marker written to ${entry%=*}" write_marker "${entry%=*}" || true
done
check "target log: no panic" target_log_clean || true
check "SIGTERM: controllers shut down, back to the kernel's driver, markers there" \
  stop_and_give_back || true
say "---- target log (last 30 lines) ----"
tail -n 30 "$TLOG"
summary
[ "$failed" -eq 0 ]
