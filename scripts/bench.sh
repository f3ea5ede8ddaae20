#!/usr/bin/env bash
# The standard benchmark matrix (not part of the test command: timings never
# decide pass/fail). The target runs pinned to core 0, nvmf-perf to core 1:
#   4 KiB random read at QD 1, 32, 128; 4 KiB random write at QD 32;
#   128 KiB sequential read and write at QD 16;
# on the RAM and null backends, several rounds each; prints the medians
# (IOPS, MiB/s, mean and p99 latency, target CPU time per I/O, the
# reactor's busy share and busy time per I/O, i.e. its work without the
# spinning) and the target's idle CPU use, and saves everything as JSON.
#
# Usage: scripts/bench.sh [-r ROUNDS] [-t SECONDS] [-b "ram null"] [-o OUT.json]
#                         [-c "randread:4096:1 ..."] [-i busy|adaptive]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-config.sh

rounds=3
secs=10
backends="ram null"
out="bench-results/bench-$(date +%Y%m%d-%H%M%S).json"
idle="adaptive"
cases="randread:4096:1 randread:4096:32 randread:4096:128 randwrite:4096:32 read:131072:16 write:131072:16"
while getopts "r:t:b:o:c:i:" opt; do
  case "$opt" in
    r) rounds=$OPTARG ;;
    t) secs=$OPTARG ;;
    b) backends=$OPTARG ;;
    o) out=$OPTARG ;;
    c) cases=$OPTARG ;;
    i) idle=$OPTARG ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
  esac
done
[ "$(nproc)" -ge 2 ] || { echo "bench: needs 2 cores (target on 0, initiator on 1)" >&2; exit 1; }

cargo build --release --quiet --bin nvmf-target -p nvmf-target
cargo build --release --quiet --bin nvmf-perf -p nvmf-initiator
tgt=target/release/nvmf-target
perf=target/release/nvmf-perf
work=$(mktemp -d)
mkdir -p "$(dirname "$out")"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# CPU time of a process in nanoseconds, all threads.
cpu_ns() { awk '{s += $1} END {printf "%.0f", s}' /proc/"$1"/task/*/schedstat; }

port=44${RANDOM: -2}
for backend in $backends; do
  bench_config "$port" "$backend" "$idle" nqn.2026-01.io.nvmf-target:bench >"$work/$backend.toml"
  # Debug level: each reactor logs how busy it was every second.
  taskset -c 0 "$tgt" --config "$work/$backend.toml" --log-level debug 2>"$work/$backend.log" &
  pid=$!
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.1
  done
  # Idle CPU: 5 s with nothing connected.
  sleep 1
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "bench: the target did not start:" >&2; cat "$work/$backend.log" >&2; exit 1
  fi
  c0=$(cpu_ns "$pid"); sleep 5; c1=$(cpu_ns "$pid")
  echo "{\"backend\":\"$backend\",\"idle_cpu_pct\":$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.3f", (b-a)/5e9*100}')}" >> "$work/idle.jsonl"
  # Fill the namespace once so reads hit written memory.
  if [ "$backend" = ram ]; then
    "$perf" -a 127.0.0.1 -s "$port" -n nqn.2026-01.io.nvmf-target:bench --core 1 -w write -o 131072 -q 16 -t 2 --warmup 0 >/dev/null
  fi
  for case in $cases; do
    IFS=: read -r pattern size qd <<<"$case"
    for r in $(seq "$rounds"); do
      c0=$(cpu_ns "$pid"); l0=$(wc -l <"$work/$backend.log")
      "$perf" -a 127.0.0.1 -s "$port" -n nqn.2026-01.io.nvmf-target:bench --core 1 \
        -w "$pattern" -o "$size" -q "$qd" -t "$secs" --warmup 1 --json "$work/r.json" >/dev/null
      c1=$(cpu_ns "$pid")
      # The reactor's busy share, from the lines logged during the run (the
      # first covers the warm-up, the last may be partial: both dropped).
      busy=$(tail -n +$((l0 + 1)) "$work/$backend.log" | sed -n 's/.*reactor 0: \([0-9.]*\)% busy.*/\1/p' | sed '1d;$d' | sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : -1)}')
      python3 - "$work/r.json" "$backend" "$r" "$c0" "$c1" "$secs" "$busy" >> "$work/runs.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
