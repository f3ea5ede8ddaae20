#!/usr/bin/env bash
# Compares this target with SPDK's nvmf_tgt in one session, driven by the
# same initiators: nvmf-perf, and SPDK's own spdk_nvme_perf. Both targets run
# pinned to core 0 with a 1 GiB RAM namespace (SPDK: a malloc bdev) of
# 512-byte blocks on 127.0.0.1; the initiator runs on core 1. For every
# round and case the two targets take turns (the order flips every round),
# so drift on a shared machine hits both alike; medians are reported.
#
# Besides IOPS and latency it reports each target's busy time per I/O: for
# this target the reactor's busy share (polls that found work, from its
# debug log), for SPDK the poll group's busy ticks (thread_get_stats). That
# is the work per I/O without the polling spin, and is far steadier than
# IOPS on a noisy machine.
#
# nvmf-perf connects with SQ flow control disabled (as `nvme connect
# --disable-sqflow`): then both targets may end a read with the C2HData
# SUCCESS flag and send no response capsule. SPDK's target does that with
# any host (its c2h_success option); this one only when the host disabled SQ
# flow control, as TP 8000 requires. spdk_nvme_perf keeps SQ flow control,
# so against it this target sends a response capsule per read and SPDK's
# does not. --sqflow keeps SQ flow control on for nvmf-perf too.
#
# SPDK is not built here: point --spdk at a built SPDK tree (build/bin/
# nvmf_tgt, build/bin/spdk_nvme_perf, scripts/rpc.py) and have hugepages
# reserved and hugetlbfs mounted. Not part of the test command.
#
# Usage: scripts/compare.sh --spdk DIR [-r ROUNDS] [-t SECONDS]
#          [-c "randread:4096:1 ..."] [-i "nvmf-perf spdk_nvme_perf"]
#          [-b ram|null] [-o OUT.json] [--ddgst] [--sqflow]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-config.sh

spdk=""
rounds=3
secs=10
cases="randread:4096:1 randread:4096:32 randread:4096:128 randwrite:4096:32 read:131072:16 write:131072:16"
inits="nvmf-perf spdk_nvme_perf"
backend=ram
ddgst=0
sqflow=0
out="bench-results/compare-$(date +%Y%m%d-%H%M%S).json"
while [ $# -gt 0 ]; do
  case "$1" in
    --spdk) spdk=$2; shift 2 ;;
    -r) rounds=$2; shift 2 ;;
    -t) secs=$2; shift 2 ;;
    -c) cases=$2; shift 2 ;;
    -i) inits=$2; shift 2 ;;
    -b) backend=$2; shift 2 ;;
    -o) out=$2; shift 2 ;;
    --ddgst) ddgst=1; shift ;;
    --sqflow) sqflow=1; shift ;;
    *) sed -n '2,30p' "$0"; exit 2 ;;
  esac
done
die() { echo "compare: $*" >&2; exit 1; }
[ -n "$spdk" ] || die "--spdk DIR is required (a built SPDK tree)"
for f in build/bin/nvmf_tgt scripts/rpc.py; do
  [ -e "$spdk/$f" ] || die "$spdk/$f not found"
done
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (targets on 0, initiator on 1)"
grep -q hugetlbfs /proc/mounts || die "SPDK needs hugetlbfs mounted (mount -t hugetlbfs nodev /dev/hugepages)"

cargo build --release --quiet --bin nvmf-target -p nvmf-target
cargo build --release --quiet --bin nvmf-perf -p nvmf-initiator
tgt=target/release/nvmf-target
perf=target/release/nvmf-perf
spdk_perf=$spdk/build/bin/spdk_nvme_perf
nqn=nqn.2016-06.io.spdk:cnode1
hostnqn=nqn.2014-08.org.nvmexpress:uuid:6e7f1d52-4c2b-4a8e-9a53-2d1c0c6f4a10
rpc_sock=/var/tmp/nvmf-compare-spdk.sock
work=$(mktemp -d)
mkdir -p "$(dirname "$out")"
pid=""
stop_target() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}
cleanup() { stop_target; rm -rf "$work"; }
trap cleanup EXIT

