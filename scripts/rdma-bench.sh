#!/usr/bin/env bash
# NVMe/RDMA performance in the QEMU guest, over Soft-RoCE: the kernel's nvme-rdma host and fio
# against nvmf-target and against the kernel's own nvmet-rdma, taking turns each round, on a
# 256 MiB memory namespace (4 KiB random read at QD 1 and 32, 128 KiB sequential read and
# write). Prints each run and the medians per target and case: IOPS, MiB/s, mean and p99
# latency, the guest's busy CPU per I/O (host, rxe and target together) and, for nvmf-target,
# its own CPU per I/O. Not part of the test command.
#
#   scripts/rdma-bench.sh [-r ROUNDS] [-t SECONDS] [-c "randread:4k:1 ..."]
#                         [--idle sleep|adaptive|busy] [--cpus 1|2]
#
# Soft-RoCE under TCG emulation is slow: the numbers compare the two targets on the same
# emulated device and CPU, not what RDMA hardware does.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
secs=10
cases="randread:4k:1 randread:4k:32 read:128k:16 write:128k:16"
idle=sleep
cpus=1
while [ $# -gt 0 ]; do
  case "$1" in
  -r) rounds=$2; shift 2 ;;
  -t) secs=$2; shift 2 ;;
  -c) cases=$2; shift 2 ;;
  --idle) idle=$2; shift 2 ;;
  --cpus) cpus=$2; shift 2 ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
out=target/rdma-bench
mkdir -p "$out"
cargo build --release --bin nvmf-target
cp target/release/nvmf-target "$out/nvmf-target"
strip "$out/nvmf-target" 2>/dev/null || true
# With two vCPUs the target runs on the second, fio and the kernel's work on the first.
NVMF_VM_CPUS="$cpus" NVMF_GUEST_BENCH_CORE="$((cpus - 1))" \
  NVMF_VM_FILES="scripts/soft-roce.sh scripts/vm/bench-lib.sh $out/nvmf-target" NVMF_VM_MEMORY="${NVMF_VM_MEMORY:-2048M}" \
  NVMF_VM_TIMEOUT="${NVMF_VM_TIMEOUT:-3600}" NVMF_VM_LOG="$out/console.log" \
  NVMF_GUEST_BENCH_ROUNDS="$rounds" NVMF_GUEST_BENCH_SECS="$secs" \
  NVMF_GUEST_BENCH_CASES="$cases" NVMF_GUEST_BENCH_IDLE="$idle" \
  scripts/vm/run.sh scripts/vm/guest-rdma-bench.sh | grep -E '^BENCH' | tee "$out/runs.txt"
echo "== medians of $rounds rounds x ${secs}s (guest: $cpus vCPU, TCG; Soft-RoCE on virtio-net; idle = $idle)"
scripts/vm/bench-medians.sh "$out/runs.txt"
