#!/usr/bin/env bash
# What run-time changes cost the I/O they do not concern (issue 11 item 1): the target on
# core 0 with its embedded default plus a second subsystem; a host (nvmf-perf, core 1) runs 4 KiB
# random reads on the default subsystem alone, then while another process changes the target
# as fast as it answers: a reload of the file (which flips a namespace of the second subsystem
# and a listener each time), `ctl ns add` / `ns remove` on the second subsystem, `ctl listener
# add` / `remove` on another port. The same with as many commands that change nothing (`ctl
# status`) and that do not reach the target (`--version`) tells the cost of the changes from
# that of starting processes on the host's core. Several rounds; prints each run's IOPS, p50,
# p99, p99.9 and max, the commands run, and the medians.
#
#   scripts/reload-latency.sh [-r ROUNDS] [-t SECONDS]
#
# Not part of the test command: timings are measurements, not pass/fail.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
secs=5
while getopts "r:t:" o; do
  case $o in
    r) rounds=$OPTARG ;;
    t) secs=$OPTARG ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done
cargo build --release -q -p nvmf-target -p nvmf-initiator
bin=target/release/nvmf-target
perf=target/release/nvmf-perf
port=5541
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
other=nqn.2026-01.io.nvmf-target:other
base() {
  "$bin" print-default-config | sed "s/^port = 4420/port = $port/; s/^port = 8009/port = 5542/; \
    s|^control_socket = .*|control_socket = \"$out/ctl.sock\"|"
  printf '\n[[subsystem]]\nnqn = "%s"\nallow_any_host = true\n\n[[subsystem.namespace]]\nnsid = 1\nbackend = "ram"\nsize = "16MiB"\n' "$other"
}
base >"$out/t.toml"
# The file's other state: one more namespace in the other subsystem and one more listener.
{
  base
  printf '\n[[subsystem.namespace]]\nnsid = 2\nbackend = "ram"\nsize = "16MiB"\n'
  printf '\n[[listener]]\nname = "flip"\ntransport = "tcp"\naddress = "127.0.0.1"\nport = 5543\n'
} >"$out/t2.toml"
cp "$out/t.toml" "$out/t1.toml"
taskset -c 0 "$bin" --config "$out/t.toml" --log-level warn 2>"$out/target.log" &
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

churn() { # MODE SECONDS: change the target over and over (MODE change), or run as many
  # commands that change nothing (status: `ctl status`), or that do not talk to the target at
  # all (spawn: `nvmf-target --version`), to tell the cost of the changes from that of
  # starting processes on the host's core; prints how many commands ran
  local mode=$1 end=$((SECONDS + $2)) n=0 i=0
  while [ "$SECONDS" -lt "$end" ]; do
    i=$((i + 1))
    if [ "$mode" != change ]; then
      if [ "$mode" = status ]; then
        "$bin" ctl --socket "$out/ctl.sock" status >/dev/null
      else
        "$bin" --version >/dev/null
      fi
      n=$((n + 1))
      continue
    fi
    case $((i % 3)) in
      0)
        cp "$out/t$((i % 2 + 1)).toml" "$out/t.toml"
        "$bin" --config "$out/t.toml" reload >/dev/null
        ;;
      1)
        "$bin" ctl --socket "$out/ctl.sock" ns add "$other" --nsid 9 --size 8MiB >/dev/null
        "$bin" ctl --socket "$out/ctl.sock" ns remove "$other" 9 >/dev/null
        n=$((n + 1))
        ;;
      2)
        "$bin" ctl --socket "$out/ctl.sock" listener add churn --address 127.0.0.1 --port 5544 >/dev/null
        "$bin" ctl --socket "$out/ctl.sock" listener remove churn >/dev/null
        n=$((n + 1))
        ;;
    esac
    n=$((n + 1))
  done
  echo "$mode: $n commands"
}

measure() { # LABEL
  taskset -c 1 "$perf" -s "$port" --core 1 -w randread -o 4096 -q 1 -t "$secs" \
    --json "$out/r.json" >/dev/null
  python3 - "$1" "$out/r.json" <<'PY' | tee -a "$out/runs.txt"
import json, sys
j = json.load(open(sys.argv[2])); l = j["lat_us"]
print(sys.argv[1], round(j["iops"]), l["p50"], l["p99"], l["p999"], l["max"], j["errors"])
PY
}

echo "label IOPS p50_us p99_us p99.9_us max_us errors"
for r in $(seq "$rounds"); do
  measure alone
  for mode in spawn status change; do
    # On the host's core: the target's core sees only what the commands ask of it.
    (taskset -pc 1 "$BASHPID" >/dev/null && churn "$mode" $((secs + 2))) >"$out/churn.log" 2>&1 &
    c=$!
    sleep 1
    measure "$mode"
    wait "$c"
    cat "$out/churn.log"
  done
done
echo "== medians over $rounds rounds (IOPS, p50, p99, p99.9, max in us)"
python3 - "$out/runs.txt" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(list)
for l in open(sys.argv[1]):
    f = l.split()
    d[f[0]].append([float(x) for x in f[1:6]])
for k, v in d.items():
    print(k, *[round(statistics.median(c), 2) for c in zip(*v)])
PY