rpc() { python3 "$spdk/scripts/rpc.py" -s "$rpc_sock" "$@" >/dev/null; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

start_ours() {
  port=4420
  bench_config "$port" "$backend" adaptive "$nqn" >"$work/ours.toml"
  taskset -c 0 "$tgt" --config "$work/ours.toml" --log-level debug 2>"$work/ours.log" &
  pid=$!
  wait_port $port || { cat "$work/ours.log" >&2; die "this target did not start"; }
}
start_spdk() {
  port=4421
  rm -f "$rpc_sock"
  "$spdk/build/bin/nvmf_tgt" -m 0x1 -i 1 -r "$rpc_sock" >"$work/spdk.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    [ -S "$rpc_sock" ] && rpc rpc_get_methods 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/spdk.log" >&2; die "nvmf_tgt did not start"; }
    sleep 0.2
  done
  rpc nvmf_create_transport -t TCP
  if [ "$backend" = null ]; then
    rpc bdev_null_create Ns0 1024 512
  else
    rpc bdev_malloc_create -b Ns0 1024 512
  fi
  rpc nvmf_create_subsystem "$nqn" -a -s SPDK00000000000001
  rpc nvmf_subsystem_add_ns "$nqn" Ns0
  rpc nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s $port
  wait_port $port || die "nvmf_tgt does not listen on $port"
}

# busy_mark TARGET: where the busy count stands (ours: a line of its log,
# which gives the busy share of every second; SPDK: busy seconds so far).
busy_mark() {
  if [ "$1" = ours ]; then
    wc -l <"$work/ours.log"
  else
    python3 "$spdk/scripts/rpc.py" -s "$rpc_sock" thread_get_stats |
      python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(t["busy"] for t in d["threads"] if t["name"].startswith("nvmf_tgt_poll_group")) / d["tick_rate"])'
  fi
}
busy_since() { # target mark -> busy seconds since the mark
  if [ "$1" = ours ]; then
    tail -n +$(($2 + 1)) "$work/ours.log" |
      sed -n 's/.*reactor 0: \([0-9.]*\)% busy over the last \([0-9.]*\) s.*/\1 \2/p' |
      awk '{s += $1 / 100 * $2} END {printf "%.6f", s}'
  else
    awk -v a="$2" -v b="$(busy_mark spdk)" 'BEGIN {printf "%.6f", b - a}'
  fi
}

# run_init INIT PATTERN SIZE QD -> JSON line with iops, mib_s, mean_us, errors
run_init() {
  local init=$1 pattern=$2 size=$3 qd=$4
  if [ "$init" = nvmf-perf ]; then
    local dd=()
    [ "$ddgst" = 1 ] && dd=(--data-digest)
    [ "$sqflow" = 1 ] || dd+=(--disable-sqflow)
    "$perf" -a 127.0.0.1 -s "$port" -n "$nqn" --core 1 -w "$pattern" -o "$size" -q "$qd" \
      -t "$secs" --warmup 1 "${dd[@]}" --json "$work/r.json" >/dev/null 2>"$work/init.err" ||
      { cat "$work/init.err" >&2; echo '{"error": "nvmf-perf failed"}'; return; }
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps(dict(iops=r["iops"], mib_s=r["mib_s"], mean_us=r["lat_us"]["mean"], ios=r["ios"], errors=0)))' "$work/r.json"
  else
    local dd=()
    [ "$ddgst" = 1 ] && dd=(-I)
    "$spdk_perf" -c 0x2 -i 2 -q "$qd" -o "$size" -w "$pattern" -t "$secs" -a 1 "${dd[@]}" \
      -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$nqn hostnqn:$hostnqn" \
      >"$work/sp.log" 2>&1 || true
    rm -f /dev/hugepages/spdk2map_* 2>/dev/null || true
    python3 - "$work/sp.log" "$secs" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
m = re.search(r"^Total\s*:\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)", text, re.M)
errors = len(re.findall(r"digest error|failed|Failure", text))
if not m:
    print(json.dumps(dict(error="spdk_nvme_perf printed no total", errors=errors)))
else:
    iops = float(m.group(1))
    print(json.dumps(dict(iops=iops, mib_s=float(m.group(2)), mean_us=float(m.group(3)),
                          ios=iops * float(sys.argv[2]), errors=errors)))
PY
  fi
}

