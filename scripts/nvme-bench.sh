#!/usr/bin/env bash
# NVMe SSD backends in the QEMU guest: fio through the kernel's NVMe/TCP (or NVMe/RDMA) host
# against nvmf-target driving an emulated NVMe controller through VFIO, against nvmf-target
# using io_uring passthrough on the same controller, and against the kernel's nvmet exporting
# its block device, taking turns each round (scripts/vm/guest-nvme-bench.sh). Prints each run
# and the medians per target and case. Not part of the test command.
#
#   scripts/nvme-bench.sh [-r ROUNDS] [-t SECONDS] [-c "randread:4k:1 ..."]
#                         [--transport tcp|rdma] [--targets "vfio pass nvmet"]
#                         [--idle sleep|adaptive|busy] [--cpus 1|2]
#
# By default everything runs in one TCG-emulated vCPU (idle = "sleep": the target must not
# spin the only CPU). With --cpus 2 the target's reactor is pinned to the second vCPU, fio and
# the kernel's work run on the first (and nvmet's kernel threads on both), as a polled target
# is deployed on its own core (--idle busy). QEMU's emulated controller on a raw image file:
# the numbers compare the paths on the same emulated device and CPUs, not what a real SSD
# does.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
secs=10
cases="randread:4k:1 randread:4k:32 randwrite:4k:32 read:128k:16 write:128k:16"
transport=tcp
targets="vfio pass nvmet"
idle=sleep
cpus=1
while [ $# -gt 0 ]; do
  case "$1" in
  -r) rounds=$2; shift 2 ;;
  -t) secs=$2; shift 2 ;;
  -c) cases=$2; shift 2 ;;
  --transport) transport=$2; shift 2 ;;
  --targets) targets=$2; shift 2 ;;
  --idle) idle=$2; shift 2 ;;
  --cpus) cpus=$2; shift 2 ;;
  *) sed -n '2,18p' "$0"; exit 2 ;;
  esac
done
out=target/nvme-bench
mkdir -p "$out"
cargo build --release --bin nvmf-target
cp target/release/nvmf-target "$out/nvmf-target"
strip "$out/nvmf-target" 2>/dev/null || true
rm -f "$out/drive.img"
truncate -s 1G "$out/drive.img"
NVMF_VM_CPUS="$cpus" NVMF_GUEST_BENCH_CORE="$((cpus - 1))" NVMF_GUEST_BENCH_IDLE="$idle" \
  NVMF_VM_IOMMU=1 NVMF_VM_NVME="$out/drive.img:512" \
  NVMF_VM_FILES="scripts/nvme-setup.sh scripts/soft-roce.sh scripts/vm/bench-lib.sh $out/nvmf-target" \
  NVMF_VM_MEMORY="${NVMF_VM_MEMORY:-2048M}" NVMF_VM_TIMEOUT="${NVMF_VM_TIMEOUT:-3600}" \
  NVMF_VM_LOG="$out/console.log" NVMF_GUEST_BENCH_ROUNDS="$rounds" NVMF_GUEST_BENCH_SECS="$secs" \
  NVMF_GUEST_BENCH_CASES="$cases" NVMF_GUEST_BENCH_TRANSPORT="$transport" \
  NVMF_GUEST_BENCH_TARGETS="$targets" \
  scripts/vm/run.sh scripts/vm/guest-nvme-bench.sh | grep -E '^BENCH' | tee "$out/runs.txt"
echo "== medians of $rounds rounds x ${secs}s (guest: $cpus vCPU, TCG; idle = $idle; QEMU's emulated NVMe on a raw file; over $transport)"
scripts/vm/bench-medians.sh "$out/runs.txt"
