#!/bin/bash
# Sourced by the guest benchmark scripts (scripts/vm/guest-*-bench.sh): one fio run through
# the kernel host against one target, measured and printed as one line:
#   BENCH <target> <case> iops=N mib_s=N lat_mean_us=N lat_p99_us=N cpu_us_per_io=N tcpu_us_per_io=N
# cpu_us_per_io: busy CPU time of the whole guest (host, target, emulated devices' guest side)
# per I/O, from /proc/stat; tcpu_us_per_io: the target process's own CPU time per I/O (0 for
# the kernel's nvmet, whose work is inside the guest total).
# Needs SECS (seconds per run).

busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# bench_case TARGET CASE TRANSPORT ADDR PORT NQN [PID]
# CASE is RW:BS:QD (e.g. randread:4k:32); PID the target process to charge CPU time to.
bench_case() {
  local tgt="$1" case="$2" tr="$3" addr="$4" port="$5" nqn="$6" pid="${7:-}"
  local rw bs qd dev="" b0 b1 p0=0 p1=0 hz=100 # USER_HZ: the unit of both stat files
  IFS=: read -r rw bs qd <<<"$case"
  nvme connect -t "$tr" -a "$addr" -s "$port" -n "$nqn" >/dev/null
  for _ in $(seq 50); do
    for b in /sys/block/nvme*n1; do
      [ "$(cat "$b/device/subsysnqn" 2>/dev/null)" = "$nqn" ] && dev="$(basename "$b")"
    done
    [ -n "$dev" ] && [ -b "/dev/$dev" ] && break
    sleep 0.1
  done
  b0="$(busy_ticks)"
  [ -n "$pid" ] && p0="$(proc_ticks "$pid")"
  fio --name=b --filename="/dev/$dev" --ioengine=libaio --direct=1 --rw="$rw" --bs="$bs" \
    --iodepth="$qd" --time_based --runtime="$SECS" --ramp_time=1 --size=200M \
    --output-format=json --output=/tmp/fio.json >/tmp/fio.err 2>&1 || cat /tmp/fio.err
  b1="$(busy_ticks)"
  [ -n "$pid" ] && p1="$(proc_ticks "$pid")"
  nvme disconnect -n "$nqn" >/dev/null
  awk -v tgt="$tgt" -v c="$case" -v busy=$((b1 - b0)) -v proc=$((p1 - p0)) -v hz="$hz" -v secs="$SECS" '
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