echo "targets: this one (nvmf-target) and SPDK nvmf_tgt ($spdk); initiators: $inits; $rounds rounds x ${secs} s"
for r in $(seq "$rounds"); do
  order="ours spdk"
  [ $((r % 2)) -eq 0 ] && order="spdk ours"
  for case in $cases; do
    IFS=: read -r pattern size qd <<<"$case"
    for t in $order; do
      "start_$t"
      # Reads hit written memory on both (RAM regions start unallocated).
      "$perf" -a 127.0.0.1 -s "$port" -n "$nqn" --core 1 -w write -o 131072 -q 16 -t 1 --warmup 0 >/dev/null
      sleep 1.1 # its busy time is logged before the first run's mark
      for init in $inits; do
        mark=$(busy_mark "$t")
        res=$(run_init "$init" "$pattern" "$size" "$qd")
        sleep 1.1 # let this target log the last busy second
        busy=$(busy_since "$t" "$mark")
        echo "{\"round\": $r, \"target\": \"$t\", \"initiator\": \"$init\", \"pattern\": \"$pattern\", \"io_size\": $size, \"queue_depth\": $qd, \"busy_s\": $busy, \"result\": $res}" >>"$work/runs.jsonl"
        tail -n 1 "$work/runs.jsonl" | python3 -c '
import json, sys
secs = float(sys.argv[1])
r = json.load(sys.stdin); x = r["result"]
if "error" in x:
    print("  round %d %-4s %-14s %-9s %6d QD%-3d: %s" % (r["round"], r["target"], r["initiator"], r["pattern"], r["io_size"], r["queue_depth"], x["error"]))
else:
    print("  round %d %-4s %-14s %-9s %6d QD%-3d: %9.0f IOPS %8.1f MiB/s mean %7.1f us busy/io %.2f us%s" % (r["round"], r["target"], r["initiator"], r["pattern"], r["io_size"], r["queue_depth"], x["iops"], x["mib_s"], x["mean_us"], r["busy_s"] * secs / (secs + 1) / max(x["ios"], 1) * 1e6, "  ERRORS: %d" % x["errors"] if x["errors"] else ""))' "$secs"
      done
      stop_target
    done
  done
done

python3 - "$work/runs.jsonl" "$out" "$secs" <<'PY'
import json, os, platform, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
secs = float(sys.argv[3])
med = statistics.median
groups = {}
for r in runs:
    if "error" in r["result"]:
        continue
    key = (r["initiator"], r["pattern"], r["io_size"], r["queue_depth"])
    groups.setdefault(key, {}).setdefault(r["target"], []).append(r)
rows = []
print()
print("%-14s %-9s %7s %4s | %10s %10s %6s | %8s %8s | %9s %9s | %s" % ("initiator", "pattern", "size", "QD", "ours IOPS", "SPDK IOPS", "ratio", "ours MiB", "SPDK MiB", "ours b/io", "SPDK b/io", "errors"))
for (i, p, s, q), by in groups.items():
    def stat(t, f):
        rs = by.get(t, [])
        return med([f(r) for r in rs]) if rs else float("nan")
    iops = lambda r: r["result"]["iops"]
    mib = lambda r: r["result"]["mib_s"]
    # Busy time over the run (warm-up included) per I/O of the measured part.
    bpio = lambda r: r["busy_s"] * secs / (secs + 1) / max(r["result"]["ios"], 1) * 1e6
    errs = {t: sum(r["result"]["errors"] for r in by.get(t, [])) for t in ("ours", "spdk")}
    row = dict(initiator=i, pattern=p, io_size=s, queue_depth=q,
               ours_iops=stat("ours", iops), spdk_iops=stat("spdk", iops),
               ours_mib_s=stat("ours", mib), spdk_mib_s=stat("spdk", mib),
               ours_busy_us_per_io=stat("ours", bpio), spdk_busy_us_per_io=stat("spdk", bpio),
               errors=errs, rounds=len(by.get("ours", [])))
    rows.append(row)
    print("%-14s %-9s %7d %4d | %10.0f %10.0f %6.2f | %8.1f %8.1f | %9.2f %9.2f | %s" % (
        i, p, s, q, row["ours_iops"], row["spdk_iops"], row["ours_iops"] / row["spdk_iops"],
        row["ours_mib_s"], row["spdk_mib_s"], row["ours_busy_us_per_io"], row["spdk_busy_us_per_io"],
        "ours %d, SPDK %d" % (errs["ours"], errs["spdk"])))
json.dump(dict(machine=dict(cpus=os.cpu_count(), kernel=platform.release()), medians=rows, runs=runs),
          open(sys.argv[2], "w"), indent=1)
print("saved", sys.argv[2])
PY
