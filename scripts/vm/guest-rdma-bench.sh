#!/bin/bash
# Runs inside the QEMU guest for scripts/rdma-bench.sh: the kernel's nvme-rdma host over
# Soft-RoCE, the same fio jobs against nvmf-target (/test/nvmf-target) and against the kernel's
# nvmet-rdma, taking turns every round; each on a 256 MiB memory namespace of 4096-byte blocks
# (ours: a RAM namespace; nvmet: a memory-backed null_blk), on 10.0.2.15:4420.
# Prints one line per run:
#   BENCH <target> <case> iops=N mib_s=N lat_mean_us=N lat_p99_us=N cpu_us_per_io=N tcpu_us_per_io=N
# cpu_us_per_io: busy CPU time of the whole guest (host, rxe, target) per I/O, from /proc/stat;
# tcpu_us_per_io: the target process's own CPU time per I/O (nvmf-target only; nvmet runs in
# the kernel, inside the guest total).
set -euo pipefail
ROUNDS="${NVMF_GUEST_BENCH_ROUNDS:-3}"
SECS="${NVMF_GUEST_BENCH_SECS:-10}"
CASES="${NVMF_GUEST_BENCH_CASES:-randread:4k:1 randread:4k:32 read:128k:16 write:128k:16}"
NQN=nqn.2026-01.io.nvmf-target:bench
NQN2=nqn.2026-01.io.nvmet:bench
ADDR=10.0.2.15
CFG=/tmp/bench.toml

bash /test/soft-roce.sh eth0 >/dev/null
modprobe nvme-rdma
modprobe nvmet
modprobe nvmet-rdma
modprobe null_blk nr_devices=0

cat >"$CFG" <<EOF
[target]
cores = [${NVMF_GUEST_BENCH_CORE:-0}]
idle = "${NVMF_GUEST_BENCH_IDLE:-sleep}"
[[listener]]
transport = "rdma"
address = "$ADDR"
[[subsystem]]
nqn = "$NQN"
allow_any_host = true
[[subsystem.namespace]]
backend = "ram"
size = "256MiB"
block_size = 4096
EOF

# Both targets run all along, on one address: nvmf-target on port 4420, nvmet on 4421.
nvmet_up() {
  local cfg=/sys/kernel/config/nvmet nb=/sys/kernel/config/nullb/bench
  mkdir -p "$nb"
  echo 256 >"$nb/size"
  echo 4096 >"$nb/blocksize"
  echo 1 >"$nb/memory_backed"
  echo 1 >"$nb/power"
  mkdir -p "$cfg/ports/1"
  echo rdma >"$cfg/ports/1/addr_trtype"
  echo ipv4 >"$cfg/ports/1/addr_adrfam"
  echo "$ADDR" >"$cfg/ports/1/addr_traddr"
  echo 4421 >"$cfg/ports/1/addr_trsvcid"
  mkdir -p "$cfg/subsystems/$NQN2/namespaces/1"
  echo 1 >"$cfg/subsystems/$NQN2/attr_allow_any_host"
  echo /dev/bench >"$cfg/subsystems/$NQN2/namespaces/1/device_path"
  echo 1 >"$cfg/subsystems/$NQN2/namespaces/1/enable"
  ln -s "$cfg/subsystems/$NQN2" "$cfg/ports/1/subsystems/$NQN2"
}

/test/nvmf-target --config "$CFG" --log-level warn >/tmp/bench-target.log 2>&1 &
TPID=$!
nvmet_up
sleep 1

busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

run_case() { # TARGET CASE
  local tgt="$1" rw bs qd dev="" b0 b1 p0=0 p1=0 hz nqn port pid=""
  IFS=: read -r rw bs qd <<<"$2"
  if [ "$tgt" = ours ]; then
    nqn="$NQN" port=4420 pid="$TPID"
  else
    nqn="$NQN2" port=4421
  fi
  nvme connect -t rdma -a "$ADDR" -s "$port" -n "$nqn" >/dev/null
  for _ in $(seq 50); do
    for b in /sys/block/nvme*n1; do
      [ "$(cat "$b/device/subsysnqn" 2>/dev/null)" = "$nqn" ] && dev="$(basename "$b")"
    done
    [ -n "$dev" ] && [ -b "/dev/$dev" ] && break
    sleep 0.1
  done
  hz=100 # USER_HZ: the unit of /proc/stat and /proc/PID/stat on Linux
  b0="$(busy_ticks)"
  [ -n "$pid" ] && p0="$(proc_ticks "$pid")"
  fio --name=b --filename="/dev/$dev" --ioengine=libaio --direct=1 --rw="$rw" --bs="$bs" \
    --iodepth="$qd" --time_based --runtime="$SECS" --ramp_time=1 --size=200M \
    --output-format=json --output=/tmp/fio.json >/tmp/fio.err 2>&1 || cat /tmp/fio.err
  b1="$(busy_ticks)"
  [ -n "$pid" ] && p1="$(proc_ticks "$pid")"
  nvme disconnect -n "$nqn" >/dev/null
  awk -v tgt="$tgt" -v c="$2" -v busy=$((b1 - b0)) -v proc=$((p1 - p0)) -v hz="$hz" -v secs="$SECS" '
    { all = all $0 "\n" }
    END {
      # Read and write sections of the job: take the one that moved.
      n = split(all, parts, /"(read|write)" : \{/)
      best = ""
      for (i = 2; i <= n; i++) {
        if (match(parts[i], /"total_ios" : [0-9]+/)) {
          t = substr(parts[i], RSTART + 14, RLENGTH - 14) + 0
          if (t > tot) { tot = t; best = parts[i] }
        }
      }
      match(best, /"iops" : [0-9.]+/); iops = substr(best, RSTART + 9, RLENGTH - 9) + 0
      match(best, /"bw_bytes" : [0-9]+/); bw = substr(best, RSTART + 13, RLENGTH - 13) + 0
      match(best, /"lat_ns" : \{[^}]*"mean" : [0-9.]+/); s = substr(best, RSTART, RLENGTH)
      sub(/.*"mean" : /, "", s); mean = s / 1000
      match(best, /"99.000000" : [0-9]+/); p = substr(best, RSTART, RLENGTH); sub(/.*: /, "", p)
      ios = iops * secs
      cpu = ios > 0 ? busy / hz * 1e6 / ios : 0
      tcpu = ios > 0 ? proc / hz * 1e6 / ios : 0
      printf "BENCH %s %s iops=%.0f mib_s=%.1f lat_mean_us=%.1f lat_p99_us=%.1f cpu_us_per_io=%.1f tcpu_us_per_io=%.1f\n", tgt, c, iops, bw / 1048576, mean, p / 1000, cpu, tcpu
    }' /tmp/fio.json
}

for r in $(seq "$ROUNDS"); do
  order="ours nvmet"
  [ $((r % 2)) -eq 0 ] && order="nvmet ours"
  for tgt in $order; do
    for c in $CASES; do run_case "$tgt" "$c"; done
  done
done
kill -TERM "$TPID"
echo "BENCH-DONE"
