#!/usr/bin/env bash
# Boots the Debian 12 kernel and the cached initramfs (scripts/vm/build-initramfs.sh) in a
# QEMU guest under software emulation, runs GUEST_SCRIPT in it with bash, streams the guest
# console to stdout and exits with the guest script's exit status.
#
#   scripts/vm/run.sh GUEST_SCRIPT [ARGS...]
#
# In the guest the script runs as /test/script, in /test, as root, with ARGS; the host's
# loopback is 10.0.2.2 (user-mode networking; the guest reaches nothing else).
# Exit status: the script's; 124 if the timeout killed the guest; 125 if the guest never
# reported a status (crash, panic, boot failure).
#
# Environment:
#   NVMF_VM_TIMEOUT     seconds before QEMU is killed (default 600)
#   NVMF_VM_MEMORY      guest memory (default 1536M)
#   NVMF_VM_CPUS        guest vCPUs (default 1: one vCPU is faster under TCG)
#   NVMF_VM_APPEND      more kernel command-line parameters
#   NVMF_VM_FILES       more host files to copy into the guest's /test (space-separated)
#   NVMF_VM_IOMMU=1     a q35 machine with an emulated Intel IOMMU (intel_iommu=on), so that
#                       vfio-pci can take PCI devices in the guest
#   NVMF_VM_NVME        emulated NVMe controllers: "IMAGE:BLOCK_SIZE ..." (raw image files)
#   NVMF_VM_LOG         also write the console to this file
#   NVMF_GUEST_*        passed into the guest's environment, as are NVMF_VM_SCRIPT_NAME
#   NVMF_VM_CACHE, NVMF_VM_OFFLINE, ...   see build-initramfs.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage() {
  echo "usage: $0 GUEST_SCRIPT [ARGS...]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
script="$1"
shift
[ -r "$script" ] || {
  echo "run.sh: cannot read $script" >&2
  exit 2
}

img="$("$here/build-initramfs.sh" | tail -n 1)"
[ -e "$img/complete" ] || {
  echo "run.sh: build-initramfs.sh gave no image" >&2
  exit 1
}

timeout_s="${NVMF_VM_TIMEOUT:-600}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/nvmf-vm.XXXXXX")"
qemu_pid=""
tail_pid=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  if [ -n "$qemu_pid" ]; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  if [ -n "$tail_pid" ]; then kill "$tail_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Per-run payload: a small cpio appended to the cached initramfs.
mkdir -p "$tmp/payload/test"
cp "$script" "$tmp/payload/test/script"
for f in ${NVMF_VM_FILES:-}; do cp "$f" "$tmp/payload/test/"; done
if [ $# -gt 0 ]; then printf '%s\0' "$@" >"$tmp/payload/test/args"; fi
{
  printf 'NVMF_VM_SCRIPT_NAME=%q\n' "$(basename "$script")"
  while IFS= read -r var; do
    printf '%s=%q\n' "$var" "${!var}"
  done < <(compgen -v NVMF_GUEST_ || true)
} >"$tmp/payload/test/env"
(cd "$tmp/payload" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --owner=0:0 --quiet) >"$tmp/payload.cpio"
# The kernel looks for the next archive at a 4-byte boundary and skips zero padding.
{
  cat "$img/initramfs.cpio"
  size="$(stat -c %s "$img/initramfs.cpio")"
  head -c $(((512 - size % 512) % 512)) /dev/zero
  cat "$tmp/payload.cpio"
} >"$tmp/initrd"

append="console=ttyS0 panic=-1 quiet loglevel=4 random.trust_cpu=on mitigations=off"
append+=" i8042.noaux i8042.nokbd i8042.nopnp tsc=reliable no_timer_check noresume"
append+=" nvme_core.admin_timeout=10 nvme_core.io_timeout=20"
append+=" ${NVMF_VM_APPEND:-}"

console="$tmp/console.log"
: >"$console"
echo "run.sh: booting $(cat "$img/kernel-version") ($img) with $(basename "$script"), timeout ${timeout_s}s" >&2
start=$SECONDS
machine=(-machine pc)
devices=()
if [ "${NVMF_VM_IOMMU:-0}" = 1 ]; then
  # The IOMMU comes before the other devices; caching mode lets vfio map guest memory.
  machine=(-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on,caching-mode=on)
  append+=" intel_iommu=on"
fi
n=0
for spec in ${NVMF_VM_NVME:-}; do
  file="${spec%:*}" bs="${spec##*:}"
  devices+=(-drive "file=$file,if=none,id=nvme$n,format=raw,cache=unsafe"
    -device "nvme,serial=NVMFTEST$n,drive=nvme$n,logical_block_size=$bs,physical_block_size=$bs")
  n=$((n + 1))
done
timeout -k 5 "$timeout_s" qemu-system-x86_64 \
  -name nvmf-vm -nodefaults -no-user-config -no-reboot \
  "${machine[@]}" -accel tcg,thread=multi -cpu max \
  -smp "${NVMF_VM_CPUS:-1}" -m "${NVMF_VM_MEMORY:-1536M}" \
  -display none -vga none -serial "file:$console" -monitor none \
  -kernel "$img/kernel" -initrd "$tmp/initrd" -append "$append" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 "${devices[@]}" \
  </dev/null >"$tmp/qemu.out" 2>&1 &
qemu_pid=$!
tail -n +1 -f --pid="$qemu_pid" "$console" | sed -u 's/\r$//' &
tail_pid=$!
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
qemu_pid=""
wait "$tail_pid" 2>/dev/null || true
tail_pid=""
[ -n "${NVMF_VM_LOG:-}" ] && tr -d '\r' <"$console" >"$NVMF_VM_LOG"

elapsed=$((SECONDS - start))
status="$(tr -d '\r' <"$console" | sed -n 's/^VM-EXIT-STATUS=\([0-9]\{1,3\}\)$/\1/p' | tail -n 1)"
if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
  echo "run.sh: TIMEOUT: guest killed after ${timeout_s}s" >&2
  exit 124
fi
if [ -z "$status" ]; then
  echo "run.sh: the guest reported no exit status (QEMU exit $qemu_rc, ${elapsed}s); QEMU said:" >&2
  cat "$tmp/qemu.out" >&2
  exit 125
fi
echo "run.sh: guest script exited $status after ${elapsed}s" >&2
exit "$status"