busy = float(sys.argv[7])
r["target_busy_pct"] = busy
# Work per I/O: the reactor's busy time (its spinning excluded) per I/O.
r["target_busy_us_per_io"] = busy / 100 * r["seconds"] / max(r["ios"], 1) * 1e6 if busy >= 0 else None
r["backend"], r["round"] = sys.argv[2], int(sys.argv[3])
cpu = (int(sys.argv[5]) - int(sys.argv[4])) / 1e9
# The target also worked during the 1 s warm-up: scale by measured share.
total = r["seconds"] + 1.0
r["target_cpu_us_per_io"] = cpu * (r["seconds"] / total) / max(r["ios"], 1) * 1e6
print(json.dumps(r))
PY
      tail -n 1 "$work/runs.jsonl" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("  %-6s %-9s %6d B QD%-3d round %d: %9.0f IOPS %8.1f MiB/s mean %7.1f us p99 %7.1f us cpu/io %.2f us busy %.1f%%" % (r["backend"], r["pattern"], r["io_size"], r["queue_depth"], r["round"], r["iops"], r["mib_s"], r["lat_us"]["mean"], r["lat_us"]["p99"], r["target_cpu_us_per_io"], r["target_busy_pct"]))'
    done
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done

python3 - "$work/runs.jsonl" "$work/idle.jsonl" "$out" "$idle" <<'PY'
import json, statistics, sys, platform, os
runs = [json.loads(l) for l in open(sys.argv[1])]
idle = [json.loads(l) for l in open(sys.argv[2])]
groups = {}
for r in runs:
    groups.setdefault((r["backend"], r["pattern"], r["io_size"], r["queue_depth"]), []).append(r)
med = lambda xs: statistics.median(xs)
rows = []
print()
print("%-6s %-10s %8s %4s %10s %10s %9s %9s %10s %7s %10s" % ("backend", "pattern", "size", "QD", "IOPS", "MiB/s", "mean us", "p99 us", "cpu us/io", "busy %", "busy us/io"))
for (b, p, s, q), rs in groups.items():
    row = dict(backend=b, pattern=p, io_size=s, queue_depth=q, rounds=len(rs),
               iops=med([r["iops"] for r in rs]), mib_s=med([r["mib_s"] for r in rs]),
               mean_us=med([r["lat_us"]["mean"] for r in rs]), p99_us=med([r["lat_us"]["p99"] for r in rs]),
               p999_us=med([r["lat_us"]["p999"] for r in rs]),
               cpu_us_per_io=med([r["target_cpu_us_per_io"] for r in rs]),
               busy_pct=med([r["target_busy_pct"] for r in rs]),
               busy_us_per_io=med([r["target_busy_us_per_io"] or 0 for r in rs]))
    rows.append(row)
    print("%-6s %-10s %8d %4d %10.0f %10.1f %9.1f %9.1f %10.2f %7.1f %10.2f" % (b, p, s, q, row["iops"], row["mib_s"], row["mean_us"], row["p99_us"], row["cpu_us_per_io"], row["busy_pct"], row["busy_us_per_io"]))
for i in idle:
    print("idle CPU (%s, %s policy): %.2f%% of a core" % (i["backend"], sys.argv[4], i["idle_cpu_pct"]))
json.dump(dict(machine=dict(cpus=os.cpu_count(), kernel=platform.release()), idle_policy=sys.argv[4],
               medians=rows, idle=idle, runs=runs), open(sys.argv[3], "w"), indent=1)
print("saved", sys.argv[3])
PY
