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
  NVMF_VM_FILES="scripts/soft-roce.sh $out/nvmf-target" NVMF_VM_MEMORY="${NVMF_VM_MEMORY:-2048M}" \
  NVMF_VM_TIMEOUT="${NVMF_VM_TIMEOUT:-3600}" NVMF_VM_LOG="$out/console.log" \
  NVMF_GUEST_BENCH_ROUNDS="$rounds" NVMF_GUEST_BENCH_SECS="$secs" \
  NVMF_GUEST_BENCH_CASES="$cases" NVMF_GUEST_BENCH_IDLE="$idle" \
  scripts/vm/run.sh scripts/vm/guest-rdma-bench.sh | grep -E '^BENCH' | tee "$out/runs.txt"
echo "== medians of $rounds rounds x ${secs}s (guest: $cpus vCPU, TCG; Soft-RoCE on virtio-net; idle = $idle)"
printf "%-18s %-6s %9s %8s %10s %10s %12s %12s\n" case target IOPS MiB/s "mean us" "p99 us" "cpu us/io" "tgt us/io"
awk '
  $1 == "BENCH" && NF > 3 {
    k = $3 " " $2; keys[k] = 1
    for (i = 4; i <= NF; i++) { split($i, kv, "="); v[k, kv[1], ++n[k, kv[1]]] = kv[2] + 0; names[kv[1]] = i }
  }
  function median(k, f,   m, i, j, t, a) {
    m = n[k, f]; for (i = 1; i <= m; i++) a[i] = v[k, f, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    for (k in keys) {
      split(k, p, " ")
      printf "%-18s %-6s %9.0f %8.1f %10.1f %10.1f %12.1f %12.1f\n", p[1], p[2], median(k, "iops"), median(k, "mib_s"), median(k, "lat_mean_us"), median(k, "lat_p99_us"), median(k, "cpu_us_per_io"), median(k, "tcpu_us_per_io")
    }
  }' "$out/runs.txt" | sort
